"""Runs siloflow services as child processes (`run workers` shards, `run all`), restarting any
that dies, and passing SIGTERM on. In burst mode a child that exits cleanly is done."""

from __future__ import annotations

import asyncio
import ctypes
import os
import signal
import sys
from collections.abc import Callable
from dataclasses import dataclass, field

import structlog

log = structlog.get_logger(__name__)

RESTART_BACKOFF_MAX_S = 30.0
# A child's exit code for "a setting is wrong" (common.Misconfigured): never restarted.
MISCONFIGURED = 78
STOP_GRACE_S = 30.0


@dataclass
class Child:
    """A supervised child: its `siloflow` arguments, the process, what its environment adds."""

    name: str
    args: list[str]
    process: asyncio.subprocess.Process | None = None
    env: dict[str, str] = field(default_factory=dict)  # added to this process's environment
    restarts: int = 0
    done: bool = False
    exit_codes: list[int] = field(default_factory=list)


def command(args: list[str]) -> list[str]:
    """The `siloflow` command in this same Python environment."""
    return [sys.executable, "-m", "services.cli", *args]


PR_SET_PDEATHSIG = 1  # <linux/prctl.h>


def _die_with(parent: int) -> Callable[[], None] | None:
    """A pre-exec hook that has the kernel send the child SIGTERM when this process dies, even
    by SIGKILL: a supervisor that is killed and restarted must not leave its old children
    consuming beside the new ones. Linux only; elsewhere children outlive a killed supervisor."""
    if not sys.platform.startswith("linux"):
        return None
    libc = ctypes.CDLL(None, use_errno=True)

    def hook() -> None:
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
        if os.getppid() != parent:  # the supervisor died before the request took effect
            os._exit(1)

    return hook


async def _spawn(child: Child) -> None:
    child.process = await asyncio.create_subprocess_exec(
        *command(child.args),
        env={**os.environ, **child.env},
        preexec_fn=_die_with(os.getpid()),
    )
    log.info("supervisor.started", child=child.name, pid=child.process.pid)


async def supervise(children: list[Child], *, burst: bool, stop: asyncio.Event) -> int:
    """Run the children until `stop` (or, in burst mode, until all exited cleanly). Returns 0 if
    every child ended cleanly."""
    for child in children:
        await _spawn(child)
    backoff: dict[str, float] = {c.name: 1.0 for c in children}
    failed = misconfigured = False
    waiters = {asyncio.create_task(c.process.wait()): c for c in children if c.process}
    stopper = asyncio.create_task(stop.wait())
    while waiters:
        done, _ = await asyncio.wait({*waiters, stopper}, return_when=asyncio.FIRST_COMPLETED)
        if stopper in done:
            break
        for task in done:
            child = waiters.pop(task)
            code = task.result()
            child.exit_codes.append(code)
            if burst and code == 0:
                child.done = True
                log.info("supervisor.child_finished", child=child.name)
                continue
            if code == MISCONFIGURED:
                # The child said what is wrong (its one line on the shared stderr), and no
                # restart can mend a setting: stop everything and pass its code on.
                misconfigured = True
                break
            log.error(
                "supervisor.child_died",
                child=child.name,
                exit_code=code,
                restart_in_s=backoff[child.name],
            )
            if burst:
                failed = True
                continue
            try:
                await asyncio.wait_for(stop.wait(), timeout=backoff[child.name])
                break
            except TimeoutError:
                pass
            backoff[child.name] = min(backoff[child.name] * 2, RESTART_BACKOFF_MAX_S)
            child.restarts += 1
            await _spawn(child)
            assert child.process is not None
            waiters[asyncio.create_task(child.process.wait())] = child
        if misconfigured:
            break
    stopper.cancel()
    await _stop_all(children)
    for task in waiters:
        task.cancel()
    if misconfigured:
        return MISCONFIGURED
    return 1 if failed else 0


async def _stop_all(children: list[Child]) -> None:
    running = [c for c in children if c.process is not None and c.process.returncode is None]
    for child in running:
        assert child.process is not None
        child.process.send_signal(signal.SIGTERM)
    for child in running:
        assert child.process is not None
        try:
            await asyncio.wait_for(child.process.wait(), STOP_GRACE_S)
        except TimeoutError:
            log.error("supervisor.child_killed", child=child.name, pid=child.process.pid)
            child.process.kill()
            await child.process.wait()
