"""Protocol names on the wire: routing keys, AMQP headers, and the headers siloflow adds on the
way. One place, so no service spells them itself (see docs/protocol.md)."""

from __future__ import annotations

from typing import Any

# Agents publish reports with routing key `report.<kind>`; intake binds them all.
REPORT_PREFIX = "report."
REPORT_BINDING = "report.#"
CONTENT_TYPE = "application/json"
# Registration requests; answered through RabbitMQ's direct reply-to pseudo-queue.
REGISTER_KEY = "register"
DIRECT_REPLY_TO = "amq.rabbitmq.reply-to"
# The routing keys an agent may publish at all (its broker user's topic permission): a report of
# any kind, known or not (an unknown kind is dead-lettered with its reason, so a fleet that
# upgrades before the servers loses nothing), and registration.
AGENT_ROUTING_KEYS = r"^(report\.[a-z][a-z0-9_]*|register)$"

# Headers an agent sets.
HOST_ID = "host_id"
SIGNATURE = "signature"  # verified from the enrollment issue on; the seam is `Verifier`

# Headers siloflow adds.
KIND = "x-siloflow-kind"
RECEIVED_AT = "x-siloflow-received-at"  # when intake accepted it (epoch milliseconds)
TENANT = "x-siloflow-tenant"  # set by the router on tenant-queue publishes; never seen by agents
# Dead-letter headers: a stable reason code, human detail, which stage, when.
REASON = "x-siloflow-reason"
DETAIL = "x-siloflow-detail"
STAGE = "x-siloflow-stage"
DEAD_AT = "x-siloflow-dead-at"
# The routing key the message had when it was dead-lettered (replays of invalid reports need the
# agent's `report.<kind>` back).
ROUTING_KEY = "x-siloflow-routing-key"
# Replays are counted by siloflow itself: newer RabbitMQ no longer counts republishes in x-death.
REPLAYS = "x-siloflow-replays"
LAST_REASON = "x-siloflow-last-reason"
# What a dead letter gains, and loses again when it is replayed or moved on.
DEAD_LETTER_HEADERS = (REASON, DETAIL, STAGE, DEAD_AT)
# RabbitMQ's own dead-lettering (delivery limit): why, when it first happened.
FIRST_DEATH_REASON = "x-first-death-reason"
# A delivery whose content header the services could not decode arrives with these instead of its
# own (services/core/broker/frames.py): why, the raw property bytes (the first 64 KiB), and how
# many there were. Any consumer dead-letters or refuses it with reason `undecodable`.
UNDECODABLE = "x-siloflow-undecodable"
RAW_PROPERTIES = "x-siloflow-raw-properties"
RAW_PROPERTIES_BYTES = "x-siloflow-raw-properties-bytes"
UNDECODABLE_HEADERS = (UNDECODABLE, RAW_PROPERTIES, RAW_PROPERTIES_BYTES)
# RabbitMQ's own: quorum queues count redeliveries here.
DELIVERY_COUNT = "x-delivery-count"


def header_text(value: Any) -> str | None:
    """An AMQP header value as text (clients may hand strings over as bytes)."""
    if value is None:
        return None
    if isinstance(value, bytes | bytearray):
        return bytes(value).decode("utf-8", "replace")
    return str(value)


def report_routing_key(kind: str) -> str:
    """The routing key of a report of `kind`."""
    return f"{REPORT_PREFIX}{kind}"
