"""What the services share, by concern (may import only `schemas` and itself, in this order,
each layer only the ones below it):

- `lifespan`: a service's life (signals, the broker connection and its channels, consuming until
  stopped or drained, health endpoints).
- `silo/`: tenant databases: the routing seam (`databases`), its engines, the short-lived tenant
  logins (`credentials/`), the tenant tables, `reads` (the API's queries) and `audit` (a
  tenant's own trail).
- `registry/`: the registry database: its tables, the queries services make, change notices,
  enrolment tokens as registrations spend them, operators and their tokens, the registry's
  audit trail.
- `broker/`: RabbitMQ: connecting as a role's user, publishing, settling (`settle`, the one
  place a delivery's settlement is carried out), acks, the
  coalescing transport, the topology's shape, the management API, the broker users' rights.
- `catalog/`: the vulnerability catalog as the workers and the sweeper use it (versions, the
  matcher, findings, the live index).
- the foundation, imported by all of the above and importing none of them: `settings`, `errors`,
  `names`, `outcomes`, `wire`, `logs`, `metrics`, `backoff`, `durations`, `failures`, `db`,
  `pgadmin`, `hostkeys`, `secretfile` and `shared` (the shared partition's tables).
- beside the layers: the pure rules `domain` (the closed sets), `routing` (which tenant takes a
  host's reports), `access` (roles and what each permits), `audit` (the audit
  trail's vocabulary), `placing` (where a tenant goes) and `throttle` (slowing token guesses);
  `diagnosis` (a failure explained in one line naming the setting) and `dead_letters` (reading
  and replaying the dead-letter queues, for the CLI and the API).
"""
