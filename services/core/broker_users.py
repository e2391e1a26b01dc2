"""Broker identities: the RabbitMQ user of every client of the broker, the rights each holds
(only what its own code uses), their passwords, and the URL a process connects with.

`rights()` is the pure table; `tests/integration/test_broker_rights.py` proves each line of it
against the real broker, as an attacker would. Users are global to a broker, so their names carry
the namespace (`<ns>-router`), and every right is a regular expression anchored on the
namespace's own names, so no user of one namespace reaches another's objects."""

from __future__ import annotations

import json
import re
import secrets
from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum
from urllib.parse import quote, urlsplit, urlunsplit

from services.core import wire
from services.core.errors import SettingsError
from services.core.management import Management
from services.core.names import DLQS, Names
from services.core.secretfile import write_secret_file
from services.core.settings import Settings

PASSWORD_BYTES = 24
# RabbitMQ's name for the default exchange in permission checks: writing to it reaches every
# queue of the vhost by name.
DEFAULT_EXCHANGE = "amq.default"
NOTHING = "^$"


class BrokerRole(StrEnum):
    """Who talks to the broker. Each is one RabbitMQ user per namespace."""

    AGENT = "agent"  # every agent: reports and registrations in, its own replies out
    INGEST = "ingest"  # enrollment: the registration RPC
    ROUTER = "router"  # host -> tenant, onto the tenant's queue
    WORKERS = "workers"  # tenant queues -> silos
    TOPOLOGY = "topology"  # migrate, topology apply, tenant create/delete: declares and binds
    DLQ = "dlq"  # `siloflow dlq`: reads dead letters, sends them back where they can succeed
    STATUS = "status"  # `siloflow status`: queue statistics through the management API


# The processes that consume and publish reports (what `siloflow run` starts).
SERVICE_ROLES = (BrokerRole.INGEST, BrokerRole.ROUTER, BrokerRole.WORKERS)


@dataclass(frozen=True)
class TopicRights:
    """Routing keys a user may publish (`write`) to one topic exchange."""

    exchange: str
    write: str
    read: str = NOTHING


@dataclass(frozen=True)
class Rights:
    """A user's permissions in the vhost (RabbitMQ's configure/write/read regular expressions
    over exchange and queue names), its management tags and its topic permissions."""

    configure: str
    write: str
    read: str
    tags: tuple[str, ...] = ()
    topics: tuple[TopicRights, ...] = ()


def _matching(*alternatives: str) -> str:
    """A regular expression matching whole names, any of these (each itself a pattern)."""
    return "^(" + "|".join(alternatives) + ")$"


def _only(*names: str) -> str:
    """A regular expression matching exactly these names."""
    return _matching(*(re.escape(name) for name in names))


def _tenant_queue(names: Names) -> str:
    """A pattern of every tenant queue of the namespace (slugs are `[a-z][a-z0-9-]*`)."""
    return re.escape(names.tenant_queue_prefix) + "[a-z][a-z0-9-]*"


