#!/usr/bin/env bash
# A PostgreSQL server of its own on this machine, beside the system one: for the fault suite
# (restart or crash the server under load without touching anyone else's), the benchmark (a
# server that runs nothing else, commit timestamps on) and a second server for placements.
#
#   deploy/local/pg-instance.sh start      initdb (first time) and start on $SILOFLOW_PG_PORT
#   deploy/local/pg-instance.sh restart    a fast restart (sessions cut, nothing lost)
#   deploy/local/pg-instance.sh crash      an immediate stop (as a power cut), then start: recovery
#   deploy/local/pg-instance.sh down, up   an immediate stop; a start (an outage of any length)
#   deploy/local/pg-instance.sh stop       stop and remove its data directory
#   deploy/local/pg-instance.sh env        the admin DSN that reaches it
#
# Loopback only, trust authentication for `postgres`, data in $SILOFLOW_PG_DIR, at most
# $SILOFLOW_PG_MAX_CONNECTIONS sessions (300), commit timestamps on. As root, the server runs as the
# `postgres` user (PostgreSQL refuses to run as root).
set -euo pipefail

PORT=${SILOFLOW_PG_PORT:-5440}
DIR=${SILOFLOW_PG_DIR:-/tmp/siloflow-pg-$PORT}
version=$(ls /usr/lib/postgresql 2>/dev/null | sort -V | tail -n 1)
BIN=${SILOFLOW_PG_BIN:-/usr/lib/postgresql/$version/bin}

say() { printf 'pg-instance: %s\n' "$*" >&2; }
as_owner() {
    if [ "$(id -u)" = 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi
}
ctl() { as_owner "$BIN/pg_ctl" -D "$DIR/data" -w -l "$DIR/server.log" "$@"; }

start() {
    [ -x "$BIN/initdb" ] || { say "no PostgreSQL server binaries under $BIN"; exit 1; }
    if [ ! -f "$DIR/data/PG_VERSION" ]; then
        mkdir -p "$DIR"
        [ "$(id -u)" = 0 ] && chown postgres: "$DIR"
        as_owner "$BIN/initdb" -D "$DIR/data" -A trust -U postgres --no-instructions >/dev/null
        cat >> "$DIR/data/postgresql.conf" <<EOF
listen_addresses = '127.0.0.1'
port = $PORT
unix_socket_directories = '$DIR'
max_connections = ${SILOFLOW_PG_MAX_CONNECTIONS:-300}
# Each transaction's commit time (pg_xact_commit_timestamp): the bench times every report to the
# end of the commit that made it durable, for both systems alike, at no cost to either.
track_commit_timestamp = on
EOF
    fi
    if ctl status >/dev/null 2>&1; then
        say "already up: postgresql://postgres@127.0.0.1:$PORT/postgres"
        return
    fi
    ctl -o "-p $PORT" start >/dev/null
    say "up: postgresql://postgres@127.0.0.1:$PORT/postgres (data $DIR/data)"
}

case "${1:-}" in
    start) start ;;
    restart) ctl -m fast restart >/dev/null && say "restarted" ;;
    crash)
        ctl -m immediate stop >/dev/null && say "stopped immediately"
        start
        ;;
    down) ctl -m immediate stop >/dev/null && say "down" ;;
    up) start ;;
    stop)
        ctl -m fast stop >/dev/null 2>&1 || true
        rm -rf "$DIR"
        say "stopped and removed $DIR"
        ;;
    env) echo "postgresql://postgres@127.0.0.1:$PORT/postgres" ;;
    *) sed -n '2,15p' "$0" | sed 's/^# \{0,1\}//'; exit 2 ;;
esac
