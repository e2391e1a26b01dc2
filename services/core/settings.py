"""The one settings object: read once at start-up (environment `SILOFLOW_*`, then an optional TOML
file, then defaults) and passed down. A bad value fails here, by the setting's name."""

from __future__ import annotations

import contextvars
import re
from pathlib import Path
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit

from pydantic import Field, SecretStr, ValidationError, field_validator, model_validator
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)

from services.core.errors import SettingsError

ENV_PREFIX = "SILOFLOW_"
# A namespace becomes part of database and role names, which PostgreSQL caps at 63 bytes:
# `<ns>_tenant_<39-char slug>` must fit, hence at most 16 characters, and no hyphen so that names
# need no quoting in psql.
NAMESPACE_RE = re.compile(r"^[a-z][a-z0-9_]{0,15}$")

_toml_file: contextvars.ContextVar[Path | None] = contextvars.ContextVar("toml_file", default=None)


def _dsn_database(dsn: str) -> str:
    return urlsplit(dsn).path.lstrip("/")


class Settings(BaseSettings):
    """Everything a siloflow process may be told; see `docs/configuration.md` for each setting."""

    model_config = SettingsConfigDict(env_prefix=ENV_PREFIX, extra="forbid", frozen=True)

    amqp_url: str = "amqp://guest:guest@127.0.0.1:5672/"
    # None means: the registry database `<namespace>_registry` on the local server.
    registry_dsn: str | None = None
    namespace: str = "siloflow"
    multitenant: bool = True
    # Who provisions tenants. None means: the registry's server as `<namespace>_provisioner`, with
    # `provisioner_password` if one is set (trust or peer authentication otherwise).
    provisioner_dsn: str | None = None
    provisioner_password: SecretStr | None = None

    connect_timeout_s: Annotated[float, Field(gt=0, le=300)] = 5.0
    # The routing seam keeps at most this many tenant engines open, closing the least recently
    # used and any idle longer than `engine_idle_s`.
    max_tenant_engines: Annotated[int, Field(ge=1, le=100_000)] = 64
    engine_idle_s: Annotated[float, Field(gt=0)] = 300.0
    tenant_pool_size: Annotated[int, Field(ge=1, le=100)] = 2

    log_level: Literal["debug", "info", "warning", "error"] = "info"
    log_format: Literal["auto", "json", "console"] = "auto"

    @field_validator("namespace")
    @classmethod
    def _check_namespace(cls, value: str) -> str:
        if not NAMESPACE_RE.match(value):
            raise ValueError(
                "must be 1-16 characters of lower-case letters, digits and '_', "
                "starting with a letter (it prefixes database, role and queue names)"
            )
        return value

    @field_validator("amqp_url")
    @classmethod
    def _check_amqp_url(cls, value: str) -> str:
        parts = urlsplit(value)
        if parts.scheme not in ("amqp", "amqps") or not parts.hostname:
            raise ValueError("must be an amqp:// or amqps:// URL with a host")
        return value

    @field_validator("registry_dsn", "provisioner_dsn")
    @classmethod
    def _check_dsn(cls, value: str | None) -> str | None:
        if value is None:
            return None
        parts = urlsplit(value)
        if parts.scheme not in ("postgresql", "postgres") or not parts.hostname:
            raise ValueError("must be a postgresql://user@host:port/database URL")
        if not parts.path.lstrip("/"):
            raise ValueError("must name a database (postgresql://user@host:port/DATABASE)")
        return value

    @model_validator(mode="after")
    def _check_consistency(self) -> Settings:
        if self.provisioner_dsn is not None and self.provisioner_password is not None:
            raise ValueError(
                "provisioner_dsn and provisioner_password are both set: put the password in "
                "the DSN or drop the DSN, not both"
            )
        return self

    # Derived values: one place, so nothing rebuilds them by hand.

    @property
    def registry_url(self) -> str:
        """The registry database, defaulting to `<namespace>_registry` on the local server."""
        if self.registry_dsn is not None:
            return self.registry_dsn
        return f"postgresql://postgres@127.0.0.1:5432/{self.namespace}_registry"

    @property
    def registry_database(self) -> str:
        return _dsn_database(self.registry_url)

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        sources: list[PydanticBaseSettingsSource] = [init_settings, env_settings]
        toml_file = _toml_file.get()
        if toml_file is not None:
            sources.append(TomlConfigSettingsSource(settings_cls, toml_file=toml_file))
        return tuple(sources)


def load_settings(config_file: Path | None = None, **overrides: Any) -> Settings:
    """Read the settings once; raise `SettingsError` naming each bad setting."""
    if config_file is not None and not config_file.is_file():
        raise SettingsError(f"config file {config_file}: no such file")
    token = _toml_file.set(config_file)
    try:
        return Settings(**overrides)
    except ValidationError as exc:
        raise SettingsError(_describe(exc)) from None
    except ValueError as exc:  # a TOML syntax error surfaces as a plain ValueError
        raise SettingsError(f"config file {config_file}: {exc}") from None
    finally:
        _toml_file.reset(token)


def _describe(exc: ValidationError) -> str:
    lines = []
    for error in exc.errors():
        field = ".".join(str(p) for p in error["loc"])
        name = f"{ENV_PREFIX}{field.upper()}" if field else "settings"
        message = error["msg"].removeprefix("Value error, ")
        lines.append(f"{name}: {message}")
    return "invalid settings:\n  " + "\n  ".join(lines)
