"""The workers service: tenant-pinned commits. `app` (a worker process and its tenants),
`consumer` (a tenant's batches), `handlers` (pure: reading a report, the batch rule, rows),
`store` (the batch's SQL and the writer of every kind), `assignment` (which shard owns a tenant)."""
