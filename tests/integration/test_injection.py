"""Injection: tenant slugs, hostnames, package names and rule ids carrying quotes, semicolons,
SQL, NUL bytes and unicode are stored verbatim or refused with a clear error; never
interpreted. A fixed list of the classic attacks, then any text at all (hypothesis)."""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

from services.core.errors import InvalidArgument
from services.core.registry.queries import TenantRecord
from services.ops.tenants import create_tenant
from tests.integration.pipeline import (
    Env,
    bound_host,
    dead_letters,
    drain,
    fetch,
    publish,
)
from tests.reports import compliance, packages, report, system_info
from tests.support import admin_fetch, invoke_cli

HOSTILE = [
    "x'; drop table hosts; --",
    'quote" and \\ backslash',
    "semi;colon) union select * from agent_messages --",
    "$1 $$dollar$$ %s %(name)s {0}",
    "ünïcödé 名前 🚀 \u202eevil",
]


@pytest.mark.parametrize(
    "slug",
    ["acme'; drop database x; --", 'a"b', "a;b", "a\x00b", "ünï", "Acme", "a b", "-a"],
)
async def test_hostile_slugs_are_refused_and_change_nothing(env: Env, slug: str) -> None:
    before = await admin_fetch("select datname from pg_database order by 1")
    with pytest.raises(InvalidArgument, match="invalid tenant slug"):
        await create_tenant(env.settings, slug)
    result = await invoke_cli(["tenant", "create", "--", slug], env.settings)
    assert result.exit_code != 0
    assert "invalid tenant slug" in result.output
    assert await admin_fetch("select datname from pg_database order by 1") == before


async def _stored(tenant: TenantRecord, query: str) -> list[str]:
    return [r[0] for r in await fetch(tenant.db_name, query)]


async def test_hostile_text_is_stored_verbatim(env: Env) -> None:
    host = await bound_host(env, env.a)
    listing = packages(3)
    for entry, name in zip(listing["packages"], HOSTILE, strict=False):
        entry["name"] = name
    results = compliance(total=len(HOSTILE))
    for result, rule in zip(results["results"], HOSTILE, strict=True):
        result["rule_id"] = rule
    sent = [
        report("system_info", host, system_info(hostname=HOSTILE[0] + HOSTILE[4])),
        report("packages", host, listing),
        report("compliance", host, results),
    ]
    await publish(env.settings, sent)
    await drain(env.settings, env.slugs)

    assert await _stored(env.a, f"select hostname from hosts where id = '{host}'") == [
        HOSTILE[0] + HOSTILE[4]
    ]
    names = await _stored(env.a, f"select name from host_packages where host_id = '{host}'")
    assert set(HOSTILE[:3]) <= set(names)
    rules = await _stored(env.a, f"select rule_id from compliance_results where host_id = '{host}'")
    assert sorted(rules) == sorted(HOSTILE)
    # Nothing was interpreted: every table is still there, and the other tenant got nothing.
    assert await _stored(env.a, "select count(*)::text from agent_messages") != ["0"]
    assert await _stored(env.b, f"select count(*)::text from hosts where id = '{host}'") == ["0"]


@pytest.mark.parametrize("field", ["hostname", "package", "rule_id"])
async def test_nul_bytes_are_refused_with_a_reason(env: Env, field: str) -> None:
    host = await bound_host(env, env.a)
    evil = "before\x00after"
    if field == "hostname":
        sent = report("system_info", host, system_info(hostname=evil))
    elif field == "package":
        listing = packages(2)
        listing["packages"][0]["name"] = evil
        sent = report("packages", host, listing)
    else:
        results = compliance(total=2)
        results["results"][0]["rule_id"] = evil
        sent = report("compliance", host, results)
    await publish(env.settings, [sent])
    await drain(env.settings, env.slugs)
    letters = {d["message_id"]: d["headers"] for d in await dead_letters(env.settings, "invalid")}
    assert letters[sent.message_id]["x-siloflow-reason"] == "schema-violation"
    assert "pattern" in letters[sent.message_id]["x-siloflow-detail"]
    assert not await fetch(
        env.a.db_name, "select 1 from agent_messages where message_id = $1::uuid", sent.message_id
    )


# Any text PostgreSQL can hold (no NUL; surrogates cannot travel as UTF-8), with the characters
# that mean something to SQL, to shells and to format strings over-represented.
SQLISH = st.sampled_from(["'", '"', ";", "--", "/*", "*/", "\\", "$1", "$$", "%s", "{0}", "\u202e"])
TEXTS = (
    st.lists(
        st.one_of(
            st.text(
                alphabet=st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00")
            ),
            SQLISH,
        ),
        min_size=1,
        max_size=8,
    )
    .map("".join)
    .filter(lambda t: 0 < len(t) <= 255)
)


@pytest.mark.timeout(300)
@settings(
    max_examples=5,
    deadline=None,
    phases=[Phase.explicit, Phase.generate],  # no shrinking: each try is a pipeline round trip
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
@given(names=st.lists(TEXTS, min_size=6, max_size=6, unique=True))
async def test_any_text_is_stored_verbatim_property_based(env: Env, names: list[str]) -> None:
    """Hostnames, package names and rule ids drawn at random (SQL and format characters
    favoured) come back from the silo byte for byte: every statement is parameterised or COPY."""
    host = await bound_host(env, env.a)
    listing = packages(3)
    for entry, name in zip(listing["packages"], names[:3], strict=True):
        entry["name"] = name
    results = compliance(total=2)
    for result, rule in zip(results["results"], names[3:5], strict=True):
        result["rule_id"] = rule
    await publish(
        env.settings,
        [
            report("system_info", host, system_info(hostname=names[5])),
            report("packages", host, listing),
            report("compliance", host, results),
        ],
    )
    await drain(env.settings, env.slugs)
    rows = await fetch(env.a.db_name, "select hostname from hosts where id = $1", host)
    assert [r["hostname"] for r in rows] == [names[5]]
    stored = await fetch(env.a.db_name, "select name from host_packages where host_id = $1", host)
    assert {r["name"] for r in stored} == set(names[:3])
    rules = await fetch(
        env.a.db_name, "select rule_id from compliance_results where host_id = $1", host
    )
    assert sorted(r["rule_id"] for r in rules) == sorted(names[3:5])
