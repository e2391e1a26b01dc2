"""The vulnerability catalog at work, on the real broker and databases: the real bookworm catalog
imported into the shared partition (once: the same data again makes no revision), the real
package snapshot matched in the worker in the transaction that commits it, findings in each
tenant's own silo only, resolved by an upgrade and never reopened by an older snapshot, a host
with no known release visible as such and evaluated once its release is known, and bad feeds
refused by name with the revision in force kept."""

from __future__ import annotations

import copy
import json
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import pytest

from services.catalog import store
from services.core.catalog.findings import evaluate
from services.core.catalog.live import load_index
from services.core.catalog.matcher import CatalogIndex, installed_of
from services.core.catalog.versions import compare
from tests.integration.apis import serving
from tests.integration.pipeline import PG, Env, bound_host, drain, fetch, publish
from tests.reports import DEBIAN_PACKAGES, packages, report, system_info
from tests.support import invoke_cli

ROOT = Path(__file__).parents[2]
FEED = ROOT / "services" / "catalog" / "data" / "debian12-security-fixes.json"
T0 = datetime.now(UTC) - timedelta(hours=1)


@pytest.fixture(scope="module")
async def imported(env: Env) -> CatalogIndex:
    """The real bookworm catalog, imported once for the module's deployment."""
    done = await invoke_cli(
        ["catalog", "import", str(FEED), "--release", "bookworm", "--json"], env.settings
    )
    assert done.exit_code == 0, done.output
    document = json.loads(done.output)
    assert document["revision"] is not None and document["advisories"] == 6024
    index = await load_index(env.settings)
    assert index is not None
    return index


async def reporting_host(env: Env) -> uuid.UUID:
    """A host of acme that said it runs bookworm, then sent the real snapshot (committed)."""
    host = await bound_host(env, env.a)
    await publish(
        env.settings,
        [
            report("system_info", host, system_info(), sent_at=T0),
            report("packages", host, packages(), sent_at=T0 + timedelta(seconds=1)),
        ],
    )
    await drain(env.settings, env.slugs)
    return host


async def open_findings(
    env: Env, host: uuid.UUID, database: str | None = None
) -> set[tuple[str, str]]:
    rows = await fetch(
        database or env.a.db_name,
        "select package, cve_id from findings where host_id = $1 and resolved_at is null",
        host,
    )
    return {(r["package"], r["cve_id"]) for r in rows}


def expected(index: CatalogIndex, entries: list[dict[str, Any]]) -> set[tuple[str, str]]:
    return {
        (i.package, a.cve_id) for i, a in index.match("bookworm", installed_of(entries)).findings
    }


async def test_importing_the_same_catalog_again_makes_no_revision(
    env: Env, imported: CatalogIndex
) -> None:
    again = await invoke_cli(
        ["catalog", "import", str(FEED), "--release", "bookworm"], env.settings
    )
    assert again.exit_code == 0, again.output
    assert "no change" in again.output and "no revision made" in again.output
    [latest, *_] = await store.revisions(env.settings)
    assert latest.id == imported.revision
    shown = await invoke_cli(["catalog", "status", "--json"], env.settings)
    assert json.loads(shown.output)["revision"] == imported.revision


async def test_a_snapshot_is_matched_as_it_commits_and_only_in_its_tenants_silo(
    env: Env, imported: CatalogIndex
) -> None:
    host = await reporting_host(env)
    want = expected(imported, DEBIAN_PACKAGES["packages"])
    assert len(want) > 50
    assert await open_findings(env, host) == want
    assert await fetch(env.b.db_name, "select * from findings") == []  # the other silo: nothing

    listed = await invoke_cli(
        ["findings", "--tenant", env.a.slug, "--host", str(host), "--json"], env.settings
    )
    assert listed.exit_code == 0, listed.output
    document = json.loads(listed.stdout)
    assert {(f["package"], f["cve_id"]) for f in document} == want
    fields = {
        "host_id",
        "package",
        "version",
        "source",
        "source_version",
        "cve_id",
        "fixed_version",
        "status",
        "urgency",
        "first_seen",
        "resolved_at",
    }
    assert fields <= set(document[0])
    assert {f["status"] for f in document} == {"open"}


async def test_a_package_listed_for_two_architectures_opens_each_finding_once(
    env: Env, imported: CatalogIndex
) -> None:
    # A first evaluation writes its findings straight from the match; a multi-arch host lists
    # a package name twice, and the open-finding index allows one per (package, CVE).
    snapshot = packages()
    affected = next(p for p in snapshot["packages"] if expected(imported, [p]))
    snapshot["packages"].append({**affected, "arch": "i386"})
    host = await bound_host(env, env.a)
    await publish(
        env.settings,
        [
            report("system_info", host, system_info(), sent_at=T0),
            report("packages", host, snapshot, sent_at=T0 + timedelta(seconds=1)),
        ],
    )
    await drain(env.settings, env.slugs)
    rows = await fetch(
        env.a.db_name,
        "select package, cve_id, count(*) as n from findings where host_id = $1 "
        "group by package, cve_id",
        host,
    )
    assert {(r["package"], r["cve_id"]) for r in rows} == expected(
        imported, DEBIAN_PACKAGES["packages"]
    )
    assert {r["n"] for r in rows} == {1}
    assert any(r["package"] == affected["name"] for r in rows)


