"""The benchmark's figures: per phase and system, their ratios, the checks that void a score, and
the table printed at the end."""

from __future__ import annotations

import statistics
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

from rich.table import Table

from services.core.diagnosis import public

if TYPE_CHECKING:
    from services.bench.deployment import Options

# Targets of the performance issue (issue 17), as ratios or limits.
TARGET_THROUGHPUT_RATIO = 0.85
TARGET_CPU_RATIO = 1.2
TARGET_P99_S = 0.250  # the median of the runs' p99s
TARGET_WORST_P99_S = 0.400  # any one run's


def _quantile(values: list[float], q: float) -> float:
    return statistics.quantiles(values, n=1000, method="inclusive")[int(q * 1000) - 1]


@dataclass
class Phase:
    """One phase of one system's run: what was published and committed, the time, CPU, latencies."""

    system: str
    published: int
    committed: int  # of the published ids, how many are in the databases
    missing: int
    unexpected: int  # committed ids nobody published in this phase (must be 0)
    seconds: float
    first_sent: float
    latencies_s: list[float] = field(repr=False)
    cpu_s: dict[str, float]
    rate: float  # the publishing rate asked for (0: as fast as possible)
    peak_tenant_connections: int = 0  # sessions under tenant logins, sampled while it ran
    probe_cpu_s: float = 0.0  # what the bench's own sessions cost the server (not counted)
    kinds: list[str] = field(default_factory=list, repr=False)  # each latency's report kind

    @property
    def throughput(self) -> float:
        """Committed reports per second, from the first publish to the last commit seen."""
        return self.committed / self.seconds if self.seconds else 0.0

    def percentile(self, q: float) -> float | None:
        """The latency quantile `q` (None with fewer than two reports)."""
        if len(self.latencies_s) < 2:
            return None
        return _quantile(self.latencies_s, q)

    def p99_by_kind(self) -> dict[str, float]:
        """The p99 of each report kind's latencies (kinds with at least two reports): where a
        tail comes from, when one kind (a 2,000-package snapshot) is slower than the rest."""
        by_kind: dict[str, list[float]] = {}
        if not self.kinds:  # not recorded (a phase built without them)
            return {}
        for kind, latency in zip(self.kinds, self.latencies_s, strict=True):
            by_kind.setdefault(kind, []).append(latency)
        return {
            kind: _quantile(values, 0.99)
            for kind, values in sorted(by_kind.items())
            if len(values) >= 2
        }

    def cpu_per_1000(self) -> dict[str, float]:
        """CPU seconds per 1,000 committed reports, by process group, and their total."""
        per = (
            {k: v / self.committed * 1000 for k, v in self.cpu_s.items()} if self.committed else {}
        )
        per["total"] = sum(per.values())
        return per

    @property
    def exact(self) -> bool:
        """Whether every published report was committed once and nothing else."""
        return self.missing == 0 and self.unexpected == 0 and self.committed == self.published

    def as_json(self) -> dict[str, Any]:
        """The phase's figures for the JSON document."""
        out = {k: v for k, v in asdict(self).items() if k not in ("latencies_s", "kinds")}
        out.update(
            throughput=self.throughput,
            p50_s=self.percentile(0.5),
            p95_s=self.percentile(0.95),
            p99_s=self.percentile(0.99),
            p99_by_kind_s=self.p99_by_kind(),
            cpu_s_per_1000=self.cpu_per_1000(),
            exactly_once=self.exact,
        )
        return out


@dataclass
class SystemResult:
    """One run of one system: its two phases, memory and dead letters."""

    system: str
    peak: Phase
    steady: Phase
    rss_mb: dict[str, float]
    dead_letters: int
    extra: dict[str, Any] = field(default_factory=dict)

    def as_json(self) -> dict[str, Any]:
        """The run's figures for the JSON document."""
        return {
            "peak": self.peak.as_json(),
            "steady": self.steady.as_json(),
            "peak_rss_mb": self.rss_mb,
            "dead_letters": self.dead_letters,
            **self.extra,
        }


def _ratio(a: float | None, b: float | None) -> float | None:
    return a / b if a is not None and b else None


def _run_document(silo: SystemResult, base: SystemResult | None) -> dict[str, Any]:
    """One run's figures: each system's, and their ratios; a run that lost, doubled or
    dead-lettered a report has none (its figures are kept, to be read, not compared)."""
    document: dict[str, Any] = {"siloflow": silo.as_json()}
    valid = silo.peak.exact and silo.steady.exact and silo.dead_letters == 0
    if base is not None:
        document["baseline"] = base.as_json()
        valid = valid and base.peak.exact and base.steady.exact
        ratios = {
            "throughput": _ratio(silo.peak.throughput, base.peak.throughput),
            "cpu_per_report": _ratio(
                silo.peak.cpu_per_1000()["total"], base.peak.cpu_per_1000()["total"]
            ),
            "p99": _ratio(silo.steady.percentile(0.99), base.steady.percentile(0.99)),
        }
        document["ratios"] = ratios if valid else dict.fromkeys(ratios)
    document["valid"] = valid
    return document


