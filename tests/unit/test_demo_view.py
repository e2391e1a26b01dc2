"""The demo's view: what it says is settled, and what a snapshot shows."""

from __future__ import annotations

from rich.console import Console

from services.demo.view import Snapshot, render


def shown(snapshot: Snapshot) -> str:
    console = Console(record=True, width=120)
    console.print(render(snapshot))
    return console.export_text()


def test_settled_means_every_published_report_committed() -> None:
    base = {"elapsed_s": 1.0, "phase": "p", "enrolled": 3, "rates": {}}
    assert Snapshot(**base, published={"a": 2, "b": 1}, committed={"a": 2, "b": 1}).settled
    assert not Snapshot(**base, published={"a": 2, "b": 1}, committed={"a": 2}).settled
    assert Snapshot(**base, published={}, committed={"a": 5}).settled


def test_the_view_shows_tenants_queues_and_letters_by_reason() -> None:
    text = shown(
        Snapshot(
            elapsed_s=12.5,
            phase="300 hosts reporting",
            enrolled=300,
            published={"acme": 1200, "globex": 900},
            committed={"acme": 1200, "globex": 850},
            rates={"acme": 150.0, "globex": 120.0},
            queues={"ns.tenant.globex": 50},
            dead_letters={"dlq.invalid": {"bad-signature": 1, "not-json": 1}},
        )
    )
    for expected in (
        "300 hosts reporting",
        "acme",
        "1,200",
        "850",
        "150/s",
        "ns.tenant.globex",
        "bad-signature",
        "not-json",
        "hosts enrolled: 300",
    ):
        assert expected in text
