"""The control-plane HTTP API (`siloflow run api`): operators authenticate with their API tokens;
what they may see and do follows their grants; a tenant's data is served only from its silo."""
