"""End-to-end tests run the installed `siloflow` command as a user would, in a namespace of
their own that is removed afterwards."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from services.core.settings import Settings
from tests.support import drop_namespace_sync, env_for, new_namespace, settings_for

SILOFLOW = Path(sys.executable).parent / "siloflow"


@pytest.fixture
def e2e_settings() -> Iterator[Settings]:
    namespace = new_namespace()
    try:
        yield settings_for(namespace)
    finally:
        drop_namespace_sync(namespace)


@pytest.fixture
def siloflow(e2e_settings: Settings) -> Callable[..., subprocess.CompletedProcess[str]]:
    """Run `siloflow ARGS...` in a subprocess against the test's deployment."""
    assert SILOFLOW.exists(), f"the console script is not installed at {SILOFLOW}"
    env = env_for(e2e_settings)
    # Only the namespace and the registry's server: the rest is the user's default.
    env.pop("SILOFLOW_MULTITENANT", None)

    def run(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        result = subprocess.run(
            [str(SILOFLOW), *args],
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
            cwd=os.getcwd(),
        )
        if check and result.returncode != 0:
            raise AssertionError(
                f"siloflow {' '.join(args)} failed:\n{result.stdout}\n{result.stderr}"
            )
        return result

    return run
