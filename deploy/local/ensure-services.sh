#!/usr/bin/env bash
# Make sure PostgreSQL and RabbitMQ (with the management, shovel and prometheus plugins) run on
# loopback. Uses running ones; starts installed ones; installs Debian's packages when run as
# root with apt, and otherwise says exactly what to run. Used by `make demo`, `make services`
# and `.ci/run`.
#
# What it changes on the machine: it may install and start postgresql and rabbitmq-server, it
# enables RabbitMQ's management, shovel and prometheus plugins, and it creates the PostgreSQL role
# siloflow_password_login and puts three lines at the top of pg_hba.conf so that logins in it
# (the short-lived tenant logins) must give their password. `ensure-services.sh undo` takes the
# role and the lines back.
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

LOGIN_GROUP=siloflow_password_login
MARK="# siloflow: short-lived logins must authenticate (deploy/local/ensure-services.sh)"
psql_admin() { psql -h 127.0.0.1 -U postgres -d postgres -qAtX "$@"; }

# -- undo: what this script changed on the machine, taken back ----------------------------------
# It leaves the servers running and their packages installed (other things may use them), and
# the management plugins enabled.
if [ "${1:-}" = undo ]; then
    pg_up || { say "PostgreSQL is not running on 127.0.0.1:5432: nothing to undo there"; exit 0; }
    hba=$(psql_admin -c "show hba_file")
    if grep -qF "$MARK" "$hba" 2>/dev/null; then
        grep -vF -e "$MARK" -e "+$LOGIN_GROUP" "$hba" > "$hba.siloflow" && cat "$hba.siloflow" > "$hba"
        rm -f "$hba.siloflow"
        psql_admin -c "select pg_reload_conf()" >/dev/null
        say "removed the +$LOGIN_GROUP lines from $hba"
    fi
    members=$(psql_admin -c "select count(*) from pg_auth_members m join pg_roles r on r.oid = m.roleid where r.rolname = '$LOGIN_GROUP'" 2>/dev/null || echo 0)
    if [ "$members" = 0 ] && psql_admin -c "select 1 from pg_roles where rolname = '$LOGIN_GROUP'" | grep -q 1; then
        psql_admin -c "drop role $LOGIN_GROUP"
        say "dropped the role $LOGIN_GROUP"
    elif [ "$members" != 0 ]; then
        say "kept the role $LOGIN_GROUP: $members login(s) still belong to it (a deployment is up)"
    fi
    exit 0
fi

# -- PostgreSQL ----------------------------------------------------------------------------------
if ! pg_up; then
    command -v pg_ctlcluster >/dev/null || install_packages postgresql
    version=$(ls /etc/postgresql | sort -V | tail -n 1)
    say "starting PostgreSQL $version"
    pg_ctlcluster --skip-systemctl-redirect "$version" main start || true
    for _ in $(seq 1 30); do pg_up && break; sleep 1; done
    pg_up || { say "PostgreSQL did not come up on 127.0.0.1:5432"; exit 1; }
fi

# -- Password authentication for short-lived logins ---------------------------------------------
# This server trusts loopback users, and a trusted login never expires. Logins in the group
# below (siloflow's tests put theirs there, see SILOFLOW_CREDENTIAL_LOGIN_GROUP) must give their
# password, so an expired or revoked credential is refused as it would be on a real server.
if psql_admin -c "select 1" >/dev/null 2>&1; then
    psql_admin -c "do \$\$ begin
        if not exists (select 1 from pg_roles where rolname = '$LOGIN_GROUP') then
            create role $LOGIN_GROUP nologin;
        end if; end \$\$;" >/dev/null
    hba=$(psql_admin -c "show hba_file")
    if ! psql_admin -c "select 1 from pg_hba_file_rules where '+$LOGIN_GROUP' = any(user_name)" | grep -q 1; then
        if [ -w "$hba" ]; then
            say "requiring passwords of +$LOGIN_GROUP in $hba"
            rules="host all +$LOGIN_GROUP 127.0.0.1/32 scram-sha-256
host all +$LOGIN_GROUP ::1/128 scram-sha-256
local all +$LOGIN_GROUP scram-sha-256"
            { printf '%s\n' "$MARK" "$rules"; cat "$hba"; } > "$hba.siloflow" && cat "$hba.siloflow" > "$hba" && rm -f "$hba.siloflow"
            psql_admin -c "select pg_reload_conf()" >/dev/null
        else
            say "cannot edit $hba: the credential tests need these lines at its top, then a reload:"
            say "  host all +$LOGIN_GROUP 127.0.0.1/32 scram-sha-256"
        fi
    fi
fi

# -- RabbitMQ ------------------------------------------------------------------------------------
if ! rabbit_up; then
    command -v rabbitmq-server >/dev/null || install_packages rabbitmq-server
    say "starting RabbitMQ"
    rabbitmq-server -detached || true
    for _ in $(seq 1 60); do rabbit_up && break; sleep 1; done
    rabbit_up || { say "RabbitMQ did not come up"; exit 1; }
fi
# A node can answer `ping` and accept TCP on 5672 yet never start an AMQP handshake (seen here
# after a benchmark created a few hundred quorum queues at once): ask for Connection.Start.
amqp_ok() {
    timeout 10 bash -c 'exec 3<>/dev/tcp/127.0.0.1/5672; printf "AMQP\000\000\011\001" >&3; head -c 1 <&3' 2>/dev/null \
        | od -An -tx1 | grep -q 01
}
for _ in $(seq 1 30); do amqp_ok && break; sleep 2; done
if ! amqp_ok; then
    say "RabbitMQ answers ping but not AMQP on 127.0.0.1:5672: it is wedged. Restart it:"
    say "  rabbitmqctl stop   (or: rabbitmqctl eval 'erlang:halt().')   then   rabbitmq-server -detached"
    exit 1
fi
rabbitmq-plugins enable --quiet rabbitmq_management rabbitmq_shovel rabbitmq_shovel_management rabbitmq_prometheus >/dev/null
for _ in $(seq 1 30); do
    curl -fsS -u guest:guest http://127.0.0.1:15672/api/overview >/dev/null 2>&1 && break
    sleep 1
done
say "PostgreSQL on 127.0.0.1:5432 and RabbitMQ on 127.0.0.1:5672 (console http://127.0.0.1:15672) are up"
