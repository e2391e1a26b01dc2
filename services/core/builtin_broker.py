"""The built-in credential broker (the default, no OpenBao needed): the provisioner creates each
tenant's short-lived logins itself (`VALID UNTIL`, member of the tenant's owner role only),
replaces them at two thirds of their life, and drops expired ones after ending their sessions."""

from __future__ import annotations

import secrets

import structlog
from sqlalchemy.ext.asyncio import AsyncConnection

from services.core.credentials import LeasedCredentials, TenantLogin
from services.core.db import ServerAddress, at_server, one_connection, provisioner_url
from services.core.names import Names
from services.core.pgadmin import MAINTENANCE_DATABASE, create_login, end_login, member_logins
from services.core.registry import TenantRecord
from services.core.settings import Settings

log = structlog.get_logger(__name__)

# Random part of a login's name: 16 characters of [a-z0-9] (about 82 bits).
_NAME_ALPHABET = "abcdefghijklmnopqrstuvwxyz0123456789"


def new_login_name(names: Names) -> str:
    return names.login_prefix + "".join(secrets.choice(_NAME_ALPHABET) for _ in range(16))


def _server(tenant: TenantRecord) -> ServerAddress:
    assert tenant.placement is not None  # checked by LeasedCredentials.login_for
    return ServerAddress(tenant.placement.host, tenant.placement.port)


async def drop_logins(
    conn: AsyncConnection, names: Names, owner: str, *, expired_only: bool
) -> list[str]:
    """End and drop a tenant's logins (only the expired ones, or all). Another process may be
    dropping the same expired login: losing that race is fine."""
    dropped = []
    for login in await member_logins(conn, owner, names.login_prefix, expired_only=expired_only):
        try:
            await end_login(conn, login)
        except Exception as exc:  # already gone (a concurrent sweep), or not ours to end
            log.debug("credentials.drop_skipped", login=login, error=str(exc).splitlines()[0])
            continue
        dropped.append(login)
    return dropped


class BuiltinCredentials(LeasedCredentials):
    """Issues logins as the provisioner, on the tenant's own server."""

    broker = "builtin"

    def __init__(self, settings: Settings) -> None:
        super().__init__(settings)
        self._servers: dict[str, ServerAddress] = {}  # login -> where it lives, for revoking

    async def _issue(self, tenant: TenantRecord) -> TenantLogin:
        server = _server(tenant)
        owner = self._names.tenant_owner_role(tenant.slug)
        login = new_login_name(self._names)
        password = secrets.token_urlsafe(32)
        ttl_s = self._settings.credential_ttl_s
        groups = [owner]
        if self._settings.credential_login_group:
            groups.append(self._settings.credential_login_group)
        admin = at_server(provisioner_url(self._settings), server, MAINTENANCE_DATABASE)
        async with one_connection(admin, self._settings, autocommit=True) as conn:
            # Expired logins are useless but still roles, and their sessions still run: the
            # issuer clears them as it goes, whoever issued them.
            expired = await drop_logins(conn, self._names, owner, expired_only=True)
            if expired:
                log.info("credentials.expired_dropped", tenant=tenant.slug, logins=expired)
            await create_login(conn, login, password, valid_for_s=ttl_s, member_of=groups)
        self._servers[login] = server
        url = at_server(provisioner_url(self._settings), server, tenant.db_name).set(
            username=login, password=password
        )
        return TenantLogin(url=url, role=owner, lease=self._lease(ttl_s, renewable=False))

    async def _revoke(self, login: TenantLogin) -> None:
        server = self._servers.pop(login.username, None)
        if server is None:
            return
        admin = at_server(provisioner_url(self._settings), server, MAINTENANCE_DATABASE)
        async with one_connection(admin, self._settings, autocommit=True) as conn:
            await end_login(conn, login.username)


class BuiltinAdmin:
    """Nothing to register (the provisioner issues logins directly); unregistering drops every
    login of the tenant, ending their sessions."""

    def __init__(self, settings: Settings) -> None:
        self._settings = settings
        self._names = Names(settings.namespace)

    async def register(self, slug: str, server: ServerAddress, database: str) -> None:
        return None

    async def unregister(self, slug: str, server: ServerAddress, database: str) -> list[str]:
        admin = at_server(provisioner_url(self._settings), server, MAINTENANCE_DATABASE)
        owner = self._names.tenant_owner_role(slug)
        async with one_connection(admin, self._settings, autocommit=True) as conn:
            return await drop_logins(conn, self._names, owner, expired_only=False)
