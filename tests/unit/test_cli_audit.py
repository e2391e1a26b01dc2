"""Every command is audited, or named here as one that changes nothing an operator answers for;
a new command fails this test until it is one or the other. And the pure rules of the trail."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import click
import pytest

from services.cli.audit import arguments
from services.cli.main import cli
from services.core.audit import ENDS_SILO, Entry, Outcome, Recorded, Where, merged, where_kept

# Reads: they change nothing.
READS = {
    "catalog status",
    "dlq list",
    "dlq show",
    "findings",
    "host list",
    "operator list",
    "placement list",
    "status",
    "tenant list",
    "tenant show",
    "token list",
    "topology export",
    "broker agent-url",
    "audit",
}
# Not an operator's act on the deployment: an agent's side, the services themselves, tools that
# work in a namespace of their own (bench, demo, simulate).
NOT_ACTS = {
    "agent register",
    "agent report",
    "bench",
    "demo",
    "simulate",
    "run all",
    "run api",
    "run ingest",
    "run router",
    "run sweeper",
    "run workers",
    # Before bootstrap and after teardown there is no registry to keep an entry in.
    "bootstrap",
    "teardown",
}


def _commands(group: click.Group, path: tuple[str, ...] = ()) -> dict[str, click.Command]:
    found: dict[str, click.Command] = {}
    for name, command in group.commands.items():
        if isinstance(command, click.Group):
            found |= _commands(command, (*path, name))
        else:
            found[" ".join((*path, name))] = command
    return found


COMMANDS = _commands(cli)


@pytest.mark.parametrize("name", sorted(COMMANDS))
def test_every_command_is_audited_or_named_as_changing_nothing(name: str) -> None:
    action = getattr(COMMANDS[name].callback, "__siloflow_audited__", None)
    if name in READS or name in NOT_ACTS:
        assert action is None, f"{name} is audited and named here as not an act"
    else:
        assert action == name.replace(" ", "."), f"{name}: audited as {action!r}"


def test_the_lists_name_only_commands_that_exist() -> None:
    assert (READS | NOT_ACTS) - COMMANDS.keys() == set()


def test_arguments_keep_no_secret_and_no_output_shape() -> None:
    kept = arguments(
        {
            "slug": "acme",
            "admin_dsns": ("postgresql://postgres:hunter2@db/postgres",),
            "admin_dsn": "postgresql://x:pw@db/postgres",
            "token": "s.root",
            "as_json": True,
            "yes": True,
            "uses": 3,
            "note": None,
            "move": False,
            "host_id": uuid.UUID(int=7),
            "out": Path("/tmp/x.tar"),
        }
    )
    assert kept == {
        "slug": "acme",
        "uses": 3,
        "host_id": str(uuid.UUID(int=7)),
        "out": "/tmp/x.tar",
    }


@pytest.mark.parametrize(
    ("tenant", "action", "reachable", "where"),
    [
        ("acme", "tenant.suspend", True, Where.SILO),
        ("acme", "tenant.suspend", False, Where.REGISTRY),
        (None, "operator.add", True, Where.REGISTRY),
        ("acme", "tenant.delete", True, Where.REGISTRY),
    ],
)
def test_where_an_entry_is_kept(
    tenant: str | None, action: str, reachable: bool, where: Where
) -> None:
    entry = Entry(actor="cli:root", action=action, outcome=Outcome.OK, tenant=tenant)
    assert where_kept(entry, silo_reachable=reachable) is where


def test_the_deletion_of_a_tenant_outlives_it() -> None:
    assert "tenant.delete" in ENDS_SILO


def test_trails_merge_newest_first_up_to_the_limit() -> None:
    t0 = datetime(2026, 1, 1, tzinfo=UTC)

    def at(minutes: int, where: Where) -> Recorded:
        entry = Entry(actor="a", action=f"x{minutes}", outcome=Outcome.OK)
        return Recorded(at=t0 + timedelta(minutes=minutes), entry=entry, where=where)

    silo = [at(5, Where.SILO), at(1, Where.SILO)]
    registry = [at(4, Where.REGISTRY), at(2, Where.REGISTRY)]
    assert [r.entry.action for r in merged(silo, registry, limit=3)] == ["x5", "x4", "x2"]
