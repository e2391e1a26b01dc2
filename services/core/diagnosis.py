"""What went wrong, in one line: a failure of something a command or a service needs
(PostgreSQL, RabbitMQ, its management API, OpenBao) as the operator can act on it. Each line
names what failed, the setting that points at it and what to do; never a traceback, never a
library's words first. `Outage` says it once for a service that waits it out.

Pure but for `Outage`'s log lines: an exception (with its causes) and the settings in, the line
out (None when the failure is none of these: a bug, which keeps its traceback)."""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from dataclasses import dataclass
from urllib.parse import urlsplit, urlunsplit

import aiormq.exceptions
import asyncpg
import httpx
import structlog
from sqlalchemy.exc import DBAPIError

from services.core.errors import DatabaseUnavailable
from services.core.settings import Settings

log = structlog.get_logger(__name__)

_LOGIN_REFUSED = (asyncpg.InvalidAuthorizationSpecificationError, asyncpg.InvalidPasswordError)
START_LOCAL = "deploy/local/ensure-services.sh starts it on this machine"
BOOTSTRAP = "run `siloflow bootstrap --admin-dsn <superuser DSN>`, then `siloflow migrate`"


def public(url: str) -> str:
    """A URL with its password hidden, for logs and messages."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.replace(f":{parts.password}@", ":***@", 1)
    return urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment))


@dataclass(frozen=True)
class Endpoint:
    """A server a command may need, and the setting that points at it."""

    what: str
    setting: str
    shown: str  # the setting's value, password hidden
    host: str
    port: int


def endpoints(settings: Settings) -> list[Endpoint]:
    """The servers of these settings, the registry's first."""
    registry = urlsplit(settings.registry_url)
    amqp = urlsplit(settings.amqp_url)
    management = urlsplit(settings.management_api)
    openbao = urlsplit(settings.openbao_addr)
    return [
        Endpoint(
            "PostgreSQL (the registry's server)",
            "SILOFLOW_REGISTRY_DSN",
            public(settings.registry_url),
            registry.hostname or "127.0.0.1",
            registry.port or 5432,
        ),
        Endpoint(
            "RabbitMQ",
            "SILOFLOW_AMQP_URL",
            public(settings.amqp_url),
            amqp.hostname or "127.0.0.1",
            amqp.port or 5672,
        ),
        Endpoint(
            "RabbitMQ's management API",
            "SILOFLOW_MANAGEMENT_URL" if settings.management_url else "SILOFLOW_AMQP_URL's host",
            public(settings.management_api),
            management.hostname or "127.0.0.1",
            management.port or 15672,
        ),
        Endpoint(
            "OpenBao",
            "SILOFLOW_OPENBAO_ADDR",
            settings.openbao_addr,
            openbao.hostname or "127.0.0.1",
            openbao.port or 8200,
        ),
    ]


def causes(exc: BaseException) -> Iterator[BaseException]:
    """The exception and everything behind it: causes, contexts, a DBAPI error's original,
    an exception group's members (each once)."""
    seen: set[int] = set()
    pending = [exc]
    while pending:
        current = pending.pop(0)
        if id(current) in seen:
            continue
        seen.add(id(current))
        yield current
        if isinstance(current, BaseExceptionGroup):
            pending.extend(current.exceptions)
        if isinstance(current, DBAPIError) and isinstance(current.orig, BaseException):
            pending.append(current.orig)
        pending.extend(
            e
            for e in (current.__cause__, current.__context__)
            if e is not None and not isinstance(e, KeyboardInterrupt)
        )
        pending.extend(a for a in getattr(current, "args", ()) if isinstance(a, BaseException))


_ADDRESS = re.compile(r"\('([^']+)', (\d+)\)|\[([0-9a-fA-F:.]+)\]:(\d+)|(\d+\.\d+\.\d+\.\d+):(\d+)")


def _address(text: str) -> tuple[str, int] | None:
    match = _ADDRESS.search(text)
    if match is None:
        return None
    host = match.group(1) or match.group(3) or match.group(5)
    port = match.group(2) or match.group(4) or match.group(6)
    return host, int(port)


def _same_host(a: str, b: str) -> bool:
    local = {"localhost", "127.0.0.1", "::1"}
    return a == b or (a in local and b in local)


def _at(settings: Settings, address: tuple[str, int] | None, *kinds: str) -> Endpoint | None:
    """The endpoint listening at `address`; else, when only one endpoint of `kinds` could
    have been meant, that one."""
    candidates = [e for e in endpoints(settings) if not kinds or e.setting in kinds]
    if address is not None:
        for endpoint in endpoints(settings):
            if endpoint.port == address[1] and _same_host(endpoint.host, address[0]):
                return endpoint
        return None  # a server the settings do not name (a placement's): never guess one
    return candidates[0] if len(candidates) == 1 else None


