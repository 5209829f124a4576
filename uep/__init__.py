"""The user endpoint: runs as the researcher's own account and executes tasks.

Started by a manager as ``compute-endpoint _start-user-endpoint NAME`` with a
JSON launch payload on stdin (:mod:`uep.payload`, :mod:`uep.launch`), it builds
an engine from the rendered config (:mod:`uep.engines`), then serves sessions
(:mod:`uep.endpoint`, :mod:`uep.session`): consume Tasks, journal them
(:mod:`uep.store`) before acking, run them (:mod:`uep.execution`), store each
Result before publishing it, heartbeat, and stop when idle (:mod:`uep.idle`).
Pure decisions live in :mod:`uep.intake` and :mod:`uep.idle`.
"""
