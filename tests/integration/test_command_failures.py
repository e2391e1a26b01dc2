"""Every command of `siloflow --help`, against each failure of what it needs, says one line that
names what failed and the setting that points at it, and exits non-zero: never a traceback,
never a library's own line first. The command tree is walked from the CLI itself, so a new
command fails here until it has a row in COMMANDS.

The failures: the registry database missing, PostgreSQL unreachable, RabbitMQ unreachable,
wrong broker credentials, the management API unreachable, and a namespace never bootstrapped.
Each is made by pointing one setting somewhere wrong (a closed port, a database or namespace
that does not exist, a wrong password); nothing real is broken. Services (`run ...`) say it
once and wait (they are stopped after saying it) or exit where waiting cannot help.

`siloflow -v` shows logs; without it a command prints its outcome only, so the line is all."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import click
import pytest

from services.bench.processes import free_port
from services.cli.main import cli
from services.core.broker.users import BrokerRole
from services.core.settings import Settings
from tests.integration.pipeline import Env, bound_host, deploy_env, identity_of
from tests.support import ADMIN_DSN, drop_namespace, env_for, new_namespace, pg_base, settings_for

SILOFLOW = Path(sys.executable).parent / "siloflow"
TIMEOUT_S = 60.0
FEED = Path(__file__).parents[2] / "services" / "catalog" / "data" / "debian12-security-fixes.json"


def closed_port() -> int:
    """A loopback port nobody listens on (free now; nothing takes it on this test's watch)."""
    return free_port()


@dataclass(frozen=True)
class Failure:
    """One way what a command needs can fail: the settings that make it, and the setting names
    a line about it may name."""

    name: str
    env: Callable[[Settings, int], dict[str, str]]  # the settings, a closed port
    names: tuple[str, ...]


def _url_with(url: str, *, port: int | None = None, password: str | None = None) -> str:
    parts = urlsplit(url)
    user = parts.username or "guest"
    netloc = f"{user}:{password if password is not None else parts.password or ''}@"
    netloc += f"{parts.hostname}:{port if port is not None else parts.port}"
    return urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment))


FAILURES = [
    Failure(
        "registry missing",
        lambda s, _: {"SILOFLOW_REGISTRY_DSN": f"{pg_base()}/{s.namespace}_gone_registry"},
        ("SILOFLOW_REGISTRY_DSN",),
    ),
    Failure(
        "PostgreSQL unreachable",
        lambda s, port: {"SILOFLOW_REGISTRY_DSN": _url_with(s.registry_url, port=port)},
        ("SILOFLOW_REGISTRY_DSN",),
    ),
    Failure(
        "RabbitMQ unreachable",
        lambda s, port: {"SILOFLOW_AMQP_URL": _url_with(s.amqp_url, port=port)},
        ("SILOFLOW_AMQP_URL",),
    ),
    Failure(
        "wrong broker credentials",
        lambda s, _: {
            "SILOFLOW_AMQP_URL": _url_with(s.amqp_url, password="wrong"),
            "SILOFLOW_MANAGEMENT_URL": _url_with(s.management_api, password="wrong"),
            "SILOFLOW_BROKER_PASSWORDS": ",".join(f"{r.value}:wrong" for r in BrokerRole),
        },
        ("SILOFLOW_AMQP_URL", "SILOFLOW_MANAGEMENT_URL", "SILOFLOW_BROKER_PASSWORDS"),
    ),
    Failure(
        "management API unreachable",
        lambda s, port: {"SILOFLOW_MANAGEMENT_URL": _url_with(s.management_api, port=port)},
        ("SILOFLOW_MANAGEMENT_URL",),
    ),
    Failure(
        "OpenBao unreachable",
        lambda _, port: {"SILOFLOW_OPENBAO_ADDR": f"http://127.0.0.1:{port}"},
        ("SILOFLOW_OPENBAO_ADDR",),
    ),
    Failure(
        "nothing bootstrapped",
        lambda s, _: {
            "SILOFLOW_NAMESPACE": f"{s.namespace}x",
            "SILOFLOW_REGISTRY_DSN": f"{pg_base()}/{s.namespace}x_registry",
        },
        ("bootstrap",),
    ),
]
BY_NAME = {f.name: f for f in FAILURES}
DB = ("registry missing", "PostgreSQL unreachable", "nothing bootstrapped")
AMQP = ("RabbitMQ unreachable", "wrong broker credentials")
HTTP = ("management API unreachable", "wrong broker credentials")


