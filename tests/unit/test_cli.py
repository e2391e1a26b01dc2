"""The CLI refuses bad requests with a message that says what is wrong, before touching anything
(these run with no database: a refusal that needed one would fail here)."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest
from click.testing import CliRunner

from services.cli.main import cli
from services.core.hostkeys import ensure_keyring, load_keyring
from services.core.settings import load_settings

# Nothing listens here: if a command got past its checks it would fail to connect, not exit 2.
NOWHERE = {
    "SILOFLOW_REGISTRY_DSN": "postgresql://nobody@127.0.0.1:1/none",
    "SILOFLOW_NAMESPACE": "clitest",
}


@pytest.mark.parametrize(
    ("args", "env", "message"),
    [
        (["tenant", "create", "Bad_Slug"], {}, "invalid tenant slug 'Bad_Slug'"),
        (["tenant", "create", "a"], {}, "invalid tenant slug"),
        (["tenant", "delete", "acme"], {}, "add --yes to confirm"),
        (["tenant", "create", "acme"], {"SILOFLOW_MULTITENANT": "false"}, "exactly one tenant"),
        (
            ["tenant", "delete", "default", "--yes"],
            {"SILOFLOW_MULTITENANT": "false"},
            "exactly one tenant",
        ),
        (["migrate", "--status", "--dry-run"], {}, "pick one"),
        (["placement", "add", "eu", "--host", "db1", "--port", "70000"], {}, "70000"),
        (["bootstrap", "--admin-dsn", "mysql://root@127.0.0.1/x"], {}, "not a postgresql://"),
        (
            ["bootstrap", "--admin-dsn", "postgresql://postgres@10.9.9.9/postgres"],
            {},
            "bootstrap the registry's server",
        ),
        (["tenant", "frobnicate"], {}, "No such command"),
    ],
)
def test_bad_requests_are_refused_with_exit_2(
    args: list[str], env: dict[str, str], message: str
) -> None:
    result = CliRunner().invoke(cli, args, env={**NOWHERE, **env})
    assert result.exit_code == 2, result.output
    assert message in result.output


def test_bad_settings_fail_by_name() -> None:
    result = CliRunner().invoke(cli, ["tenant", "list"], env={"SILOFLOW_NAMESPACE": "No-Good"})
    assert result.exit_code == 78  # EX_CONFIG: a supervisor does not restart what a setting stops
    assert "SILOFLOW_NAMESPACE" in result.output


def test_an_unreachable_registry_is_a_clear_failure() -> None:
    result = CliRunner().invoke(cli, ["tenant", "list"], env=NOWHERE)
    assert result.exit_code == 1
    assert "Traceback" not in result.output
    assert "Error:" in result.output


def test_help_needs_no_settings() -> None:
    result = CliRunner().invoke(cli, ["--help"], env={"SILOFLOW_NAMESPACE": "No-Good"})
    assert result.exit_code == 0
    assert "tenant" in result.output


def test_hostkeys_rotate_adds_a_version_and_keeps_the_file_private(tmp_path: Path) -> None:
    env = {"SILOFLOW_STATE_DIR": str(tmp_path), "SILOFLOW_NAMESPACE": "rot"}
    settings = load_settings(state_dir=tmp_path, namespace="rot")
    assert ensure_keyring(settings)
    before = load_keyring(settings)
    result = CliRunner().invoke(cli, ["hostkeys", "rotate"], env=env)
    assert result.exit_code == 0, result.output
    after = load_keyring(settings)
    assert after.current == 2 and after.secrets[1] == before.secrets[1]
    assert stat.S_IMODE(settings.host_key_file.stat().st_mode) == 0o600
    refused = CliRunner().invoke(
        cli, ["hostkeys", "rotate"], env={**env, "SILOFLOW_HOST_KEY_SECRETS": "1:" + "A" * 44}
    )
    assert refused.exit_code == 2 and "SILOFLOW_HOST_KEY_SECRETS" in refused.output


def test_a_config_file_given_on_the_command_line_reaches_child_processes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = tmp_path / "siloflow.toml"
    config.write_text('namespace = "fromfile"\n')
    monkeypatch.delenv("SILOFLOW_CONFIG", raising=False)
    env = {**NOWHERE, "SILOFLOW_NAMESPACE": None}  # the environment would win over the file
    result = CliRunner().invoke(cli, ["--config", str(config), "topology", "export"], env=env)
    assert result.exit_code == 0, result.output
    assert "fromfile.agents" in result.output  # this process read it ...
    assert os.environ["SILOFLOW_CONFIG"] == str(config.resolve())  # ... and children will
