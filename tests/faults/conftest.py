"""The fault suite runs against servers of its own, started by `tests/faults/run` (what `make
faults` calls): a three-node RabbitMQ cluster from deploy/local/rabbit-cluster.sh and a
PostgreSQL server from deploy/local/pg-instance.sh, so it may kill and restart them. Each scenario
adds its row to the table printed at the end (and written as JSON to $SILOFLOW_FAULTS_OUT)."""

from __future__ import annotations

import json
import os
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from services.agent.client import Identity
from services.core.hostkeys import load_keyring
from services.core.settings import Settings
from services.ops import bindings as hosts
from services.ops import migrate
from services.ops.bootstrap import bootstrap
from services.ops.tenants import create_tenant
from tests.faults.harness import Tally
from tests.support import ADMIN_DSN, drop_namespace, new_namespace, pg_base, settings_for

if not os.environ.get("SILOFLOW_FAULTS_CLUSTER_DIR"):
    raise pytest.UsageError("run the fault suite with `make faults` (tests/faults/run)")

TENANTS = ("acme", "globex", "initech")
HOSTS_PER_TENANT = 8
ROWS: list[dict[str, Any]] = []


@dataclass
class Deployment:
    settings: Settings
    databases: dict[str, str]  # slug -> database
    fleet: dict[str, list[Identity]]  # slug -> its hosts' identities
    logdir: Path
    servers: dict[str, str] = field(default_factory=dict)  # slug -> its server, if not the first

    def dsns(self) -> dict[str, str]:
        """Each tenant's silo, where it is now."""
        return {
            slug: f"{self.servers.get(slug, pg_base())}/{database}"
            for slug, database in self.databases.items()
        }

    async def add_tenant(self, slug: str, settings: Settings | None = None) -> None:
        """Provision a tenant (through `settings`, e.g. connected to another broker node) and
        bind hosts to it."""
        record = (await create_tenant(settings or self.settings, slug)).tenant
        self.databases[slug] = record.db_name
        keyring = load_keyring(self.settings)
        self.fleet[slug] = []
        for _ in range(HOSTS_PER_TENANT):
            host = uuid.uuid4()
            await hosts.bind(self.settings, host, slug, move=False)
            self.fleet[slug].append(Identity(host, keyring.host_key(host), keyring.current))


@pytest.fixture(scope="session")
async def deployment(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Deployment]:
    namespace = new_namespace()
    settings = settings_for(namespace, retry_max_s=2.0, batch_wait_s=0.05)
    try:
        await bootstrap(settings, ADMIN_DSN)
        assert not (await migrate.migrate(settings)).failed
        deployment = Deployment(settings, {}, {}, tmp_path_factory.mktemp("services"))
        for slug in TENANTS:
            await deployment.add_tenant(slug)
        yield deployment
    finally:
        await drop_namespace(namespace)


def record(tally: Tally) -> None:
    ROWS.append(tally.row())


def pytest_terminal_summary(terminalreporter: Any) -> None:
    if not ROWS:
        return
    out = Path(os.environ.get("SILOFLOW_FAULTS_OUT", "faults.json"))
    out.write_text(json.dumps(ROWS, indent=2) + "\n")
    write = terminalreporter.write_line
    write("")
    write(markdown(ROWS))
    write(f"(written to {out})")


def markdown(rows: list[dict[str, Any]]) -> str:
    lines = [
        "| scenario | published | committed | dead-lettered (by reason) | lost | duplicated "
        "| recovery |",
        "| --- | ---: | ---: | --- | ---: | ---: | ---: |",
    ]
    for r in rows:
        letters = ", ".join(f"{k} {v}" for k, v in r["dead_lettered"].items()) or "-"
        recovery = "-" if r["recovery_s"] is None else f"{r['recovery_s']} s"
        lines.append(
            f"| {r['scenario']} | {r['published']} | {r['committed']} | {letters} | {r['lost']} "
            f"| {r['duplicated']} | {recovery} |"
        )
    notes = [f"- {r['scenario']}: {n}" for r in rows for n in r["notes"]]
    return "\n".join(lines + (["", *notes] if notes else []))
