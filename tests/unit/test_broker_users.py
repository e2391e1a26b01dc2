"""The broker users as data: every right is anchored on its own namespace (property-based), the
agent's rights reach nothing but the agents' exchange, passwords parse and are kept 0600, and a
process connects as its role's user only when it knows the password."""

from __future__ import annotations

import re
import stat
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from services.core.broker.users import (
    BrokerRole,
    amqp_url,
    load_passwords,
    management_url,
    parse_passwords,
)
from services.core.diagnosis import public
from services.core.errors import SettingsError
from services.core.names import DLQS, Names
from services.core.settings import load_settings
from services.ops.broker_users import ensure_passwords, rights

namespaces = st.from_regex(r"[a-z][a-z0-9_]{0,15}", fullmatch=True)


def every_name(names: Names) -> list[str]:
    """Every exchange and queue name a deployment creates (tenants: a few slugs)."""
    return [
        names.agents_exchange,
        names.unmatched_exchange,
        names.tenants_exchange,
        names.dead_exchange,
        names.intake_queue,
        names.register_queue,
        names.router_queue,
        *(names.dlq(d) for d in DLQS),
        *(names.tenant_queue(s) for s in ("acme", "a-b", "x9")),
    ]


def patterns(names: Names, role: BrokerRole) -> list[str]:
    granted = rights(names, role)
    return [granted.configure, granted.write, granted.read]


@given(namespaces, namespaces)
def test_no_right_of_one_namespace_matches_a_name_of_another(own: str, other: str) -> None:
    if own == other:
        return
    for role in BrokerRole:
        for pattern in patterns(Names(own), role):
            for name in every_name(Names(other)):
                assert not re.fullmatch(pattern, name), (role, pattern, name)
                assert not re.search(pattern, name), (role, pattern, name)


@pytest.mark.parametrize("role", list(BrokerRole))
def test_no_role_may_write_the_default_exchange_but_ingest(role: BrokerRole) -> None:
    names = Names("siloflow")
    writes_default = re.search(rights(names, role).write, "amq.default") is not None
    assert writes_default is (role is BrokerRole.INGEST)


def test_the_agent_reaches_only_the_agents_exchange_with_protocol_keys() -> None:
    names = Names("siloflow")
    agent = rights(names, BrokerRole.AGENT)
    reachable = [
        n for n in [*every_name(names), "amq.default", "amq.topic"] if re.search(agent.write, n)
    ]
    assert reachable == [names.agents_exchange]
    assert not [
        n for n in every_name(names) if re.search(agent.read, n) or re.search(agent.configure, n)
    ]
    [topic] = agent.topics
    for key in ("report.heartbeat", "report.system_info", "report.new_kind", "register"):
        assert re.search(topic.write, key), key
    for key in (
        "foo",
        "report.",
        "report.Heartbeat",
        "report.a.b",
        "registerx",
        "siloflow.tenant.acme",
        "",
    ):
        assert not re.search(topic.write, key), key


@pytest.mark.parametrize(
    ("role", "reads"),
    [
        (BrokerRole.INGEST, {"siloflow.register"}),
        (BrokerRole.ROUTER, {"siloflow.intake", "siloflow.router"}),
        (BrokerRole.WORKERS, {"siloflow.tenant.acme", "siloflow.tenant.a-b", "siloflow.tenant.x9"}),
        (BrokerRole.DLQ, {"siloflow.dlq.invalid", "siloflow.dlq.unrouted", "siloflow.dlq.failed"}),
        (BrokerRole.STATUS, set()),
        (BrokerRole.AGENT, set()),
    ],
)
def test_what_each_role_may_consume(role: BrokerRole, reads: set[str]) -> None:
    names = Names("siloflow")
    queues = [n for n in every_name(names) if ".dlq." in n or n.count(".") >= 1]
    assert {q for q in queues if re.search(rights(names, role).read, q)} - {
        names.agents_exchange,
        names.unmatched_exchange,
        names.tenants_exchange,
        names.dead_exchange,
    } == reads


def test_passwords_parse_and_refuse_what_is_wrong() -> None:
    assert parse_passwords("router:a,workers:b:c") == {
        BrokerRole.ROUTER: "a",
        BrokerRole.WORKERS: "b:c",
    }
    with pytest.raises(SettingsError, match="unknown role 'routr'"):
        parse_passwords("routr:x")
    with pytest.raises(SettingsError, match="expected <role>:<password>"):
        parse_passwords("router")


def test_bootstrap_writes_passwords_once_0600_and_keeps_them(tmp_path: Path) -> None:
    settings = load_settings(namespace="t1", state_dir=tmp_path)
    first, written = ensure_passwords(settings)
    assert written and set(first) == set(BrokerRole)
    mode = stat.S_IMODE(settings.broker_users_file.stat().st_mode)
    assert mode == 0o600
    again, written_again = ensure_passwords(settings)
    assert (again, written_again) == (first, False)
    assert load_passwords(settings) == first


def test_bootstrap_with_given_passwords_needs_every_role() -> None:
    settings = load_settings(namespace="t1", broker_passwords="router:x")
    with pytest.raises(SettingsError, match="missing: agent, ingest, workers"):
        ensure_passwords(settings)


def test_a_process_connects_as_its_role_and_never_falls_back_to_the_administrator(
    tmp_path: Path,
) -> None:
    base = "amqp://admin:secret@broker.example:5673/prod"
    with_router = load_settings(
        namespace="t1", amqp_url=base, state_dir=tmp_path, broker_passwords="router:p%w/d"
    )
    assert amqp_url(with_router, BrokerRole.ROUTER) == (
        "amqp://t1-router:p%25w%2Fd@broker.example:5673/prod"
    )
    assert management_url(with_router, BrokerRole.ROUTER).startswith(
        "http://t1-router:p%25w%2Fd@broker.example:15672"
    )
    # No password for this role: refused, naming the user and where its password would be
    # (never the administrator's URL, which holds every right); the administrator is None's.
    with pytest.raises(SettingsError, match=r"'t1-workers' \(role workers\).*broker-users.json"):
        amqp_url(with_router, BrokerRole.WORKERS)
    with pytest.raises(SettingsError, match="SILOFLOW_BROKER_PASSWORDS=status:<password>"):
        management_url(with_router, BrokerRole.STATUS)
    assert amqp_url(with_router, None) == base
    assert public(amqp_url(with_router, BrokerRole.ROUTER)) == (
        "amqp://t1-router:***@broker.example:5673/prod"
    )
