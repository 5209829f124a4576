#!/usr/bin/env bash
# Make sure RabbitMQ answers on 127.0.0.1:5672 with its management API on
# 127.0.0.1:15672: start it if installed but down, install it with apt-get if
# missing, enable rabbitmq_management (the service creates every party's own
# broker account through it), then wait until both ports answer.
set -euo pipefail
answers() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
wait_for() {
    for _ in $(seq 1 120); do
        answers "$1" && return 0
        sleep 1
    done
    echo "RabbitMQ did not answer on 127.0.0.1:$1 within 120 s" >&2
    return 1
}
if ! answers 5672; then
    if ! command -v rabbitmq-server >/dev/null; then
        echo "installing rabbitmq-server"
        apt-get update -qq
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq rabbitmq-server
    fi
    answers 5672 || { echo "starting rabbitmq-server"; rabbitmq-server -detached || true; }
    wait_for 5672
fi
if ! rabbitmq-plugins -q is_enabled rabbitmq_management >/dev/null 2>&1; then
    echo "enabling rabbitmq_management"
    rabbitmq-plugins -q enable rabbitmq_management >/dev/null
fi
wait_for 15672
