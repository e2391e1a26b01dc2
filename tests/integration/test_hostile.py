"""Hostile input through the real router and the real signature verifier: batches of arbitrary
deliveries (the unit suite's strategy), each signed with its host's real key or carrying a
hostile signature header, published to the broker; the router never crashes, and every one ends
in exactly one dead-letter queue: `invalid` with the reason the pure decision gives, or
`unrouted` when it was a valid, correctly signed report from a host nobody bound. None reaches a
silo.

Deliveries are published as agents publish, with the agent user; those whose routing key the
agent user may not use at all (the broker refuses them: test_broker_rights.py) are published with
the deployment's administrator URL, as a dead letter moved back by hand would arrive.
"""

from __future__ import annotations

import dataclasses
import re
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import aio_pika
import httpx
import pytest
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

from services.agent.client import AgentPublisher
from services.core.broker.users import agent_url
from services.core.hostkeys import load_keyring
from services.core.names import Names
from services.core.outcomes import Reason
from services.core.wire import AGENT_ROUTING_KEYS
from services.ingest import app as ingest_app
from services.router import app as router_app
from services.router.handlers import Accepted, Delivery, Limits, SignatureVerifier, validate
from tests.integration.pipeline import Env, committed_ids, dead_letters, sign_raw
from tests.support import MANAGEMENT, MANAGEMENT_AUTH
from tests.unit.test_hostile_input import hostile_signatures, unsigned_deliveries

TAG = "x-test-id"


def message_of(delivery: Delivery, tag: str) -> aio_pika.Message:
    # The client library cannot send a bytes header value (pamqp refuses it): send its text.
    headers = {
        k: v.decode("latin-1") if isinstance(v, bytes) else v for k, v in delivery.headers.items()
    }
    return aio_pika.Message(
        delivery.body,
        message_id=delivery.message_id,
        content_type=delivery.content_type,
        type=delivery.type,
        headers={**headers, TAG: tag},
        delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
    )


def as_delivered(delivery: Delivery) -> Delivery:
    """What the router receives for `delivery`: the wire drops an empty content type or type (pamqp
    sends no property for an empty string), and `message_of` sends bytes headers as text."""
    return dataclasses.replace(
        delivery,
        content_type=delivery.content_type or None,
        type=delivery.type or None,
        headers={
            k: v.decode("latin-1") if isinstance(v, bytes) else v
            for k, v in delivery.headers.items()
        },
    )


def signable(delivery: Delivery) -> bool:
    try:
        uuid.UUID(str(delivery.headers.get("host_id")))
    except ValueError:
        return False
    return isinstance(delivery.headers.get("host_id"), str) and bool(delivery.message_id)


SIGNED = object()  # instead of a hostile signature: the delivery is signed by its host


@st.composite
def deliveries(draw: st.DrawFn) -> tuple[Delivery, object]:
    """A delivery, and the hostile signature header it carries (any value, None included), or
    SIGNED when its host signs it for real."""
    delivery = draw(unsigned_deliveries())
    if signable(delivery) and draw(st.booleans()):
        return delivery, SIGNED
    return delivery, draw(hostile_signatures)


async def purge(env: Env, *queues: str) -> None:
    async with httpx.AsyncClient(base_url=f"{MANAGEMENT}/api", auth=MANAGEMENT_AUTH) as api:
        for queue in queues:
            response = await api.delete(f"/queues/{env.settings.namespace}/{queue}/contents")
            response.raise_for_status()


def through_the_broker(examples: int) -> Any:
    """Hypothesis settings for examples that each go through the real broker: no deadline, no
    shrinking (each try is a broker round trip), the fixtures shared by every example."""
    return settings(
        max_examples=examples,
        deadline=None,
        phases=[Phase.explicit, Phase.generate],
        suppress_health_check=[
            HealthCheck.too_slow,
            HealthCheck.data_too_large,
            HealthCheck.function_scoped_fixture,
        ],
    )


@pytest.mark.timeout(300)
@through_the_broker(4)
@given(batch=st.lists(deliveries(), min_size=25, max_size=25))
async def test_the_router_answers_every_hostile_delivery(
    env: Env, batch: list[tuple[Delivery, object]]
) -> None:
    names = Names(env.settings.namespace)
    await purge(env, names.intake_queue, names.dlq("invalid"), names.dlq("unrouted"))
    run = uuid.uuid4().hex[:8]  # tags of this example only
    now = datetime.now(UTC)
    limits = Limits(
        max_bytes=env.settings.max_report_bytes,
        max_clock_skew=timedelta(seconds=env.settings.max_clock_skew_s),
        max_age=timedelta(seconds=env.settings.max_report_age_s),
    )
    verifier = SignatureVerifier(load_keyring(env.settings))
    expected: dict[str, str] = {}  # tag -> "invalid" or "unrouted"
    async with (
        AgentPublisher(agent_url(env.settings), env.settings.namespace) as agent,
        AgentPublisher(env.settings.amqp_url, env.settings.namespace) as administrator,
    ):
        for i, (delivery, signature) in enumerate(batch):
            tag = f"{run}-{i}"
            message = message_of(delivery, tag)
            if signature is SIGNED:
                sign_raw(env.settings, message)  # authentic: only the hostility differs
            else:
                text = signature.decode("latin-1") if isinstance(signature, bytes) else signature
                message.headers = {**(message.headers or {}), "signature": text}
            # The oracle: the router's pure decision with the real verifier, on what is delivered.
            # aiormq fills in a missing message_id, so those are left to the broker's view.
            if delivery.message_id:
                sent = dataclasses.replace(delivery, headers=dict(message.headers or {}))
                outcome = validate(as_delivered(sent), now=now, limits=limits, verifier=verifier)
                expected[tag] = "unrouted" if isinstance(outcome, Accepted) else "invalid"
            allowed = re.fullmatch(AGENT_ROUTING_KEYS, delivery.routing_key) is not None
            publisher = agent if allowed else administrator
            await publisher.publish_raw(delivery.routing_key, message)

    await router_app.run(env.settings, burst=True)  # returns: it did not crash
    await ingest_app.run(env.settings, burst=True)  # what the `register` key took there

    where: dict[str, list[str]] = {}
    for dlq in ("invalid", "unrouted"):
        for letter in await dead_letters(env.settings, dlq):
            headers = letter["headers"]
            where.setdefault(str(headers.get(TAG)), []).append(dlq)
            assert Reason(headers["x-siloflow-reason"])  # a known reason, with its detail
            assert headers["x-siloflow-detail"]
    for i in range(len(batch)):
        tag = f"{run}-{i}"
        assert len(where.get(tag, [])) == 1, f"delivery {tag} ended in {where.get(tag)}"
        if tag in expected:
            assert where[tag] == [expected[tag]], (batch[i], where[tag])
    for record in (env.a, env.b):
        assert not await committed_ids(record.db_name)
