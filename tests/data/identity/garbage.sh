#!/bin/sh
# External mapping program for tests that answers with something that is not JSON.
cat >/dev/null
echo "Hello! I am definitely not JSON {"
