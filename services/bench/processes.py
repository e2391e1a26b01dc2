"""The benchmark's service processes: starting them as a deployment would, stopping them, and
grouping them (with the RabbitMQ node and the PostgreSQL server) for CPU and memory figures."""

from __future__ import annotations

import signal
import socket
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from services.bench import procstat


@dataclass
class Running:
    """The service processes of one system, by name."""

    processes: dict[str, subprocess.Popen[bytes]]

    def pids(self) -> dict[str, int]:
        """Each process's pid, by name."""
        return {name: p.pid for name, p in self.processes.items()}

    def check(self) -> None:
        """Fail if a process of the system exited while the bench runs it."""
        for name, process in self.processes.items():
            if process.poll() is not None:
                raise RuntimeError(f"{name} exited with {process.returncode} during the bench")

    def stop(self) -> None:
        """SIGTERM every process, then wait for it (killed after a minute)."""
        for process in self.processes.values():
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
        for process in self.processes.values():
            try:
                process.wait(60)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(10)


def start(
    commands: dict[str, list[str]],
    *,
    module: str,
    env_for: Callable[[str], dict[str, str]],
    workdir: Path,
) -> Running:
    """`python -m <module> <args>` per name, each logging to `<workdir>/<name>.log`."""
    processes = {}
    for name, args in commands.items():
        with (workdir / f"{name}.log").open("ab") as log_file:  # the child keeps its own
            processes[name] = subprocess.Popen(
                [sys.executable, "-m", module, *args],
                env=env_for(name),
                stdout=log_file,
                stderr=subprocess.STDOUT,
            )
    return Running(processes)


def cpu_groups(
    stats: dict[int, procstat.Stat], running: Running, amqp_port: int, pg_port: int
) -> dict[str, set[int]]:
    """Each service's process tree, the RabbitMQ node serving `amqp_port` and the PostgreSQL
    server listening on `pg_port`."""
    groups = {name: {pid} for name, pid in running.pids().items()}
    groups["rabbitmq"] = procstat.rabbitmq_roots(stats, amqp_port)
    groups["postgresql"] = procstat.postgres_roots(stats, pg_port)
    return groups


def peak_rss(running: Running) -> dict[str, float]:
    """Peak RSS of each service: the largest of its process tree's members."""
    stats = procstat.snapshot()
    peaks: dict[str, float] = {}
    for name, pid in running.pids().items():
        members = procstat.descendants(stats, {pid})
        values = [procstat.peak_rss_mb(p) or 0.0 for p in members]
        peaks[name] = max(values, default=0.0)
        if len(members) > 1:  # the worker supervisor's children, each one
            peaks[f"{name} (sum of {len(members)} processes)"] = sum(values)
    return peaks


def free_port() -> int:
    """A TCP port free on loopback now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])
