#!/usr/bin/env bash
# Make sure Debian's Chromium is installed at /usr/bin/chromium: the browser tests
# of the web app drive it headless through Playwright, which must never download
# a browser of its own.
set -euo pipefail
if [ -x /usr/bin/chromium ]; then
    exit 0
fi
echo "installing chromium (the web app's browser tests drive it headless)"
apt-get update -qq
DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium
