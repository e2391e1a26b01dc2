"""Lease decisions, table-driven, and the shared issuer logic over an in-memory issuer: when a
login is reused, renewed or replaced, and what happens when the issuer fails."""

from __future__ import annotations

from dataclasses import dataclass, field, replace

import pytest
from sqlalchemy import URL

from services.core.errors import CredentialsUnavailable, SettingsError
from services.core.registry.queries import Placement, TenantRecord
from services.core.settings import Settings, load_settings
from services.core.silo.credentials.leases import Action, Lease, decide, retry_after_s
from services.core.silo.credentials.seam import LeasedCredentials, TenantLogin
from tests.unit.records import tenant_record

TTL = 30.0


def lease(
    renewed_at: float, ttl: float = TTL, max_at: float = 1000.0, renewable: bool = True
) -> Lease:
    return Lease(renewed_at, renewed_at + ttl, max_at, renewable)


@pytest.mark.parametrize(
    ("current", "now", "expected"),
    [
        (None, 0.0, Action.REPLACE),  # nothing yet
        (lease(0.0), 1.0, Action.USE),  # fresh
        (lease(0.0), 19.9, Action.USE),  # just before two thirds
        (lease(0.0), 20.0, Action.RENEW),  # two thirds: renew
        (lease(0.0, renewable=False), 20.0, Action.REPLACE),  # the built-in broker's
        (lease(0.0, max_at=25.0), 20.0, Action.REPLACE),  # a renewal could add only 5 s
        (lease(0.0, max_at=30.0), 20.0, Action.RENEW),  # exactly a third of a TTL left
        (lease(0.0), 30.0, Action.REPLACE),  # expired
        (lease(0.0), 45.0, Action.REPLACE),
    ],
)
def test_decide(current: Lease | None, now: float, expected: Action) -> None:
    assert decide(current, now, TTL) is expected


@pytest.mark.parametrize(
    ("current", "now", "expected"),
    [
        (None, 0.0, 1.0),
        (lease(0.0), 29.5, 1.0),  # almost gone: try again soon
        (lease(0.0), 20.0, 2.5),  # a quarter of the ten seconds left
        (lease(0.0, ttl=1000.0), 0.0, 30.0),  # never wait longer than this
    ],
)
def test_retry_after(current: Lease | None, now: float, expected: float) -> None:
    assert retry_after_s(current, now) == pytest.approx(expected)


@dataclass
class FakeIssuer(LeasedCredentials):
    """Issues logins named login-1, login-2, ... unless told to fail."""

    failing: bool = False
    issued: int = 0
    renewed: int = 0
    revoked: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.now = 0.0
        settings = Settings(credential_ttl_s=TTL, credential_max_ttl_s=100.0)
        LeasedCredentials.__init__(self, settings, clock=lambda: self.now)

    async def _issue(self, tenant: TenantRecord) -> TenantLogin:
        if self.failing:
            raise ConnectionRefusedError("issuer down")
        self.issued += 1
        assert tenant.placement is not None
        url = URL.create(
            "postgresql+asyncpg",
            username=f"login-{self.issued}",
            password="pw",
            host=tenant.placement.host,
            port=tenant.placement.port,
            database=tenant.db_name,
        )
        return TenantLogin(url, "owner", self._lease(TTL, renewable=True), f"lease-{self.issued}")

    async def _renew(self, tenant: TenantRecord, login: TenantLogin) -> TenantLogin:
        if self.failing:
            raise ConnectionRefusedError("issuer down")
        self.renewed += 1  # capped by the max TTL, as OpenBao does
        return self._renewed(login, min(TTL, login.lease.max_expires_at - self.now))

    async def _revoke(self, login: TenantLogin) -> None:
        self.revoked.append(login.username)


TENANT = tenant_record()


async def test_a_login_is_reused_then_renewed_then_replaced_at_its_max_ttl() -> None:
    issuer = FakeIssuer()
    first = await issuer.login_for(TENANT)
    issuer.now = 10.0
    assert await issuer.login_for(TENANT) is first
    issuer.now = 21.0
    renewed = await issuer.login_for(TENANT)
    assert renewed.username == first.username and renewed.fingerprint == first.fingerprint
    assert issuer.renewed == 1 and renewed.lease.expires_at == pytest.approx(51.0)
    issuer.now = 41.0
    await issuer.login_for(TENANT)  # renewed again (to 71)
    issuer.now = 61.0
    await issuer.login_for(TENANT)  # renewed again (to 91)
    issuer.now = 81.0  # due; the max TTL at 100 leaves 19 s: renewed, to 100
    await issuer.login_for(TENANT)
    issuer.now = 94.0  # due again; 6 s left before the max TTL: replace
    replaced = await issuer.login_for(TENANT)
    assert replaced.username == "login-2" and replaced.fingerprint != first.fingerprint


async def test_an_unreachable_issuer_leaves_the_valid_login_in_use_then_fails_transiently() -> None:
    issuer = FakeIssuer()
    first = await issuer.login_for(TENANT)
    issuer.failing = True
    issuer.now = 21.0  # due, and the issuer is down: keep the valid login
    assert await issuer.login_for(TENANT) is first
    issuer.now = 22.0  # backing off: no new attempt yet
    assert await issuer.login_for(TENANT) is first
    issuer.now = 31.0  # expired
    with pytest.raises(CredentialsUnavailable):
        await issuer.login_for(TENANT)
    issuer.failing = False
    assert (await issuer.login_for(TENANT)).username == "login-2"


async def test_an_evicted_login_is_replaced_and_close_revokes_what_is_held() -> None:
    issuer = FakeIssuer()
    first = await issuer.login_for(TENANT)
    await issuer.evict(TENANT, first)
    second = await issuer.login_for(TENANT)
    assert second.username == "login-2"
    await issuer.evict(TENANT, first)  # a stale eviction does not throw the new one away
    assert await issuer.login_for(TENANT) is second
    await issuer.close()
    assert issuer.revoked == ["login-2"]


def test_openbao_needs_a_way_to_log_in(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SILOFLOW_CREDENTIALS", "openbao")
    with pytest.raises(SettingsError, match="openbao_role_id"):
        load_settings()
    monkeypatch.setenv("SILOFLOW_OPENBAO_ROLE_ID", "r")
    monkeypatch.setenv("SILOFLOW_OPENBAO_SECRET_ID", "s")
    assert load_settings().credentials == "openbao"


def test_max_ttl_below_ttl_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SILOFLOW_CREDENTIAL_TTL_S", "600")
    monkeypatch.setenv("SILOFLOW_CREDENTIAL_MAX_TTL_S", "60")
    with pytest.raises(SettingsError, match="credential_max_ttl_s"):
        load_settings()


async def test_a_tenant_that_moved_gets_a_login_on_its_new_server_and_the_old_is_revoked() -> None:
    issuer = FakeIssuer()
    first = await issuer.login_for(TENANT)
    moved = replace(TENANT, placement=Placement("second", "db2.internal", 5460))
    second = await issuer.login_for(moved)
    assert second.username == "login-2" and (second.url.host, second.url.port) == (
        "db2.internal",
        5460,
    )
    assert issuer.revoked == [first.username]
    assert await issuer.login_for(moved) is second  # and kept while valid
