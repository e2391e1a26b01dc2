"""Short-lived logins to tenant databases: the seam every issuer implements (`seam`), the
leases' timing (`leases`), the logins as PostgreSQL sees them (`logins`), the two issuers
(`builtin`, `openbao`) and the choice between them (`issuers`)."""
