#!/usr/bin/env bash
# Make sure RabbitMQ answers on 127.0.0.1:5672: start it if installed but down,
# install it with apt-get if missing, then wait until the port answers.
set -euo pipefail
answers() { (exec 3<>/dev/tcp/127.0.0.1/5672) 2>/dev/null; }
if answers; then exit 0; fi
if ! command -v rabbitmq-server >/dev/null; then
    echo "installing rabbitmq-server"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq rabbitmq-server
fi
answers || { echo "starting rabbitmq-server"; rabbitmq-server -detached || true; }
for _ in $(seq 1 120); do
    answers && exit 0
    sleep 1
done
echo "RabbitMQ did not answer on 127.0.0.1:5672 within 120 s" >&2
exit 1
