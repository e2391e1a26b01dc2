"""deploy/local/ensure-services.sh says what it changes on the machine, and `undo` takes it
back: the pg_hba.conf lines that make short-lived logins give their password, and their group
role (kept while a login still belongs to it). Run again, it puts them back."""

from __future__ import annotations

import asyncio
import os
import subprocess
from pathlib import Path

import pytest

from tests.support import admin_fetch

SCRIPT = Path(__file__).parents[2] / "deploy" / "local" / "ensure-services.sh"
MARK = "# siloflow: short-lived logins must authenticate"
GROUP = "siloflow_password_login"


def script(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(SCRIPT), *args], capture_output=True, text=True, timeout=300, check=False
    )


def hba() -> Path:
    return Path(asyncio.run(admin_fetch("show hba_file"))[0][0])


def members() -> int:
    rows = asyncio.run(
        admin_fetch(
            "select count(*) from pg_auth_members m join pg_roles r on r.oid = m.roleid "
            "where r.rolname = $1",
            GROUP,
        )
    )
    return int(rows[0][0])


@pytest.mark.skipif(os.geteuid() != 0, reason="pg_hba.conf is writable by root (or postgres) only")
def test_undo_takes_back_what_it_changed_and_running_it_again_restores_it() -> None:
    assert MARK in hba().read_text(), "ensure-services.sh ran before the tests (.ci/run)"
    try:
        undone = script("undo")
        assert undone.returncode == 0, undone.stderr
        assert MARK not in hba().read_text()
        assert f"+{GROUP}" not in hba().read_text()
        group = asyncio.run(admin_fetch("select 1 from pg_roles where rolname = $1", GROUP))
        if members():
            assert group and "kept the role" in undone.stderr  # a deployment's login is in it
        else:
            assert not group and "dropped the role" in undone.stderr
    finally:
        again = script()
        assert again.returncode == 0, again.stderr
    text = hba().read_text()
    assert text.startswith(MARK) and text.count(MARK) == 1
    assert asyncio.run(admin_fetch("select 1 from pg_roles where rolname = $1", GROUP))
