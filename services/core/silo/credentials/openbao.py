"""OpenBao as the credential issuer (`SILOFLOW_CREDENTIALS=openbao`): its database secrets engine
issues each tenant its own dynamic PostgreSQL login, a member of the tenant's owner role only.

One connection and one role per tenant, both named `<ns>-<slug>`. The connection logs in as the
tenant's broker role (`<ns>_bao_<slug>`), whose password OpenBao rotates at once so only OpenBao
knows it. Services log in with AppRole (or a token) and keep hvac, which is synchronous, off the
event loop."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable
from typing import TypeVar

import hvac
import hvac.exceptions
import requests
import structlog

from services.core.db import ServerAddress, at_server, provisioner_url
from services.core.errors import OpenBaoUnavailable, ProvisioningError
from services.core.registry.queries import TenantRecord
from services.core.settings import Settings
from services.core.silo.credentials.seam import LeasedCredentials, TenantLogin

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
        """Close the client's connections."""
        self._client.adapter.close()


class OpenBaoCredentials(LeasedCredentials):
    """Issues, renews and revokes dynamic logins through OpenBao."""

    broker = "openbao"

    def __init__(self, settings: Settings, *, reader: bool = False) -> None:
        """`reader`: logins that may only read (OpenBao's reader role of the tenant)."""
        super().__init__(settings)
        self._bao = OpenBao(settings)
        self._mount = settings.openbao_mount
        self._reader = reader

    async def _issue(self, tenant: TenantRecord) -> TenantLogin:
        assert tenant.placement is not None
        name = (
            self._names.openbao_reader_name(tenant.slug)
            if self._reader
            else self._names.openbao_name(tenant.slug)
        )
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
            role=self._names.tenant_reader_role(tenant.slug)
            if self._reader
            else self._names.tenant_owner_role(tenant.slug),
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
        """Revoke the logins held, then close the client."""
        await super().close()
        self._bao.close()
