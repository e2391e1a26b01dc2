"""The one settings object: read once at start-up (environment `SILOFLOW_*`, then an optional TOML
file, then defaults) and passed down. A bad value fails here, by the setting's name."""

from __future__ import annotations

import contextvars
import re
from pathlib import Path
from typing import Annotated, Any, Literal
from urllib.parse import unquote, urlsplit

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
    """Everything a siloflow process may be told; the README's Configuration table lists them."""

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
    max_tenant_engines: Annotated[int, Field(ge=1, le=100_000)] = 32
    engine_idle_s: Annotated[float, Field(gt=0)] = 300.0
    # A tenant consumer commits one batch at a time, so one connection per tenant is enough:
    # a worker process holds at most max_tenant_engines * tenant_pool_size connections.
    tenant_pool_size: Annotated[int, Field(ge=1, le=100)] = 1

    # -- tenant database logins -------------------------------------------------------------------
    # Who issues the short-lived per-tenant logins the services use: `builtin` (the provisioner
    # creates them itself) or `openbao` (its database secrets engine; see docs/credentials.md).
    credentials: Literal["builtin", "openbao"] = "builtin"
    # How long a login lives; it is renewed or replaced at two thirds of this ...
    credential_ttl_s: Annotated[float, Field(ge=5, le=30 * 24 * 3600)] = 3600.0
    # ... and never lives longer than this (OpenBao's max TTL; renewals stop here).
    credential_max_ttl_s: Annotated[float, Field(ge=5, le=365 * 24 * 3600)] = 24 * 3600.0
    # Logins issued (or revoked) at once by one process, however many tenants it serves.
    credential_issue_concurrency: Annotated[int, Field(ge=1, le=64)] = 4
    # Every login also joins this group role, so pg_hba.conf can demand a password of them
    # (`host all +<group> 0.0.0.0/0 scram-sha-256`) on a server that trusts other local users.
    credential_login_group: str | None = None
    openbao_addr: str = "http://127.0.0.1:8200"
    # How services (and the provisioner) log in to OpenBao: an AppRole, or a token.
    openbao_role_id: str | None = None
    openbao_secret_id: SecretStr | None = None
    openbao_token: SecretStr | None = None
    # Where the database secrets engine is mounted.
    openbao_mount: str = "database"
    openbao_timeout_s: Annotated[float, Field(gt=0, le=120)] = 5.0

    # -- the broker ------------------------------------------------------------------------------
    # Passwords of the broker users bootstrap creates, by role: `router:<pw>,workers:<pw>,...`.
    # None means: the file `<state_dir>/<namespace>/broker-users.json` bootstrap wrote (0600);
    # a process whose role has no password connects with amqp_url as given.
    broker_passwords: SecretStr | None = None
    # Who a process connects as: `role`, its role's own user `<ns>-<role>` (refusing to start when
    # its password is not known here, never falling back to the URL's administrator); `url`, the
    # user SILOFLOW_AMQP_URL names, as given (for a user issued to each process by someone else,
    # e.g. OpenBao's RabbitMQ secrets engine).
    broker_identity: Literal["role", "url"] = "role"
    # The management HTTP API (policies, status). None means: the AMQP host on port 15672 with the
    # AMQP credentials.
    management_url: str | None = None
    # Deliveries of one message before it is dead-lettered (a broker policy; tune it there).
    delivery_limit: Annotated[int, Field(ge=2, le=1000)] = 10

    # -- the pipeline ----------------------------------------------------------------------------
    # Larger messages are dead-lettered unparsed (match the broker's max_message_size).
    max_report_bytes: Annotated[int, Field(ge=1024, le=128 * 1024 * 1024)] = 8 * 1024 * 1024
    # A report stamped further ahead than this is refused (the agent's clock is wrong) ...
    max_clock_skew_s: Annotated[float, Field(ge=0)] = 300.0
    # ... and one older than this is refused as stale (30 days).
    max_report_age_s: Annotated[float, Field(gt=0)] = 30 * 24 * 3600.0
    # Registration: bad tokens one source may present before it must wait (doubling each time),
    # and failed guesses per second from all sources together (see services/core/throttle.py).
    registration_free_failures: Annotated[int, Field(ge=1, le=1000)] = 5
    registration_failures_per_s: Annotated[float, Field(gt=0, le=10_000)] = 20.0
    # The same, for the API's bearer tokens (`siloflow run api`).
    api_free_failures: Annotated[int, Field(ge=1, le=100_000)] = 5
    api_failures_per_s: Annotated[float, Field(gt=0, le=10_000)] = 20.0
    # Unacknowledged deliveries per consumer: the window of pipelined confirms.
    prefetch: Annotated[int, Field(ge=1, le=65_535)] = 256
    # Workers commit up to this many reports per transaction. A busy tenant's batch waits up to
    # batch_wait_s to fill; a report to a quiet one goes at once (see workers.handlers.fill_wait_s).
    batch_max: Annotated[int, Field(ge=1, le=10_000)] = 200
    batch_wait_s: Annotated[float, Field(ge=0, le=10)] = 0.05
    # A transient failure (database down) is retried with backoff up to this interval.
    retry_max_s: Annotated[float, Field(gt=0, le=600)] = 30.0
    # Router: at most this many host -> tenant entries (it keeps the latest half at least:
    # size it at twice the fleet; ~90 bytes a host, router/bindings.py), and how long one may
    # live without a change notice.
    router_cache_size: Annotated[int, Field(ge=2)] = 2_000_000
    router_cache_ttl_s: Annotated[float, Field(gt=0)] = 300.0
    # Worker processes of `siloflow run workers` (0: one per CPU).
    worker_processes: Annotated[int, Field(ge=0, le=1024)] = 0
    # The services' event loop: uvloop runs the loop itself faster (frames are gathered into one
    # write per loop turn by `transport`, on either loop; docs/performance.md); "asyncio" is the
    # fallback should uvloop ever misbehave on a platform.
    event_loop: Literal["uvloop", "asyncio"] = "uvloop"

    # -- the sweeper -----------------------------------------------------------------------------
    sweep_interval_s: Annotated[float, Field(gt=0)] = 60.0
    # A host with no report for this long is marked down (and up again when it reports).
    host_down_after_s: Annotated[float, Field(gt=0)] = 300.0
    # agent_messages rows older than this are pruned.
    retention_days: Annotated[float, Field(gt=0)] = 30.0
    sweep_concurrency: Annotated[int, Field(ge=1, le=256)] = 4

    # -- the vulnerability catalog ---------------------------------------------------------------
    # Workers match each packages snapshot against the catalog in force, and the sweeper
    # re-evaluates on a new revision. False: reports commit without findings (a fleet that is not
    # Debian, or the bench's matching-off side).
    catalog_matching: bool = True
    # The share of its time each re-evaluation session works (it rests the rest after each host):
    # below 1 a pass takes longer and leaves the cores to live reports.
    reevaluation_duty: Annotated[float, Field(gt=0, le=1)] = 1.0

    # -- host identity ---------------------------------------------------------------------------
    # The server secrets host keys derive from: `1:<base64>,2:<base64>` (e.g. from a Kubernetes
    # Secret). None means: the file `<state_dir>/<namespace>/host-keys.json` that bootstrap
    # writes (0600). Either way never in a database a tenant can reach.
    host_key_secrets: SecretStr | None = None
    state_dir: Path = Path.home() / ".local" / "state" / "siloflow"
    # Reports without a valid signature are dead-lettered (bad-signature).
    require_signatures: bool = True

    # /metrics, /healthz and /readyz (None: not served). `run all` and the worker supervisor give
    # their children consecutive ports from here.
    metrics_port: Annotated[int, Field(ge=1, le=65535)] | None = None
    # The control-plane HTTP API (`siloflow run api`): loopback unless told otherwise.
    api_host: str = "127.0.0.1"
    api_port: Annotated[int, Field(ge=1, le=65535)] = 8470

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

    @field_validator("openbao_addr")
    @classmethod
    def _check_openbao_addr(cls, value: str) -> str:
        if urlsplit(value).scheme not in ("http", "https") or not urlsplit(value).hostname:
            raise ValueError("must be an http:// or https:// URL (OpenBao's API address)")
        return value

    @field_validator("management_url")
    @classmethod
    def _check_management_url(cls, value: str | None) -> str | None:
        if value is not None and urlsplit(value).scheme not in ("http", "https"):
            raise ValueError("must be an http:// or https:// URL (the management plugin's API)")
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
        if self.credential_max_ttl_s < self.credential_ttl_s:
            raise ValueError("credential_max_ttl_s must be at least credential_ttl_s")
        if self.credentials == "openbao":
            has_approle = self.openbao_role_id is not None and self.openbao_secret_id is not None
            if not has_approle and self.openbao_token is None:
                raise ValueError(
                    "credentials=openbao needs a way to log in to OpenBao: set "
                    "openbao_role_id and openbao_secret_id (AppRole), or openbao_token"
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
    def management_api(self) -> str:
        """The management HTTP API's base URL, credentials included."""
        if self.management_url is not None:
            return self.management_url.rstrip("/")
        amqp = urlsplit(self.amqp_url)
        user = amqp.username or "guest"
        password = amqp.password or "guest"
        return f"http://{user}:{password}@{amqp.hostname}:15672"

    @property
    def host_key_file(self) -> Path:
        """Where bootstrap keeps the host key secrets."""
        return self.state_dir / self.namespace / "host-keys.json"

    @property
    def broker_users_file(self) -> Path:
        """Where bootstrap keeps the broker users' passwords."""
        return self.state_dir / self.namespace / "broker-users.json"

    @property
    def vhost(self) -> str:
        """The broker virtual host, from the AMQP URL's path (`/` when it has none)."""
        path = urlsplit(self.amqp_url).path
        return unquote(path[1:]) if len(path) > 1 else "/"

    @property
    def registry_database(self) -> str:
        """The registry database's name."""
        return _dsn_database(self.registry_url)

    @property
    def shared_database(self) -> str:
        """The database of the `shared_*` partition: its own in multi-tenant mode, the registry's
        in single-tenant mode (one database holds all three partitions)."""
        if self.multitenant:
            return f"{self.namespace}_shared"
        return self.registry_database

    @property
    def shared_url(self) -> str:
        """The shared database as the services read it: the registry's server and login."""
        parts = urlsplit(self.registry_url)
        return parts._replace(path=f"/{self.shared_database}").geturl()

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        """Where settings come from: the arguments, the environment, then the TOML file."""
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
