"""CPU time and peak memory of process groups, read from /proc (Linux): a group is a set of root
processes with all their descendants. CPU of descendants that already exited is counted through
their parent's `cutime`/`cstime` (PostgreSQL backends come and go; the postmaster reaps them)."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
PROC = Path("/proc")


@dataclass(frozen=True)
class Stat:
    """One process's line of /proc/<pid>/stat, the parts the bench reads."""

    pid: int
    ppid: int
    comm: str
    cpu_s: float  # own user + system time
    children_cpu_s: float  # waited-for children's


def parse_stat(text: str) -> Stat:
    """One `/proc/<pid>/stat` line (the command may contain spaces and parentheses)."""
    head, _, rest = text.rpartition(")")
    pid_text, _, comm = head.partition(" (")
    fields = rest.split()
    # fields[0] is field 3 (state): utime is field 14, stime 15, cutime 16, cstime 17.
    utime, stime, cutime, cstime = (int(f) for f in fields[11:15])
    return Stat(
        pid=int(pid_text),
        ppid=int(fields[1]),
        comm=comm,
        cpu_s=(utime + stime) / CLOCK_TICKS,
        children_cpu_s=(cutime + cstime) / CLOCK_TICKS,
    )


def snapshot() -> dict[int, Stat]:
    """Every process's stat, now."""
    stats: dict[int, Stat] = {}
    for entry in PROC.iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stats[int(entry.name)] = parse_stat((entry / "stat").read_text())
        except (OSError, ValueError, IndexError):
            continue  # it exited meanwhile
    return stats


def descendants(stats: dict[int, Stat], roots: set[int]) -> set[int]:
    """The roots and every process below them."""
    members = {pid for pid in roots if pid in stats}
    changed = True
    while changed:
        changed = False
        for stat in stats.values():
            if stat.ppid in members and stat.pid not in members:
                members.add(stat.pid)
                changed = True
    return members


def group_cpu_s(stats: dict[int, Stat], roots: set[int]) -> float:
    """CPU seconds of a group: its live members' own time, plus what the roots' exited children
    used. (A live member's exited children are counted by it, too.)"""
    return sum(stats[pid].cpu_s + stats[pid].children_cpu_s for pid in descendants(stats, roots))


def peak_rss_mb(pid: int) -> float | None:
    """The process's peak resident set (VmHWM), in MiB; None once it exited."""
    try:
        for line in (PROC / str(pid) / "status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        return None
    return None


def pss_mib(pid: int) -> float:
    """The process's proportional set size (its private memory plus its share of what it shares,
    so a server's processes add up to the server), in MiB; 0 once it exited."""
    try:
        for line in (PROC / str(pid) / "smaps_rollup").read_text().splitlines():
            if line.startswith("Pss:"):
                return int(line.split()[1]) / 1024
    except OSError:
        return 0.0
    return 0.0


def find(stats: dict[int, Stat], comm: str, *, top_level: bool = True) -> set[int]:
    """Processes named `comm` (only those whose parent is not also one, when `top_level`)."""
    named = {pid for pid, s in stats.items() if s.comm == comm}
    if not top_level:
        return named
    return {pid for pid in named if stats[pid].ppid not in named}


def rabbitmq_roots(stats: dict[int, Stat], amqp_port: int) -> set[int]:
    """The RabbitMQ node serving `amqp_port`: the Erlang VM (`beam.smp`) holding its listening
    socket. Every node's VM when that cannot be told (another user's process, no /proc/net)."""
    beams = find(stats, "beam.smp")
    inodes = listening_inodes(amqp_port)
    serving = {pid for pid in beams if inodes & socket_inodes(pid)}
    return serving or beams


def listening_inodes(port: int) -> set[str]:
    """Socket inodes listening on TCP `port` (IPv4 or IPv6)."""
    inodes: set[str] = set()
    for table in ("tcp", "tcp6"):
        try:
            lines = (PROC / "net" / table).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            fields = line.split()
            local, state, inode = fields[1], fields[3], fields[9]
            if state == "0A" and int(local.rsplit(":", 1)[1], 16) == port:  # 0A: LISTEN
                inodes.add(inode)
    return inodes


def socket_inodes(pid: int) -> set[str]:
    """Inodes of the sockets process `pid` holds open (empty when it cannot be read)."""
    found: set[str] = set()
    try:
        for fd in (PROC / str(pid) / "fd").iterdir():
            try:
                target = os.readlink(fd)
            except OSError:
                continue
            if target.startswith("socket:["):
                found.add(target[8:-1])
    except OSError:
        pass
    return found


def postgres_roots(stats: dict[int, Stat], port: int | None = None) -> set[int]:
    """The PostgreSQL postmaster listening on `port` (its backends are its children); every
    postmaster when no port is given or it cannot be told."""
    postmasters = find(stats, "postgres")
    if port is None:
        return postmasters
    inodes = listening_inodes(port)
    serving = {pid for pid in postmasters if inodes & socket_inodes(pid)}
    return serving or postmasters


def own_cpu_s(stats: dict[int, Stat], pids: set[int]) -> float:
    """CPU seconds of these processes themselves (those still alive), children not included."""
    return sum(stats[pid].cpu_s for pid in pids if pid in stats)
