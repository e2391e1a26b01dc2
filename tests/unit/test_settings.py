"""Settings: defaults, sources and their order, and errors that name the setting."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from services.core.errors import SettingsError
from services.core.settings import load_settings


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for key in list(os.environ):
        if key.startswith("SILOFLOW_"):
            monkeypatch.delenv(key)


def test_defaults_match_the_documented_ones() -> None:
    settings = load_settings()
    assert settings.amqp_url == "amqp://guest:guest@127.0.0.1:5672/"
    assert settings.registry_url == "postgresql://postgres@127.0.0.1:5432/siloflow_registry"
    assert settings.namespace == "siloflow"
    assert settings.multitenant is True


def test_registry_database_follows_the_namespace_when_no_dsn_is_given(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("SILOFLOW_NAMESPACE", "blue")
    assert load_settings().registry_database == "blue_registry"


def test_environment_overrides_the_toml_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = tmp_path / "siloflow.toml"
    config.write_text('namespace = "fromfile"\nmultitenant = false\n')
    assert load_settings(config).namespace == "fromfile"
    assert load_settings(config).multitenant is False
    monkeypatch.setenv("SILOFLOW_NAMESPACE", "fromenv")
    assert load_settings(config).namespace == "fromenv"


@pytest.mark.parametrize(
    ("env", "named"),
    [
        ({"SILOFLOW_NAMESPACE": "Has-Caps"}, "SILOFLOW_NAMESPACE"),
        ({"SILOFLOW_NAMESPACE": "a" * 17}, "SILOFLOW_NAMESPACE"),
        ({"SILOFLOW_AMQP_URL": "http://127.0.0.1/"}, "SILOFLOW_AMQP_URL"),
        ({"SILOFLOW_REGISTRY_DSN": "mysql://x@h/db"}, "SILOFLOW_REGISTRY_DSN"),
        (
            {"SILOFLOW_REGISTRY_DSN": "postgresql://postgres@127.0.0.1:5432"},
            "SILOFLOW_REGISTRY_DSN",
        ),
        ({"SILOFLOW_MULTITENANT": "perhaps"}, "SILOFLOW_MULTITENANT"),
        ({"SILOFLOW_CONNECT_TIMEOUT_S": "-1"}, "SILOFLOW_CONNECT_TIMEOUT_S"),
        ({"SILOFLOW_MAX_TENANT_ENGINES": "0"}, "SILOFLOW_MAX_TENANT_ENGINES"),
        ({"SILOFLOW_NO_SUCH_THING": "1"}, None),  # unknown env vars are ignored, not an error
    ],
)
def test_a_bad_setting_is_refused_by_name(
    monkeypatch: pytest.MonkeyPatch, env: dict[str, str], named: str | None
) -> None:
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    if named is None:
        load_settings()
        return
    with pytest.raises(SettingsError) as info:
        load_settings()
    assert named in str(info.value)


def test_contradictory_provisioner_settings_are_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SILOFLOW_PROVISIONER_DSN", "postgresql://p:secret@127.0.0.1/x")
    monkeypatch.setenv("SILOFLOW_PROVISIONER_PASSWORD", "other")
    with pytest.raises(SettingsError, match="provisioner_dsn and provisioner_password"):
        load_settings()


def test_unknown_key_in_the_toml_file_is_refused(tmp_path: Path) -> None:
    config = tmp_path / "siloflow.toml"
    config.write_text('namespaec = "typo"\n')
    with pytest.raises(SettingsError, match="SILOFLOW_NAMESPAEC"):
        load_settings(config)


def test_missing_or_broken_config_file_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(SettingsError, match="no such file"):
        load_settings(tmp_path / "absent.toml")
    broken = tmp_path / "broken.toml"
    broken.write_text("namespace = \n")
    with pytest.raises(SettingsError, match=r"broken\.toml"):
        load_settings(broken)
