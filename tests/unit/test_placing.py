"""Where a new tenant goes: the reachable, undrained placement with the fewest tenants."""

from __future__ import annotations

import pytest

from services.core.placing import Load, choose


def load(name: str, tenants: int, *, reachable: bool = True, draining: bool = False) -> Load:
    return Load(name, tenants, reachable, draining)


@pytest.mark.parametrize(
    ("loads", "excluding", "chosen"),
    [
        ([load("default", 3), load("eu-1", 1)], None, "eu-1"),
        ([load("default", 1), load("eu-1", 1)], None, "default"),  # a tie: first by name
        ([load("default", 3), load("eu-1", 1, reachable=False)], None, "default"),
        ([load("default", 3), load("eu-1", 0, draining=True)], None, "default"),
        ([load("default", 0), load("eu-1", 5)], "default", "eu-1"),  # draining default
        ([load("default", 0, reachable=False)], None, None),
        ([], None, None),
    ],
)
def test_the_fewest_tenants_among_reachable_undrained_placements(
    loads: list[Load], excluding: str | None, chosen: str | None
) -> None:
    assert choose(loads, excluding=excluding) == chosen