@dataclass(frozen=True)
class Command:
    """How the walker runs a command: its arguments, and the failures of what it needs (the
    others leave it alone, or it would change the deployment the walk runs against)."""

    args: tuple[str, ...]
    needs: tuple[str, ...]
    service: bool = False  # runs until stopped: says it once, then waits

    def __post_init__(self) -> None:
        object.__setattr__(self, "needs", tuple(dict.fromkeys(self.needs)))  # each failure once


HOST = str(uuid.UUID(int=7))
WALKERS = 3
COMMANDS: dict[str, Command] = {
    "agent register": Command(("--token", "sf_nope", "--state", "{tmp}/a.json"), AMQP),
    "agent report": Command(("heartbeat", "--data", "{{}}", "--state", "{identity}"), AMQP),
    # The bench starts its own PostgreSQL: only the broker's settings are the deployment's.
    "bench": Command(("--no-baseline", "--runs", "1", "--reports", "100"), HTTP),
    "bootstrap": Command(("--admin-dsn", "{admin_closed}"), ("PostgreSQL unreachable",)),
    "broker agent-url": Command((), ("nothing bootstrapped",)),
    # The catalog lives in the shared database, reached as the provisioner on the registry's
    # server: a registry database of another name does not stop it.
    # Reaches the shared database before it downloads anything.
    "catalog build": Command(
        ("--release", "bookworm", "--source", "tar", "--cache-dir", "{tmp}/cache"),
        ("PostgreSQL unreachable", "nothing bootstrapped"),
    ),
    "catalog import": Command(("{feed}",), ("PostgreSQL unreachable", "nothing bootstrapped")),
    "catalog status": Command((), ("PostgreSQL unreachable", "nothing bootstrapped")),
    "findings": Command(("--tenant", "acme"), DB),
    "audit": Command(("--tenant", "acme"), DB),
    "demo": Command(("--admin-dsn", "{admin_closed}"), ("PostgreSQL unreachable",)),
    "dlq list": Command((), (*DB, *AMQP)),
    "dlq purge": Command(("--yes",), (*DB, *AMQP)),
    "dlq replay": Command(("--yes",), (*DB, *AMQP)),
    "dlq show": Command((str(uuid.UUID(int=9)),), (*DB, *AMQP)),
    "host bind": Command((HOST, "--tenant", "acme"), DB),
    "host list": Command(("--tenant", "acme"), DB),
    "host revoke": Command((HOST,), DB),
    "host unbind": Command((HOST,), DB),
    "hostkeys rotate": Command((), ("nothing bootstrapped",)),
    "migrate": Command((), DB),
    "openbao setup": Command(("--token", "nope"), ("OpenBao unreachable",)),
    "operator add": Command(("walker",), DB),
    "operator disable": Command(("nobody",), DB),
    "operator grant": Command(("nobody", "--all", "--role", "viewer"), DB),
    "operator list": Command((), DB),
    "operator revoke-grant": Command(("nobody", "--all"), DB),
    "operator token issue": Command(("nobody",), DB),
    "operator token revoke": Command((str(uuid.UUID(int=12)),), DB),
    "placement add": Command(("spare", "--host", "127.0.0.1", "--port", "1"), DB),
    "placement drain": Command(("spare",), DB),
    "placement list": Command((), DB),
    "run all": Command((), (*DB, *AMQP), service=True),
    "run api": Command(("--port", "{free}"), DB, service=True),
    "run ingest": Command((), (*DB, *AMQP), service=True),
    "run router": Command((), (*DB, *AMQP), service=True),
    "run sweeper": Command((), DB, service=True),
    "run workers": Command(("--shard", "0/1"), (*DB, *AMQP), service=True),
    "simulate": Command(("--reports", "5", "--hosts", "1"), (*DB, *AMQP)),
    "status": Command((), (*DB, *HTTP)),
    "teardown": Command(("--admin-dsn", "{admin_closed}", "--yes"), ("PostgreSQL unreachable",)),
    "tenant create": Command(("acme",), DB),
    "tenant delete": Command(("nobody", "--yes"), DB),
    "tenant backup": Command(("acme", "--out", "{tmp}/walk.backup"), DB),
    "tenant list": Command((), DB),
    "tenant move": Command(("nobody", "--to", "default"), DB),
    "tenant restore": Command(("walked", "--from", "{backup}"), DB),
    "tenant resume": Command(("nobody",), DB),
    "tenant show": Command(("acme",), DB),
    "tenant suspend": Command(("nobody",), DB),
    "token issue": Command(("--tenant", "acme"), DB),
    "token list": Command((), DB),
    "token revoke": Command((str(uuid.UUID(int=11)),), DB),
    "topology apply": Command((), (*DB, *AMQP, *HTTP)),
    # Definitions from the settings alone: it needs no server, and works before bootstrap.
    "topology export": Command((), ()),
}


