"""Every outcome siloflow names, as closed sets: the stages that decide a report's fate, the
dead-letter queues, every reason a report can fail (each in exactly one dead-letter queue, by
construction: the queue is part of the reason's definition), and what a failure is (wait it out,
or the data's fault). Dead-letter headers, logs and metrics use these codes."""

from __future__ import annotations

from enum import StrEnum


class Stage(StrEnum):
    """Who decided a dead letter (its `x-siloflow-stage` header)."""

    INGEST = "ingest"  # a registration request that cannot be answered
    ROUTER = "router"  # every invalid or unroutable report
    WORKER = "worker"  # a report its tenant's database refused


class DeadLetterQueue(StrEnum):
    """The three dead-letter queues, by what went wrong (`<ns>.dlq.<name>`)."""

    INVALID = "invalid"  # the message itself is wrong
    UNROUTED = "unrouted"  # no tenant could take it
    FAILED = "failed"  # a worker could not commit it


class Reason(StrEnum):
    """Why a report was dead-lettered (its `x-siloflow-reason` header). Each member is defined
    with its queue, `Reason.X.dlq`: a reason with no queue does not parse."""

    dlq: DeadLetterQueue

    def __new__(cls, value: str, dlq: DeadLetterQueue) -> Reason:
        """A reason and its queue (how each member below is made)."""
        member = str.__new__(cls, value)
        member._value_ = value
        member.dlq = dlq
        return member

    # -- dlq.invalid: the message itself is wrong -------------------------------------------------
    # AMQP properties the client library cannot decode (services/core/broker/frames.py)
    UNDECODABLE = "undecodable", DeadLetterQueue.INVALID
    TOO_LARGE = "too-large", DeadLetterQueue.INVALID
    NOT_UTF8 = "not-utf8", DeadLetterQueue.INVALID
    NOT_JSON = "not-json", DeadLetterQueue.INVALID
    UNKNOWN_ROUTING_KEY = "unknown-routing-key", DeadLetterQueue.INVALID
    UNKNOWN_KIND = "unknown-kind", DeadLetterQueue.INVALID
    KIND_MISMATCH = "kind-mismatch", DeadLetterQueue.INVALID
    BAD_CONTENT_TYPE = "bad-content-type", DeadLetterQueue.INVALID
    BAD_MESSAGE_ID = "bad-message-id", DeadLetterQueue.INVALID
    BAD_HOST_ID = "bad-host-id", DeadLetterQueue.INVALID
    HOST_ID_MISMATCH = "host-id-mismatch", DeadLetterQueue.INVALID
    SCHEMA_VIOLATION = "schema-violation", DeadLetterQueue.INVALID
    SENT_AT_IN_FUTURE = "sent-at-in-future", DeadLetterQueue.INVALID
    SENT_AT_TOO_OLD = "sent-at-too-old", DeadLetterQueue.INVALID
    BAD_SIGNATURE = "bad-signature", DeadLetterQueue.INVALID
    # a registration request that cannot even be answered (no reply_to)
    BAD_REGISTRATION = "bad-registration", DeadLetterQueue.INVALID
    # -- dlq.unrouted: no tenant could take it ----------------------------------------------------
    NO_TENANT_BINDING = "no-tenant-binding", DeadLetterQueue.UNROUTED
    HOST_REVOKED = "host-revoked", DeadLetterQueue.UNROUTED
    TENANT_UNKNOWN = "tenant-unknown", DeadLetterQueue.UNROUTED
    TENANT_SUSPENDED = "tenant-suspended", DeadLetterQueue.UNROUTED
    TENANT_NOT_ACTIVE = "tenant-not-active", DeadLetterQueue.UNROUTED
    TENANT_NO_PLACEMENT = "tenant-no-placement", DeadLetterQueue.UNROUTED
    TENANT_QUEUE_MISSING = "tenant-queue-missing", DeadLetterQueue.UNROUTED
    TENANT_DELETED = "tenant-deleted", DeadLetterQueue.UNROUTED
    # -- dlq.failed: a worker could not commit it -------------------------------------------------
    COMMIT_REJECTED = "commit-rejected", DeadLetterQueue.FAILED
    DELIVERY_LIMIT = "delivery-limit", DeadLetterQueue.FAILED


class Failure(StrEnum):
    """What a failed database write means (`services.core.failures.classify`)."""

    TRANSIENT = "transient"  # the database or a login is not there now: wait and retry
    REJECTED = "rejected"  # the data can never commit: dead-letter it
    UNKNOWN = "unknown"  # neither is known: retry a few times, then treat it as rejected
