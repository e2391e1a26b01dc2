"""The registration consumer: decode the request, register, reply through direct reply-to,
then ack. Database trouble holds the request and retries (the agent may retry too: same
message_id, same answer). A source presenting bad tokens is throttled (throttle.py); its source
is the channel of the direct reply-to address the broker assigned (handlers.reply_source). A
request whose reply_to is anything else is answered nowhere: ingest may write to the default
exchange, and must not be the agents' way into a queue they cannot write to."""

from __future__ import annotations

import asyncio
import json
import math
import time
import uuid
from collections import OrderedDict

import aio_pika
import structlog
from aio_pika.abc import AbstractChannel, AbstractIncomingMessage
from pydantic import ValidationError

from schemas.register import RegisterAccepted, RegisterRejected, RegisterRequest
from services.core import metrics, wire
from services.core.broker.publish import DeadLetters
from services.core.broker.settle import ACK, REQUEUE, Settlement, ToDeadLetters, settles
from services.core.diagnosis import Outage
from services.core.failures import classify
from services.core.lifespan import InFlight, Stopped, retried_until_stopped
from services.core.logs import bounded
from services.core.outcomes import Failure, Reason
from services.core.throttle import Throttle, ThrottleLimits
from services.ingest.handlers import reply_source
from services.ingest.registrar import Registrar

log = structlog.get_logger(__name__)

MAX_REQUEST_BYTES = 16 * 1024
# Answers that mean the requester does not hold a good token: each counts against its source.
GUESSES = frozenset(
    {"token-unknown", "token-expired", "token-exhausted", "token-revoked", "invalid"}
)
# reply_to values already logged as answered nowhere (each is logged once; the oldest forgotten).
MAX_REMEMBERED_REPLY_TOS = 10_000


class RegistrationConsumer:
    """The register queue's consumer: a request in, a reply out, then the ack."""

    def __init__(
        self,
        publish_channel: AbstractChannel,
        registrar: Registrar,
        dead_letters: DeadLetters,
        *,
        stop: asyncio.Event,
        retry_max_s: float,
        outage: Outage,
        throttle: ThrottleLimits | None = None,
    ) -> None:
        self._throttle = Throttle(throttle or ThrottleLimits(), time.monotonic())
        self._channel = publish_channel
        self._registrar = registrar
        self.dead_letters = dead_letters
        self._stop = stop
        self._retry_max_s = retry_max_s
        self._outage = outage
        self._unanswerable: OrderedDict[str, None] = OrderedDict()
        self.in_flight = InFlight()

    # A registration's message_id is never logged: with its token it is a claim to a host key.
    @settles("registrar", identify=False)
    async def on_message(self, message: AbstractIncomingMessage) -> Settlement:
        """Answer one registration request (or dead-letter one that cannot be answered)."""
        undecodable = (message.headers or {}).get(wire.UNDECODABLE)
        if undecodable is not None:
            metrics.labelled(metrics.REGISTRATIONS_UNANSWERED, "undecodable").inc()
            return ToDeadLetters(
                Reason.UNDECODABLE,
                "registration request whose AMQP properties could not be decoded "
                f"({wire.header_text(undecodable)})",
            )
        if not message.reply_to:
            return ToDeadLetters(
                Reason.BAD_REGISTRATION, "registration request without reply_to: nobody to answer"
            )
        source = reply_source(message.reply_to)
        if source is None:
            self._answered_nowhere(message.reply_to)
            return ACK
        wait_s = self._throttle.wait_s(source, time.monotonic())
        if wait_s > 0:
            retry_after_s = math.ceil(wait_s * 10) / 10  # never "retry after 0"
            await self._reply(
                message, RegisterRejected(reason="rate-limited", retry_after_s=retry_after_s)
            )
            log.warning("registration.rate_limited", source=source, retry_after_s=wait_s)
            return ACK
        try:
            message_id = uuid.UUID(message.message_id or "")
            if len(message.body) > MAX_REQUEST_BYTES:
                raise ValueError("request too large")
            request = RegisterRequest.model_validate_json(message.body)
        except (ValueError, ValidationError) as exc:
            log.warning("registration.invalid", error=str(exc).splitlines()[0])
            await self._reply(message, RegisterRejected(reason="invalid"))
            self._count(source, "invalid")
            return ACK
        answer = await self._register(message_id, request)
        if answer is None:  # stopping while the databases are down: hand it back
            return REQUEUE
        await self._reply(message, answer)
        self._count(source, answer.reason if isinstance(answer, RegisterRejected) else None)
        if isinstance(answer, RegisterAccepted):
            log.info(
                "registration.accepted", host_id=str(answer.host_id), hostname=request.hostname
            )
        else:
            log.warning("registration.rejected", reason=answer.reason, hostname=request.hostname)
        return ACK

    def _answered_nowhere(self, reply_to: str) -> None:
        """Count a request whose reply_to is not a direct reply-to address; log each such
        address once (a flood of them logs a bounded number of lines)."""
        metrics.labelled(metrics.REGISTRATIONS_UNANSWERED, "not-direct-reply-to").inc()
        if reply_to in self._unanswerable:
            return
        self._unanswerable[reply_to] = None
        while len(self._unanswerable) > MAX_REMEMBERED_REPLY_TOS:
            self._unanswerable.popitem(last=False)
        log.warning(
            "registration.answered_nowhere",
            reply_to=bounded(reply_to),
            why="reply_to is not the requester's own direct reply-to address "
            f"({wire.DIRECT_REPLY_TO}): nothing is published for it",
        )

    def _count(self, source: str, rejection: str | None) -> None:
        """A good token clears its source's record; a guess counts against it."""
        if rejection is None:
            self._throttle.succeeded(source)
        elif rejection in GUESSES:
            failures = self._throttle.failed(source, time.monotonic())
            if failures == self._throttle.limits.free_failures:
                log.warning(
                    "registration.source_throttled",
                    source=source,
                    failures=failures,
                    first_wait_s=self._throttle.penalty_s(failures),
                )

    async def _register(
        self, message_id: uuid.UUID, request: RegisterRequest
    ) -> RegisterAccepted | RegisterRejected | None:
        answer = await retried_until_stopped(
            lambda: self._registrar.register(message_id, request),
            retryable=lambda exc, _: classify(exc) is Failure.TRANSIENT,
            outage=self._outage,
            stop=self._stop,
            retry_max_s=self._retry_max_s,
        )
        return None if isinstance(answer, Stopped) else answer

    async def _reply(
        self, request: AbstractIncomingMessage, answer: RegisterAccepted | RegisterRejected
    ) -> None:
        reply = aio_pika.Message(
            json.dumps(answer.model_dump(mode="json")).encode(),
            content_type=wire.CONTENT_TYPE,
            correlation_id=request.correlation_id,
            message_id=str(uuid.uuid4()),
        )
        # Only ever a direct reply-to address (`reply_source` checked it): no queue can bear an
        # `amq.` name, so this reaches the requester's channel or nothing. Not mandatory: an
        # agent that gave up has no reply channel any more, and that is its business (it
        # retries with the same message_id and gets the same answer).
        assert reply_source(request.reply_to) is not None
        await self._channel.default_exchange.publish(
            reply, routing_key=request.reply_to or "", mandatory=False
        )
