#!/usr/bin/env bash
# Make sure PostgreSQL and RabbitMQ (with the management and shovel plugins) run on loopback.
# Uses running ones; starts installed ones; installs Debian's packages when run as root with apt,
# and otherwise says exactly what to run. Used by `make demo`, `make services` and `.ci/run`.
set -euo pipefail

say() { printf 'ensure-services: %s\n' "$*" >&2; }

pg_up() { pg_isready -q -h 127.0.0.1 -p 5432 2>/dev/null; }
rabbit_up() { rabbitmq-diagnostics -q ping >/dev/null 2>&1; }

install_packages() {
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
        say "installing $* from the distribution's packages"
        DEBIAN_FRONTEND=noninteractive apt-get update -qq
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@"
    else
        say "missing: $*. Install them with: sudo apt-get install -y $*"
        exit 1
    fi
}

# -- PostgreSQL ----------------------------------------------------------------------------------
if ! pg_up; then
    command -v pg_ctlcluster >/dev/null || install_packages postgresql
    version=$(ls /etc/postgresql | sort -V | tail -n 1)
    say "starting PostgreSQL $version"
    pg_ctlcluster --skip-systemctl-redirect "$version" main start || true
    for _ in $(seq 1 30); do pg_up && break; sleep 1; done
    pg_up || { say "PostgreSQL did not come up on 127.0.0.1:5432"; exit 1; }
fi

# -- RabbitMQ ------------------------------------------------------------------------------------
if ! rabbit_up; then
    command -v rabbitmq-server >/dev/null || install_packages rabbitmq-server
    say "starting RabbitMQ"
    rabbitmq-server -detached || true
    for _ in $(seq 1 60); do rabbit_up && break; sleep 1; done
    rabbit_up || { say "RabbitMQ did not come up"; exit 1; }
fi
rabbitmq-plugins enable --quiet rabbitmq_management rabbitmq_shovel rabbitmq_shovel_management >/dev/null
for _ in $(seq 1 30); do
    curl -fsS -u guest:guest http://127.0.0.1:15672/api/overview >/dev/null 2>&1 && break
    sleep 1
done
say "PostgreSQL on 127.0.0.1:5432 and RabbitMQ on 127.0.0.1:5672 (console http://127.0.0.1:15672) are up"