def _median_p99(documents: list[dict[str, Any]], system: str) -> dict[str, Any]:
    """A system's p99 over the runs: the median of the runs' p99s (not the p99 of the run that
    is median by throughput), every run's, and the highest."""
    values = [d[system]["steady"]["p99_s"] for d in documents if system in d]
    known = [v for v in values if v is not None]
    return {
        "median_s": statistics.median(known) if known else None,
        "runs_s": values,
        "max_s": max(known, default=None),
    }


def _median_run(runs: list[dict[str, Any]]) -> int:
    """The run whose throughput ratio (siloflow's throughput, without a baseline) is the
    median (the lower one of an even count): the run the tables show."""

    def key(index: int) -> float:
        document = runs[index]
        ratio = (document.get("ratios") or {}).get("throughput")
        return float(ratio if ratio is not None else document["siloflow"]["peak"]["throughput"])

    ordered = sorted(range(len(runs)), key=key)
    return ordered[(len(ordered) - 1) // 2]


def summarise(
    namespace: str, options: Options, runs: list[tuple[SystemResult, SystemResult | None]]
) -> dict[str, Any]:
    """Every run's figures, and at the top the median run's with the ratios' medians and
    spread: `ratios.<name>` is the median over the runs, `spread.<name>` every run's value and
    their range (over the valid runs: an invalid run has no ratios, and voids the targets that
    compare); `siloflow`/`baseline` are the median run's; `p99.<system>` is the median of the
    runs' p99s, which the p99 target reads."""
    documents = [_run_document(silo, base) for silo, base in runs]
    median = documents[_median_run(documents)]
    document: dict[str, Any] = {
        "namespace": namespace,
        "options": {
            k: str(v) if k == "workdir" else public(v) if k == "admin_dsn" and v else v
            for k, v in asdict(options).items()
        },
        "n": len(documents),
        "median_run": documents.index(median) + 1,
        "siloflow": median["siloflow"],
        "runs": documents,
    }
    if "baseline" in median:
        document["baseline"] = median["baseline"]
        document["ratios"] = {}
        document["spread"] = {}
        for name in median["ratios"]:
            values = [d["ratios"][name] for d in documents]
            known = [v for v in values if v is not None]
            document["ratios"][name] = statistics.median(known) if known else None
            document["spread"][name] = {
                "runs": values,
                "min": min(known, default=None),
                "max": max(known, default=None),
            }
    document["valid"] = all(d["valid"] for d in documents)
    document["p99"] = {s: _median_p99(documents, s) for s in ("siloflow", "baseline")}
    ratios = (document.get("ratios") or {}) if document["valid"] else {}
    p99 = document["p99"]["siloflow"]["median_s"]
    worst = document["p99"]["siloflow"]["max_s"]
    document["targets"] = {
        "throughput_ratio_at_least_0_85": ratios.get("throughput") is not None
        and ratios["throughput"] >= TARGET_THROUGHPUT_RATIO,
        "cpu_per_report_ratio_at_most_1_2": ratios.get("cpu_per_report") is not None
        and ratios["cpu_per_report"] <= TARGET_CPU_RATIO,
        "p99_under_250ms": (p99 if p99 is not None else 1e9) < TARGET_P99_S,
        "no_run_p99_over_400ms": (worst if worst is not None else 1e9) <= TARGET_WORST_P99_S,
        "exactly_once_in_every_run": document["valid"],
    }
    return document


def _ms(seconds: float | None) -> str:
    return "-" if seconds is None else f"{seconds * 1000:.0f} ms"


def figures(document: dict[str, Any]) -> tuple[list[str], list[list[str]]]:
    """The main table: its header and rows, as text (for the terminal and for the docs)."""
    systems = [s for s in ("siloflow", "baseline") if s in document]
    header = ["figure", *systems] + (["siloflow / baseline"] if "ratios" in document else [])
    rows: list[list[str]] = []
    ratios = document.get("ratios", {})

    def row(label: str, values: list[str], ratio: float | None = None) -> None:
        cells = [label, *values]
        if "ratios" in document:
            cells.append("-" if ratio is None else f"{ratio:.2f}x")
        rows.append(cells)

    peak = {s: document[s]["peak"] for s in systems}
    steady = {s: document[s]["steady"] for s in systems}
    row("reports (throughput phase)", [f"{peak[s]['published']:,}" for s in systems])
    row(
        "committed reports/s",
        [f"{peak[s]['throughput']:,.0f}" for s in systems],
        ratios.get("throughput"),
    )
    row("latency-phase rate", [f"{steady[s]['rate']:,.0f}/s" for s in systems])
    for q in ("p50", "p95", "p99"):
        values = [steady[s][f"{q}_s"] for s in systems]
        ratio = _ratio(values[0], values[1]) if len(values) == 2 else None
        row(f"end-to-end latency {q}", [_ms(v) for v in values], ratio)
    if document.get("n", 1) > 1 and "p99" in document:
        medians = [document["p99"][s]["median_s"] for s in systems]
        row(
            "p99, median of the runs' p99s",
            [_ms(v) for v in medians],
            _ratio(medians[0], medians[1]) if len(medians) == 2 else None,
        )
        row("p99, the highest run's", [_ms(document["p99"][s]["max_s"]) for s in systems])
    kinds = sorted({k for s in systems for k in steady[s].get("p99_by_kind_s", {})})
    for kind in kinds:
        row(
            f"p99 of {kind} reports",
            [_ms(steady[s].get("p99_by_kind_s", {}).get(kind)) for s in systems],
        )
    groups = sorted({g for s in systems for g in peak[s]["cpu_s_per_1000"]} - {"total"})
    for group in groups:
        row(
            f"CPU s / 1,000 reports: {group}",
            [
                f"{peak[s]['cpu_s_per_1000'][group]:.3f}"
                if group in peak[s]["cpu_s_per_1000"]
                else "-"
                for s in systems
            ],
        )
    row(
        "CPU s / 1,000 reports: all processes",
        [f"{peak[s]['cpu_s_per_1000']['total']:.3f}" for s in systems],
        ratios.get("cpu_per_report"),
    )
    for s in systems:
        for name, mb in document[s]["peak_rss_mb"].items():
            row(
                f"peak RSS {name}",
                [f"{mb:,.0f} MiB" if x == s else "" for x in systems],
            )
    row(
        "exactly once (published = committed, none extra)",
        ["yes" if peak[s]["exactly_once"] and steady[s]["exactly_once"] else "NO" for s in systems],
    )
    row("dead letters", [str(document[s]["dead_letters"]) for s in systems])
    row(
        "tenant database sessions (peak sampled)",
        [
            str(peak[s].get("peak_tenant_connections", "-")) if s == "siloflow" else "-"
            for s in systems
        ],
    )
    return header, rows


def extras(document: dict[str, Any]) -> list[list[str]]:
    """siloflow's own figures: router lookups, tenant connections and their bound."""
    return [
        [key, f"{value:.4g}" if isinstance(value, float) else str(value)]
        for key, value in document["siloflow"].items()
        if key.startswith(("router_", "registry_", "tenant_"))
    ]


SPREAD_HEADER = ["siloflow / baseline", "median", "each run", "range"]


def spread(document: dict[str, Any]) -> list[list[str]]:
    """The ratios over the interleaved runs: the median (the figure), each run's, the range."""
    rows = []
    for name, seen in (document.get("spread") or {}).items():
        median = document["ratios"][name]
        rows.append(
            [
                name,
                "-" if median is None else f"{median:.2f}x",
                ", ".join("-" if v is None else f"{v:.2f}x" for v in seen["runs"]),
                "-" if seen["min"] is None else f"{seen['min']:.2f}x - {seen['max']:.2f}x",
            ]
        )
    return rows


def title(document: dict[str, Any]) -> str:
    """The main table's title: which run it shows, and whether the bench is valid."""
    n = document.get("n", 1)
    shown = f"run {document.get('median_run', 1)} of {n}, the median" if n > 1 else "one run"
    return f"siloflow bench ({shown})" + ("" if document["valid"] else "  (INVALID: see checks)")


def render(document: dict[str, Any]) -> list[Table]:
    """The tables for the terminal."""
    header, rows = figures(document)
    main = Table(title=title(document))
    for index, column in enumerate(header):
        main.add_column(column, justify="left" if index == 0 else "right")
    for cells in rows:
        main.add_row(*cells)
    tables = [main]
    if ratios := spread(document):
        over = Table(title=f"ratios over n = {document['n']} interleaved runs")
        for index, column in enumerate(SPREAD_HEADER):
            over.add_column(column, justify="left" if index == 0 else "right")
        for cells in ratios:
            over.add_row(*cells)
        tables.append(over)
    if more := extras(document):
        router = Table(title="siloflow: router and tenant connections")
        router.add_column("figure")
        router.add_column("value", justify="right")
        for cells in more:
            router.add_row(*cells)
        tables.append(router)
    return tables


def markdown(document: dict[str, Any]) -> str:
    """The same tables as Markdown, for docs/performance.md."""
    header, rows = figures(document)
    lines = [f"{title(document)}:", ""]
    lines += ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(cells) + " |" for cells in rows]
    if ratios := spread(document):
        lines += ["", f"Ratios over n = {document['n']} interleaved runs:", ""]
        lines += ["| " + " | ".join(SPREAD_HEADER) + " |", "|" + "---|" * len(SPREAD_HEADER)]
        lines += ["| " + " | ".join(cells) + " |" for cells in ratios]
    if more := extras(document):
        lines += ["", "| siloflow figure | value |", "|---|---|"]
        lines += ["| " + " | ".join(cells) + " |" for cells in more]
    return "\n".join(lines) + "\n"
