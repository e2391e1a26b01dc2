#!/usr/bin/env bash
# A RabbitMQ cluster of N nodes on this machine, beside the system broker, for the fault suite
# (kill the node that leads a tenant's quorum queue) and for benchmarks that need more file
# descriptors than the system node was given.
#
#   deploy/local/rabbit-cluster.sh start [N]   start N nodes (default 3) and join them
#   deploy/local/rabbit-cluster.sh stop        stop every node this script started
#   deploy/local/rabbit-cluster.sh status      cluster status as node 1 sees it
#   deploy/local/rabbit-cluster.sh kill I      SIGKILL node I (a crash, not a shutdown)
#   deploy/local/rabbit-cluster.sh revive I    start node I again (it rejoins the cluster)
#   deploy/local/rabbit-cluster.sh restart     stop the broker on every node, then start it again
#   deploy/local/rabbit-cluster.sh ctl I ARGS  rabbitmqctl ARGS against node I
#   deploy/local/rabbit-cluster.sh env         the SILOFLOW_* settings that point at node 1
#
# Node I is sf-rabbit-I@localhost (SILOFLOW_CLUSTER_NAME replaces sf-rabbit): AMQP on 5700+I,
# management on 15700+I, distribution on 25700+I (SILOFLOW_CLUSTER_PORT_OFFSET moves all three),
# data under $SILOFLOW_CLUSTER_DIR.
# Every node runs with the shipped deploy/rabbitmq/rabbitmq.conf plus its own listeners, and with
# as many file descriptors as the hard limit allows: each quorum queue holds files open, and a
# node started by hand with the soft limit of 1,024 wedges after a few hundred queues.
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
DIR=${SILOFLOW_CLUSTER_DIR:-/tmp/siloflow-rabbit-cluster}
OFFSET=${SILOFLOW_CLUSTER_PORT_OFFSET:-5700}
NAME=${SILOFLOW_CLUSTER_NAME:-sf-rabbit}
SBIN=$(dirname "$(readlink -f "$(command -v rabbitmq-server)")")
# Debian's wrappers in /usr/sbin switch to the rabbitmq user; ours run as the caller, with their
# own cookie, so they never touch the system node's.
LIBBIN=/usr/lib/rabbitmq/bin
[ -x "$LIBBIN/rabbitmq-server" ] && SBIN=$LIBBIN

say() { printf 'rabbit-cluster: %s\n' "$*" >&2; }
node() { printf '%s-%s@localhost' "$NAME" "$1"; }
amqp_port() { echo $((OFFSET + $1)); }
mgmt_port() { echo $((OFFSET + 10000 + $1)); }
dist_port() { echo $((OFFSET + 20000 + $1)); }

node_env() {
    local i=$1 d="$DIR/n$1"
    export HOME="$DIR" RABBITMQ_CONF_ENV_FILE=/dev/null
    export RABBITMQ_NODENAME="$(node "$i")" RABBITMQ_NODE_IP_ADDRESS=127.0.0.1
    export RABBITMQ_NODE_PORT="$(amqp_port "$i")" RABBITMQ_DIST_PORT="$(dist_port "$i")"
    export RABBITMQ_MNESIA_BASE="$d/mnesia" RABBITMQ_LOG_BASE="$d/log"
    export RABBITMQ_CONFIG_FILE="$d/rabbitmq.conf" RABBITMQ_ENABLED_PLUGINS_FILE="$d/enabled_plugins"
    export RABBITMQ_PID_FILE="$d/pid" ERL_EPMD_ADDRESS=127.0.0.1
}

ctl() { local i=$1; shift; (node_env "$i"; "$SBIN/rabbitmqctl" -n "$(node "$i")" "$@"); }

count() { cat "$DIR/count" 2>/dev/null || echo 0; }

