#!/usr/bin/env bash
# What the demo left behind, and where to look next. Reads the tenant databases with psql and the
# dead-letter queues over AMQP.
set -euo pipefail
ns=${SILOFLOW_NAMESPACE:-siloflow}
siloflow=${SILOFLOW_BIN:-.venv/bin/siloflow}
echo
echo "== reports committed, per tenant =="
for db in $("$siloflow" tenant list --json | python3 -c 'import json,sys; print(" ".join(t["database"] for t in json.load(sys.stdin)))'); do
    printf '%-28s ' "$db"
    psql -h 127.0.0.1 -U postgres -d "$db" -Atc \
        "select coalesce(string_agg(kind || ' ' || n, ', ' order by kind), 'nothing yet') from (select kind, count(*) n from agent_messages group by kind) k"
done
echo
echo "== dead letters =="
"$(dirname "$siloflow")/python" - "$ns" <<'PY'
import asyncio, sys
import aio_pika

async def main(ns: str) -> None:
    connection = await aio_pika.connect("amqp://guest:guest@127.0.0.1/")
    channel = await connection.channel()
    for which in ("invalid", "unrouted", "failed"):
        queue = await channel.declare_queue(f"{ns}.dlq.{which}", passive=True)
        print(f"{queue.name:28} {queue.declaration_result.message_count}")
    await connection.close()

asyncio.run(main(sys.argv[1]))
PY
cat <<MSG

Where to look next:
  management console   http://127.0.0.1:15672  (guest/guest): Queues tab, $ns.*
  a tenant's silo      psql -h 127.0.0.1 -U postgres -d ${ns}_tenant_acme -c 'select hostname, status, last_seen_at from hosts limit 10'
  tenants              $siloflow tenant list
  migrations           $siloflow migrate --status
  run the services     $siloflow run all        (Ctrl-C stops them cleanly)
  more reports         $siloflow simulate --rate 200 --duration 30
MSG
