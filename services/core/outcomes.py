"""Every way a report can fail, as a stable reason code, with the stage that decides it and the
dead-letter queue it goes to. Dead-letter headers, logs and metrics use these codes."""

from __future__ import annotations

from enum import StrEnum


class Stage(StrEnum):
    INGEST = "ingest"
    ROUTER = "router"
    WORKER = "worker"


class Reason(StrEnum):
    # -- dlq.invalid: the message itself is wrong -------------------------------------------------
    TOO_LARGE = "too-large"
    NOT_UTF8 = "not-utf8"
    NOT_JSON = "not-json"
    UNKNOWN_ROUTING_KEY = "unknown-routing-key"
    UNKNOWN_KIND = "unknown-kind"
    KIND_MISMATCH = "kind-mismatch"
    BAD_CONTENT_TYPE = "bad-content-type"
    BAD_MESSAGE_ID = "bad-message-id"
    BAD_HOST_ID = "bad-host-id"
    HOST_ID_MISMATCH = "host-id-mismatch"
    SCHEMA_VIOLATION = "schema-violation"
    SENT_AT_IN_FUTURE = "sent-at-in-future"
    SENT_AT_TOO_OLD = "sent-at-too-old"
    BAD_SIGNATURE = "bad-signature"
    BAD_REGISTRATION = "bad-registration"  # a registration request that cannot even be answered
    # -- dlq.unrouted: no tenant could take it ----------------------------------------------------
    NO_TENANT_BINDING = "no-tenant-binding"
    HOST_REVOKED = "host-revoked"
    TENANT_UNKNOWN = "tenant-unknown"
    TENANT_SUSPENDED = "tenant-suspended"
    TENANT_NOT_ACTIVE = "tenant-not-active"
    TENANT_NO_PLACEMENT = "tenant-no-placement"
    TENANT_QUEUE_MISSING = "tenant-queue-missing"
    TENANT_DELETED = "tenant-deleted"
    # -- dlq.failed: a worker could not commit it -------------------------------------------------
    COMMIT_REJECTED = "commit-rejected"
    DELIVERY_LIMIT = "delivery-limit"


_UNROUTED = {
    Reason.NO_TENANT_BINDING,
    Reason.HOST_REVOKED,
    Reason.TENANT_UNKNOWN,
    Reason.TENANT_SUSPENDED,
    Reason.TENANT_NOT_ACTIVE,
    Reason.TENANT_NO_PLACEMENT,
    Reason.TENANT_QUEUE_MISSING,
    Reason.TENANT_DELETED,
}
_FAILED = {Reason.COMMIT_REJECTED, Reason.DELIVERY_LIMIT}


def dlq_for(reason: Reason) -> str:
    """Which dead-letter queue (`invalid`, `unrouted`, `failed`) a reason belongs in."""
    if reason in _UNROUTED:
        return "unrouted"
    if reason in _FAILED:
        return "failed"
    return "invalid"
