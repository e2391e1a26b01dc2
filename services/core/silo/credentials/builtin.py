"""The built-in credential broker (the default, no OpenBao needed): the provisioner creates each
tenant's short-lived logins itself (`VALID UNTIL`, member of the tenant's owner role only),
replaces them at two thirds of their life, and drops expired ones after ending their sessions."""

from __future__ import annotations

import secrets

import structlog

from services.core.db import ServerAddress, at_server, one_connection, provisioner_url
from services.core.pgadmin import MAINTENANCE_DATABASE, create_login, end_login
from services.core.registry.queries import TenantRecord
from services.core.settings import Settings
from services.core.silo.credentials.logins import drop_logins, new_login_name
from services.core.silo.credentials.seam import LeasedCredentials, TenantLogin

log = structlog.get_logger(__name__)


def _server(tenant: TenantRecord) -> ServerAddress:
    assert tenant.placement is not None  # checked by LeasedCredentials.login_for
    return ServerAddress(tenant.placement.host, tenant.placement.port)


class BuiltinCredentials(LeasedCredentials):
    """Issues logins as the provisioner, on the tenant's own server."""

    broker = "builtin"

    def __init__(self, settings: Settings, *, reader: bool = False) -> None:
        """`reader`: logins that may only read (members of the tenant's reader role)."""
        super().__init__(settings)
        self._reader = reader
        self._servers: dict[str, ServerAddress] = {}  # login -> where it lives, for revoking

    async def _issue(self, tenant: TenantRecord) -> TenantLogin:
        server = _server(tenant)
        owner = (
            self._names.tenant_reader_role(tenant.slug)
            if self._reader
            else self._names.tenant_owner_role(tenant.slug)
        )
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
