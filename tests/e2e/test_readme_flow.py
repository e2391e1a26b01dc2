"""The README's first steps, as a new user runs them: bootstrap, migrate, create a tenant,
list it."""

from __future__ import annotations

import asyncio
import json
import subprocess
from collections.abc import Callable

import httpx

from services.core.settings import Settings
from services.ops import chains as migrator
from tests.support import MANAGEMENT, MANAGEMENT_AUTH, admin_fetch

Siloflow = Callable[..., subprocess.CompletedProcess[str]]


def test_bootstrap_migrate_create_and_list(siloflow: Siloflow, e2e_settings: Settings) -> None:
    admin = "postgresql://postgres@127.0.0.1/postgres"
    first = siloflow("bootstrap", "--admin-dsn", admin)
    assert "created role" in first.stdout
    again = siloflow("bootstrap", "--admin-dsn", admin)  # safe to repeat
    assert "kept" in again.stdout and "created" not in again.stdout

    siloflow("migrate")
    siloflow("tenant", "create", "acme")
    listed = json.loads(siloflow("tenant", "list", "--json").stdout)
    assert [t["slug"] for t in listed] == ["acme"]
    [acme] = listed
    assert acme["status"] == "active"
    assert acme["database"] == f"{e2e_settings.namespace}_tenant_acme"
    assert acme["placement"] == {"name": "default", "host": "127.0.0.1", "port": 5432}
    assert acme["schema_revision"] == migrator.head_revision("tenant")

    status = json.loads(siloflow("migrate", "--status", "--json").stdout)
    assert {t["target"] for t in status["targets"]} == {"registry", "shared", "tenant acme"}
    assert all(t["current"] == t["head"] for t in status["targets"])

    duplicate = siloflow("tenant", "create", "acme", check=False)
    assert duplicate.returncode == 1
    assert "already exists" in duplicate.stderr

    siloflow("tenant", "delete", "acme", "--yes")
    assert json.loads(siloflow("tenant", "list", "--json").stdout) == []

    siloflow("tenant", "create", "globex")
    refused = siloflow("teardown", "--admin-dsn", admin, check=False)
    assert refused.returncode == 2 and "--yes" in refused.stderr
    siloflow("teardown", "--admin-dsn", admin, "--yes")
    prefix = e2e_settings.namespace + "\\_%"
    assert (
        asyncio.run(
            admin_fetch(
                "select datname from pg_database where datname like $1 union all "
                "select rolname from pg_roles where rolname like $1",
                prefix,
            )
        )
        == []
    )
    with httpx.Client(base_url=f"{MANAGEMENT}/api", auth=MANAGEMENT_AUTH) as api:
        assert api.get(f"/queues/{e2e_settings.namespace}").json() == []
        assert api.get(f"/policies/{e2e_settings.namespace}").json() == []
