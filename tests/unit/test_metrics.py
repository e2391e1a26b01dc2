"""The label cache in front of prometheus-client: the same child as `labels`, once per value set,
so a count through it is the count the endpoint exports."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter

from services.core import metrics


def test_labelled_is_the_metrics_own_child_and_counts_there() -> None:
    registry = CollectorRegistry()
    counter = Counter("t_reports", "test", ["stage", "outcome"], registry=registry)
    child = metrics.labelled(counter, "router", "routed")
    assert child is counter.labels("router", "routed")
    assert metrics.labelled(counter, "router", "routed") is child
    assert metrics.labelled(counter, "ingest", "routed") is not child
    for _ in range(3):
        metrics.labelled(counter, "router", "routed").inc()
    sample = "t_reports_total"
    assert registry.get_sample_value(sample, {"stage": "router", "outcome": "routed"}) == 3
    assert registry.get_sample_value(sample, {"stage": "ingest", "outcome": "routed"}) == 0


def test_a_line_logged_while_a_message_is_handled_names_it() -> None:
    from services.core.logs import MESSAGE, add_message  # noqa: PLC0415

    assert add_message(None, "info", {"event": "x"}) == {"event": "x"}
    token = MESSAGE.set(("m-1", "h-1", "router"))
    try:
        event = add_message(None, "info", {"event": "x", "host_id": "said-so"})
    finally:
        MESSAGE.reset(token)
    # What the line says itself wins; the rest comes from the message being handled.
    assert event == {"event": "x", "message_id": "m-1", "host_id": "said-so", "stage": "router"}
    assert MESSAGE.get() is None
