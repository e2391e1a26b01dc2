"""The HTTP API as an attacker meets it: `siloflow run api` on loopback, a real HTTP client, the
real registry. Every endpoint x every kind of token x granted, other and unknown tenants; a
tenant the caller has no grant for answers exactly as one that does not exist; hostile paths are
4xx, never 500, and never another tenant's data."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator

import asyncpg
import httpx
import pytest

from services.core.access import Action, Grant, Role, may
from services.core.names import Names
from tests.integration.apis import Api, api_for, call, get, serving
from tests.integration.pipeline import Env, bound_host


@pytest.fixture(scope="module")
async def api(env: Env) -> AsyncIterator[Api]:
    async with api_for(env) as running:
        yield running


# What each endpoint needs: an action on the path's tenant, the server-wide action, or only a
# valid token. Every path of the OpenAPI document must be here (a new one fails the matrix).
NEEDS: dict[tuple[str, str], Action | None] = {
    ("GET", "/api/v1/tenants"): None,
    ("GET", "/api/v1/tenants/{slug}"): Action.READ,
    ("GET", "/api/v1/tenants/{slug}/hosts"): Action.READ,
    ("GET", "/api/v1/tenants/{slug}/hosts/{host_id}"): Action.READ,
    ("GET", "/api/v1/tenants/{slug}/hosts/{host_id}/packages"): Action.READ,
    ("GET", "/api/v1/tenants/{slug}/findings"): Action.READ,
    ("GET", "/api/v1/tenants/{slug}/compliance"): Action.READ,
    ("GET", "/api/v1/tenants/{slug}/tokens"): Action.TOKENS,
    ("POST", "/api/v1/tenants/{slug}/tokens"): Action.TOKENS,
    ("DELETE", "/api/v1/tenants/{slug}/tokens/{token_id}"): Action.TOKENS,
    ("GET", "/api/v1/tenants/{slug}/audit"): Action.AUDIT,
    ("GET", "/api/v1/tenants/{slug}/dead-letters"): Action.DEAD_LETTERS,
    ("GET", "/api/v1/tenants/{slug}/dead-letters/{letter}"): Action.DEAD_LETTERS,
    ("POST", "/api/v1/tenants/{slug}/dead-letters/replay"): Action.DEAD_LETTERS,
    ("GET", "/api/v1/audit"): Action.SERVER,
    ("GET", "/api/v1/dead-letters"): Action.SERVER,
    ("GET", "/api/v1/dead-letters/{letter}"): Action.SERVER,
    ("POST", "/api/v1/dead-letters/replay"): Action.SERVER,
}
BODIES = {"tokens": {}, "replay": {"letters": ["no-such-letter"]}}
GRANTS = {
    # Their grants are on tenant A (or all, for the admin): only A is theirs to see.
    "viewer": [Grant(None, Role.VIEWER)],
    "operator": [Grant(None, Role.OPERATOR)],
    "admin": [Grant(None, Role.ADMIN)],
    "nobody": [],
}
INVALID = ["expired", "revoked", "disabled", "absent"]


@pytest.mark.parametrize("who", [*GRANTS, *INVALID])
async def test_every_endpoint_by_caller_and_tenant(api: Api, env: Env, who: str) -> None:
    """The matrix: every endpoint x this caller x (granted tenant, other tenant, no tenant)."""
    schema = (await get(api, "/api/v1/openapi.json", None)).json()
    operations = {(method.upper(), path) for path, ops in schema["paths"].items() for method in ops}
    assert operations == set(NEEDS), "classify each endpoint in NEEDS"
    missing_tenant = (await get(api, "/api/v1/tenants/no-such-tenant", "admin")).content
    tenants = {"a": env.a.slug, "b": env.b.slug, "missing": "no-such-tenant"}
    for (method, path), action in sorted(NEEDS.items(), key=str):
        for which, slug in tenants.items() if "{slug}" in path else [("-", "")]:
            host = api.canaries.get(slug, uuid.uuid4())
            url = path.format(slug=slug, host_id=host, token_id=uuid.uuid4(), letter="x")
            body = next((b for k, b in BODIES.items() if path.endswith(k)), None)
            caller = None if who == "absent" else who
            answer = await send(api, method, url, caller, body)
            case = f"{who} {method} {url}: {answer.status_code} {answer.text[:200]}"
            if who in INVALID:
                assert answer.status_code == 401, case
                continue
            grants = GRANTS[who]
            sees_it = which == "-" or (which == "a" and grants) or (which == "b" and who == "admin")
            if not sees_it:
                assert (answer.status_code, answer.content) == (404, missing_tenant), case
                continue
            server_wide = action is Action.SERVER or which == "-"
            allowed = (
                action is None
                or (who == "admin")
                or (not server_wide and may(grants, action, env.a.id))
            )
            if not allowed:
                assert answer.status_code == 403, case
                assert answer.json()["error"]["code"] == "forbidden", case
                continue
            assert answer.status_code < 500 and answer.status_code not in (401, 403), case
            assert answer.content != missing_tenant, case
            # Never the other tenant's canary in an answer about this one.
            if which in ("a", "b"):
                other = api.canaries[tenants["b" if which == "a" else "a"]]
                assert str(other) not in answer.text, case


async def send(
    api: Api, method: str, path: str, who: str | None, body: object | None
) -> httpx.Response:
    headers = {} if who is None else {"Authorization": f"Bearer {api.tokens[who]}"}
    async with httpx.AsyncClient(base_url=api.url, timeout=30) as client:
        return await client.request(method, path, headers=headers, json=body)


@pytest.mark.parametrize(
    "authorization",
    ["Bearer", "Basic YWxpY2U6cHc=", "bearer sfo_" + "A" * 43, "Bearer " + "x" * 10_000],
)
async def test_malformed_tokens_are_401(api: Api, authorization: str) -> None:
    async with httpx.AsyncClient(base_url=api.url, timeout=10) as client:
        answer = await client.get("/api/v1/tenants", headers={"Authorization": authorization})
    assert answer.status_code == 401 and answer.json()["error"]["code"] == "unauthenticated"


@pytest.mark.parametrize(
    ("who", "sees"),
    [("viewer", "a"), ("operator", "a"), ("admin", "ab"), ("nobody", "")],
)
async def test_each_caller_lists_only_the_tenants_granted(
    api: Api, env: Env, who: str, sees: str
) -> None:
    answer = await get(api, "/api/v1/tenants", who)
    assert answer.status_code == 200, answer.text
    listed = {t["slug"] for t in answer.json()}
    expected = {getattr(env, letter).slug for letter in sees}
    # The admin sees every tenant of the deployment, others created by other tests included.
    assert expected <= listed if who == "admin" else listed == expected


@pytest.mark.parametrize("who", ["viewer", "operator", "admin", "nobody"])
async def test_a_tenant_without_a_grant_answers_as_one_that_does_not_exist(
    api: Api, env: Env, who: str
) -> None:
    granted = await get(api, f"/api/v1/tenants/{env.a.slug}", who)
    other = await get(api, f"/api/v1/tenants/{env.b.slug}", who)
    missing = await get(api, "/api/v1/tenants/no-such-tenant", who)
    assert missing.status_code == 404
    if who == "admin":
        assert (granted.status_code, other.status_code) == (200, 200)
        assert other.json()["slug"] == env.b.slug
    elif who == "nobody":
        assert (granted.status_code, granted.content) == (404, missing.content)
        assert (other.status_code, other.content) == (404, missing.content)
    else:
        assert granted.status_code == 200 and granted.json()["slug"] == env.a.slug
        assert (other.status_code, other.content) == (404, missing.content)


@pytest.mark.parametrize(
    "slug",
    ["a'b", "a%00b", "..%2F..%2Fetc", "acme%0A", "x" * 5000, "%E2%80%AE", "a;select 1"],
)
async def test_hostile_paths_are_4xx_never_500_nor_another_tenants_data(
    api: Api, env: Env, slug: str
) -> None:
    for who in ("viewer", "admin"):
        answer = await get(api, f"/api/v1/tenants/{slug}", who)
        assert 400 <= answer.status_code < 500, (slug, answer.status_code, answer.text)
        assert env.b.slug not in answer.text and env.a.slug not in answer.text
        assert set(answer.json()) == {"error"}


async def test_health_openapi_and_unknown_routes(api: Api) -> None:
    assert (await get(api, "/healthz", None)).json() == {"status": "ok"}
    schema = await get(api, "/api/v1/openapi.json", None)
    assert schema.status_code == 200 and "/api/v1/tenants/{slug}" in schema.json()["paths"]
    unknown = await get(api, "/api/v1/nothing-here", "admin")
    assert unknown.status_code == 404 and unknown.json()["error"]["code"] == "not-found"


@pytest.mark.parametrize("who", ["viewer", "operator", "admin", "nobody"])
async def test_hosts_come_from_the_callers_tenants_silo_only(api: Api, env: Env, who: str) -> None:
    mine, theirs = api.canaries[env.a.slug], api.canaries[env.b.slug]
    missing = await get(api, "/api/v1/tenants/no-such-tenant/hosts", who)
    assert missing.status_code == 404
    listed = await get(api, f"/api/v1/tenants/{env.a.slug}/hosts", who)
    other = await get(api, f"/api/v1/tenants/{env.b.slug}/hosts", who)
    if who == "nobody":
        assert (listed.status_code, listed.content) == (404, missing.content)
        return
    assert listed.status_code == 200, listed.text
    ids = {h["host_id"] for h in listed.json()["hosts"]}
    assert str(mine) in ids and str(theirs) not in ids  # the canary of the other tenant: never
    one = await get(api, f"/api/v1/tenants/{env.a.slug}/hosts/{mine}", who)
    assert one.status_code == 200 and one.json()["hostname"], one.text
    # Another tenant's host through this tenant's path: as a host of no tenant.
    crossed = await get(api, f"/api/v1/tenants/{env.a.slug}/hosts/{theirs}", who)
    nowhere = await get(api, f"/api/v1/tenants/{env.a.slug}/hosts/{uuid.uuid4()}", who)
    assert (crossed.status_code, crossed.content) == (404, nowhere.content)
    if who == "admin":
        assert other.status_code == 200
        assert str(mine) not in {h["host_id"] for h in other.json()["hosts"]}
    else:
        assert (other.status_code, other.content) == (404, missing.content)


async def test_hosts_page_by_host_id(api: Api, env: Env) -> None:
    for _ in range(3):
        await bound_host(env, env.a)
    seen: list[str] = []
    after = ""
    while True:
        page = await get(api, f"/api/v1/tenants/{env.a.slug}/hosts?limit=1{after}", "viewer")
        assert page.status_code == 200, page.text
        body = page.json()
        seen += [h["host_id"] for h in body["hosts"]]
        if body["next"] is None:
            break
        after = f"&after={body['next']}"
    assert (
        seen == sorted(seen)
        and len(seen) == len(set(seen))
        and str(api.canaries[env.a.slug]) in seen
    )


@pytest.mark.parametrize(
    "query", ["limit=0", "limit=100000", "limit=x", "after=not-a-uuid", "after=%00"]
)
async def test_bad_queries_are_422_in_the_one_shape(api: Api, env: Env, query: str) -> None:
    answer = await get(api, f"/api/v1/tenants/{env.a.slug}/hosts?{query}", "viewer")
    assert answer.status_code == 422, answer.text
    assert answer.json()["error"]["code"] == "invalid-request"


async def test_the_reader_login_can_write_nothing_but_an_audit_entry(env: Env) -> None:
    from services.core.silo.credentials.issuers import credential_source  # noqa: PLC0415

    source = credential_source(env.settings, reader=True)
    login = await source.login_for(env.a)
    conn = await asyncpg.connect(login.url.set(drivername="postgresql").render_as_string(False))
    try:
        assert await conn.fetchval("select count(*) from hosts") >= 1  # it may read
        # ... and append to the audit log (what the API's callers did), only in a transaction
        # it opens read-write: its sessions are read-only by default.
        entry = "insert into audit_log (id, actor, action, outcome) values ($1, 'x', 'y', 'ok')"
        async with conn.transaction(readonly=False):
            await conn.execute(entry, uuid.uuid4())
        for statement in (
            "insert into hosts (id) values (gen_random_uuid())",
            "update hosts set hostname = 'x'",
            "delete from agent_messages",
            "create table stolen (x int)",
            "update audit_log set actor = 'someone else'",
            "delete from audit_log",
            "truncate audit_log",
            f'set role "{Names(env.settings.namespace).tenant_owner_role(env.a.slug)}"',
        ):
            with pytest.raises(asyncpg.InsufficientPrivilegeError):
                await conn.execute(statement)
    finally:
        await conn.close()
        await source.close()


@pytest.mark.parametrize("who", ["viewer", "admin"])
async def test_a_hosts_packages_hardware_and_compliance_from_its_tenant_only(
    api: Api, env: Env, who: str
) -> None:
    mine, theirs = api.canaries[env.a.slug], api.canaries[env.b.slug]
    base = f"/api/v1/tenants/{env.a.slug}"
    packages = await get(api, f"{base}/hosts/{mine}/packages", who)
    assert packages.status_code == 200, packages.text
    assert packages.json()["packages"] and packages.json()["manager"]
    crossed = await get(api, f"{base}/hosts/{theirs}/packages", who)
    assert crossed.status_code == 404
    detail = await get(api, f"{base}/hosts/{mine}", who)
    assert detail.json()["hardware"]["cpu_cores"] >= 1
    results = await get(api, f"{base}/compliance", who)
    assert results.status_code == 200 and results.json()
    assert {r["host_id"] for r in results.json()} <= {
        h["host_id"] for h in (await get(api, f"{base}/hosts?limit=500", who)).json()["hosts"]
    }
    assert str(theirs) not in results.text
    # Asking this tenant's path about the other tenant's host finds nothing, and says nothing.
    other = await get(api, f"{base}/compliance?host_id={theirs}", who)
    assert other.status_code == 200 and other.json() == []
    found = await get(api, f"{base}/findings?host_id={mine}", who)
    assert found.status_code == 200 and found.json()["next"] is None


@pytest.mark.parametrize(
    "query",
    [
        "findings?cve=%27%3B%20drop",
        "findings?cve=CVE-1",
        "findings?limit=0",
        "findings?after=-1",
        "compliance?host_id=..%2F",
        "compliance?limit=99999",
        "findings?urgency=" + "x" * 100,
    ],
)
async def test_hostile_filters_are_422(api: Api, env: Env, query: str) -> None:
    answer = await get(api, f"/api/v1/tenants/{env.a.slug}/{query}", "viewer")
    assert answer.status_code == 422, (query, answer.text)
    assert answer.json()["error"]["code"] == "invalid-request"


async def test_a_source_guessing_tokens_is_slowed_down(api: Api, env: Env) -> None:
    async with (
        serving(env, {"SILOFLOW_API_FREE_FAILURES": "2"}) as url,
        httpx.AsyncClient(base_url=url, timeout=10) as client,
    ):
        bad = {"Authorization": "Bearer sfo_" + "B" * 43}
        answers = [(await client.get("/api/v1/tenants", headers=bad)).status_code for _ in range(3)]
        assert answers == [401, 401, 429]
        # While it waits, its tokens are not even looked at: a good one too.
        good = {"Authorization": f"Bearer {api.tokens['viewer']}"}
        slowed = await client.get("/api/v1/tenants", headers=good)
        assert slowed.status_code == 429 and int(slowed.headers["retry-after"]) >= 1
        assert slowed.json()["error"]["code"] == "rate-limited"


async def test_enrollment_tokens_by_role(api: Api, env: Env) -> None:
    mine, theirs = f"/api/v1/tenants/{env.a.slug}/tokens", f"/api/v1/tenants/{env.b.slug}/tokens"
    viewer = await call(api, "POST", mine, "viewer", json={})
    assert viewer.status_code == 403 and viewer.json()["error"]["code"] == "forbidden"
    assert (await call(api, "GET", mine, "viewer")).status_code == 403
    nobody = await call(api, "POST", mine, "nobody", json={})
    missing = await call(api, "POST", "/api/v1/tenants/no-such-tenant/tokens", "nobody", json={})
    assert (nobody.status_code, nobody.content) == (404, missing.content)

    issued = await call(api, "POST", mine, "operator", json={"uses": 3, "note": "rack 4"})
    assert issued.status_code == 201, issued.text
    token = issued.json()
    assert token["token"].startswith("sfe_") and token["uses_left"] == 3
    listed = await call(api, "GET", mine, "operator")
    assert token["id"] in {t["id"] for t in listed.json()}
    assert token["token"] not in listed.text  # shown once
    # The operator of A reaches no token of B, even by its id.
    other = await call(api, "POST", theirs, "admin", json={})
    assert other.status_code == 201
    crossed = await call(api, "DELETE", f"{mine}/{other.json()['id']}", "operator")
    assert crossed.status_code == 404
    assert (await call(api, "GET", theirs, "operator")).status_code == 404
    revoked = await call(api, "DELETE", f"{mine}/{token['id']}", "operator")
    assert revoked.status_code == 200 and revoked.json()["state"] == "revoked"


@pytest.mark.parametrize(
    "body",
    [{"uses": 0}, {"ttl_s": 10**9}, {"ttl_s": 1}, {"uses": 1, "admin": True}, {"note": "x" * 501}],
)
async def test_bad_token_requests_are_422(api: Api, env: Env, body: dict[str, object]) -> None:
    answer = await call(api, "POST", f"/api/v1/tenants/{env.a.slug}/tokens", "operator", json=body)
    assert answer.status_code == 422, answer.text
    assert answer.json()["error"]["code"] == "invalid-request"
