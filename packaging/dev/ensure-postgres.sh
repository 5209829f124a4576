#!/usr/bin/env bash
# PostgreSQL is optional for the tests (the service's PostgreSQL tests skip when
# nothing answers on 127.0.0.1:5432); start the local cluster if one is installed.
set -uo pipefail
answers() { (exec 3<>/dev/tcp/127.0.0.1/5432) 2>/dev/null; }
answers && exit 0
[ -d /etc/postgresql ] || { echo "PostgreSQL not installed; its tests will be skipped"; exit 0; }
version=$(ls /etc/postgresql | sort -V | tail -n 1)
pg_ctlcluster --skip-systemctl-redirect "$version" main start || true
for _ in $(seq 1 30); do
    answers && exit 0
    sleep 1
done
echo "PostgreSQL did not start; its tests will be skipped"
exit 0