async def test_an_upgrade_resolves_and_an_older_snapshot_never_reopens(
    env: Env, imported: CatalogIndex
) -> None:
    host = await bound_host(env, env.a)
    first = report("packages", host, packages(), sent_at=T0 + timedelta(seconds=1))
    await publish(env.settings, [report("system_info", host, system_info(), sent_at=T0), first])
    await drain(env.settings, env.slugs)
    before = await open_findings(env, host)

    # Upgrade one affected package's source to the highest fixed version of its findings.
    rows = await fetch(
        env.a.db_name,
        "select package, fixed_version from findings where host_id = $1 and resolved_at is null "
        "and fixed_version is not null",
        host,
    )
    package = rows[0]["package"]
    highest = max((r["fixed_version"] for r in rows if r["package"] == package), key=_dpkg)
    upgraded = copy.deepcopy(packages())
    for entry in upgraded["packages"]:
        if entry["name"] == package:
            entry["source_version"] = highest
            entry["version"] = highest
    later = report("packages", host, upgraded, sent_at=T0 + timedelta(seconds=2))
    await publish(env.settings, [later])
    await drain(env.settings, env.slugs)
    after = await open_findings(env, host)
    assert after == expected(imported, upgraded["packages"])
    gone = before - after
    assert gone and all(p == package for p, _ in gone)
    resolved = await invoke_cli(
        ["findings", "--tenant", env.a.slug, "--host", str(host), "--resolved", "--json"],
        env.settings,
    )
    history = json.loads(resolved.stdout)
    assert {(f["package"], f["cve_id"]) for f in history if f["status"] == "resolved"} == gone
    assert all(f["resolved_at"] for f in history if f["status"] == "resolved")

    # The first snapshot again (a redelivery), and an older one under a new id: nothing reopens.
    older = report("packages", host, packages(), sent_at=T0 + timedelta(milliseconds=1500))
    await publish(env.settings, [first, older])
    await drain(env.settings, env.slugs)
    assert await open_findings(env, host) == after


async def test_an_unchanged_snapshot_is_not_matched_again_and_a_changed_one_is(
    env: Env, imported: CatalogIndex
) -> None:
    host = await reporting_host(env)
    before = await open_findings(env, host)
    entries = packages()["packages"]
    conn = await asyncpg.connect(PG.format(db=env.a.db_name))
    try:
        async with conn.transaction():
            # The same packages in another order: the same digest, nothing matched.
            same = await evaluate(conn, imported, host, T0, installed=installed_of(entries[::-1]))
        assert same is not None and same.unchanged and (same.opened, same.resolved) == (0, 0)
        # One affected package upgraded past every fix: matched again, its findings resolved.
        package = sorted(p for p, _ in before)[0]
        upgraded = [
            {**e, "version": "99:1", "source_version": "99:1"} if e["name"] == package else e
            for e in entries
        ]
        async with conn.transaction():
            changed = await evaluate(conn, imported, host, T0, installed=installed_of(upgraded))
        assert changed is not None and not changed.unchanged
        assert changed.resolved == len({c for p, c in before if p == package}) > 0
        after = await open_findings(env, host)
        assert after == {(p, c) for p, c in before if p != package}

        # A new revision: the live path leaves an unchanged host at its revision for the
        # sweeper; the sweeper's path (the stored packages) matches it against the new one.
        newer = copy.copy(imported)
        newer.revision = imported.revision + 1
        async with conn.transaction():
            live = await evaluate(
                conn,
                newer,
                host,
                T0,
                installed=installed_of(upgraded),
                revision_left_to_sweeper=True,
            )
        assert live is not None and live.unchanged
        state = "select catalog_revision from host_findings_state where host_id = $1"
        assert await conn.fetchval(state, host) == imported.revision
        async with conn.transaction():
            swept = await evaluate(conn, newer, host, T0)
        assert swept is not None and not swept.unchanged
        assert await conn.fetchval(state, host) == newer.revision
    finally:
        await conn.close()
    # The sweeper matched the packages stored for it (the snapshot the pipeline committed).
    assert await open_findings(env, host) == before


def _dpkg(version: str) -> Any:
    from functools import cmp_to_key  # noqa: PLC0415

    return cmp_to_key(compare)(version)


async def test_a_host_without_a_known_release_gets_none_until_it_says(
    env: Env, imported: CatalogIndex
) -> None:
    host = await bound_host(env, env.a)
    await publish(env.settings, [report("packages", host, packages(), sent_at=T0)])
    await drain(env.settings, env.slugs)
    assert await open_findings(env, host) == set()
    listed = await invoke_cli(
        ["findings", "--tenant", env.a.slug, "--host", str(host)], env.settings
    )
    assert "1 of them with no known Debian release" in listed.output, listed.output

    # Its release becomes known: its stored snapshot is evaluated again.
    await publish(
        env.settings,
        [report("system_info", host, system_info(), sent_at=T0 + timedelta(seconds=5))],
    )
    await drain(env.settings, env.slugs)
    assert await open_findings(env, host) == expected(imported, DEBIAN_PACKAGES["packages"])


