"""What the API's callers change, through `siloflow run api` on loopback: each act kept in its
tenant's own silo (by the tenant's reader login) or, server-wide, in the registry; dead letters
listed, shown and replayed by a tenant's operator only when they carry that tenant."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import AsyncIterator
from typing import Any

import pytest

from services.core import dead_letters as dlq
from services.core.registry.queries import TenantRecord
from services.ops import operators
from services.workers import app as workers_app
from tests.integration.apis import Api, api_for, call
from tests.integration.pipeline import Env, bound_host, fetch, queue_with_router_rights, route
from tests.reports import compliance, heartbeat, report
from tests.support import invoke_cli


@pytest.fixture(scope="module")
async def api(env: Env) -> AsyncIterator[Api]:
    async with api_for(env) as running:
        yield running


async def _trail(api: Api, env: Env, who: str) -> list[dict[str, Any]]:
    answer = await call(api, "GET", f"/api/v1/tenants/{env.a.slug}/audit", who)
    assert answer.status_code == 200, answer.text
    found: list[dict[str, Any]] = answer.json()
    return found


async def test_acts_are_kept_in_their_tenants_silo_with_their_outcome(api: Api, env: Env) -> None:
    tokens = f"/api/v1/tenants/{env.a.slug}/tokens"
    issued = await call(api, "POST", tokens, "operator", json={"uses": 2})
    assert issued.status_code == 201
    assert (await call(api, "POST", tokens, "viewer", json={})).status_code == 403
    unknown = uuid.uuid4()
    assert (await call(api, "DELETE", f"{tokens}/{unknown}", "operator")).status_code == 404

    trail = await _trail(api, env, "operator")
    by_action = {(e["actor"], e["action"], e["outcome"]): e for e in trail}
    ok = by_action[("operator:api-operator", "token.issue", "ok")]
    assert ok["detail"]["token_id"] == issued.json()["id"] and ok["kept_in"] == "silo"
    assert ok["detail"]["uses"] == 2 and issued.json()["token"] not in str(trail)
    denied = by_action[("operator:api-viewer", "api.tokens", "denied")]
    assert denied["detail"]["call"] == f"POST {tokens}"
    failed = by_action[("operator:api-operator", "token.revoke", "failed")]
    assert failed["detail"] == failed["detail"] | {
        "token_id": str(unknown),
        "error": "no such token",
    }
    # In A's own database, written by A's reader login; in B's, nothing of it.
    rows = await fetch(env.a.db_name, "select id from audit_log where action = 'token.issue'")
    assert str(ok["id"]) in {str(r["id"]) for r in rows}
    assert await fetch(env.b.db_name, "select id from audit_log where action = 'token.issue'") == []
    # Reading the trail is the operator's and the admin's, not the viewer's.
    assert (
        await call(api, "GET", f"/api/v1/tenants/{env.a.slug}/audit", "viewer")
    ).status_code == 403
    assert {e["id"] for e in await _trail(api, env, "admin")} >= {ok["id"], denied["id"]}


async def test_the_server_trail_is_the_admins(api: Api) -> None:
    answer = await call(api, "GET", "/api/v1/audit", "admin")
    assert answer.status_code == 200
    # The fixture granted roles through the CLI: server-wide acts, kept in the registry.
    grants = [e for e in answer.json() if e["action"] == "operator.grant"]
    assert grants and all(e["kept_in"] == "registry" and e["outcome"] == "ok" for e in grants)
    assert all(e["actor"].startswith("cli:") for e in grants)
    assert (await call(api, "GET", "/api/v1/audit", "operator")).status_code == 403


async def _rejected_commit(env: Env, tenant: TenantRecord) -> str:
    """A report its tenant's database refuses (a status no check allows): dlq.failed, carrying
    the tenant. Put on its queue with the router's rights (validation would refuse it)."""
    host = await bound_host(env, tenant)
    bad = compliance()
    bad["results"][0]["status"] = "maybe"
    poison = report("compliance", host, bad)
    message = poison.message()
    assert message.headers is not None
    message.headers["x-siloflow-tenant"] = tenant.slug
    await queue_with_router_rights(env.settings, tenant.slug, [message])
    await workers_app.run(env.settings, tenants={tenant.slug}, burst=True)
    return str(poison.message_id)


