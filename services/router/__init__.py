"""The router service, the one service between agents and tenant queues: `app` (its life),
`consumer` (intake: decode, validate, resolve, forward or dead-letter, ack), `handlers` (the pure
decisions: validation and routing), `directory` (host -> tenant, cached, kept current)."""
