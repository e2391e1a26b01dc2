"""One file out of a `.deb` (pure, on a file object): a binary package is an `ar` archive whose
`data.tar.*` member holds the installed tree; the changelog is read as a stream from there,
never unpacked to disk, and never more than `max_bytes` of it."""

from __future__ import annotations

import gzip
import posixpath
import tarfile
from dataclasses import dataclass
from typing import IO

from services.core.errors import ArchiveError

_AR_MAGIC = b"!<arch>\n"
_AR_HEADER_BYTES = 60
_DATA_MEMBERS = {
    b"data.tar.xz": "r|xz",
    b"data.tar.gz": "r|gz",
    b"data.tar.bz2": "r|bz2",
    b"data.tar": "r|",
}


class _Bounded:
    """A read-only window of `size` bytes onto a stream (one `ar` member)."""

    def __init__(self, stream: IO[bytes], size: int) -> None:
        self._stream, self._left = stream, size

    def read(self, n: int = -1) -> bytes:
        n = self._left if n < 0 else min(n, self._left)
        data = self._stream.read(n)
        self._left -= len(data)
        return data


@dataclass(frozen=True)
class Link:
    """The package's documentation is another binary's (`usr/share/doc/<package>` links there)."""

    package: str


def changelog(
    deb: IO[bytes], package: str, *, native: bool, max_bytes: int, where: str
) -> str | Link | None:
    """The text of the upload's changelog in a `.deb`: `usr/share/doc/<package>/changelog.Debian.gz`
    (`changelog.gz` for a native package); a `Link` when its documentation directory is another
    binary's; None when it has none. `ArchiveError` when the file is no `.deb`, its data is
    compressed in a way this cannot read, or the changelog is over `max_bytes` decompressed."""
    if deb.read(len(_AR_MAGIC)) != _AR_MAGIC:
        raise ArchiveError(f"{where}: not a Debian package (no ar header)")
    doc = f"usr/share/doc/{package}"
    wanted = f"{doc}/changelog.gz" if native else f"{doc}/changelog.Debian.gz"
    while header := deb.read(_AR_HEADER_BYTES):
        if len(header) < _AR_HEADER_BYTES:
            break
        name = header[:16].rstrip().rstrip(b"/")
        try:
            size = int(header[48:58])
        except ValueError:
            raise ArchiveError(f"{where}: a damaged ar member header") from None
        mode = _DATA_MEMBERS.get(name)
        if name.startswith(b"data.tar") and mode is None:
            raise ArchiveError(
                f"{where}: {name.decode(errors='replace')} is compressed in a way this reader "
                "does not know (xz, gz, bz2 or none)"
            )
        if mode is None:
            deb.read(size + (size & 1))
            continue
        # mode is one of the stream modes above (typeshed wants a literal).
        with tarfile.open(fileobj=_Bounded(deb, size), mode=mode) as data:  # type: ignore[call-overload]
            for member in data:
                path = member.name.removeprefix("./")
                if path == doc and member.issym():
                    return Link(posixpath.basename(member.linkname.rstrip("/")))
                if path != wanted:
                    continue
                if member.issym():
                    return Link(posixpath.basename(posixpath.dirname(member.linkname)))
                handle = data.extractfile(member)
                if handle is None:
                    return None
                with gzip.GzipFile(fileobj=handle) as unzipped:
                    text = unzipped.read(max_bytes + 1)
                if len(text) > max_bytes:
                    raise ArchiveError(f"{where}: the changelog is over {max_bytes:,} bytes")
                return text.decode("utf-8", errors="replace")
        return None
    raise ArchiveError(f"{where}: no data.tar member")
