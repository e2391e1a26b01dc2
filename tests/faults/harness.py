"""The fault suite's machinery: a deployment's services as real processes under a process manager
that restarts what dies (as systemd would), a steady load of known reports published through the
reference agent client, and a ledger that looks for each report where it must end: once in its
tenant's silo, or in its dead-letter queue with its reason."""

from __future__ import annotations

import asyncio
import itertools
import os
import random
import signal
import sys
import time
import uuid
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aio_pika
import asyncpg
import structlog

from services.agent.client import AgentPublisher, Identity, OutgoingReport, build_report
from services.core import dead_letters as dlq
from services.core import wire
from services.core.broker.users import agent_url
from services.core.hostkeys import load_keyring, sign
from services.core.outcomes import Reason
from services.core.settings import Settings
from tests import reports
from tests.support import env_for

log = structlog.get_logger(__name__)

RESTART_AFTER_S = 0.5  # the process manager's restart delay (systemd's RestartSec)
SETTLE_TIMEOUT_S = 180.0  # how long the ledger waits for the last report to find its place


# -- the services ----------------------------------------------------------------------------------


@dataclass
class Service:
    name: str
    args: list[str]
    process: asyncio.subprocess.Process | None = None
    restarts: int = 0


class Services:
    """ingest, router and a worker supervisor with two workers (and, when asked, the sweeper),
    each its own `siloflow run` process, restarted half a second after it dies until `stop()`."""

    def __init__(
        self,
        settings: Settings,
        logdir: Path,
        worker_processes: int = 2,
        *,
        sweeper: bool = False,
        env: dict[str, str] | None = None,
    ) -> None:
        self.env = {**env_for(settings), "SILOFLOW_LOG_FORMAT": "json", **(env or {})}
        self.logdir = logdir
        self.services = {
            "ingest": Service("ingest", ["run", "ingest"]),
            "router": Service("router", ["run", "router"]),
            "workers": Service("workers", ["run", "workers", "--processes", str(worker_processes)]),
        }
        if sweeper:
            self.services["sweeper"] = Service("sweeper", ["run", "sweeper"])
        self._stopping = False
        self._watchers: list[asyncio.Task[None]] = []

    async def start(self) -> None:
        for service in self.services.values():
            await self._spawn(service)
            self._watchers.append(asyncio.create_task(self._watch(service)))

    async def _spawn(self, service: Service) -> None:
        out = (self.logdir / f"{service.name}.log").open("ab")
        service.process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "services.cli",
            *service.args,
            env=self.env,
            stdout=out,
            stderr=asyncio.subprocess.STDOUT,
        )
        out.close()

    async def _watch(self, service: Service) -> None:
        while not self._stopping:
            assert service.process is not None
            await service.process.wait()
            if self._stopping:
                return
            await asyncio.sleep(RESTART_AFTER_S)
            service.restarts += 1
            await self._spawn(service)

    def pid(self, name: str) -> int:
        process = self.services[name].process
        assert process is not None and process.returncode is None, f"{name} is not running"
        return process.pid

    def children(self, name: str) -> list[int]:
        """The live child processes of a service (the worker supervisor's workers)."""
        parent = self.pid(name)
        found = []
        for entry in Path("/proc").iterdir():
            if entry.name.isdigit():
                try:
                    fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
                except OSError:
                    continue
                if int(fields[1]) == parent and fields[0] != "Z":
                    found.append(int(entry.name))
        return found

    async def wait_running(self, name: str, timeout_s: float = 30) -> int:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            process = self.services[name].process
            if process is not None and process.returncode is None:
                return process.pid
            await asyncio.sleep(0.1)
        raise AssertionError(f"{name} did not come back within {timeout_s:.0f} s")

    async def stop(self) -> None:
        self._stopping = True
        running = [s.process for s in self.services.values() if s.process is not None]
        for process in running:
            if process.returncode is None:
                process.send_signal(signal.SIGTERM)
        for process in running:
            try:
                await asyncio.wait_for(process.wait(), 30)
            except TimeoutError:
                process.kill()
                await process.wait()
        for watcher in self._watchers:
            watcher.cancel()