def rights(names: Names, role: BrokerRole) -> Rights:
    """What `role` may do, and nothing more (pure)."""
    dlqs = [names.dlq(which) for which in DLQS]
    if role is BrokerRole.AGENT:
        # Publish to the agents' exchange, only the protocol's routing keys; consuming its own
        # direct reply-to pseudo-queue needs no right at all (checked on RabbitMQ 3.10).
        return Rights(
            configure=NOTHING,
            write=_only(names.agents_exchange),
            read=NOTHING,
            topics=(TopicRights(names.agents_exchange, write=wire.AGENT_ROUTING_KEYS),),
        )
    if role is BrokerRole.INGEST:
        # Registration replies go through direct reply-to, which is the default exchange: that
        # right reaches every queue of the vhost (see docs/security.md), hence a vhost per
        # deployment in production.
        return Rights(
            configure=NOTHING,
            write=_only(DEFAULT_EXCHANGE, names.dead_exchange),
            read=_only(names.register_queue),
        )
    if role is BrokerRole.ROUTER:
        # Reads intake, and the three-hop version's router queue while it drains.
        return Rights(
            configure=NOTHING,
            write=_only(names.tenants_exchange, names.dead_exchange),
            read=_only(names.intake_queue, names.router_queue),
        )
    if role is BrokerRole.WORKERS:
        return Rights(
            configure=NOTHING,
            write=_only(names.dead_exchange),
            read=_matching(_tenant_queue(names)),
        )
    if role is BrokerRole.TOPOLOGY:
        # Declare and delete the namespace's exchanges and queues (the three-hop version's router
        # queue too, once it is empty), and bind them: a binding
        # needs write on the queue and read on the exchange; declaring the agents' exchange with
        # its alternate needs write on the alternate. It can publish to nothing but that
        # alternate (which leads to intake) and consume nothing.
        queues = [names.intake_queue, names.register_queue, *dlqs]
        return Rights(
            configure="^" + re.escape(names.namespace + "."),
            write=_matching(
                *(re.escape(name) for name in [*queues, names.unmatched_exchange]),
                _tenant_queue(names),
            ),
            read=_only(
                names.agents_exchange,
                names.unmatched_exchange,
                names.dead_exchange,
                names.tenants_exchange,
            ),
            tags=("policymaker",),
        )
    if role is BrokerRole.DLQ:
        # Read the dead-letter queues; send letters back through the agents' exchange (to be
        # validated again) or the tenants' exchange (a failed commit, to its tenant).
        return Rights(
            configure=NOTHING,
            write=_only(names.agents_exchange, names.tenants_exchange),
            read=_only(*dlqs),
        )
    # STATUS: queue statistics through the management API; no AMQP right at all.
    return Rights(configure=NOTHING, write=NOTHING, read=NOTHING, tags=("management",))


# -- passwords -----------------------------------------------------------------------------------


def generate_passwords() -> dict[BrokerRole, str]:
    return {role: secrets.token_urlsafe(PASSWORD_BYTES) for role in BrokerRole}


def parse_passwords(text: str) -> dict[BrokerRole, str]:
    """`SILOFLOW_BROKER_PASSWORDS`: `router:<password>,workers:<password>,...`."""
    result: dict[BrokerRole, str] = {}
    for item in (part.strip() for part in text.split(",")):
        if not item:
            continue
        role, sep, password = item.partition(":")
        if not sep or not password:
            raise SettingsError(
                "SILOFLOW_BROKER_PASSWORDS: expected <role>:<password>[,<role>:<password>...]"
            )
        try:
            result[BrokerRole(role)] = password
        except ValueError:
            known = ", ".join(r.value for r in BrokerRole)
            raise SettingsError(
                f"SILOFLOW_BROKER_PASSWORDS: unknown role {role!r}; roles: {known}"
            ) from None
    return result


def _read_file(settings: Settings) -> dict[BrokerRole, str]:
    path = settings.broker_users_file
    if not path.is_file():
        return {}
    if path.stat().st_mode & 0o077:
        raise SettingsError(f"{path} is readable by others: chmod 600 it (it holds passwords)")
    try:
        document = json.loads(path.read_text())
        return {BrokerRole(role): str(pw) for role, pw in document["passwords"].items()}
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        raise SettingsError(f"{path}: not a siloflow broker users file ({exc})") from None


def load_passwords(settings: Settings) -> dict[BrokerRole, str]:
    """The role passwords this process knows: `SILOFLOW_BROKER_PASSWORDS`, else the file
    bootstrap wrote (none: every process connects with `SILOFLOW_AMQP_URL` as given)."""
    if settings.broker_passwords is not None:
        return parse_passwords(settings.broker_passwords.get_secret_value())
    return _read_file(settings)


def ensure_passwords(settings: Settings) -> tuple[dict[BrokerRole, str], bool]:
    """Bootstrap's part: every role's password, generating (and writing, 0600) the ones the
    file lacks. Returns them and whether the file was written. Passwords given by
    `SILOFLOW_BROKER_PASSWORDS` are used as they are, and must name every role."""
    if settings.broker_passwords is not None:
        given = parse_passwords(settings.broker_passwords.get_secret_value())
        missing = [role.value for role in BrokerRole if role not in given]
        if missing:
            raise SettingsError(
                "SILOFLOW_BROKER_PASSWORDS: bootstrap creates every broker user and needs every "
                f"role's password; missing: {', '.join(missing)}"
            )
        return given, False
    current = _read_file(settings)
    wanted = {**generate_passwords(), **current}
    if wanted == current:
        return current, False
    document = {"passwords": {role.value: wanted[role] for role in BrokerRole}}
    write_secret_file(settings.broker_users_file, json.dumps(document, indent=2) + "\n")
    return wanted, True


