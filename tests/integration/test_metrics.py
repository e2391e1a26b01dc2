"""Metrics and health endpoints: scraped while reports flow, the counters move."""

from __future__ import annotations

import asyncio
import socket
import uuid

import httpx
from prometheus_client.parser import text_string_to_metric_families

from services.router import app as router_app
from services.workers import app as workers_app
from tests.integration.pipeline import Env, bound_host, committed_ids, publish
from tests.integration.test_delivery import eventually
from tests.reports import report


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


async def test_metrics_change_when_reports_flow(env: Env) -> None:
    port = _free_port()
    settings = env.settings.model_copy(update={"metrics_port": port})
    stop = asyncio.Event()
    services = [asyncio.create_task(router_app.run(settings, stop=stop))]
    url = f"http://127.0.0.1:{port}"
    try:
        async with httpx.AsyncClient(base_url=url) as web:

            async def up() -> bool:
                try:
                    return (await web.get("/readyz")).status_code == 200
                except httpx.TransportError:
                    return False

            await eventually(up, "the router answers /readyz")
            assert (await web.get("/healthz")).json() == {"status": "alive"}
            before = _samples((await web.get("/metrics")).text)
            host = await bound_host(env, env.a)
            good = [report("heartbeat", host) for _ in range(3)]
            stray = report("heartbeat", uuid.uuid4())
            await publish(env.settings, [*good, stray])

            async def landed() -> bool:  # workers in this process: the same metrics registry
                await workers_app.run(env.settings, tenants={env.a.slug}, burst=True)
                return {uuid.UUID(r.message_id) for r in good} <= set(
                    await committed_ids(env.a.db_name)
                )

            await eventually(landed, "the reports land")
            after = _samples((await web.get("/metrics")).text)

        def delta(name: str, **labels: str) -> float:
            key = (name, tuple(sorted(labels.items())))
            return after.get(key, 0.0) - before.get(key, 0.0)

        assert delta("siloflow_reports_total", stage="router", outcome="accepted") >= 4
        assert delta("siloflow_commits_total", tenant=env.a.slug) >= 3
        assert delta("siloflow_dead_letters_total", stage="router", reason="no-tenant-binding") >= 1
        assert delta("siloflow_end_to_end_seconds_count") >= 3
        assert delta("siloflow_router_lookups_total", result="miss") >= 1
        lag = after[("siloflow_queue_lag_seconds", (("stage", "router"), ("tenant", "")))]
        assert 0 <= lag < 600  # how long the last report waited in intake
    finally:
        stop.set()
        await asyncio.gather(*services)