# -- the load ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Expected:
    """Where one published report must end: a tenant's silo, or a dead-letter queue (`dlq`)
    with a reason."""

    tenant: str | None = None
    dlq: str | None = None
    reason: str | None = None


# One in MISBEHAVE_EVERY reports is one of these, in turn.
MISBEHAVE_EVERY = 25
MISBEHAVIOURS = ("unbound-host", "forged-signature", "not-json", "schema-violation")


@dataclass
class Load:
    """Publishes a known set of reports at a steady rate through the reference client: valid ones
    from each tenant's bound hosts, and, one in MISBEHAVE_EVERY, a report that must be
    dead-lettered. A publish that is not confirmed is retried, unchanged, until it is (as an
    agent does), so a broker outage delays the load but never thins it."""

    settings: Settings
    fleet: dict[str, list[Identity]]  # tenant slug -> its hosts
    rate_per_s: float = 80.0
    seed: int = 11
    expected: dict[str, Expected] = field(default_factory=dict)
    published_at: dict[str, float] = field(default_factory=dict)  # confirmed, monotonic
    resent: set[str] = field(default_factory=set)
    stopped: asyncio.Event = field(default_factory=asyncio.Event)

    def published_by(self, moment: float) -> set[str]:
        return {m for m, t in self.published_at.items() if t <= moment}

    def published_between(self, start: float, end: float) -> set[str]:
        return {m for m, t in self.published_at.items() if start <= t <= end}

    async def run(self, count: int | None = None) -> None:
        """Publish `count` reports (or until `stopped` is set)."""
        rng = random.Random(self.seed)
        keyring = load_keyring(self.settings)
        hosts = [(slug, identity) for slug, ids in self.fleet.items() for identity in ids]
        interval = 1 / self.rate_per_s
        async with AgentPublisher(agent_url(self.settings), self.settings.namespace) as agent:
            start = time.monotonic()
            for n in itertools.count():
                if (count is not None and n >= count) or self.stopped.is_set():
                    return
                if n % MISBEHAVE_EVERY == MISBEHAVE_EVERY - 1:
                    behaviour = MISBEHAVIOURS[(n // MISBEHAVE_EVERY) % len(MISBEHAVIOURS)]
                    key, message, expected = misbehaving(behaviour, keyring, hosts, rng)
                else:
                    slug, identity = rng.choice(hosts)
                    report = valid_report(identity, rng, n)
                    key, message = report.routing_key, report.message()
                    expected = Expected(tenant=slug)
                assert message.message_id is not None
                self.expected[message.message_id] = expected
                await self._publish(agent, key, message)
                self.published_at[message.message_id] = time.monotonic()
                delay = start + (n + 1) * interval - time.monotonic()
                if delay > 0:
                    await asyncio.sleep(delay)

    async def _publish(self, agent: AgentPublisher, key: str, message: aio_pika.Message) -> None:
        delay = 0.2
        while True:
            try:
                await asyncio.wait_for(agent.publish_raw(key, message), 30)
                return
            except (TimeoutError, aio_pika.exceptions.AMQPError, ConnectionError, RuntimeError):
                assert message.message_id is not None
                self.resent.add(message.message_id)
                await asyncio.sleep(delay)  # the robust connection reconnects meanwhile
                delay = min(delay * 2, 2.0)


def valid_report(identity: Identity, rng: random.Random, n: int) -> OutgoingReport:
    """Mostly heartbeats, with system info, hardware and compliance results among them."""
    kind = rng.choices(["heartbeat", "system_info", "hardware", "compliance"], [90, 4, 3, 3])[0]
    data: dict[str, Any] = {
        "heartbeat": lambda: reports.heartbeat(uptime_s=60 + n),
        "system_info": lambda: reports.system_info(f"host-{n}"),
        "hardware": reports.hardware,
        "compliance": reports.compliance,
    }[kind]()
    return build_report(kind, identity.host_id, data, identity=identity)


def misbehaving(
    behaviour: str, keyring: Any, hosts: list[tuple[str, Identity]], rng: random.Random
) -> tuple[str, aio_pika.Message, Expected]:
    """A report that must be dead-lettered, the routing key it goes under, and where it must
    end up."""
    _, victim = rng.choice(hosts)
    if behaviour == "unbound-host":
        stray = uuid.uuid4()
        identity = Identity(stray, keyring.host_key(stray), keyring.current)
        report = build_report("heartbeat", stray, reports.heartbeat(), identity=identity)
        return (
            report.routing_key,
            report.message(),
            Expected(dlq="unrouted", reason=Reason.NO_TENANT_BINDING),
        )
    if behaviour == "forged-signature":
        forger = Identity(victim.host_id, rng.randbytes(32), victim.key_version)
        report = build_report("heartbeat", victim.host_id, reports.heartbeat(), identity=forger)
        return (
            report.routing_key,
            report.message(),
            Expected(dlq="invalid", reason=Reason.BAD_SIGNATURE),
        )
    if behaviour == "not-json":
        body, message_id = b'{"schema": "heartbeat/v1", oops', str(uuid.uuid4())
        host = str(victim.host_id)
        signature = sign(victim.host_key, victim.key_version, message_id, host, body)
        message = aio_pika.Message(
            body,
            message_id=message_id,
            headers={wire.HOST_ID: host, wire.SIGNATURE: signature},
            content_type=wire.CONTENT_TYPE,
            delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
        )
        return (
            wire.report_routing_key("heartbeat"),
            message,
            Expected(dlq="invalid", reason=Reason.NOT_JSON),
        )
    report = build_report("heartbeat", victim.host_id, {"status": "fine"}, identity=victim)
    return (
        report.routing_key,
        report.message(),
        Expected(dlq="invalid", reason=Reason.SCHEMA_VIOLATION),
    )


# -- the ledger ------------------------------------------------------------------------------


@dataclass
class Found:
    """Where each report was found: (tenant, count) per silo, (dlq, reason) per letter."""

    silos: dict[str, Counter[str]] = field(default_factory=dict)  # slug -> message_id -> count
    letters: dict[str, list[tuple[str, str]]] = field(default_factory=dict)  # id -> [(dlq, why)]

    def places(self, message_id: str) -> list[str]:
        where = [slug for slug, ids in self.silos.items() for _ in range(ids[message_id])]
        return where + [f"dlq.{dlq}" for dlq, _ in self.letters.get(message_id, [])]


async def look(settings: Settings, tenants: dict[str, str]) -> Found:
    # `tenants`: slug -> the DSN of its silo (Deployment.dsns: a moved tenant's is elsewhere).
    """Every silo's ledger of committed reports, and every letter in the dead-letter queues as
    operators see them (`siloflow dlq list`: copies of one letter, left by a service killed
    between its dead-letter publish and its ack, are one letter; dead-letter queues have no
    delivery limit, so reading them costs nothing)."""
    found = Found()
    for slug, dsn in tenants.items():
        conn = await asyncpg.connect(dsn)
        try:
            rows = await conn.fetch("select message_id from agent_messages")
        finally:
            await conn.close()
        found.silos[slug] = Counter(str(r["message_id"]) for r in rows)
    for letter in await dlq.browse(settings, dlq.Filters()):
        found.letters.setdefault(str(letter.message_id), []).append((letter.queue, letter.reason))
    return found


@dataclass
class Tally:
    """One scenario's row of the table."""

    scenario: str
    published: int = 0
    committed: int = 0
    dead_lettered: Counter[str] = field(default_factory=Counter)  # "dlq/reason" -> count
    lost: int = 0
    duplicated: int = 0
    misplaced: int = 0  # in the wrong silo, or the wrong queue, or for the wrong reason
    recovery_s: float | None = None
    notes: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)

    def row(self) -> dict[str, Any]:
        return {
            "scenario": self.scenario,
            "published": self.published,
            "committed": self.committed,
            "dead_lettered": dict(sorted(self.dead_lettered.items())),
            "lost": self.lost,
            "duplicated": self.duplicated,
            "misplaced": self.misplaced,
            "recovery_s": None if self.recovery_s is None else round(self.recovery_s, 1),
            "notes": self.notes,
        }


def account(scenario: str, load: Load, found: Found) -> Tally:
    """Compare what was published with where it was found."""
    tally = Tally(scenario, published=len(load.published_at))
    for message_id in load.published_at:
        expected = load.expected[message_id]
        places = found.places(message_id)
        if not places:
            tally.lost += 1
            tally.problems.append(f"{message_id} lost (expected {expected})")
            continue
        letters = found.letters.get(message_id, [])
        committed_in = [p for p in places if not p.startswith("dlq.")]
        # Anything seen twice, as operators see it, is a double: two silos, a silo and a
        # dead-letter queue, two dead-letter queues.
        distinct = set(committed_in) | {f"dlq.{d}/{r}" for d, r in letters}
        copies = len(committed_in) + len(letters)
        if copies > 1:
            tally.duplicated += 1
            tally.problems.append(f"{message_id} found {copies} times: {sorted(distinct)}")
        if expected.tenant is not None:
            if committed_in == [expected.tenant] or set(committed_in) == {expected.tenant}:
                tally.committed += 1
            else:
                tally.misplaced += 1
                tally.problems.append(f"{message_id} for {expected.tenant} found in {places}")
        else:
            reasons = {(d, r) for d, r in letters}
            if (expected.dlq, expected.reason) in reasons and not committed_in:
                tally.dead_lettered[f"{expected.dlq}/{expected.reason}"] += 1
            else:
                tally.misplaced += 1
                tally.problems.append(f"{message_id} expected {expected}, found {places}")
    return tally


async def settle(
    settings: Settings,
    tenants: dict[str, str],
    load: Load,
    *,
    timeout_s: float = SETTLE_TIMEOUT_S,
) -> Found:
    """Wait until every published report is somewhere (or nothing moved for `timeout_s`)."""
    last_progress, last_count = time.monotonic(), -1
    while True:
        found = await look(settings, tenants)
        placed = sum(1 for m in load.published_at if found.places(m))
        if placed == len(load.published_at):
            return found
        if placed != last_count:
            last_progress, last_count = time.monotonic(), placed
        elif time.monotonic() - last_progress > timeout_s:
            log.error("faults.settle_gave_up", placed=placed, published=len(load.published_at))
            return found
        await asyncio.sleep(1.0)


async def recovery_time(
    settings: Settings, tenants: dict[str, str], load: Load, since: float
) -> float | None:
    """Seconds from `since` (the fault's end) until everything published by then was in place."""
    wanted = load.published_by(since)
    deadline = time.monotonic() + SETTLE_TIMEOUT_S
    while time.monotonic() < deadline:
        found = await look(settings, tenants)
        if all(found.places(m) for m in wanted):
            return time.monotonic() - since
        await asyncio.sleep(0.5)
    return None


async def committed_between(
    tenants: dict[str, str], slugs: set[str], start: float, end: float, load: Load
) -> tuple[int, int]:
    """Of the reports for `slugs` published between `start` and `end`, how many were, and how
    many were committed by `end` (read right after `end`)."""
    wanted = {m for m in load.published_between(start, end) if load.expected[m].tenant in slugs}
    got = 0
    for slug in slugs:
        conn = await asyncpg.connect(tenants[slug])
        try:
            rows = await conn.fetch(
                "select message_id from agent_messages where message_id = any($1::uuid[])",
                list(wanted),
            )
        finally:
            await conn.close()
        got += len(rows)
    return len(wanted), got


async def during(
    load: Load, seconds: float, action: Callable[[], Awaitable[None]] | None = None
) -> None:
    """Let the load run for `seconds` (after `action`, if given)."""
    if action is not None:
        await action()
    await asyncio.sleep(seconds)


def script(name: str, *args: str, env: dict[str, str] | None = None) -> str:
    """Run one of deploy/local's scripts (the cluster's or the database server's controls)."""
    import subprocess  # noqa: PLC0415

    path = Path(__file__).parents[2] / "deploy" / "local" / name
    result = subprocess.run(
        [str(path), *args],
        env={**os.environ, **(env or {})},
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert result.returncode == 0, f"{name} {' '.join(args)}: {result.stderr}"
    return result.stdout