def leaves(command: click.Command, path: tuple[str, ...] = ()) -> list[str]:
    """Every runnable command under `command`, as `siloflow --help` lists them."""
    if isinstance(command, click.Group):
        return [
            leaf for name, sub in command.commands.items() for leaf in leaves(sub, (*path, name))
        ]
    return [" ".join(path)]


def test_every_command_has_a_row() -> None:
    assert sorted(leaves(cli)) == sorted(COMMANDS), "a command without a row in COMMANDS"
    for name, command in COMMANDS.items():
        assert set(command.needs) <= set(BY_NAME), name


@dataclass
class Said:
    """What a command said, and how it ended."""

    code: int | None  # None: a service still waiting, stopped by the walker
    out: str
    err: str


async def say(args: list[str], env: dict[str, str], service: bool) -> Said:
    """Run `siloflow ARGS` to its end; a service until it is seen waiting (below), then
    stopped."""
    if service:
        return await say_waiting(args, env)
    process = await asyncio.create_subprocess_exec(
        str(SILOFLOW),
        *args,
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(process.communicate(), TIMEOUT_S)
    return Said(process.returncode, out.decode(), err.decode())


def waiting(lines: list[str]) -> bool:
    """Whether a service's log shows it waiting an outage out: a warning, then at least two
    quiet retries of the same (debug lines, logged at SILOFLOW_LOG_LEVEL=debug)."""
    events = [json.loads(line) for line in lines if line.startswith("{")]
    warned = {e["event"] for e in events if e.get("level") == "warning"}
    retries = [e["event"] for e in events if e.get("level") == "debug" and e["event"] in warned]
    return any(retries.count(event) >= 2 for event in warned)


async def say_waiting(args: list[str], env: dict[str, str]) -> Said:
    """A service: it exits (with its line) or is seen waiting, and is then stopped. One that
    does neither is made to dump its threads' stacks (faulthandler, on SIGABRT) for the failure
    message: where it hangs is the finding."""
    process = await asyncio.create_subprocess_exec(
        str(SILOFLOW),
        *args,
        env={
            **env,
            "SILOFLOW_LOG_LEVEL": "debug",
            "SILOFLOW_RETRY_MAX_S": "0.5",
            "PYTHONFAULTHANDLER": "1",
        },
        stdin=subprocess.DEVNULL,
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.PIPE,
        start_new_session=True,  # `run all`'s children are stopped with it
    )
    assert process.stderr is not None
    lines: list[str] = []
    try:
        async with asyncio.timeout(TIMEOUT_S):
            while line := (await process.stderr.readline()).decode():
                lines.append(line.rstrip("\n"))
                if waiting(lines):
                    os.killpg(process.pid, signal.SIGTERM)
                    await process.wait()
                    return Said(None, "", "\n".join(lines))
    except TimeoutError:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGABRT)
        with contextlib.suppress(TimeoutError):
            rest = await asyncio.wait_for(process.stderr.read(), 10)
            lines += rest.decode(errors="replace").splitlines()
        tail = "\n".join(lines[-60:])
        raise AssertionError(f"{args}: neither exited nor seen waiting:\n{tail}") from None
    finally:
        if process.returncode is None:
            with contextlib.suppress(ProcessLookupError):  # exited, not yet reaped
                os.killpg(process.pid, signal.SIGKILL)
    await process.wait()
    return Said(process.returncode, "", "\n".join(lines))


