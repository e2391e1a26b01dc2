"""Realistic report data for tests: one builder per kind, and the real Debian 12 snapshot."""

from __future__ import annotations

import json
import uuid
from datetime import datetime
from pathlib import Path
from typing import Any

from services.agent.client import OutgoingReport, build_report

DEBIAN_PACKAGES = json.loads(
    (
        Path(__file__).parents[1] / "services" / "agent" / "data" / "debian12-packages-src.json"
    ).read_text()
)


def heartbeat(status: str = "ok", uptime_s: int = 3600) -> dict[str, Any]:
    return {
        "status": status,
        "agent_version": "1.4.2",
        "uptime_s": uptime_s,
        "load_1": 0.25,
        "load_5": 0.5,
        "load_15": 1,
    }


def system_info(hostname: str = "web-01") -> dict[str, Any]:
    return {
        "hostname": hostname,
        "fqdn": f"{hostname}.example.net",
        "os_name": "Debian GNU/Linux",
        "os_version": "12 (bookworm)",
        "kernel": "6.1.0-18-amd64",
        "arch": "x86_64",
        "ipv4": ["10.0.0.5", "192.0.2.7"],
        "ipv6": ["2001:db8::5"],
    }


def hardware(memory_mb: int = 16384) -> dict[str, Any]:
    return {
        "cpu": {
            "vendor": "GenuineIntel",
            "model": "Xeon E-2288G",
            "cores": 8,
            "threads": 16,
            "mhz": 3700.0,
        },
        "memory_mb": memory_mb,
        "disks": [{"device": "/dev/nvme0n1", "size_gb": 953.9, "mount": "/", "fs": "ext4"}],
        "nics": [{"name": "eth0", "mac": "52:54:00:12:34:56", "addresses": ["10.0.0.5"]}],
    }


def packages(count: int | None = None) -> dict[str, Any]:
    listed = DEBIAN_PACKAGES["packages"][:count]
    return {"manager": "dpkg", "packages": [dict(p) for p in listed]}


def compliance(
    benchmark: str = "cis-debian12-l1", fail: int = 2, total: int = 10
) -> dict[str, Any]:
    results = [
        {
            "rule_id": f"1.{i}.1",
            "status": "fail" if i < fail else "pass",
            "severity": "high" if i < fail else "medium",
        }
        for i in range(total)
    ]
    return {"benchmark_id": benchmark, "results": results}


BUILDERS = {
    "heartbeat": heartbeat,
    "system_info": system_info,
    "hardware": hardware,
    "packages": packages,
    "compliance": compliance,
}


def report(
    kind: str,
    host_id: uuid.UUID,
    data: dict[str, Any] | None = None,
    *,
    sent_at: datetime | None = None,
    message_id: uuid.UUID | None = None,
) -> OutgoingReport:
    return build_report(
        kind,
        host_id,
        data if data is not None else BUILDERS[kind](),
        sent_at=sent_at,
        message_id=message_id,
    )
