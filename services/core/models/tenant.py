"""The tenant partition: unprefixed tables, one copy in each tenant's own database (its silo).
`host_id` values are the registry's ids, kept without a foreign key across the partition."""

from __future__ import annotations

from sqlalchemy import Column, DateTime, Index, MetaData, Table, Text, Uuid, func

metadata = MetaData()

hosts = Table(
    "hosts",
    metadata,
    Column("id", Uuid, primary_key=True),
    Column("hostname", Text, nullable=True),
    Column("fqdn", Text, nullable=True),
    Column("os_name", Text, nullable=True),
    Column("os_version", Text, nullable=True),
    Column("kernel", Text, nullable=True),
    Column("arch", Text, nullable=True),
    Column("status", Text, nullable=False, server_default="unknown"),
    Column("first_seen_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    Column("last_seen_at", DateTime(timezone=True), nullable=True),
)

# One row per committed report: its message_id primary key is what makes redelivery harmless.
agent_messages = Table(
    "agent_messages",
    metadata,
    Column("message_id", Uuid, primary_key=True),
    Column("host_id", Uuid, nullable=False),
    Column("kind", Text, nullable=False),
    Column("sent_at", DateTime(timezone=True), nullable=False),
    Column("received_at", DateTime(timezone=True), nullable=True),
    Column("committed_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    Index("agent_messages_host_kind_sent", "host_id", "kind", "sent_at"),
    Index("agent_messages_committed_at", "committed_at"),
)
