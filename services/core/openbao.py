"""OpenBao as the credential issuer (`SILOFLOW_CREDENTIALS=openbao`): its database secrets engine
issues each tenant its own dynamic PostgreSQL login, a member of the tenant's owner role only.

One connection and one role per tenant, both named `<ns>-<slug>`. The connection logs in as the
tenant's broker role (`<ns>_bao_<slug>`), whose password OpenBao rotates at once so only OpenBao
knows it. Services log in with AppRole (or a token) and keep hvac, which is synchronous, off the
event loop."""

from __future__ import annotations

import asyncio
import secrets
import threading
from collections.abc import Callable
from typing import TypeVar

import hvac
import hvac.exceptions
import requests
import structlog

from services.core.builtin_broker import drop_logins
from services.core.credentials import LeasedCredentials, TenantLogin
from services.core.db import ServerAddress, at_server, one_connection, provisioner_url
from services.core.errors import ProvisioningError, Transient
from services.core.names import Names
from services.core.pgadmin import (
    MAINTENANCE_DATABASE,
    end_login,
    ident,
    literal,
    member_logins,
    role_exists,
)
from services.core.registry import TenantRecord
from services.core.settings import Settings

log = structlog.get_logger(__name__)
T = TypeVar("T")

PLUGIN = "postgresql-database-plugin"
# Failures that mean "OpenBao cannot answer now", not "OpenBao said no".
UNREACHABLE = (
    requests.exceptions.ConnectionError,
    requests.exceptions.Timeout,
    hvac.exceptions.VaultDown,
    hvac.exceptions.InternalServerError,
    hvac.exceptions.BadGateway,
)


class OpenBaoUnavailable(Transient):
    """Raised when OpenBao cannot be reached or is sealed: wait and retry."""


class OpenBao:
    """An authenticated hvac client, used from worker threads one call at a time."""

    def __init__(self, settings: Settings, *, token: str | None = None) -> None:
        self._settings = settings
        self._token = token
        self._client = hvac.Client(url=settings.openbao_addr, timeout=settings.openbao_timeout_s)
        self._authenticated = False
        self._lock = threading.Lock()

    async def call(self, fn: Callable[[hvac.Client], T]) -> T:
        """Run `fn(client)` in a thread, logged in; a refused token is renewed by logging in
        again, once."""
        try:
            return await asyncio.to_thread(self._call, fn)
        except UNREACHABLE as exc:
            raise OpenBaoUnavailable(
                f"OpenBao at {self._settings.openbao_addr} is unreachable: "
                f"{str(exc).splitlines()[0] if str(exc) else type(exc).__name__}"
            ) from exc

    def _call(self, fn: Callable[[hvac.Client], T]) -> T:
        with self._lock:
            if not self._authenticated:
                self._login()
            try:
                return fn(self._client)
            except hvac.exceptions.Forbidden:
                self._login()  # the token expired or was revoked: log in again, then retry
                return fn(self._client)

    def _login(self) -> None:
        settings = self._settings
        if self._token is not None:
            self._client.token = self._token
        elif settings.openbao_role_id is not None and settings.openbao_secret_id is not None:
            self._client.auth.approle.login(
                role_id=settings.openbao_role_id,
                secret_id=settings.openbao_secret_id.get_secret_value(),
            )
        elif settings.openbao_token is not None:
            self._client.token = settings.openbao_token.get_secret_value()
        else:  # the settings refuse this combination; kept for a clear message regardless
            raise ProvisioningError("-", "no OpenBao login configured")
        self._authenticated = True

    def close(self) -> None:
        self._client.adapter.close()