async def test_dead_letters_by_tenant_and_role(api: Api, env: Env) -> None:
    mine, theirs = await _rejected_commit(env, env.a), await _rejected_commit(env, env.b)
    stray = report("heartbeat", uuid.uuid4(), heartbeat())  # a host bound to no tenant
    await route(env.settings, [stray])
    base = f"/api/v1/tenants/{env.a.slug}/dead-letters"

    listed = await call(api, "GET", base, "operator")
    assert listed.status_code == 200
    assert [x["message_id"] for x in listed.json()] == [mine]  # not B's, not the tenantless
    assert listed.json()[0]["reason"] == "commit-rejected" and "body" not in listed.text
    shown = await call(api, "GET", f"{base}/{mine}", "operator")
    assert shown.status_code == 200 and '"maybe"' in shown.json()[0]["body"]
    assert (await call(api, "GET", f"{base}/{theirs}", "operator")).status_code == 404
    everything = await call(api, "GET", "/api/v1/dead-letters", "admin")
    assert {mine, theirs, str(stray.message_id)} <= {x["message_id"] for x in everything.json()}

    # B's letter is not A's operator's to replay, even by name; nothing is replayed by accident.
    crossed = await call(api, "POST", f"{base}/replay", "operator", json={"letters": [theirs]})
    assert crossed.status_code == 200 and crossed.json()["replayed"] == 0
    empty = await call(api, "POST", f"{base}/replay", "operator", json={})
    assert empty.status_code == 422
    replayed = await call(api, "POST", f"{base}/replay", "operator", json={"letters": [mine]})
    assert replayed.json() == replayed.json() | {"replayed": 1, "failed": 0}
    # Sent back to A's queue, refused again: back in the queue, counted as replayed once.
    await workers_app.run(env.settings, tenants={env.a.slug}, burst=True)
    letters = await dlq.browse(env.settings, dlq.Filters(queues=("failed",)))
    by_id = {x.message_id: x for x in letters}
    assert (by_id[mine].replays, by_id[theirs].replays) == (1, 0)
    trail = await _trail(api, env, "operator")
    [act] = [e for e in trail if e["action"] == "dlq.replay" and e["detail"].get("replayed")]
    assert act["detail"]["letters"] == [mine] and act["kept_in"] == "silo"


async def _until(api: Api, path: str, who: str, status: int, timeout_s: float = 10) -> int:
    """Call until the answer is `status` (the registry's notice has reached the API) or the
    time is up; the last status seen."""
    deadline = asyncio.get_running_loop().time() + timeout_s
    while True:
        seen = (await call(api, "GET", path, who)).status_code
        if seen == status or asyncio.get_running_loop().time() > deadline:
            return seen
        await asyncio.sleep(0.05)


async def test_a_remembered_caller_is_forgotten_when_revoked(api: Api, env: Env) -> None:
    """The API remembers callers between requests: revoking a token, or a grant, still takes
    effect on the next requests (a registry notice), never after the cache's own lifetime."""
    await operators.add_operator(env.settings, "api-short")
    granted = await invoke_cli(
        ["operator", "grant", "api-short", "--tenant", env.a.slug, "--role", "viewer"],
        env.settings,
    )
    assert granted.exit_code == 0, granted.output
    issued = await invoke_cli(["operator", "token", "issue", "api-short", "--json"], env.settings)
    token = json.loads(issued.stdout)
    api.tokens["short"] = token["token"]
    mine = f"/api/v1/tenants/{env.a.slug}"
    for _ in range(3):  # remembered now
        assert (await call(api, "GET", mine, "short")).status_code == 200
    revoked = await invoke_cli(
        ["operator", "revoke-grant", "api-short", "--tenant", env.a.slug], env.settings
    )
    assert revoked.exit_code == 0, revoked.output
    assert await _until(api, mine, "short", 404) == 404
    done = await invoke_cli(["operator", "token", "revoke", token["id"]], env.settings)
    assert done.exit_code == 0, done.output
    assert await _until(api, "/api/v1/tenants", "short", 401) == 401
