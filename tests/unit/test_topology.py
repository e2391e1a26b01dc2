"""The broker topology as data: the shipped definitions are current, dead-letter queues carry no
delivery limit, and every waiting queue does."""

from __future__ import annotations

import json
import re
from pathlib import Path

import yaml

from schemas.export import JSON_DIR, documents
from services.core import metrics
from services.core.broker.topology import TENANT_QUEUE_ARGS, policies, queues
from services.core.names import DLQS, Names
from services.core.settings import load_settings
from services.ops.topology import definitions

ROOT = Path(__file__).resolve().parents[2]


def test_shipped_definitions_are_current() -> None:
    shipped = json.loads((ROOT / "deploy" / "rabbitmq" / "definitions.json").read_text())
    assert shipped == definitions(load_settings(namespace="siloflow")), (
        "regenerate with: siloflow topology export > deploy/rabbitmq/definitions.json"
    )


def test_shipped_json_schemas_are_current() -> None:
    for name, text in documents().items():
        assert (JSON_DIR / name).read_text() == text, "regenerate with: python -m schemas.export"


def test_policies_cover_waiting_queues_and_never_a_dead_letter_queue() -> None:
    settings = load_settings(namespace="blue")
    names = Names("blue")
    specs = policies(names, settings)
    covered = {names.intake_queue, names.register_queue, names.tenant_queue("acme")}
    for queue in covered:
        matching = [p for p in specs if re.search(p.pattern, queue)]
        assert len(matching) == 1, queue  # one policy applies per queue: never ambiguous
        definition = matching[0].definition
        assert definition["delivery-limit"] == settings.delivery_limit
        assert definition["dead-letter-strategy"] == "at-least-once"
        assert definition["overflow"] == "reject-publish"
    for dlq in DLQS:
        assert not [p for p in specs if re.search(p.pattern, names.dlq(dlq))]
    # A namespace that merely starts with ours is not ours.
    assert not [p for p in specs if re.search(p.pattern, "blueish.tenant.acme")]


def test_every_queue_is_a_quorum_queue_and_tenants_have_one_active_consumer() -> None:
    for spec in queues(Names("blue")):
        assert spec.arguments["x-queue-type"] == "quorum"
        assert "x-single-active-consumer" not in spec.arguments
    assert TENANT_QUEUE_ARGS == {"x-queue-type": "quorum", "x-single-active-consumer": True}


def test_shipped_dashboards_and_alerts_parse_and_use_our_metrics() -> None:
    alerts = yaml.safe_load((ROOT / "deploy" / "prometheus" / "alerts.yml").read_text())
    rules = [rule for group in alerts["groups"] for rule in group["rules"]]
    assert {r["alert"] for r in rules} >= {
        "SiloflowDeadLettersGrowing",
        "SiloflowTenantQueueWithoutConsumer",
    }
    dashboard = json.loads((ROOT / "deploy" / "grafana" / "siloflow.json").read_text())
    exprs = " ".join(t["expr"] for p in dashboard["panels"] for t in p["targets"])
    exprs += " ".join(r["expr"] for r in rules)
    for metric in (metrics.REPORTS, metrics.DEAD_LETTERS, metrics.COMMITS, metrics.END_TO_END):
        assert metric._name in exprs, metric._name