def _unreachable(endpoint: Endpoint, why: str) -> str:
    fix = START_LOCAL if endpoint.host in {"localhost", "127.0.0.1", "::1"} else "start it"
    if endpoint.what == "RabbitMQ's management API":
        fix = "enable it: rabbitmq-plugins enable rabbitmq_management"
    return (
        f"{endpoint.what} at {endpoint.host}:{endpoint.port} is unreachable ({why}); "
        f"{endpoint.setting} points there ({endpoint.shown}): {fix}, or correct the setting"
    )


def explain(exc: BaseException, settings: Settings, *, of: str | None = None) -> str | None:
    """One line for a failure of something the command needs, or None. `of`: the setting of
    the server the caller was talking to, for an error that names no address (uvloop's)."""
    chain = list(causes(exc))
    registry = endpoints(settings)[0]
    elsewhere = _placement_server(chain, registry)
    if elsewhere is not None:
        return _at_placement(chain, settings, elsewhere)
    for e in chain:
        if isinstance(e, asyncpg.InvalidCatalogNameError):
            return (
                f"{_first_line(e)} on {registry.host}:{registry.port}: nothing is bootstrapped "
                f"for namespace {settings.namespace!r} there (SILOFLOW_NAMESPACE, "
                f"{registry.setting}={registry.shown}): {BOOTSTRAP}"
            )
        if isinstance(e, asyncpg.InvalidAuthorizationSpecificationError) and re.search(
            r'role ".*" does not exist', str(e)
        ):
            return (
                f"PostgreSQL at {registry.host}:{registry.port}: {_first_line(e)}: nothing is "
                f"bootstrapped for namespace {settings.namespace!r} there (SILOFLOW_NAMESPACE, "
                f"{registry.setting}={registry.shown}): {BOOTSTRAP}"
            )
        if isinstance(e, _LOGIN_REFUSED):
            return (
                f"PostgreSQL at {registry.host}:{registry.port} refused the login: "
                f"{_first_line(e)} ({registry.setting}={registry.shown}, or "
                "SILOFLOW_PROVISIONER_PASSWORD / SILOFLOW_PROVISIONER_DSN for the provisioner): "
                "correct the user or password"
            )
        if isinstance(e, asyncpg.UndefinedTableError):
            return (
                f"the registry database {settings.registry_database} is not migrated "
                f"({_first_line(e)}; {registry.setting}={registry.shown}): run `siloflow migrate`"
            )
        if isinstance(e, aiormq.exceptions.ProbableAuthenticationError):
            broker = endpoints(settings)[1]
            return (
                f"RabbitMQ at {broker.host}:{broker.port} refused the login "
                f"({broker.setting}={broker.shown}, or a service's password in "
                "broker-users.json / SILOFLOW_BROKER_PASSWORDS): correct the user or password"
            )
        if isinstance(e, aiormq.exceptions.ConnectionNotAllowed):
            broker = endpoints(settings)[1]
            return (
                f"RabbitMQ at {broker.host}:{broker.port} did not let the user into vhost "
                f"{settings.vhost!r}: {_first_line(e)} ({broker.setting}={broker.shown}): "
                f"{BOOTSTRAP}, or correct the vhost in the URL"
            )
        if isinstance(e, httpx.HTTPStatusError) and e.response.status_code == 401:
            management = endpoints(settings)[2]
            return (
                f"RabbitMQ's management API refused the user (HTTP 401) "
                f"({management.setting}={management.shown}): correct the user or password, "
                "or give the user the management tag"
            )
    for e in chain:
        if isinstance(e, httpx.TransportError) and _has_request(e):
            url = e.request.url
            endpoint = _at(settings, (url.host, url.port or 80))
            if endpoint is not None:
                return _unreachable(endpoint, _why(chain))
        if isinstance(e, aiormq.exceptions.AMQPConnectionError | OSError | TimeoutError):
            text = " ".join(_first_line(c) for c in chain)
            kinds = _kinds(chain) or ((of,) if of else ())
            address = _address(text)
            endpoint = _at(settings, address, *kinds)
            if endpoint is not None:
                return _unreachable(endpoint, _why(chain))
            if address is not None and "SILOFLOW_REGISTRY_DSN" in kinds:
                return _at_placement(chain, settings, address)
    for e in chain:
        if isinstance(e, DatabaseUnavailable) and (
            e.what == "the registry" or f"database {settings.registry_database} " in e.what
        ):
            return f"{e} ({registry.setting}={registry.shown})"
    return None


