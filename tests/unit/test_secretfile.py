"""Secret files are 0600 from their first byte, whatever was left where they are written."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from services.core.secretfile import write_secret_file


def mode(path: Path) -> int:
    return stat.S_IMODE(path.lstat().st_mode)


def test_a_secret_file_is_owner_only_and_whole(tmp_path: Path) -> None:
    target = tmp_path / "state" / "host-keys.json"
    write_secret_file(target, "secret")
    assert target.read_text() == "secret"
    assert mode(target) == 0o600
    assert mode(target.parent) == 0o700
    assert [p.name for p in target.parent.iterdir()] == ["host-keys.json"]  # no temporary left


def test_a_leftover_temporary_file_with_a_loose_mode_is_never_written_through(
    tmp_path: Path,
) -> None:
    target = tmp_path / "broker-users.json"
    leftover = tmp_path / "broker-users.json.tmp"  # the old writer's fixed name
    leftover.write_text("old")
    leftover.chmod(0o644)
    old_umask = os.umask(0)  # the loosest umask there is
    try:
        write_secret_file(target, "new")
    finally:
        os.umask(old_umask)
    assert mode(target) == 0o600
    assert leftover.read_text() == "old"  # not reused


def test_a_link_in_the_place_of_the_file_is_replaced_not_followed(tmp_path: Path) -> None:
    elsewhere = tmp_path / "elsewhere"
    elsewhere.write_text("untouched")
    target = tmp_path / "host-keys.json"
    target.symlink_to(elsewhere)
    write_secret_file(target, "secret")
    assert not target.is_symlink()
    assert elsewhere.read_text() == "untouched"
    assert mode(target) == 0o600


def test_a_failed_write_leaves_nothing_behind(tmp_path: Path) -> None:
    target = tmp_path / "x.json"
    with pytest.raises(TypeError):
        write_secret_file(target, 42)  # type: ignore[arg-type]
    assert list(tmp_path.iterdir()) == []
