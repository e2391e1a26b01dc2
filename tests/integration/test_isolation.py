"""Isolation, property-based: random programs of bindings, moves, revocations, unbindings and
reports across three tenants. Every tenant database must hold exactly the reports of the hosts
bound to it when those reports were routed, and nothing else; every other report is in
dlq.unrouted with the reason the registry gave."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import pytest
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

from services.agent.client import AgentPublisher, build_report
from services.core.broker.users import agent_url
from services.core.outcomes import Reason
from services.core.registry.queries import TenantRecord
from services.ops import bindings as hosts
from services.ops.tenants import create_tenant
from services.router import app as router_app
from services.workers import app as workers_app
from tests.integration.pipeline import Env, committed_ids, dead_letters, identity_of
from tests.reports import heartbeat

HOSTS = 5
TENANTS = 3

# A program: (operation, host index, tenant index); the tenant index matters to `bind` only.
steps = st.lists(
    st.tuples(
        st.sampled_from(["report", "report", "report", "bind", "revoke", "unbind"]),
        st.integers(0, HOSTS - 1),
        st.integers(0, TENANTS - 1),
    ),
    min_size=10,
    max_size=24,
)


@pytest.fixture(scope="module")
async def three(env: Env) -> AsyncIterator[list[TenantRecord]]:
    third = (await create_tenant(env.settings, "initech")).tenant
    yield [env.a, env.b, third]


@dataclass
class Model:
    """What the registry says of each host: (state, tenant index) or absent."""

    state: dict[int, tuple[str, int]] = field(default_factory=dict)
    expected: dict[str, str] = field(default_factory=dict)  # message_id -> slug or reason


@pytest.mark.timeout(300)
@settings(
    max_examples=3,
    deadline=None,
    phases=[Phase.explicit, Phase.generate],  # no shrinking: each try is a broker round trip
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(program=steps)
async def test_each_silo_holds_exactly_its_hosts_reports(
    env: Env, three: list[TenantRecord], program: list[tuple[str, int, int]]
) -> None:
    fleet = [uuid.uuid4() for _ in range(HOSTS)]
    model = Model()
    pending = False

    async def route() -> None:
        """Route what was published under the bindings as they are now."""
        nonlocal pending
        if pending:
            await router_app.run(env.settings, burst=True)
            pending = False

    async with AgentPublisher(agent_url(env.settings), env.settings.namespace) as agent:
        for operation, h, t in program:
            host, current = fleet[h], model.state.get(h)
            if operation == "report":
                report = build_report(
                    "heartbeat", host, heartbeat(), identity=identity_of(env.settings, host)
                )
                await agent.publish(report)
                pending = True
                if current is None:
                    model.expected[report.message_id] = Reason.NO_TENANT_BINDING
                elif current[0] == "revoked":
                    model.expected[report.message_id] = Reason.HOST_REVOKED
                else:
                    model.expected[report.message_id] = three[current[1]].slug
                continue
            await route()  # a binding change applies to reports routed after it
            if operation == "bind":
                await hosts.bind(env.settings, host, three[t].slug, move=True)
                model.state[h] = ("bound", t)
            elif operation == "revoke" and current is not None and current[0] == "bound":
                await hosts.revoke(env.settings, host)
                model.state[h] = ("revoked", current[1])
            elif operation == "unbind" and current is not None:
                await hosts.unbind(env.settings, host)
                del model.state[h]
    await route()
    await workers_app.run(env.settings, tenants={t.slug for t in three}, burst=True)

    ours = set(model.expected)
    for tenant in three:
        held = {str(m) for m in await committed_ids(tenant.db_name)} & ours
        wanted = {m for m, where in model.expected.items() if where == tenant.slug}
        assert held == wanted, (tenant.slug, program)
    letters = {
        letter["message_id"]: letter["headers"]["x-siloflow-reason"]
        for letter in await dead_letters(env.settings, "unrouted")
        if letter["message_id"] in ours
    }
    unrouted = {m: why for m, why in model.expected.items() if why in set(Reason)}
    assert letters == unrouted, program