def _feed(tmp: Path, document: Any) -> Path:
    path = tmp / "feed.json"
    path.write_text(json.dumps(document) if not isinstance(document, str) else document)
    return path


GOOD_ENTRY = {
    "releases": {"bookworm": {"status": "resolved", "fixed_version": "1.0-1", "urgency": "low"}}
}


@pytest.mark.parametrize(
    ("document", "says"),
    [
        ("{not json", "not JSON"),
        ({"bash": {"CVE-2024-1": GOOD_ENTRY}}, "'CVE-2024-1': not a CVE id"),
        (
            {
                "bash": {
                    "CVE-2024-12345": {
                        "releases": {
                            "bookworm": {
                                "status": "resolved",
                                "fixed_version": "1.0 beta",
                                "urgency": "low",
                            }
                        }
                    }
                }
            },
            "bash CVE-2024-12345 bookworm: fixed_version '1.0 beta'",
        ),
        (
            {"bash": {"CVE-2024-12345": {**GOOD_ENTRY, "description": "x" * 20_000}}},
            "bash CVE-2024-12345 bookworm: description is 20,000 characters",
        ),
        (
            {
                "bash": {
                    "CVE-2024-12345": {"releases": {"narnia": {"status": "open", "urgency": "low"}}}
                }
            },
            "no Debian release is named 'narnia'",
        ),
        ({"Bad Name": {}}, "not a Debian source name"),
    ],
)
async def test_a_bad_feed_is_refused_by_name_and_the_revision_stays(
    env: Env, imported: CatalogIndex, tmp_path: Path, document: Any, says: str
) -> None:
    before = await store.revisions(env.settings)
    refused = await invoke_cli(["catalog", "import", str(_feed(tmp_path, document))], env.settings)
    assert refused.exit_code == 2, refused.output  # refused as a bad argument: nothing changed
    assert says in refused.output, refused.output
    assert await store.revisions(env.settings) == before
    assert (await load_index(env.settings)) is not None


async def test_the_api_serves_a_hosts_findings_from_its_tenants_silo(
    env: Env, imported: CatalogIndex
) -> None:
    """GET /tenants/{slug}/findings, as a viewer of acme: every open finding of the real
    snapshot against the real catalog, in pages; the CVE and urgency filters agree with the
    catalog; a viewer of globex sees none of acme's."""
    host = await reporting_host(env)
    want = expected(imported, DEBIAN_PACKAGES["packages"])
    tokens = {}
    for name, slug in (("finder-a", env.a.slug), ("finder-b", env.b.slug)):
        for args in (
            ["operator", "add", name],
            ["operator", "grant", name, "--tenant", slug, "--role", "viewer"],
        ):
            assert (await invoke_cli(args, env.settings)).exit_code == 0
        issued = await invoke_cli(["operator", "token", "issue", name, "--json"], env.settings)
        tokens[name] = json.loads(issued.stdout)["token"]
    async with serving(env, {}) as url, httpx.AsyncClient(base_url=url, timeout=10) as client:

        async def pages(who: str, slug: str, query: str) -> list[dict[str, Any]]:
            found: list[dict[str, Any]] = []
            after = None
            while True:
                more = f"&after={after}" if after is not None else ""
                answer = await client.get(
                    f"/api/v1/tenants/{slug}/findings?{query}&limit=25{more}",
                    headers={"Authorization": f"Bearer {tokens[who]}"},
                )
                assert answer.status_code == 200, answer.text
                found += answer.json()["findings"]
                after = answer.json()["next"]
                if after is None:
                    return found

        every = await pages("finder-a", env.a.slug, f"host_id={host}")
        assert {(f["package"], f["cve_id"]) for f in every} == want
        assert len(every) == len({f["id"] for f in every})  # no page repeats another's rows
        cve = sorted(c for _, c in want)[0]
        by_cve = await pages("finder-a", env.a.slug, f"host_id={host}&cve={cve}")
        assert {(f["package"], f["cve_id"]) for f in by_cve} == {w for w in want if w[1] == cve}
        urgency = every[0]["urgency"]
        by_urgency = await pages("finder-a", env.a.slug, f"host_id={host}&urgency={urgency}")
        assert {f["id"] for f in by_urgency} == {f["id"] for f in every if f["urgency"] == urgency}
        # globex's viewer: acme is no tenant of theirs, and globex's own findings hold none of it.
        other = await client.get(
            f"/api/v1/tenants/{env.a.slug}/findings",
            headers={"Authorization": f"Bearer {tokens['finder-b']}"},
        )
        assert other.status_code == 404
        assert str(host) not in json.dumps(await pages("finder-b", env.b.slug, ""))
