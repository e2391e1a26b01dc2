"""Re-evaluation across every tenant when the catalog changes (the sweeper's server-wide work):
a new revision is applied as its difference (only hosts with a source whose advisories changed
are matched again, the others recorded as current), a suspended tenant is caught up once it is
active again, and a pass cut short anywhere resumes to the same findings a whole evaluation
gives."""

from __future__ import annotations

import asyncio
import contextlib
import json
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import asyncpg

from services.catalog import store
from services.core.catalog.findings import catch_up
from services.core.catalog.live import changed_sources, load_index
from services.core.catalog.matcher import CatalogIndex, installed_of
from services.core.domain import TenantStatus
from services.ops.tenants import set_tenant_status
from services.sweeper import app as sweeper
from tests.integration.pipeline import Env, bound_host, drain, fetch, publish
from tests.reports import DEBIAN_PACKAGES, packages, report, system_info
from tests.support import pg_base

ROOT = Path(__file__).parents[2]
CATALOG: dict[str, Any] = json.loads(
    (ROOT / "services" / "catalog" / "data" / "debian12-security-fixes.json").read_text()
)
# Sources the first revision leaves out, and the second adds: what a daily update looks like.
ADDED_LATER = ("openssl", "glibc")
T0 = datetime.now(UTC) - timedelta(hours=1)


async def import_document(env: Env, tmp: Path, document: dict[str, Any]) -> int:
    path = tmp / f"feed-{uuid.uuid4().hex}.json"
    path.write_text(json.dumps(document))
    with path.open("rb") as stream:
        done = await store.import_feed(
            env.settings, stream, source=str(path), releases={"bookworm"}
        )
    assert done.current is not None
    return done.current


async def states(env: Env, database: str) -> dict[uuid.UUID, int | None]:
    rows = await fetch(database, "select host_id, catalog_revision from host_findings_state")
    return {r["host_id"]: r["catalog_revision"] for r in rows}


async def open_findings(database: str) -> set[tuple[uuid.UUID, str, str]]:
    rows = await fetch(
        database, "select host_id, package, cve_id from findings where resolved_at is null"
    )
    return {(r["host_id"], r["package"], r["cve_id"]) for r in rows}


def expected(index: CatalogIndex, hosts: list[uuid.UUID]) -> set[tuple[uuid.UUID, str, str]]:
    found = index.match("bookworm", installed_of(DEBIAN_PACKAGES["packages"])).findings
    return {(h, i.package, a.cve_id) for h in hosts for i, a in found}


async def test_a_new_revision_reaches_every_active_tenant_as_its_difference(
    env: Env, tmp_path: Path
) -> None:
    first = {k: v for k, v in CATALOG.items() if k not in ADDED_LATER}
    await import_document(env, tmp_path, first)
    hosts = {env.a.slug: [await bound_host(env, env.a) for _ in range(3)]}
    hosts[env.b.slug] = [await bound_host(env, env.b) for _ in range(2)]
    # One host of acme without the sources the update touches: it must not be matched again.
    spare = await bound_host(env, env.a)
    without = {
        "manager": "dpkg",
        "packages": [
            p for p in DEBIAN_PACKAGES["packages"] if p.get("source", p["name"]) not in ADDED_LATER
        ],
    }
    sent = [
        r
        for h in [*hosts[env.a.slug], *hosts[env.b.slug]]
        for r in (
            report("system_info", h, system_info(), sent_at=T0),
            report("packages", h, packages(), sent_at=T0 + timedelta(seconds=1)),
        )
    ]
    sent += [
        report("system_info", spare, system_info(), sent_at=T0),
        report("packages", spare, without, sent_at=T0 + timedelta(seconds=1)),
    ]
    await publish(env.settings, sent)
    await drain(env.settings, env.slugs)
    revision_1 = await load_index(env.settings)
    assert revision_1 is not None
    assert await open_findings(env.b.db_name) == expected(revision_1, hosts[env.b.slug])

    # globex is suspended when the update lands: it is caught up once active again.
    await set_tenant_status(env.settings, env.b.slug, TenantStatus.SUSPENDED)
    revision_2_id = await import_document(env, tmp_path, CATALOG)
    assert {
        (r, s) for r, s in await changed_sources(env.settings, revision_1.revision, revision_2_id)
    } == {("bookworm", s) for s in ADDED_LATER}
    passed = await sweeper.run(env.settings, burst=True)
    assert passed is not None and passed.catalog_revision == revision_2_id
    acme = passed.caught_up[env.a.slug]
    assert acme.evaluated == 3  # the three hosts with openssl or glibc installed
    assert acme.moved_on >= 1  # the spare one: recorded as current, not matched
    assert env.b.slug not in passed.caught_up
    revision_2 = await load_index(env.settings)
    assert revision_2 is not None
    assert set((await states(env, env.a.db_name)).values()) == {revision_2_id}
    acme_open = await open_findings(env.a.db_name)
    assert {f for f in acme_open if f[0] != spare} == expected(revision_2, hosts[env.a.slug])
    assert set((await states(env, env.b.db_name)).values()) == {revision_1.revision}

    await set_tenant_status(env.settings, env.b.slug, TenantStatus.ACTIVE)
    await sweeper.run(env.settings, burst=True)
    assert set((await states(env, env.b.db_name)).values()) == {revision_2_id}
    assert await open_findings(env.b.db_name) == expected(revision_2, hosts[env.b.slug])


async def test_a_pass_cut_short_resumes_to_what_a_whole_evaluation_gives(
    env: Env, tmp_path: Path
) -> None:
    hosts = [await bound_host(env, env.a) for _ in range(12)]
    await publish(
        env.settings,
        [
            r
            for h in hosts
            for r in (
                report("system_info", h, system_info(), sent_at=T0),
                report("packages", h, packages(), sent_at=T0 + timedelta(seconds=1)),
            )
        ],
    )
    await drain(env.settings, env.slugs)
    # A new revision that changes every record's urgency: every host must be matched again.
    bumped = json.loads(json.dumps(CATALOG))
    for cves in bumped.values():
        for entry in cves.values():
            entry["releases"]["bookworm"]["urgency"] = "high"
    await import_document(env, tmp_path, bumped)
    index = await load_index(env.settings)
    assert index is not None

    conn = await asyncpg.connect(f"{pg_base()}/{env.a.db_name}")
    watcher = await asyncpg.connect(f"{pg_base()}/{env.a.db_name}")
    try:
        task = asyncio.create_task(
            catch_up(conn, index, lambda s, u: changed_sources(env.settings, s, u))
        )
        # Cut it short once the first host is done (a signal, not a time).
        while not await watcher.fetchval(
            "select count(*) from host_findings_state where catalog_revision = $1", index.revision
        ):
            await asyncio.sleep(0.01)
            assert not task.done(), "the pass ended before it could be cut short"
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
    finally:
        await watcher.close()
        await conn.close()
    at_new = await fetch(
        env.a.db_name,
        "select count(*) as n from host_findings_state where catalog_revision = $1",
        index.revision,
    )
    assert at_new[0]["n"] < len(hosts), "the pass was not cut short: nothing tested"
    await sweeper.run(env.settings, burst=True)
    mine = {f for f in await open_findings(env.a.db_name) if f[0] in hosts}
    assert mine == expected(index, hosts)
    urgencies = await fetch(
        env.a.db_name,
        "select distinct urgency from findings where resolved_at is null and host_id = any($1)",
        hosts,
    )
    assert [r["urgency"] for r in urgencies] == ["high"]
