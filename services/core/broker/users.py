"""Broker identities as a process meets them: the roles (one RabbitMQ user each per namespace,
`<ns>-router`: users are global to a broker, so the name carries the namespace), their
passwords (`SILOFLOW_BROKER_PASSWORDS` or the file bootstrap wrote), and the URL a process of a
role connects with. What each role may do is `services.ops.broker_users.rights`."""

from __future__ import annotations

import json
from collections.abc import Mapping
from enum import StrEnum
from urllib.parse import quote, urlsplit, urlunsplit

from services.core.errors import SettingsError
from services.core.names import Names
from services.core.settings import Settings

PASSWORD_BYTES = 24


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


# -- passwords -----------------------------------------------------------------------------------


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


def read_password_file(settings: Settings) -> dict[BrokerRole, str]:
    """The passwords in the file bootstrap wrote (none if there is no file)."""
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
    bootstrap wrote (none, if neither is there)."""
    if settings.broker_passwords is not None:
        return parse_passwords(settings.broker_passwords.get_secret_value())
    return read_password_file(settings)


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
    """(AMQP URL, management API URL) that `role` connects with: its own user, with its password
    (`role=None`, bootstrap's and teardown's, is the broker administrator of the URLs as
    configured, and so is every role's with `broker_identity=url`). `SettingsError` naming the
    user when its password is not known here: a process never falls back to the
    administrator's URL, which would hand it every right."""
    if role is None or settings.broker_identity == "url":
        return settings.amqp_url, settings.management_api
    user = Names(settings.namespace).broker_user(role.value)
    password = load_passwords(settings).get(role)
    if password is None:
        raise SettingsError(
            f"no password of the broker user {user!r} (role {role.value}) is known here: run "
            f"`siloflow bootstrap` on this machine (it writes {settings.broker_users_file}), "
            f"or set SILOFLOW_BROKER_PASSWORDS={role.value}:<password> (or, when "
            f"SILOFLOW_AMQP_URL names this process's own user, SILOFLOW_BROKER_IDENTITY=url)"
        )
    return (
        _with_user(settings.amqp_url, user, password),
        _with_user(settings.management_api, user, password),
    )


def amqp_url(settings: Settings, role: BrokerRole | None) -> str:
    """The AMQP URL `role` connects with."""
    return identity(settings, role)[0]


def management_url(settings: Settings, role: BrokerRole | None) -> str:
    """The management API URL `role` uses."""
    return identity(settings, role)[1]


def agent_url(settings: Settings) -> str:
    """The AMQP URL agents use (`siloflow broker agent-url`)."""
    return amqp_url(settings, BrokerRole.AGENT)


def user_of(url: str) -> str:
    """The user a URL logs in as (RabbitMQ's default when it names none)."""
    return urlsplit(url).username or "guest"


def role_passwords(passwords: Mapping[BrokerRole, str]) -> str:
    """The `SILOFLOW_BROKER_PASSWORDS` value of these passwords (deploy/ secrets)."""
    return ",".join(f"{role.value}:{pw}" for role, pw in passwords.items())