class OpenBaoCredentials(LeasedCredentials):
    """Issues, renews and revokes dynamic logins through OpenBao."""

    broker = "openbao"

    def __init__(self, settings: Settings) -> None:
        super().__init__(settings)
        self._bao = OpenBao(settings)
        self._mount = settings.openbao_mount

    async def _issue(self, tenant: TenantRecord) -> TenantLogin:
        assert tenant.placement is not None
        name = self._names.openbao_name(tenant.slug)
        response = await self._bao.call(
            lambda c: c.secrets.database.generate_credentials(name=name, mount_point=self._mount)
        )
        data = response["data"]
        server = ServerAddress(tenant.placement.host, tenant.placement.port)
        url = at_server(provisioner_url(self._settings), server, tenant.db_name).set(
            username=data["username"], password=data["password"]
        )
        lease = self._lease(float(response["lease_duration"]), renewable=response["renewable"])
        return TenantLogin(
            url=url,
            role=self._names.tenant_owner_role(tenant.slug),
            lease=lease,
            lease_id=response["lease_id"],
        )

    async def _renew(self, tenant: TenantRecord, login: TenantLogin) -> TenantLogin:
        lease_id = login.lease_id
        assert lease_id is not None
        increment = int(self._settings.credential_ttl_s)
        response = await self._bao.call(
            lambda c: c.sys.renew_lease(lease_id=lease_id, increment=increment)
        )
        return self._renewed(login, float(response["lease_duration"]))

    async def _revoke(self, login: TenantLogin) -> None:
        lease_id = login.lease_id
        if lease_id is not None:
            await self._bao.call(lambda c: c.sys.revoke_lease(lease_id=lease_id))

    async def close(self) -> None:
        await super().close()
        self._bao.close()


def role_statements(names: Names, slug: str, login_group: str | None) -> dict[str, list[str]]:
    """What OpenBao runs to create, renew and revoke one tenant's logins. The broker role is made
    a member of each login so it may end the login's sessions when it revokes it."""
    owner = ident(names.tenant_owner_role(slug))
    broker = ident(names.tenant_broker_role(slug))
    groups = owner + (f", {ident(login_group)}" if login_group else "")
    return {
        "creation_statements": [
            "CREATE ROLE \"{{name}}\" WITH LOGIN PASSWORD '{{password}}' "
            f"VALID UNTIL '{{{{expiration}}}}' IN ROLE {groups} ROLE {broker};"
        ],
        "renew_statements": ["ALTER ROLE \"{{name}}\" VALID UNTIL '{{expiration}}';"],
        # Each statement must succeed on a login already dropped (by hand, or by a tenant
        # delete that got there first), or the lease can never be revoked.
        "revocation_statements": [
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = '{{name}}';",
            'DROP ROLE IF EXISTS "{{name}}";',
        ],
    }


class OpenBaoAdmin:
    """Registers tenants in OpenBao (as the provisioner) and revokes everything of theirs."""

    def __init__(self, settings: Settings) -> None:
        self._settings = settings
        self._names = Names(settings.namespace)
        self._mount = settings.openbao_mount

    async def register(self, slug: str, server: ServerAddress, database: str) -> None:
        names, settings = self._names, self._settings
        broker = names.tenant_broker_role(slug)
        password = secrets.token_urlsafe(32)
        # The broker role gets a fresh password each time (OpenBao rotates it away at once):
        # running create again repairs a tenant whose OpenBao side was lost.
        admin = at_server(provisioner_url(settings), server, MAINTENANCE_DATABASE)
        async with one_connection(admin, settings, autocommit=True) as conn:
            verb = "alter" if await role_exists(conn, broker) else "create"
            await conn.exec_driver_sql(
                f"{verb} role {ident(broker)} login createrole password {literal(password)}"
            )
            await conn.exec_driver_sql(
                f"grant connect on database {ident(database)} to {ident(broker)}"
            )
        name = names.openbao_name(slug)
        connection_url = (
            "postgresql://{{username}}:{{password}}@"
            f"{server.host}:{server.port}/{database}?sslmode=prefer"
        )
        template = f'{{{{ printf "{names.login_prefix}%s" (random 16) | lowercase }}}}'
        statements = role_statements(names, slug, settings.credential_login_group)

        def configure(c: hvac.Client) -> None:
            c.secrets.database.configure(
                name=name,
                plugin_name=PLUGIN,
                connection_url=connection_url,
                username=broker,
                password=password,
                allowed_roles=[name],
                username_template=template,
                verify_connection=True,
                mount_point=self._mount,
            )
            c.secrets.database.create_role(
                name=name,
                db_name=name,
                default_ttl=int(settings.credential_ttl_s),
                max_ttl=int(settings.credential_max_ttl_s),
                mount_point=self._mount,
                **statements,
            )
            c.secrets.database.rotate_root_credentials(name=name, mount_point=self._mount)

        bao = OpenBao(settings)
        try:
            await bao.call(configure)
        except hvac.exceptions.VaultError as exc:
            raise ProvisioningError(
                slug, f"OpenBao refused the tenant's connection: {exc}"
            ) from exc
        finally:
            bao.close()
        log.info("credentials.registered", tenant=slug, broker="openbao", connection=name)

    async def unregister(self, slug: str, server: ServerAddress, database: str) -> list[str]:
        names, settings = self._names, self._settings
        name = names.openbao_name(slug)
        owner = names.tenant_owner_role(slug)
        admin = at_server(provisioner_url(settings), server, MAINTENANCE_DATABASE)
        async with one_connection(admin, settings, autocommit=True) as conn:
            held = await member_logins(conn, owner, names.login_prefix)

        def revoke(c: hvac.Client) -> None:
            c.sys.revoke_prefix(prefix=f"{self._mount}/creds/{name}")
            c.secrets.database.delete_role(name=name, mount_point=self._mount)
            c.secrets.database.delete_connection(name=name, mount_point=self._mount)

        bao = OpenBao(settings)
        try:
            await bao.call(revoke)
        except hvac.exceptions.InvalidPath:
            pass  # never registered, or already removed
        finally:
            bao.close()
        async with one_connection(admin, settings, autocommit=True) as conn:
            # Whatever OpenBao could not revoke (a lease it lost) goes the same way.
            await drop_logins(conn, names, owner, expired_only=False)
            broker = names.tenant_broker_role(slug)
            if await role_exists(conn, broker):
                await conn.exec_driver_sql(
                    f"revoke all on database {ident(database)} from {ident(broker)}"
                )
                await end_login(conn, broker)
        log.info("credentials.unregistered", tenant=slug, broker="openbao", revoked=held)
        return held


