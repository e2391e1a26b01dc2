"""Files that hold secrets (the host key secrets, the broker users' passwords, an agent's host
key): written readable by their owner only, atomically, in a directory only the owner may enter."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path


def write_secret_file(path: Path, text: str) -> None:
    """Write `text` to a new file that is 0600 before its first byte (a fresh name, created
    exclusively: never a leftover temporary file whose mode or owner someone else chose, never
    one behind a link), then move it into place so a reader never sees half a file."""
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.fchmod(fd, 0o600)  # mkstemp's mode already; said here so no umask or platform differs
        with os.fdopen(fd, "w") as handle:
            handle.write(text)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
