"""Listening to the registry's change notices (PostgreSQL LISTEN), reconnecting by itself. Every
(re)connection calls `on_reset` first: what changed while nobody listened is unknown."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import asyncpg
import structlog

log = structlog.get_logger(__name__)

# Errors that mean "the database is not reachable right now", as asyncpg raises them.
CONNECTION_ERRORS: tuple[type[BaseException], ...] = (
    OSError,
    TimeoutError,
    asyncpg.PostgresConnectionError,
    asyncpg.InterfaceError,
    asyncpg.CannotConnectNowError,
    asyncpg.TooManyConnectionsError,
    asyncpg.exceptions.OperatorInterventionError,
)
# What PostgreSQL answers a new connection while it cannot take one: the database is closed to
# connections or being shut down, the login was refused. An outage, for whoever is waiting.
CONNECT_REFUSALS: tuple[type[BaseException], ...] = (
    asyncpg.ObjectNotInPrerequisiteStateError,
    asyncpg.InvalidCatalogNameError,
    asyncpg.InvalidAuthorizationSpecificationError,
    asyncpg.InvalidPasswordError,
)
PROBE_INTERVAL_S = 5.0


class NoticeListener:
    """Calls `on_notice(payload)` for each notice on `channel`; `listening` says whether notices
    can currently be trusted to arrive."""

    def __init__(
        self,
        dsn: str,
        channel: str,
        *,
        on_notice: Callable[[str], None],
        on_reset: Callable[[str], None],
        name: str,
        timeout_s: float,
    ) -> None:
        self._dsn = dsn
        self._channel = channel
        self._on_notice = on_notice
        self._on_reset = on_reset
        self._name = name
        self._timeout_s = timeout_s
        self._task: asyncio.Task[None] | None = None
        self._listening = asyncio.Event()

    @property
    def listening(self) -> bool:
        return self._listening.is_set()

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name=f"notices:{self._name}")

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)

    async def wait_listening(self, timeout_s: float) -> bool:
        try:
            await asyncio.wait_for(self._listening.wait(), timeout_s)
        except TimeoutError:
            return False
        return True

    def _deliver(self, _conn: object, _pid: int, _channel: str, payload: str) -> None:
        self._on_notice(payload)

    async def _run(self) -> None:
        backoff = 0.1
        while True:
            try:
                conn = await asyncpg.connect(
                    self._dsn,
                    timeout=self._timeout_s,
                    server_settings={"application_name": f"siloflow {self._name} notices"},
                )
            except (*CONNECTION_ERRORS, asyncpg.PostgresError) as exc:
                log.warning(
                    "notices.unavailable", listener=self._name, error=str(exc), retry_in_s=backoff
                )
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 5.0)
                continue
            lost = asyncio.Event()
            conn.add_termination_listener(lambda _c, lost=lost: lost.set())
            try:
                await conn.add_listener(self._channel, self._deliver)
                self._on_reset("notice channel connected")
                self._listening.set()
                backoff = 0.1
                while not lost.is_set():
                    try:
                        await asyncio.wait_for(lost.wait(), timeout=PROBE_INTERVAL_S)
                    except TimeoutError:
                        # A quiet connection may be dead without saying so: probe it.
                        try:
                            await conn.execute("select 1", timeout=self._timeout_s)
                        except (*CONNECTION_ERRORS, asyncpg.PostgresError):
                            break
            except (*CONNECTION_ERRORS, asyncpg.PostgresError) as exc:
                log.warning("notices.failed", listener=self._name, error=str(exc))
            finally:
                self._listening.clear()
                self._on_reset("notice channel lost")
                if not conn.is_closed():
                    conn.terminate()
            log.warning("notices.lost", listener=self._name, retry_in_s=backoff)
            await asyncio.sleep(backoff)