def _backup_file(tmp: Path) -> Path:
    """A file `tenant restore` reads as a backup (its manifest; the dump is never reached)."""
    import io  # noqa: PLC0415
    import tarfile  # noqa: PLC0415

    from services.ops import backups  # noqa: PLC0415

    path = tmp / "restore.backup"
    manifest = json.dumps(
        {
            "format": backups.FORMAT,
            "tenant": "acme",
            "revision": None,
            "created_at": "2026-12-06T00:00:00+00:00",
            "dump_sha256": "0" * 64,
            "dump_bytes": 0,
            "rows": {},
            "ledger_ids": 0,
            "ledger_digest": "",
        }
    ).encode()
    with tarfile.open(path, "w") as tar:
        for name, body in ((backups.MANIFEST, manifest), (backups.DUMP, b"")):
            info = tarfile.TarInfo(name)
            info.size = len(body)
            tar.addfile(info, io.BytesIO(body))
    return path


@pytest.fixture(scope="module")
async def walked(
    tmp_path_factory: pytest.TempPathFactory,
) -> AsyncIterator[dict[tuple[str, str], Said]]:
    """Every (command, failure) a command needs, run once against a deployment of its own."""
    namespace = new_namespace()
    settings = settings_for(namespace)
    tmp = tmp_path_factory.mktemp("walk")
    try:
        env: Env = await deploy_env(settings)
        identity = await _identity(env, tmp)
        base = env_for(settings)
        fills = {
            "tmp": str(tmp),
            "identity": str(identity),
            "feed": str(FEED),
            "backup": str(_backup_file(tmp)),
            "free": str(free_port()),
        }
        results: dict[tuple[str, str], Said] = {}
        # A few at a time: each is a process that mostly waits on a refused connection, and
        # the walk is one of the suite's longest parts.
        turns = asyncio.Semaphore(WALKERS)

        async def walk(name: str, command: Command, failure: str) -> None:
            port = closed_port()  # the server the failure points at, --admin-dsn too
            broken = {**base, **BY_NAME[failure].env(settings, port)}
            if failure == "nothing bootstrapped":  # the keys bootstrap would have written
                broken.pop("SILOFLOW_HOST_KEY_SECRETS", None)
            filled = fills | {"admin_closed": _url_with(ADMIN_DSN, port=port)}
            args = [*name.split(), *(a.format(**filled) for a in command.args)]
            async with turns:
                results[(name, failure)] = await say(args, broken, command.service)

        await asyncio.gather(
            *(
                walk(name, command, failure)
                for name, command in sorted(COMMANDS.items())
                for failure in command.needs
            )
        )
        yield results
    finally:
        await drop_namespace(namespace)
        await drop_namespace(f"{namespace}x")


async def _identity(env: Env, tmp: Path) -> Path:
    """An enrolled host's state file, as `agent register` writes it."""
    host = await bound_host(env, env.a)
    path = tmp / "identity.json"
    identity_of(env.settings, host).save(path)
    return path


def _cases() -> list[tuple[str, str]]:
    return [(name, failure) for name, c in sorted(COMMANDS.items()) for failure in c.needs]


@pytest.mark.timeout(900)
@pytest.mark.parametrize(("command", "failure"), _cases())
def test_the_command_says_one_line_naming_the_setting(
    walked: dict[tuple[str, str], Said], command: str, failure: str
) -> None:
    said = walked[(command, failure)]
    lines = [line for line in said.err.splitlines() if line.strip()]
    assert "Traceback" not in said.err, said.err
    if said.code is None:
        # Waiting it out: each outage said once (a warning naming the setting), then quiet.
        events = [json.loads(line) for line in lines if line.startswith("{")]
        loud = [e for e in events if e.get("level") in ("warning", "error", "critical")]
        said_of = [(e["event"], e.get("listener"), e.get("service"), e.get("tenant")) for e in loud]
        assert len(said_of) == len(set(said_of)), f"said more than once: {said_of}"
        outages = [e for e in loud if "error" in e]
        assert outages, loud
        for event in outages:
            assert any(n in event["error"] for n in BY_NAME[failure].names), event
        line = outages[0]["error"]
    else:
        assert said.code not in (0, None), f"exit {said.code}: {said.out}{said.err}"
        if not COMMANDS[command].service:
            assert len(lines) == 1, said.err
        # A service's log (at debug level here) may come first; its last word is the one line.
        errors = [line for line in lines if not line.startswith("{")]
        assert errors == lines[-1:], said.err
        line = lines[-1]
        assert line.startswith("Error: "), line
    assert any(name in line for name in BY_NAME[failure].names), line
    print(f"{command} x {failure}: {line}")