def policies(names: Names, mount: str) -> dict[str, str]:
    """The two OpenBao policies of a deployment: the provisioner's and the services'."""
    prefix = names.openbao_prefix
    provisioner = f"""
path "{mount}/config/{prefix}*" {{ capabilities = ["create", "read", "update", "delete"] }}
path "{mount}/roles/{prefix}*" {{ capabilities = ["create", "read", "update", "delete"] }}
path "{mount}/rotate-root/{prefix}*" {{ capabilities = ["update"] }}
path "sys/leases/revoke-prefix/{mount}/creds/{prefix}*" {{ capabilities = ["update", "sudo"] }}
"""
    service = f"""
path "{mount}/creds/{prefix}*" {{ capabilities = ["read"] }}
path "sys/leases/renew" {{ capabilities = ["update"] }}
path "sys/leases/revoke" {{ capabilities = ["update"] }}
"""
    return {f"{prefix}provisioner": provisioner, f"{prefix}service": service}


def setup_with(client: hvac.Client, settings: Settings) -> dict[str, str]:
    """`setup` on a client already logged in as an OpenBao administrator."""
    names = Names(settings.namespace)
    mount = settings.openbao_mount
    if f"{mount}/" not in client.sys.list_mounted_secrets_engines()["data"]:
        client.sys.enable_secrets_engine(backend_type="database", path=mount)
    if "approle/" not in client.sys.list_auth_methods()["data"]:
        client.sys.enable_auth_method(method_type="approle")
    out: dict[str, str] = {}
    for policy, rules in policies(names, mount).items():
        client.sys.create_or_update_policy(name=policy, policy=rules)
        who = policy.removeprefix(names.openbao_prefix)
        client.auth.approle.create_or_update_approle(
            role_name=policy, token_policies=[policy], token_ttl="1h", token_max_ttl="24h"
        )
        role_id = client.auth.approle.read_role_id(role_name=policy)["data"]["role_id"]
        secret = client.auth.approle.generate_secret_id(role_name=policy)["data"]["secret_id"]
        out[f"{who}_role_id"] = role_id
        out[f"{who}_secret_id"] = secret
    return out


async def setup(settings: Settings, admin_token: str) -> dict[str, str]:
    """One-time set-up by an OpenBao administrator: the database secrets engine at
    `openbao_mount`, AppRole, this deployment's policies and its two AppRoles (provisioner and
    services). Idempotent; returns each AppRole's role_id and a new secret_id."""
    bao = OpenBao(settings, token=admin_token)
    try:
        return await bao.call(lambda c: setup_with(c, settings))
    finally:
        bao.close()
