"""RabbitMQ, as the services use it: connecting as a role's broker user (`connection`,
`users`), publishing confirmed and settling (`publish`, `acks`), a loop turn's frames in one
write (`transport`), the topology's shape (`topology`) and the management API (`management`).
May import the core's foundation modules, nothing else of core."""
