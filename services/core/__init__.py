"""What the services share, by concern (may import only `schemas` and itself, in this order,
each layer only the ones below it):

- `lifespan`: a service's life (signals, the broker connection and its channels, consuming until
  stopped or drained, health endpoints).
- `silo/`: tenant databases: the routing seam (`databases`), its engines, the short-lived tenant
  logins (`credentials/`), the tenant tables.
- `registry/`: the registry database: its tables, the queries services make, change notices,
  enrolment tokens as registrations spend them.
- `broker/`: RabbitMQ: connecting as a role's user, publishing and settling, acks, the
  coalescing transport, the topology's shape, the management API, the broker users' rights.
- the foundation, imported by all of the above and importing none of them: `settings`, `errors`,
  `names`, `outcomes`, `wire`, `logs`, `metrics`, `backoff`, `durations`, `failures`, `db`,
  `pgadmin`, `hostkeys`, `secretfile`, `shared` and `partitions` (the shared partition's
  tables, and every partition's metadata for the migrations).
"""
