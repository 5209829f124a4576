#!/bin/sh
# External mapping program for tests that fails with a message on stderr.
cat >/dev/null
echo "ldap server unreachable" >&2
exit 3
