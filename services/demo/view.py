"""What the demo shows, with no I/O: a snapshot of the deployment rendered as rich tables
(per-tenant reports committed and their rate, queues, dead letters by reason)."""

from __future__ import annotations

from dataclasses import dataclass, field

from rich.console import Group
from rich.panel import Panel
from rich.table import Table


@dataclass
class Snapshot:
    """What the live view shows at one moment."""

    elapsed_s: float
    phase: str  # what the demo is doing now
    enrolled: int
    published: dict[str, int]  # tenant -> reports the simulator published for it
    committed: dict[str, int]  # tenant -> reports in its silo
    rates: dict[str, float]  # tenant -> commits per second, lately
    queues: dict[str, int] = field(default_factory=dict)  # queue -> messages waiting
    dead_letters: dict[str, dict[str, int]] = field(default_factory=dict)  # dlq -> reason -> n

    @property
    def settled(self) -> bool:
        """Every published report committed (the misbehaving ones are counted apart)."""
        return all(self.committed.get(t, 0) >= n for t, n in self.published.items())


def render(snapshot: Snapshot) -> Group:
    """The live view of a snapshot."""
    tenants = Table(title="reports per tenant (each in its own database)", expand=True)
    for column in ("tenant", "published", "committed", "rate"):
        tenants.add_column(column, justify="left" if column == "tenant" else "right")
    for slug in sorted(snapshot.published.keys() | snapshot.committed.keys()):
        published = snapshot.published.get(slug, 0)
        committed = snapshot.committed.get(slug, 0)
        style = "green" if published and committed >= published else ""
        tenants.add_row(
            slug,
            f"{published:,}",
            f"[{style}]{committed:,}[/{style}]" if style else f"{committed:,}",
            f"{snapshot.rates.get(slug, 0.0):,.0f}/s",
        )
    queues = Table(title="queues (messages waiting)", expand=True)
    queues.add_column("queue")
    queues.add_column("waiting", justify="right")
    for name, waiting in sorted(snapshot.queues.items()):
        queues.add_row(name, f"{waiting:,}")
    letters = Table(title="dead letters, by reason", expand=True)
    letters.add_column("queue")
    letters.add_column("reason")
    letters.add_column("letters", justify="right")
    for queue, reasons in sorted(snapshot.dead_letters.items()):
        for reason, count in sorted(reasons.items()):
            letters.add_row(queue, reason, str(count))
    if not snapshot.dead_letters:
        letters.add_row("-", "none yet", "0")
    header = (
        f"[bold]{snapshot.phase}[/bold]   {snapshot.elapsed_s:5.1f} s   "
        f"hosts enrolled: {snapshot.enrolled:,}"
    )
    return Group(Panel(header, title="siloflow demo"), tenants, queues, letters)
