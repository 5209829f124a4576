#!/usr/bin/env bash
# The unprivileged account a root-started endpoint's manager runs as (config key
# manager_user, default compute-agent), as the RPM's %pre creates it: a system
# account without a login shell or a home of its own.
set -euo pipefail
account=${1:-compute-agent}
if getent passwd "$account" >/dev/null; then
    exit 0
fi
echo "creating the system account $account (the endpoint manager runs as it)"
useradd --system --user-group --no-create-home --home-dir / \
    --shell /usr/sbin/nologin --comment "compute-agent endpoint manager" "$account"
