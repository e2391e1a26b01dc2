"""Listening to the registry's change notices (PostgreSQL LISTEN), reconnecting by itself. Every
(re)connection calls `on_reset` first: what changed while nobody listened is unknown."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import asyncpg
import structlog

from services.core import backoff
from services.core.diagnosis import Outage
from services.core.failures import CONNECTION_ERRORS
from services.core.settings import Settings

log = structlog.get_logger(__name__)

PROBE_INTERVAL_S = 5.0
# Reconnecting waits at most this long: nothing is cached while the channel is down, so every
# lookup goes to the registry, and the sooner it listens again the better.
RETRY_MAX_S = 5.0


class NoticeListener:
    """Calls `on_notice(payload)` for each notice on `channel` of the registry database (or of
    the database `dsn` names); `listening` says whether notices can currently be trusted to
    arrive."""

    def __init__(
        self,
        settings: Settings,
        channel: str,
        *,
        on_notice: Callable[[str], None],
        on_reset: Callable[[str], None],
        name: str,
        dsn: str | None = None,
    ) -> None:
        self._dsn = dsn or settings.registry_url
        self._channel = channel
        self._on_notice = on_notice
        self._on_reset = on_reset
        self._name = name
        self._timeout_s = settings.connect_timeout_s
        self._outage = Outage(
            "notices.unavailable", settings, "SILOFLOW_REGISTRY_DSN", listener=name
        )
        self._task: asyncio.Task[None] | None = None
        self._listening = asyncio.Event()

    @property
    def listening(self) -> bool:
        """Whether notices are being received now (a cache may be trusted only then)."""
        return self._listening.is_set()

    def start(self) -> None:
        """Start listening, reconnecting by itself."""
        self._task = asyncio.create_task(self._run(), name=f"notices:{self._name}")

    async def close(self) -> None:
        """Stop listening."""
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)

    async def wait_listening(self, timeout_s: float) -> bool:
        """Wait until listening; False if that took longer than `timeout_s`."""
        try:
            await asyncio.wait_for(self._listening.wait(), timeout_s)
        except TimeoutError:
            return False
        return True

    def _deliver(self, _conn: object, _pid: int, _channel: str, payload: str) -> None:
        self._on_notice(payload)

    async def _run(self) -> None:
        delays = backoff.delays(RETRY_MAX_S)
        while True:
            try:
                conn = await asyncpg.connect(
                    self._dsn,
                    timeout=self._timeout_s,
                    server_settings={"application_name": f"siloflow {self._name} notices"},
                )
            except (*CONNECTION_ERRORS, asyncpg.PostgresError) as exc:
                delay = next(delays)
                self._outage.failed(exc, retry_in_s=delay)
                await asyncio.sleep(delay)
                continue
            self._outage.recovered()
            lost = asyncio.Event()
            conn.add_termination_listener(lambda _c, lost=lost: lost.set())
            try:
                await conn.add_listener(self._channel, self._deliver)
                self._on_reset("notice channel connected")
                self._listening.set()
                delays = backoff.delays(RETRY_MAX_S)  # connected: the next outage starts afresh
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
            delay = next(delays)
            log.warning("notices.lost", listener=self._name, retry_in_s=delay)
            await asyncio.sleep(delay)
