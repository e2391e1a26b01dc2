"""`siloflow run all --burst` as a user runs it: the services as separate processes (the worker
supervisor with two shards) drain the reports an agent published into the right silos."""

from __future__ import annotations

import asyncio
import json
import subprocess
import uuid
from collections.abc import Callable

from services.agent.client import AgentPublisher
from services.core.broker.users import agent_url
from services.core.settings import Settings
from tests.integration.pipeline import committed_ids, signed
from tests.reports import report

Siloflow = Callable[..., subprocess.CompletedProcess[str]]


def test_run_all_burst_drains_into_each_tenant(siloflow: Siloflow, e2e_settings: Settings) -> None:
    siloflow("bootstrap", "--admin-dsn", "postgresql://postgres@127.0.0.1/postgres")
    siloflow("migrate")
    hosts = {}
    for slug in ("acme", "globex", "initech"):
        siloflow("tenant", "create", slug)
        hosts[slug] = uuid.uuid4()
        siloflow("host", "bind", str(hosts[slug]), "--tenant", slug)
    sent = {
        slug: [report(kind, host) for kind in ("heartbeat", "system_info", "packages")]
        for slug, host in hosts.items()
    }

    async def agent() -> None:
        async with AgentPublisher(agent_url(e2e_settings), e2e_settings.namespace) as publisher:
            for reports in sent.values():
                for r in reports:
                    await publisher.publish(signed(e2e_settings, r))

    asyncio.run(agent())
    result = siloflow("run", "all", "--burst")
    assert result.returncode == 0
    listed = {t["slug"]: t for t in json.loads(siloflow("tenant", "list", "--json").stdout)}
    for slug, reports in sent.items():
        ids = asyncio.run(committed_ids(listed[slug]["database"]))
        assert sorted(ids) == sorted(uuid.UUID(r.message_id) for r in reports), slug
