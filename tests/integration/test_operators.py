"""Operators as the CLI manages them: added, granted a role on a tenant or on all, given API
tokens (printed once, kept as a hash), revoked and disabled; every bad argument refused with a
message, changing nothing."""

from __future__ import annotations

import hashlib
import json

from tests.integration.pipeline import Env, fetch
from tests.support import invoke_cli


async def operators_of(env: Env) -> dict[str, dict[str, object]]:
    done = await invoke_cli(["operator", "list", "--json"], env.settings)
    assert done.exit_code == 0, done.output
    return {o["name"]: o for o in json.loads(done.output)}


async def test_an_operator_is_added_granted_and_given_a_token(env: Env) -> None:
    settings = env.settings
    added = await invoke_cli(["operator", "add", "alice"], settings)
    assert added.exit_code == 0, added.output
    again = await invoke_cli(["operator", "add", "alice"], settings)
    assert again.exit_code != 0 and "already exists" in again.output

    granted = await invoke_cli(
        ["operator", "grant", "alice", "--tenant", env.a.slug, "--role", "viewer"], settings
    )
    assert granted.exit_code == 0 and "granted" in granted.output, granted.output
    changed = await invoke_cli(
        ["operator", "grant", "alice", "--tenant", env.a.slug, "--role", "operator"], settings
    )
    assert "changed" in changed.output, changed.output
    everywhere = await invoke_cli(
        ["operator", "grant", "alice", "--all", "--role", "viewer"], settings
    )
    assert everywhere.exit_code == 0, everywhere.output
    alice = (await operators_of(env))["alice"]
    assert alice["grants"] == {env.a.slug: "operator", "*": "viewer"}
    assert str(alice["created_by"]).startswith("cli:")

    issued = await invoke_cli(["operator", "token", "issue", "alice", "--json"], settings)
    assert issued.exit_code == 0, issued.output
    token = json.loads(issued.output)
    assert token["token"].startswith("sfo_") and token["operator"] == "alice"
    # Only a hash is kept: the token is nowhere in the registry, nor in the listing.
    stored = await fetch(
        settings.registry_database, "select token_hash from registry_operator_tokens"
    )
    assert hashlib.sha256(token["token"].encode()).digest() in {
        bytes(r["token_hash"]) for r in stored
    }
    assert all(token["token"].encode() not in bytes(r["token_hash"]) for r in stored)
    listing = await invoke_cli(["operator", "list", "--json"], settings)
    assert token["token"] not in listing.output

    revoked = await invoke_cli(["operator", "token", "revoke", token["id"]], settings)
    assert revoked.exit_code == 0, revoked.output
    twice = await invoke_cli(["operator", "token", "revoke", token["id"]], settings)
    assert twice.exit_code != 0 and "no unrevoked token" in twice.output
    assert (await operators_of(env))["alice"]["tokens"][0]["revoked"] is True  # type: ignore[index]

    taken = await invoke_cli(["operator", "revoke-grant", "alice", "--all"], settings)
    assert taken.exit_code == 0, taken.output
    assert (await operators_of(env))["alice"]["grants"] == {env.a.slug: "operator"}


async def test_a_disabled_operator_gets_no_token_and_loses_theirs(env: Env) -> None:
    settings = env.settings
    assert (await invoke_cli(["operator", "add", "bob"], settings)).exit_code == 0
    first = await invoke_cli(["operator", "token", "issue", "bob", "--json"], settings)
    assert first.exit_code == 0, first.output
    disabled = await invoke_cli(["operator", "disable", "bob"], settings)
    assert disabled.exit_code == 0, disabled.output
    bob = (await operators_of(env))["bob"]
    assert bob["status"] == "disabled" and all(t["revoked"] for t in bob["tokens"])  # type: ignore[attr-defined]
    refused = await invoke_cli(["operator", "token", "issue", "bob"], settings)
    assert refused.exit_code != 0 and "disabled" in refused.output


async def test_bad_arguments_are_refused_and_change_nothing(env: Env) -> None:
    settings = env.settings
    before = await operators_of(env)
    cases = {
        ("operator", "add", "Not A Name"): "operator name 'Not A Name'",
        ("operator", "grant", "nobody", "--all", "--role", "viewer"): "no operator 'nobody'",
        ("operator", "grant", "x", "--role", "viewer"): "--tenant SLUG or --all",
        ("operator", "grant", "x", "--all", "--tenant", "acme", "--role", "viewer"): "one of them",
        ("operator", "grant", "x", "--all", "--role", "root"): "'root' is not one of",
        ("operator", "token", "issue", "nobody"): "no operator 'nobody'",
        ("operator", "token", "issue", "x", "--ttl", "forever"): "--ttl",
        ("operator", "token", "revoke", "not-a-uuid"): "not a valid UUID",
    }
    for args, says in cases.items():
        done = await invoke_cli(list(args), settings)
        assert done.exit_code != 0 and says in done.output, (args, done.output)
    if "carol" not in before:
        assert (await invoke_cli(["operator", "add", "carol"], settings)).exit_code == 0
    unknown = await invoke_cli(
        ["operator", "grant", "carol", "--tenant", "nope", "--role", "viewer"], settings
    )
    assert unknown.exit_code != 0 and "no tenant 'nope'" in unknown.output
    assert (await operators_of(env))["carol"]["grants"] == {}
