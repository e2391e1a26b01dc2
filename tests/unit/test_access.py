"""Who may do what, table-driven: every role x action, on a granted tenant, another tenant and
server-wide."""

from __future__ import annotations

import uuid

import pytest

from services.core.access import PERMITS, Action, Grant, Role, may, sees

GRANTED, OTHER = uuid.uuid4(), uuid.uuid4()

EXPECTED = {
    Role.ADMIN: set(Action),
    Role.OPERATOR: {
        Action.READ,
        Action.TOKENS,
        Action.DEAD_LETTERS,
        Action.LIFECYCLE,
        Action.AUDIT,
    },
    Role.VIEWER: {Action.READ},
}


@pytest.mark.parametrize("role", list(Role))
@pytest.mark.parametrize("action", list(Action))
def test_a_grant_on_one_tenant(role: Role, action: Action) -> None:
    grants = [Grant(GRANTED, role)]
    assert may(grants, action, GRANTED) == (action in EXPECTED[role])
    assert not may(grants, action, OTHER)  # never another tenant
    assert not may(grants, action)  # never server-wide
    assert sees(grants, GRANTED) and not sees(grants, OTHER)


@pytest.mark.parametrize("role", list(Role))
@pytest.mark.parametrize("action", list(Action))
def test_a_grant_on_all_tenants(role: Role, action: Action) -> None:
    grants = [Grant(None, role)]
    assert may(grants, action, GRANTED) == (action in EXPECTED[role])
    assert may(grants, action, OTHER) == (action in EXPECTED[role])
    assert may(grants, action) == (action in EXPECTED[role])
    assert sees(grants, OTHER)


def test_no_grant_permits_nothing_and_sees_nothing() -> None:
    assert not any(may([], action, GRANTED) for action in Action)
    assert not sees([], GRANTED)


def test_grants_add_up() -> None:
    grants = [Grant(GRANTED, Role.VIEWER), Grant(GRANTED, Role.OPERATOR), Grant(OTHER, Role.VIEWER)]
    assert may(grants, Action.TOKENS, GRANTED) and not may(grants, Action.TOKENS, OTHER)


def test_every_role_is_in_the_table() -> None:
    assert set(PERMITS) == set(Role)
