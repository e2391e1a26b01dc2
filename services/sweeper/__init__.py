"""The sweeper service: server-wide background work across every tenant database."""
