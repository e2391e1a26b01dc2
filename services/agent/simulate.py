"""A fleet simulator: hosts across tenants publishing a realistic mix of reports through the
reference client (90% heartbeats, 5% system info and hardware, 4% compliance, 1% package
snapshots of a real Debian 12 server), plus a few misbehaving publishers. For demos and load."""

from __future__ import annotations

import asyncio
import json
import random
import uuid
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from importlib import resources
from typing import Any, Protocol

import aio_pika
from rich.progress import Progress

from schemas.reports import ReportKind
from services.agent.client import AgentPublisher, Identity, build_report
from services.agent.enroll import register_hosts
from services.core.broker.users import agent_url
from services.core.hostkeys import Keyring, load_keyring, sign
from services.core.settings import Settings

# Host ids derive from the tenant and an index, so a second run reuses the same fleet.
_FLEET = uuid.UUID("5f1c0e4e-3f7b-4e0b-9c55-6a1d2b8f0c11")
# A fleet's mix of report kinds, by weight: about 90% heartbeats, 5% system_info and hardware, 4%
# compliance runs and 1% packages snapshots. The bench's workload draws from the same mix.
MIX = (
    (ReportKind.HEARTBEAT, 90),
    (ReportKind.SYSTEM_INFO, 3),
    (ReportKind.HARDWARE, 2),
    (ReportKind.COMPLIANCE, 4),
    (ReportKind.PACKAGES, 1),
)


@dataclass
class Outcome:
    """What a simulated fleet published: by kind, by tenant, and its misbehaving publishers."""

    published: Counter[str] = field(default_factory=Counter)
    per_tenant: Counter[str] = field(default_factory=Counter)
    misbehaving: list[str] = field(default_factory=list)


def host_id(slug: str, index: int) -> uuid.UUID:
    """A simulated host's id: stable for its tenant and index, so runs reuse the fleet."""
    return uuid.uuid5(_FLEET, f"{slug}/{index}")


def identity(keyring: Keyring, host: uuid.UUID) -> Identity:
    """A bound host's identity, as `siloflow host bind` hands it out."""
    return Identity(host, keyring.host_key(host), keyring.current)


def debian_packages() -> dict[str, Any]:
    """The real Debian 12 package snapshot shipped with the agent, as a packages report's data."""
    text = resources.files("services.agent").joinpath("data/debian12-packages-src.json").read_text()
    snapshot = json.loads(text)
    return {"manager": "dpkg", "packages": snapshot["packages"]}


def data_for(kind: str, rng: random.Random, index: int, packages: dict[str, Any]) -> dict[str, Any]:
    """Plausible data of each kind."""
    if kind == ReportKind.HEARTBEAT:
        load = round(rng.uniform(0, 4), 2)
        return {
            "status": rng.choices(["ok", "degraded", "critical"], [96, 3, 1])[0],
            "agent_version": "1.4.2",
            "uptime_s": rng.randint(60, 10_000_000),
            "load_1": load,
            "load_5": round(load * 0.9, 2),
            "load_15": round(load * 0.8, 2),
        }
    if kind == ReportKind.SYSTEM_INFO:
        name = f"host-{index:05d}"
        return {
            "hostname": name,
            "fqdn": f"{name}.fleet.example",
            "os_name": "Debian GNU/Linux",
            "os_version": "12 (bookworm)",
            "kernel": "6.1.0-18-amd64",
            "arch": "x86_64",
            "ipv4": [f"10.{index // 65536 % 256}.{index // 256 % 256}.{index % 256}"],
            "ipv6": [],
        }
    if kind == ReportKind.HARDWARE:
        return {
            "cpu": {
                "vendor": "GenuineIntel",
                "model": "Xeon E-2288G",
                "cores": 8,
                "threads": 16,
                "mhz": 3700.0,
            },
            "memory_mb": rng.choice([8192, 16384, 32768]),
            "disks": [{"device": "/dev/nvme0n1", "size_gb": 953.9, "mount": "/", "fs": "ext4"}],
            "nics": [{"name": "eth0", "mac": "52:54:00:12:34:56", "addresses": []}],
        }
    if kind == ReportKind.COMPLIANCE:
        return {
            "benchmark_id": "cis-debian12-l1",
            "results": [
                {
                    "rule_id": f"1.{i}.1",
                    "status": rng.choices(["pass", "fail"], [85, 15])[0],
                    "severity": rng.choice(["low", "medium", "high"]),
                }
                for i in range(40)
            ],
        }
    return packages


Fleet = list[tuple[str, Identity]]  # (tenant slug, a host's identity)


class Operator(Protocol):
    """What a simulated fleet needs done on the operator's side (the agent package holds no
    operator code: `services.ops.fleet.FleetOperator` is the real one)."""

    async def bind(self, host_id: uuid.UUID, tenant: str) -> None:
        """Bind a host to a tenant by hand (again: unchanged)."""
        ...

    async def issue(self, tenant: str, uses: int) -> str:
        """An enrollment token of the tenant for `uses` hosts."""
        ...


