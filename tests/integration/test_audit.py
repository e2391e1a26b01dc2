"""The audit trail through the CLI, on the real databases: a tenant's acts kept in its own silo
(and in no other's), server-wide acts and a deleted tenant's end in the registry, refusals kept
as failures, and `siloflow audit` reading both."""

from __future__ import annotations

import getpass
import json
from typing import Any

from services.ops.tenants import create_tenant
from tests.integration.pipeline import Env, fetch
from tests.support import admin_fetch, invoke_cli

ME = f"cli:{getpass.getuser()}"


async def trail(env: Env, *args: str) -> list[dict[str, Any]]:
    done = await invoke_cli(["audit", "--json", *args], env.settings)
    assert done.exit_code == 0, done.output
    found: list[dict[str, Any]] = json.loads(done.stdout)
    return found


async def test_a_tenants_acts_are_kept_in_its_own_silo(env: Env) -> None:
    for act in ("suspend", "resume"):
        done = await invoke_cli(["tenant", act, env.a.slug], env.settings)
        assert done.exit_code == 0, done.output
    kept = await fetch(env.a.db_name, "select actor, action, outcome from audit_log order by at")
    assert [tuple(r) for r in kept][-2:] == [
        (ME, "tenant.suspend", "ok"),
        (ME, "tenant.resume", "ok"),
    ]
    # Not in the other tenant's silo, nor in the registry.
    others = await fetch(
        env.b.db_name, "select action from audit_log where action = 'tenant.suspend'"
    )
    assert others == []
    registry = await admin_fetch(
        "select action from registry_audit where tenant = $1 and action like 'tenant.%'",
        env.a.slug,
        database=env.settings.registry_database,
    )
    assert registry == []
    entries = await trail(env, "--tenant", env.a.slug)
    first = entries[0]
    assert (first["action"], first["tenant"], first["kept_in"], first["actor"]) == (
        "tenant.resume",
        env.a.slug,
        "silo",
        ME,
    )
    assert first["detail"]["args"] == {"slug": env.a.slug}
    assert all(e["tenant"] == env.a.slug for e in entries)


async def test_a_refused_act_is_kept_as_failed_with_its_reason(env: Env) -> None:
    done = await invoke_cli(["tenant", "suspend", "no-such-tenant"], env.settings)
    assert done.exit_code != 0
    entries = await trail(env, "--tenant", "no-such-tenant")
    assert len(entries) == 1
    assert entries[0]["outcome"] == "failed" and entries[0]["kept_in"] == "registry"
    assert "no-such-tenant" in entries[0]["detail"]["error"]


async def test_server_wide_acts_are_kept_in_the_registry_without_secrets(env: Env) -> None:
    done = await invoke_cli(["operator", "add", "audit-alice"], env.settings)
    assert done.exit_code == 0, done.output
    issued = await invoke_cli(["operator", "token", "issue", "audit-alice", "--json"], env.settings)
    assert issued.exit_code == 0, issued.output
    secret = json.loads(issued.stdout)["token"]
    entries = await trail(env)
    actions = [(e["action"], e["outcome"], e["tenant"]) for e in entries]
    assert ("operator.add", "ok", None) in actions
    assert ("operator.token.issue", "ok", None) in actions
    assert secret not in json.dumps(entries)


async def test_a_deleted_tenants_trail_ends_with_its_deletion(env: Env, slug: str) -> None:
    await create_tenant(env.settings, slug)
    assert (await invoke_cli(["tenant", "suspend", slug], env.settings)).exit_code == 0
    done = await invoke_cli(["tenant", "delete", slug, "--yes"], env.settings)
    assert done.exit_code == 0, done.output
    entries = await trail(env, "--tenant", slug)
    assert [(e["action"], e["kept_in"]) for e in entries] == [("tenant.delete", "registry")]


async def test_a_bad_tenant_argument_is_refused(env: Env) -> None:
    done = await invoke_cli(["audit", "--tenant", "Bad Slug"], env.settings)
    assert done.exit_code == 2
    assert "invalid tenant slug" in done.output
