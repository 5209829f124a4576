#!/usr/bin/env bash
# Make sure Debian's python3 can build virtual environments (python3-venv).
set -euo pipefail
python=${1:-/usr/bin/python3}
if "$python" -c 'import ensurepip, venv' 2>/dev/null; then
    exit 0
fi
echo "installing python3-venv (needed to build the test environment)"
apt-get update -qq
DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3-venv
