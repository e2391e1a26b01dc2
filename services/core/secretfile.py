"""Files that hold secrets (the host key secrets, the broker users' passwords): written readable
by their owner only, atomically, in a directory only the owner may enter."""

from __future__ import annotations

import os
from pathlib import Path


def write_secret_file(path: Path, text: str) -> None:
    """Write `text` to `path` created 0600 (never world-readable, not even for a moment), then
    move it into place so a reader never sees half a file."""
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    tmp = path.with_suffix(path.suffix + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(text)
    os.replace(tmp, path)