async def bind_fleet(
    settings: Settings, operator: Operator, tenants: list[str], hosts_per_tenant: int
) -> Fleet:
    """Bind the simulated hosts by hand (ids derived from tenant and index, so a second run
    reuses the same fleet) and derive their keys: for a simulator on the machine that holds the
    host key secrets."""
    keyring = load_keyring(settings)
    fleet: Fleet = []
    for slug in tenants:
        for index in range(hosts_per_tenant):
            await operator.bind(host_id(slug, index), slug)
            fleet.append((slug, identity(keyring, host_id(slug, index))))
    return fleet


async def enroll_fleet(
    settings: Settings,
    operator: Operator,
    tenants: list[str],
    hosts_per_tenant: int,
    *,
    on_registered: Callable[[], None] | None = None,
) -> Fleet:
    """Enroll the simulated hosts as real agents do: an operator issues each tenant a token for
    that many hosts, and each host registers with it (ingest must be running)."""
    issued = {slug: await operator.issue(slug, hosts_per_tenant) for slug in tenants}
    requests = [
        (issued[slug], f"{slug}-host-{i:04d}") for slug in tenants for i in range(hosts_per_tenant)
    ]
    identities = await register_hosts(settings, requests, on_registered=on_registered)
    slugs = [slug for slug in tenants for _ in range(hosts_per_tenant)]
    return list(zip(slugs, identities, strict=True))


async def simulate(
    settings: Settings,
    fleet: Fleet,
    *,
    reports: int,
    rate_per_s: float | None,
    misbehave: bool = True,
    seed: int = 7,
    progress: bool = True,
    on_published: Callable[[str, str], None] | None = None,
) -> Outcome:
    """Publish `reports` from the fleet (at `rate_per_s`, or as fast as confirmed), then, with
    `misbehave`, one report each from an unbound host, a forger, and a broken agent.
    `on_published(slug, kind)` is called after each confirmed report."""
    rng = random.Random(seed)
    keyring = load_keyring(settings)
    packages = debian_packages()
    kinds = [kind for kind, _ in MIX]
    weights = [weight for _, weight in MIX]
    outcome = Outcome()
    interval = 1 / rate_per_s if rate_per_s else 0.0
    async with AgentPublisher(agent_url(settings), settings.namespace) as agent:
        with Progress(disable=not progress, transient=True) as bar:
            task = bar.add_task("publishing", total=reports)
            loop = asyncio.get_running_loop()
            start = loop.time()
            for n in range(reports):
                slug, host = fleet[rng.randrange(len(fleet))]
                kind = rng.choices(kinds, weights)[0]
                data = data_for(kind, rng, n % 65536, packages)
                await agent.publish(build_report(kind, host.host_id, data, identity=host))
                outcome.published[kind] += 1
                outcome.per_tenant[slug] += 1
                if on_published is not None:
                    on_published(slug, kind)
                bar.advance(task)
                if interval:
                    delay = start + (n + 1) * interval - loop.time()
                    if delay > 0:
                        await asyncio.sleep(delay)
        if misbehave:
            await _misbehave(agent, keyring, fleet[0], rng, outcome)
    return outcome


async def _misbehave(
    agent: AgentPublisher,
    keyring: Keyring,
    victim: tuple[str, Identity],
    rng: random.Random,
    outcome: Outcome,
) -> None:
    """An unbound host, a forged signature, a malformed body, a report breaking the schema:
    each is dead-lettered with its reason, none reaches a silo."""
    stray_host = uuid.UUID(int=rng.getrandbits(128))
    stray = build_report(
        "heartbeat",
        stray_host,
        data_for("heartbeat", rng, 0, {}),
        identity=identity(keyring, stray_host),
    )
    await agent.publish(stray)
    outcome.misbehaving.append("an unbound host's heartbeat -> dlq.unrouted (no-tenant-binding)")
    # Someone who knows a real host's id but not its key.
    target = victim[1].host_id
    forger = Identity(target, rng.getrandbits(256).to_bytes(32, "big"), keyring.current)
    await agent.publish(
        build_report("heartbeat", target, data_for("heartbeat", rng, 0, {}), identity=forger)
    )
    outcome.misbehaving.append(
        f"a forged heartbeat for {victim[0]}'s host -> dlq.invalid (bad-signature)"
    )
    host = str(uuid.UUID(int=rng.getrandbits(128)))
    # Signed by its (unbound) host, so the only thing wrong with it is the body.
    broken, message_id = b'{"schema": "heartbeat/v1", oops', str(uuid.uuid4())
    signature = sign(keyring.host_key(uuid.UUID(host)), keyring.current, message_id, host, broken)
    await agent.publish_raw(
        "report.heartbeat",
        aio_pika.Message(
            broken,
            message_id=message_id,
            headers={"host_id": host, "signature": signature},
            content_type="application/json",
        ),
    )
    outcome.misbehaving.append("a body that is not JSON -> dlq.invalid (not-json)")
    wrong = build_report(
        "heartbeat",
        uuid.UUID(host),
        {"status": "fine"},
        identity=identity(keyring, uuid.UUID(host)),
    )
    await agent.publish(wrong)
    outcome.misbehaving.append("a heartbeat missing its fields -> dlq.invalid (schema-violation)")
