"""The credentials seam: how a service logs in to a tenant's database. The routing seam asks it
for a login and never builds one itself, so short-lived credentials (OpenBao or the built-in
broker) replace the static login here without touching callers."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from sqlalchemy import URL

from services.core.db import ServerAddress, at_server, provisioner_url
from services.core.names import Names
from services.core.registry import TenantRecord
from services.core.settings import Settings


@dataclass(frozen=True)
class TenantLogin:
    """A way into one tenant database: the URL to connect with, and the role to act as."""

    url: URL
    role: str

    @property
    def fingerprint(self) -> str:
        """Identifies the login without its secret (a new one means a new pool)."""
        return f"{self.url.render_as_string(hide_password=True)}#{self.role}"


class CredentialSource(Protocol):
    async def login_for(self, tenant: TenantRecord) -> TenantLogin:
        """A login valid for this tenant's database only."""
        ...


class StaticCredentials:
    """Logs in as the provisioner and acts as the tenant's owner role. Long-lived: the
    credentials issue replaces it with per-tenant short-lived logins."""

    def __init__(self, settings: Settings) -> None:
        self._settings = settings
        self._names = Names(settings.namespace)

    async def login_for(self, tenant: TenantRecord) -> TenantLogin:
        if tenant.placement is None:  # the routing seam refuses these before asking
            raise ValueError(f"tenant {tenant.slug!r} has no placement")
        server = ServerAddress(tenant.placement.host, tenant.placement.port)
        url = at_server(provisioner_url(self._settings), server, tenant.db_name)
        return TenantLogin(url=url, role=self._names.tenant_owner_role(tenant.slug))
