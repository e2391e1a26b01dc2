"""Registration throttling: free failures, doubling waits, forgetting, the global guess budget and
the memory bound, with time passed in."""

from __future__ import annotations

import pytest

from services.core.throttle import Throttle, ThrottleLimits

LIMITS = ThrottleLimits(
    free_failures=3,
    penalty_s=1.0,
    max_penalty_s=8.0,
    forget_after_s=100.0,
    failures_per_s=1000.0,
    failure_burst=1000.0,
)


@pytest.mark.parametrize(
    ("failures", "penalty_s"),
    [(0, 0.0), (2, 0.0), (3, 1.0), (4, 2.0), (5, 4.0), (6, 8.0), (7, 8.0), (500, 8.0)],
)
def test_penalty_doubles_past_the_free_failures_up_to_a_cap(
    failures: int, penalty_s: float
) -> None:
    assert Throttle(LIMITS, 0.0).penalty_s(failures) == penalty_s


def test_a_source_waits_after_its_free_failures_and_others_do_not() -> None:
    throttle = Throttle(LIMITS, 0.0)
    for t in range(3):
        assert throttle.wait_s("a", float(t)) == 0.0
        throttle.failed("a", float(t))
    assert throttle.wait_s("a", 2.5) == pytest.approx(0.5)  # last failure at 2.0, waits 1 s
    assert throttle.wait_s("b", 2.5) == 0.0
    assert throttle.wait_s("a", 3.0) == 0.0
    throttle.failed("a", 3.0)
    assert throttle.wait_s("a", 3.5) == pytest.approx(1.5)  # the fourth failure: 2 s


def test_a_good_token_or_a_quiet_hour_clears_the_record() -> None:
    throttle = Throttle(LIMITS, 0.0)
    for t in range(5):
        throttle.failed("a", float(t))
        throttle.failed("b", float(t))
    assert throttle.wait_s("a", 4.5) > 0 and throttle.wait_s("b", 4.5) > 0
    throttle.succeeded("a")
    assert throttle.wait_s("a", 4.5) == 0.0
    assert throttle.wait_s("b", 4.0 + LIMITS.forget_after_s + 1) == 0.0


def test_rotating_sources_runs_into_the_global_budget() -> None:
    limits = ThrottleLimits(free_failures=1000, failures_per_s=10.0, failure_burst=20.0)
    throttle = Throttle(limits, 0.0)
    for n in range(20):
        assert throttle.wait_s(f"src-{n}", 0.0) == 0.0
        throttle.failed(f"src-{n}", 0.0)
    assert throttle.wait_s("fresh-source", 0.0) == pytest.approx(0.1)  # one guess per 0.1 s
    assert throttle.wait_s("fresh-source", 0.1) == 0.0


def test_the_sources_remembered_are_bounded() -> None:
    limits = ThrottleLimits(free_failures=1, max_sources=10, failure_burst=1e9)
    throttle = Throttle(limits, 0.0)
    for n in range(25):
        throttle.failed(f"src-{n}", 0.0)
    assert len(throttle._sources) == 10
    assert throttle.wait_s("src-0", 0.5) == 0.0  # forgotten: the oldest went first
    assert throttle.wait_s("src-24", 0.5) > 0