PREPARE_PLACEMENT = (
    "siloflow placement add <its name> --host {host} --port {port} "
    "--admin-dsn <that server's superuser DSN>"
)


def _placement_server(chain: list[BaseException], registry: Endpoint) -> tuple[str, int] | None:
    """The server a failed database connection was to, when it is not the registry's: a
    placement's, which the settings do not name (the registry records it)."""
    for e in chain:
        if isinstance(e, DatabaseUnavailable) and e.server is not None:
            host, port = e.server
            if not (port == registry.port and _same_host(host, registry.host)):
                return host, port
            return None
    return None


def _at_placement(chain: list[BaseException], settings: Settings, server: tuple[str, int]) -> str:
    """A placement's server failed: name it (never the registry's) and say how to mend it."""
    host, port = server
    where = f"PostgreSQL at {host}:{port} (a placement's server: siloflow placement list)"
    prepare = PREPARE_PLACEMENT.format(host=host, port=port)
    for e in chain:
        if isinstance(e, asyncpg.InvalidAuthorizationSpecificationError) and re.search(
            r'role ".*" does not exist', str(e)
        ):
            return (
                f"{where}: {_first_line(e)}: that server is not prepared for namespace "
                f"{settings.namespace!r}: {prepare}"
            )
        if isinstance(e, _LOGIN_REFUSED):
            return (
                f"{where} refused the login: {_first_line(e)} (the provisioner's password, "
                "SILOFLOW_PROVISIONER_PASSWORD, is the same on every server): bring the role up "
                f"to date there: {prepare}"
            )
        if isinstance(e, asyncpg.InvalidCatalogNameError):
            return f"{where}: {_first_line(e)}: the registry records a database that is not there"
    return f"{where} is unreachable ({_why(chain)}): start it"


_ERRNO = re.compile(r"\[Errno -?\d+\] [^(\"'\n]*")


def _why(chain: list[BaseException]) -> str:
    """Why a connection failed, in the operating system's words when a library wrapped them
    (requests' `HTTPConnectionPool(...): Max retries exceeded ... [Errno 111] ...`)."""
    for e in chain:
        found = _ERRNO.search(str(e))
        if found:
            return found.group(0).strip().rstrip(":;,")
    for e in chain:
        if _first_line(e):
            return _first_line(e)
    return type(chain[0]).__name__


def _kinds(chain: list[BaseException]) -> tuple[str, ...]:
    """Which settings' servers the failing library talks to."""
    modules = {type(e).__module__.split(".")[0] for e in chain}
    if "aiormq" in modules or "aio_pika" in modules or "pamqp" in modules:
        return ("SILOFLOW_AMQP_URL",)
    if (
        "asyncpg" in modules
        or "sqlalchemy" in modules
        or any(isinstance(e, DatabaseUnavailable) for e in chain)
    ):
        return ("SILOFLOW_REGISTRY_DSN",)
    return ()


def _has_request(exc: httpx.TransportError) -> bool:
    try:
        exc.request  # noqa: B018 - raises when the error was made without one
    except RuntimeError:
        return False
    return True


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else ""


class Outage:
    """One dependency's outage, as a service that waits it out says it: the first failure is a
    warning with the line that names what failed, the setting and what to do; the failures
    after it, while the back-off goes on, are debug lines; the recovery is one info line with
    how long it lasted. A service's log says each outage twice, however long it lasts."""

    def __init__(self, event: str, settings: Settings, of: str, **fields: object) -> None:
        self._event = event
        self._settings = settings
        self._of = of  # the setting of the server it waits for
        self._fields = fields
        self._since: float | None = None

    @property
    def ongoing(self) -> bool:
        """Whether a failure was said and no recovery since."""
        return self._since is not None

    def failed(self, exc: BaseException, **fields: object) -> None:
        """Say the failure: the first one loudly, the rest quietly."""
        line = explain(exc, self._settings, of=self._of) or _first_line(exc) or type(exc).__name__
        if self._since is None:
            self._since = time.monotonic()
            log.warning(self._event, error=line, **self._fields, **fields)
        else:
            log.debug(self._event, error=line, **self._fields, **fields)

    def recovered(self) -> None:
        """Say the recovery, if a failure was said."""
        if self._since is not None:
            lasted = time.monotonic() - self._since
            self._since = None
            log.info(f"{self._event}.recovered", lasted_s=round(lasted, 1), **self._fields)
