"""The broker users' rights, and creating and removing the users (`siloflow bootstrap` and
`teardown`, as the broker administrator the configured URLs name): every role's user with the
rights `rights()` gives it, and the file of their passwords.

`rights()` is the pure table of least privilege: each role may do what its own code does and
nothing more; `tests/integration/test_broker_rights.py` proves each line against the real broker,
as an attacker would. Every right is a regular expression anchored on the namespace's own names,
so no user of one namespace reaches another's objects."""

from __future__ import annotations

import json
import re
import secrets
from dataclasses import dataclass

from services.core import wire
from services.core.broker.users import (
    PASSWORD_BYTES,
    BrokerRole,
    parse_passwords,
    read_password_file,
)
from services.core.errors import SettingsError
from services.core.names import Names
from services.core.outcomes import DeadLetterQueue
from services.core.secretfile import write_secret_file
from services.core.settings import Settings
from services.ops.management import Management

# RabbitMQ's name for the default exchange in permission checks: writing to it reaches every
# queue of the vhost by name.
DEFAULT_EXCHANGE = "amq.default"


NOTHING = "^$"


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
    dlqs = [names.dlq(which) for which in DeadLetterQueue]
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


def generate_passwords() -> dict[BrokerRole, str]:
    """A new password for every role."""
    return {role: secrets.token_urlsafe(PASSWORD_BYTES) for role in BrokerRole}


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
    current = read_password_file(settings)
    wanted = {**generate_passwords(), **current}
    if wanted == current:
        return current, False
    document = {"passwords": {role.value: wanted[role] for role in BrokerRole}}
    write_secret_file(settings.broker_users_file, json.dumps(document, indent=2) + "\n")
    return wanted, True


@dataclass(frozen=True)
class UsersReport:
    """What `ensure_users` did."""

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
