"""The benchmark's pure parts: /proc parsing, CPU accounting over process trees, the workload
mix, and the figures' arithmetic and checks."""

from __future__ import annotations

import copy
import itertools
import os
import random
import socket
from collections import Counter
from typing import Any

import pytest

from services.bench import commits, matching_cost, procstat, scale, workload
from services.bench.deployment import Options
from services.bench.probes import RouterScrape, router_figures
from services.bench.results import Phase, SystemResult, markdown, summarise
from services.bench.runner import first_in
from services.core.catalog.versions import compare


def stat_line(pid: int, comm: str, ppid: int, utime: int, stime: int, cutime: int = 0) -> str:
    fields = ["S", str(ppid)] + ["0"] * 9 + [str(utime), str(stime), str(cutime), "0"] + ["0"] * 30
    return f"{pid} ({comm}) " + " ".join(fields)


def test_parse_stat_survives_spaces_and_parentheses_in_the_name() -> None:
    stat = procstat.parse_stat(stat_line(42, "tricky (name) x", 7, 200, 100, 50))
    assert (stat.pid, stat.ppid, stat.comm) == (42, 7, "tricky (name) x")
    assert stat.cpu_s == pytest.approx(300 / procstat.CLOCK_TICKS)
    assert stat.children_cpu_s == pytest.approx(50 / procstat.CLOCK_TICKS)


def test_group_cpu_counts_descendants_and_reaped_children_but_not_strangers() -> None:
    stats = {
        s.pid: s
        for s in (
            procstat.parse_stat(stat_line(10, "postgres", 1, 100, 0, cutime=500)),
            procstat.parse_stat(stat_line(11, "postgres", 10, 30, 0)),
            procstat.parse_stat(stat_line(12, "postgres", 10, 20, 0)),
            procstat.parse_stat(stat_line(20, "python", 1, 1000, 0)),
        )
    }
    assert procstat.postgres_roots(stats) == {10}
    assert procstat.descendants(stats, {10}) == {10, 11, 12}
    assert procstat.group_cpu_s(stats, {10}) == pytest.approx(650 / procstat.CLOCK_TICKS)


def test_the_mix_is_the_issue_s_and_the_same_for_the_same_seed() -> None:
    planned = workload.plan(hosts=50, count=20_000, seed=7)
    assert planned == workload.plan(hosts=50, count=20_000, seed=7)
    share = Counter(p.kind for p in planned)
    assert share["heartbeat"] / 20_000 == pytest.approx(0.90, abs=0.01)
    assert (share["system_info"] + share["hardware"]) / 20_000 == pytest.approx(0.05, abs=0.01)
    assert share["compliance"] / 20_000 == pytest.approx(0.04, abs=0.01)
    assert share["packages"] / 20_000 == pytest.approx(0.01, abs=0.005)
    assert {p.host_index for p in planned} <= set(range(50))


def test_the_warm_up_is_one_system_info_from_every_host() -> None:
    planned = workload.warm_up(hosts=2_000)
    assert sorted(p.host_index for p in planned) == list(range(2_000))
    assert {p.kind for p in planned} == {"system_info"}
    assert {p.kind for p in workload.warm_up(3, "packages")} == {"packages"}
    snapshot = workload.packages_snapshot()
    assert len(snapshot["packages"]) == workload.PACKAGES_PER_SNAPSHOT
    names = [p["name"] for p in snapshot["packages"]]
    assert len(set(names)) == len(names)


def phase(**overrides: object) -> Phase:
    values: dict[str, object] = {
        "system": "x",
        "published": 1000,
        "committed": 1000,
        "missing": 0,
        "unexpected": 0,
        "seconds": 2.0,
        "first_sent": 0.0,
        "latencies_s": [i / 1000 for i in range(1, 1001)],
        "cpu_s": {"ingest": 1.0, "postgresql": 0.5},
        "rate": 0.0,
    }
    values.update(overrides)
    return Phase(**values)  # type: ignore[arg-type]


def test_phase_figures() -> None:
    p = phase()
    assert p.throughput == 500
    assert p.percentile(0.5) == pytest.approx(0.5, abs=0.002)
    assert p.percentile(0.99) == pytest.approx(0.99, abs=0.002)
    assert p.cpu_per_1000() == {"ingest": 1.0, "postgresql": 0.5, "total": 1.5}
    assert p.exact


def test_the_tail_is_told_by_kind() -> None:
    # 990 quick heartbeats and 10 slow snapshots: the whole p99 is the snapshots' tail
    latencies = [0.01] * 990 + [0.3 + i / 100 for i in range(10)]
    kinds = ["heartbeat"] * 990 + ["packages"] * 10
    p = phase(latencies_s=latencies, kinds=kinds)
    by_kind = p.p99_by_kind()
    assert by_kind["heartbeat"] == pytest.approx(0.01)
    assert by_kind["packages"] == pytest.approx(0.39, abs=0.001)
    assert p.as_json()["p99_by_kind_s"] == by_kind
    assert "kinds" not in p.as_json()
    assert phase(latencies_s=[0.1, 0.2, 0.3], kinds=["a", "a", "b"]).p99_by_kind().keys() == {"a"}