# -- who a process connects as -------------------------------------------------------------------


def _with_user(url: str, user: str, password: str) -> str:
    parts = urlsplit(url)
    host = parts.hostname or "127.0.0.1"
    if ":" in host:
        host = f"[{host}]"
    netloc = f"{quote(user, safe='')}:{quote(password, safe='')}@{host}"
    if parts.port:
        netloc += f":{parts.port}"
    return urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment))


def identity(settings: Settings, role: BrokerRole | None) -> tuple[str, str]:
    """(AMQP URL, management API URL) that `role` connects with: its own user when its password
    is known, else the URLs as configured (an operator who hands each process its own URL, or a
    broker administrator: `role=None` is bootstrap's and teardown's)."""
    if role is None:
        return settings.amqp_url, settings.management_api
    password = load_passwords(settings).get(role)
    if password is None:
        return settings.amqp_url, settings.management_api
    user = Names(settings.namespace).broker_user(role.value)
    return (
        _with_user(settings.amqp_url, user, password),
        _with_user(settings.management_api, user, password),
    )


def amqp_url(settings: Settings, role: BrokerRole | None) -> str:
    return identity(settings, role)[0]


def management_url(settings: Settings, role: BrokerRole | None) -> str:
    return identity(settings, role)[1]


def agent_url(settings: Settings) -> str:
    """The AMQP URL agents use (`siloflow broker agent-url`)."""
    return amqp_url(settings, BrokerRole.AGENT)


def user_of(url: str) -> str:
    """The user a URL logs in as (RabbitMQ's default when it names none)."""
    return urlsplit(url).username or "guest"


def public(url: str) -> str:
    """A URL with its password hidden, for logs and messages."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.replace(f":{parts.password}@", ":***@", 1)
    return urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment))


def role_passwords(passwords: Mapping[BrokerRole, str]) -> str:
    """The `SILOFLOW_BROKER_PASSWORDS` value of these passwords (deploy/ secrets)."""
    return ",".join(f"{role.value}:{pw}" for role, pw in passwords.items())


# -- creating and removing them (the broker administrator's part: bootstrap, teardown) ----------


@dataclass(frozen=True)
class UsersReport:
    created: list[str]
    updated: list[str]
    password_file: str | None  # written now


async def ensure_users(settings: Settings) -> UsersReport:
    """Create every role's user with its rights, or bring an existing one's password and rights
    back to what they should be (idempotent). Runs as the broker administrator the configured
    URLs name."""
    passwords, written = ensure_passwords(settings)
    names = Names(settings.namespace)
    created: list[str] = []
    updated: list[str] = []
    async with Management(settings.management_api) as api:
        existing = set(await api.users())
        for role in BrokerRole:
            granted = rights(names, role)
            user = names.broker_user(role.value)
            await api.put_user(user, password=passwords[role], tags=granted.tags)
            await api.put_permissions(
                settings.vhost,
                user,
                configure=granted.configure,
                write=granted.write,
                read=granted.read,
            )
            for topic in granted.topics:
                await api.put_topic_permissions(
                    settings.vhost,
                    user,
                    exchange=topic.exchange,
                    write=topic.write,
                    read=topic.read,
                )
            (updated if user in existing else created).append(user)
    return UsersReport(created, updated, str(settings.broker_users_file) if written else None)


async def remove_users(settings: Settings) -> list[str]:
    """Delete this namespace's broker users and the password file. Returns what was removed."""
    names = Names(settings.namespace)
    removed: list[str] = []
    async with Management(settings.management_api) as api:
        for role in BrokerRole:
            if await api.delete_user(names.broker_user(role.value)):
                removed.append(f"broker user {names.broker_user(role.value)}")
    path = settings.broker_users_file
    if settings.broker_passwords is None and path.exists():
        path.unlink()
        removed.append(f"broker password file {path}")
    return removed
