"""The alert rules and the Grafana dashboard, proven against what is really exported: the rules
pass `promtool check rules`, and every metric an alert rule or a dashboard panel reads is
exported by a running siloflow service's /metrics or by RabbitMQ's Prometheus endpoint."""

from __future__ import annotations

import asyncio
import json
import re
import signal
import subprocess
import sys
from pathlib import Path

import httpx
import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from services.bench.processes import free_port
from services.bench.servers import all_free
from tests.integration.pipeline import Env
from tests.integration.test_delivery import eventually
from tests.support import env_for, needs

DEPLOY = Path(__file__).parents[2] / "deploy"
RULES = DEPLOY / "prometheus" / "alerts.yml"
DASHBOARD = DEPLOY / "grafana" / "siloflow.json"
SILOFLOW = Path(sys.executable).parent / "siloflow"
RABBITMQ_METRICS = "http://127.0.0.1:15692/metrics/per-object"
# PromQL's own words, never metric names.
PROMQL = {
    "sum", "by", "rate", "delta", "histogram_quantile", "and", "or", "unless", "max", "min",
    "avg", "count", "le", "without", "increase", "irate", "on", "ignoring", "bool", "offset",
}  # fmt: skip


def expressions() -> list[str]:
    """Every PromQL expression of the alert rules and the dashboard's panels."""
    found = [
        rule["expr"]
        for group in yaml.safe_load(RULES.read_text())["groups"]
        for rule in group["rules"]
    ]

    def walk(node: object) -> None:
        if isinstance(node, dict):
            if isinstance(node.get("expr"), str):
                found.append(node["expr"])
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)

    walk(json.loads(DASHBOARD.read_text()))
    return found


def metric_names(expr: str) -> set[str]:
    """The metric names an expression reads (label names, strings and durations left out)."""
    expr = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)  # label values
    expr = re.sub(r"\{[^}]*\}", "", expr)  # label matchers
    expr = re.sub(r"\[[^\]]*\]", "", expr)  # ranges
    expr = re.sub(r"\b(?:by|without|on|ignoring)\s*\([^)]*\)", "", expr)  # grouping labels
    words = set(re.findall(r"[a-zA-Z_:][a-zA-Z0-9_:]*", expr))
    return {w for w in words if w not in PROMQL}


def test_the_expression_reader_finds_metrics_and_nothing_else() -> None:
    expr = 'sum by (queue) (delta(rabbitmq_queue_messages{queue=~".*dlq.*"}[15m])) > 0'
    assert metric_names(expr) == {"rabbitmq_queue_messages"}
    expr = "histogram_quantile(0.99, sum by (le) (rate(siloflow_end_to_end_seconds_bucket[5m])))"
    assert metric_names(expr) == {"siloflow_end_to_end_seconds_bucket"}


def test_the_alert_rules_pass_promtool() -> None:
    needs("promtool", "`promtool check rules` on deploy/prometheus/alerts.yml")
    result = subprocess.run(
        ["promtool", "check", "rules", str(RULES)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout


def exported(text: str) -> set[str]:
    """The metric names an exposition serves: each family's, and each sample's (a counter's
    `_total`, a histogram's `_bucket`, `_sum`, `_count`)."""
    names: set[str] = set()
    for family in text_string_to_metric_families(text):
        names.add(family.name)
        names.update(sample.name for sample in family.samples)
        if family.type == "counter":
            names.add(f"{family.name}_total")
        if family.type == "histogram":
            names.update(f"{family.name}{s}" for s in ("_bucket", "_sum", "_count"))
    return names


def free_ports(count: int) -> int:
    """The first of `count` consecutive loopback ports free now."""
    for _ in range(50):
        base = free_port()
        if base + count <= 65535 and all_free(range(base, base + count)):
            return base
    raise RuntimeError("no run of free ports")


async def scrape(url: str) -> str:
    """A /metrics page, once the process serving it is up."""
    pages: list[str] = []
    async with httpx.AsyncClient(timeout=5) as client:

        async def served() -> bool:
            try:
                response = await client.get(url)
            except httpx.TransportError:
                return False
            if response.status_code == 200:
                pages.append(response.text)
            return bool(pages)

        await eventually(served, f"{url} serves its metrics")
    return pages[-1]


async def test_every_metric_the_alerts_and_dashboard_read_is_exported(env: Env) -> None:
    # `run all`: ingest, router, sweeper, the worker supervisor and its two shards, each
    # serving /metrics on its own port from the first.
    base = free_ports(8)
    process = await asyncio.create_subprocess_exec(
        str(SILOFLOW),
        "run",
        "all",
        env={**env_for(env.settings), "SILOFLOW_METRICS_PORT": str(base)},
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        pages = [await scrape(f"http://127.0.0.1:{base + i}/metrics") for i in range(4)]
    finally:
        process.send_signal(signal.SIGTERM)
        await asyncio.wait_for(process.wait(), 60)
    ours: set[str] = set().union(*(exported(page) for page in pages))
    rabbitmq = exported(await scrape(RABBITMQ_METRICS))
    wanted = set().union(*(metric_names(e) for e in expressions()))
    assert wanted, "no metric read by the rules or the dashboard"
    missing = {
        name for name in wanted if name not in (rabbitmq if name.startswith("rabbitmq_") else ours)
    }
    assert not missing, f"read by an alert or a panel, exported by nothing: {sorted(missing)}"


@pytest.mark.parametrize("name", ["siloflow_no_such_metric", "rabbitmq_no_such_metric"])
def test_a_misspelt_metric_would_be_caught(name: str) -> None:
    assert name in metric_names(f"rate({name}[5m]) > 0")