@pytest.mark.parametrize(
    "overrides", [{"missing": 1, "committed": 999}, {"unexpected": 2}, {"committed": 999}]
)
def test_a_lost_or_extra_report_voids_the_phase(overrides: dict[str, object]) -> None:
    assert not phase(**overrides).exact


def test_the_process_listening_on_a_port_is_found() -> None:
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        port = listener.getsockname()[1]
        assert procstat.listening_inodes(port) & procstat.socket_inodes(os.getpid())
    assert not procstat.listening_inodes(port)  # closed: nobody listens there now


def test_the_steady_warm_p99_counts_only_lookups_since_the_first_scrape() -> None:
    def scrape(fast: float, slow: float) -> RouterScrape:
        # cumulative buckets: `fast` lookups within 10 us, `slow` more within 5 ms
        hits = [(0.00001, fast), (0.005, fast + slow), (float("inf"), fast + slow)]
        return RouterScrape({"hit": hits, "miss": []}, {"hit": fast + slow}, 10)

    saturated = scrape(fast=1000, slow=500)  # the throughput phase: a third were preempted
    end = scrape(fast=1000 + 2000, slow=500)  # the steady phase added 2,000 fast lookups
    figures = router_figures(end, saturated)
    assert figures["router_lookup_p99_warm_at_most_s"] == 0.005
    assert figures["router_lookup_p99_warm_steady_at_most_s"] == 0.00001
    assert figures["router_lookups"] == 3500


