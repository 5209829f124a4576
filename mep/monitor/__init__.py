"""The monitor: everything that runs as root, and nothing else.

A checklist for reviewers, one module each: :mod:`.server` (the loop, the
requests it serves, the manager's life), :mod:`.requests` (the closed request
table, pure), :mod:`.channel` (the socket and its descriptors), :mod:`.spawn`
(fork, privilege drop, exec, signals sent as the user), :mod:`.pam`,
:mod:`.audit`, :mod:`.children` (reaping and stopping), :mod:`.containment`
(cgroups and the warden), :mod:`.settings` (what ``start`` tells it).
"""
