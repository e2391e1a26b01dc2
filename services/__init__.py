"""siloflow, read top-down (each layer may import only the ones below it; `make lint` checks it
with import-linter, `.importlinter`):

- `cli`: the `siloflow` command, over everything below.
- `demo`, `bench`: the main job watched live; the benchmark and its baseline.
- `agent`: the reference agent client, enrolment at fleet scale, the fleet simulator.
- `ops`: what operator commands do (bootstrap, migrate, tenants, tokens, host bindings, dead
  letters, status, the broker's topology and users); no service imports it.
- `ingest`, `router`, `workers`, `sweeper`, `catalog`, `api`: the services, each independent
  of the others.
- `core`: what the services share.
- `schemas` (a package of its own): the wire messages.
"""