def test_bench_commits_refuses_a_round_count_below_one(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr("sys.argv", ["commits", "--rounds", "0"])
    with pytest.raises(SystemExit) as exited:
        commits.main()
    assert exited.value.code == 2
    assert "--rounds must be at least 1" in capsys.readouterr().err


def test_bench_commits_heartbeats_are_each_newer_than_the_last() -> None:
    reports = commits.Heartbeats()
    batch = reports.batch(5) + reports.batch(5)
    assert all(a.sent_at < b.sent_at for a, b in itertools.pairwise(batch))
    assert len({r.message_id for r in batch}) == 10


def system(name: str, throughput: float, cpu_total: float, p99_ms: float) -> SystemResult:
    """A system's run with a given throughput, CPU per report and steady p99."""
    seconds = 1000 / throughput
    peak = phase(seconds=seconds, cpu_s={"all": cpu_total}, system=name)
    steady = phase(latencies_s=[p99_ms / 1000] * 1000, rate=10.0, system=name)
    return SystemResult(name, peak, steady, {}, dead_letters=0)


def test_the_ratios_are_the_medians_of_interleaved_runs_and_the_tables_show_the_median_run() -> (
    None
):
    runs = [
        (system("siloflow", 800, 2.0, 120), system("baseline", 1000, 1.0, 60)),  # 0.80x
        (system("siloflow", 900, 1.8, 100), system("baseline", 1000, 1.5, 50)),  # 0.90x
        (system("siloflow", 700, 3.0, 300), system("baseline", 1000, 2.0, 100)),  # 0.70x
    ]
    document = summarise("bench1", Options(admin_dsn="postgresql://u:secret@h:1/p"), runs)
    assert document["n"] == 3 and document["median_run"] == 1  # 0.80x is the median
    assert document["ratios"]["throughput"] == pytest.approx(0.80)
    assert document["ratios"]["cpu_per_report"] == pytest.approx(1.5)  # of 2.0, 1.2, 1.5
    assert document["spread"]["throughput"]["runs"] == pytest.approx([0.8, 0.9, 0.7])
    assert (document["spread"]["throughput"]["min"], document["spread"]["throughput"]["max"]) == (
        pytest.approx(0.7),
        pytest.approx(0.9),
    )
    assert document["siloflow"]["steady"]["p99_s"] == pytest.approx(0.120)
    assert document["targets"]["throughput_ratio_at_least_0_85"] is False
    assert document["targets"]["p99_under_250ms"] is True
    assert "secret" not in str(document["options"])
    assert "n = 3" in markdown(document)


def test_a_run_that_lost_a_report_voids_the_whole_bench() -> None:
    good = (system("siloflow", 900, 1.0, 100), system("baseline", 1000, 1.0, 50))
    silo, base = system("siloflow", 900, 1.0, 100), system("baseline", 1000, 1.0, 50)
    silo.peak.missing, silo.peak.committed = 1, 999
    document = summarise("bench1", Options(admin_dsn="postgresql://h/p"), [good, (silo, base)])
    assert not document["valid"]
    assert document["targets"]["exactly_once_in_every_run"] is False


def scale_side(tenants: int, throughput: float, p99_ms: float, sessions: int) -> dict[str, Any]:
    """A one-run bench document of siloflow alone, as the scale bench keeps for each side."""
    silo = system("siloflow", throughput, 2.0, p99_ms)
    silo.peak.peak_tenant_connections = sessions
    silo.extra["tenant_connection_bound"] = 96
    silo.extra["provision_s_per_tenant"] = 0.5
    silo.extra["idle"] = {
        "cores": {"rabbitmq": 0.004 + tenants * 0.0001},
        "pss_mib": {"postgresql": 100 + tenants * 0.5},
        "broker_mem_used_mib": 150 + tenants * 0.2,
    }
    return summarise(
        f"bench{tenants}", Options(tenants=tenants, admin_dsn="postgresql://h/p"), [(silo, None)]
    )


def test_the_scale_bench_pairs_ten_tenants_with_the_many_on_servers_sized_for_them() -> None:
    few, middle, many = scale.sides(Options(tenants=1000, hosts=200, runs=3))
    assert [(s.tenants, s.hosts) for s in (few, middle, many)] == [
        (10, 200),
        (100, 200),
        (1000, 2000),
    ]
    assert all(not s.baseline and s.runs == 1 and s.idle_s > 0 for s in (few, middle, many))
    assert [s.tenants for s in scale.sides(Options(tenants=50))] == [10, 50]  # no middle
    # A pool for each tenant a worker process may own, never fewer than the default.
    assert few.max_tenant_engines == 32
    assert many.max_tenant_engines is not None
    assert many.max_tenant_engines * (os.cpu_count() or 1) >= 1000


def test_the_scale_ratio_is_the_median_pair_and_every_target_is_checked() -> None:
    pairs = [
        {10: scale_side(10, 600, 100, 10), 1000: scale_side(1000, 420, 200, 90)},  # 0.70
        {10: scale_side(10, 600, 100, 10), 1000: scale_side(1000, 480, 300, 97)},  # 0.80
        {10: scale_side(10, 600, 100, 10), 1000: scale_side(1000, 300, 200, 90)},  # 0.50
    ]
    found = scale.document(pairs, 1000)["scale"]
    assert found["ratio_1000_vs_10"] == pytest.approx(0.70)
    assert found["ratios"] == pytest.approx([0.7, 0.8, 0.5])
    assert found["1000"]["tenant_sessions_peak"] == 90  # the median pair's
    assert found["targets"] == {
        "ratio_at_least_0_75": False,
        "p99_under_250ms": True,
        "tenant_sessions_within_bound": True,
        "exactly_once_in_every_run": True,
    }
    over = scale.document([pairs[1]], 1000)["scale"]
    assert over["targets"]["ratio_at_least_0_75"] is True
    assert over["targets"]["p99_under_250ms"] is False  # 300 ms
    assert over["targets"]["tenant_sessions_within_bound"] is False  # 97 of 96
    table = scale.table_markdown(scale.render(scale.document(pairs, 1000)))
    assert "| committed reports/s | 600 | 420 | 0.70 |" in table
    # The cost of a tenant, idle and warm: the many side less the few, over the tenants added.
    per = found["per_tenant"]
    assert per["broker_memory_mib"] == pytest.approx(0.2)
    assert per["idle_millicores_rabbitmq"] == pytest.approx(0.1)
    assert per["pss_mib_postgresql"] == pytest.approx(0.5)
    assert per["provision_s"] == 0.5
    costs = scale.table_markdown(scale.cost_table(scale.document(pairs, 1000)))
    assert "| memory (PSS): postgresql | 105 MiB | 600 MiB | 0.500 MiB |" in costs


def test_the_matching_bench_prints_its_figures_and_refuses_too_few_rounds(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    from services.bench import matching  # noqa: PLC0415

    monkeypatch.setattr("sys.argv", ["matching", "--rounds", "100"])
    matching.main()
    out = capsys.readouterr().out
    assert "bookworm advisories" in out and "findings" in out
    assert "match (warm): p50" in out and "match (cold): p50" in out
    monkeypatch.setattr("sys.argv", ["matching", "--rounds", "5"])
    with pytest.raises(SystemExit) as refused:
        matching.main()
    assert refused.value.code == 2
    assert "--rounds must be at least 100" in capsys.readouterr().err


def test_one_snapshot_in_ten_has_a_package_upgraded_past_its_version() -> None:
    base = workload.packages_snapshot()
    rng = random.Random(3)
    datas = [workload.data("packages", 0, rng, base) for _ in range(2_000)]
    changed = [d for d in datas if d["packages"] != base["packages"]]
    assert 150 < len(changed) < 250  # about one in ten
    for data in changed[:20]:
        diff = [(a, b) for a, b in zip(base["packages"], data["packages"], strict=True) if a != b]
        assert len(diff) == 1
        before, after = diff[0]
        assert compare(after["version"], before["version"]) > 0
        assert compare(after["source_version"], before.get("source_version", before["version"])) > 0


def _side(
    throughput: float, cpu: float, p99: float, evaluated: int, exact: bool = True
) -> dict[str, Any]:
    return {
        "throughput": throughput,
        "cpu_ms_per_report": cpu,
        "p99_s": p99,
        "exact": exact,
        "hosts_evaluated": evaluated,
    }


def test_the_matching_cost_is_the_median_of_pairs_and_void_when_a_side_did_not_match() -> None:
    on, off = matching_cost.ON, matching_cost.OFF
    pairs = [
        {"order": [on, off], on: _side(90, 3.0, 0.3, 10), off: _side(100, 2.5, 0.2, 0)},
        {"order": [off, on], on: _side(99, 2.6, 0.5, 10), off: _side(100, 2.6, 0.1, 0)},
        {"order": [on, off], on: _side(80, 3.2, 0.4, 10), off: _side(100, 2.4, 0.3, 0)},
    ]
    document = matching_cost.summarise("ns", Options(), copy.deepcopy(pairs))
    assert document["valid"]
    assert document["ratios"]["throughput"]["median"] == pytest.approx(0.9)
    assert document["ratios"]["throughput"]["runs"] == pytest.approx([0.9, 0.99, 0.8])
    assert document["p99_s_median"] == {on: 0.4, off: 0.2}
    assert document["met"] is False
    unmatched = copy.deepcopy(pairs)
    unmatched[1][on]["hosts_evaluated"] = 0  # matching was on, yet nothing was evaluated
    assert "ratios" not in matching_cost.summarise("ns", Options(), unmatched)
    leaked = copy.deepcopy(pairs)
    leaked[2][off]["hosts_evaluated"] = 3  # matching was off, yet hosts were evaluated
    assert not matching_cost.summarise("ns", Options(), leaked)["valid"]
    lost = copy.deepcopy(pairs)
    lost[0][on]["exact"] = False
    void = matching_cost.summarise("ns", Options(), lost)
    void.update(first_evaluation={}, reevaluation=[])
    assert "no ratios" in "\n".join(matching_cost.render(void))


def test_pairs_alternate_which_system_runs_first() -> None:
    assert [first_in(i) for i in range(4)] == ["siloflow", "baseline", "siloflow", "baseline"]


def test_the_p99_is_the_median_of_the_runs_p99s_not_the_median_runs() -> None:
    runs = [
        (system("siloflow", 800, 2.0, 120), system("baseline", 1000, 1.0, 60)),  # median run
        (system("siloflow", 900, 1.8, 300), system("baseline", 1000, 1.5, 50)),
        (system("siloflow", 700, 3.0, 200), system("baseline", 1000, 2.0, 100)),
    ]
    document = summarise("bench1", Options(admin_dsn="postgresql://h/p"), runs)
    assert document["median_run"] == 1
    assert document["siloflow"]["steady"]["p99_s"] == pytest.approx(0.120)  # the median run's
    assert document["p99"]["siloflow"]["median_s"] == pytest.approx(0.200)  # of 120, 300, 200
    assert document["p99"]["siloflow"]["max_s"] == pytest.approx(0.300)
    assert document["p99"]["baseline"]["median_s"] == pytest.approx(0.060)
    assert document["targets"]["p99_under_250ms"] is True
    assert document["targets"]["no_run_p99_over_400ms"] is True
    worse = [*runs[:2], (system("siloflow", 700, 3.0, 450), system("baseline", 1000, 2.0, 100))]
    document = summarise("bench1", Options(admin_dsn="postgresql://h/p"), worse)
    assert document["targets"]["no_run_p99_over_400ms"] is False
    assert "p99, median of the runs' p99s" in markdown(document)


def test_a_run_that_lost_a_report_gives_no_ratios() -> None:
    good = (system("siloflow", 900, 1.0, 100), system("baseline", 1000, 1.0, 50))
    silo, base = system("siloflow", 500, 1.0, 100), system("baseline", 1000, 1.0, 50)
    base.peak.unexpected = 1  # a doubled report on the baseline's side
    document = summarise("bench1", Options(admin_dsn="postgresql://h/p"), [good, (silo, base)])
    assert document["runs"][1]["ratios"] == dict.fromkeys(("throughput", "cpu_per_report", "p99"))
    assert document["spread"]["throughput"]["runs"] == [pytest.approx(0.9), None]
    # The bench compares nothing while any run is void.
    assert document["targets"]["throughput_ratio_at_least_0_85"] is False