prepare() {
    local i=$1 d="$DIR/n$1"
    mkdir -p "$d/mnesia" "$d/log"
    {
        grep -v '^management.tcp.port' "$here/../rabbitmq/rabbitmq.conf"
        echo "listeners.tcp.default = 127.0.0.1:$(amqp_port "$i")"
        echo "management.tcp.ip = 127.0.0.1"
        echo "management.tcp.port = $(mgmt_port "$i")"
        # 24 GiB machine, several nodes: the relative watermark would let each take 60% of it.
        echo "vm_memory_high_watermark.absolute = 2GB"
        echo "disk_free_limit.absolute = 200MB"
    } > "$d/rabbitmq.conf"
    echo '[rabbitmq_management,rabbitmq_shovel,rabbitmq_shovel_management].' > "$d/enabled_plugins"
}

boot() {
    local i=$1
    (
        node_env "$i"
        ulimit -n "$(ulimit -Hn)"
        "$SBIN/rabbitmq-server" -detached >"$DIR/n$i/log/start.out" 2>&1
    )
    for _ in $(seq 1 90); do
        ctl "$i" -q await_startup >/dev/null 2>&1 && return 0
        sleep 1
    done
    say "node $(node "$i") did not start; see $DIR/n$i/log"
    return 1
}

start() {
    local n=${1:-3}
    [[ "$n" =~ ^[1-9][0-9]*$ ]] || { say "node count must be a positive integer, got '$n'"; exit 2; }
    if [ "$(count)" != 0 ]; then
        local pid; pid=$(cat "$DIR/n1/pid" 2>/dev/null || true)
        if [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null; then
            say "a cluster of $(count) is already up under $DIR (stop it first)"; exit 1
        fi
        rm -rf "$DIR"  # left by a start that failed or a machine that rebooted
    fi
    mkdir -p "$DIR"
    [ -f "$DIR/.erlang.cookie" ] || { head -c 24 /dev/urandom | od -An -tx1 | tr -d ' \n' > "$DIR/.erlang.cookie"; }
    chmod 400 "$DIR/.erlang.cookie"
    for i in $(seq 1 "$n"); do prepare "$i"; done
    echo "$n" > "$DIR/count"
    for i in $(seq 1 "$n"); do
        boot "$i"
        if [ "$i" -gt 1 ]; then
            ctl "$i" -q stop_app
            ctl "$i" -q join_cluster "$(node 1)"
            ctl "$i" -q start_app
        fi
        say "$(node "$i") up: amqp://guest:guest@127.0.0.1:$(amqp_port "$i")/  console http://127.0.0.1:$(mgmt_port "$i")"
    done
}

stop() {
    local n; n=$(count)
    for i in $(seq "$n" -1 1); do
        ctl "$i" -q stop >/dev/null 2>&1 || true
        local pid; pid=$(cat "$DIR/n$i/pid" 2>/dev/null || true)
        if [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null; then kill -KILL "$pid" 2>/dev/null || true; fi
    done
    rm -rf "$DIR"
    say "stopped $n node(s)"
}

case "${1:-}" in
    start) start "${2:-3}" ;;
    stop) stop ;;
    status) ctl 1 cluster_status ;;
    kill)
        pid=$(cat "$DIR/n${2:?node number}/pid")
        kill -KILL "$pid"
        say "killed $(node "$2") (pid $pid)"
        ;;
    revive) boot "${2:?node number}" && say "$(node "$2") back" ;;
    restart)
        # The last node to stop is the first the others wait for: stop from the highest, start
        # all at once (each waits for its peers' tables).
        n=$(count)
        for i in $(seq "$n" -1 1); do ctl "$i" -q stop_app; done
        for i in $(seq 1 "$n"); do ctl "$i" -q start_app & done
        wait
        say "restarted $n node(s)"
        ;;
    ctl) i=${2:?node number}; shift 2; ctl "$i" "$@" ;;
    env)
        echo "SILOFLOW_AMQP_URL=amqp://guest:guest@127.0.0.1:$(amqp_port 1)/"
        echo "SILOFLOW_MANAGEMENT_URL=http://guest:guest@127.0.0.1:$(mgmt_port 1)"
        ;;
    *) sed -n '2,20p' "$0" | sed 's/^# \{0,1\}//'; exit 2 ;;
esac
