"""Debian binary packages built for tests, laid out as dpkg-deb does: an `ar` archive of
`debian-binary`, `control.tar.xz` and `data.tar.xz` (or another data member, to refuse)."""

from __future__ import annotations

import gzip
import io
import tarfile


def _tar_xz(members: list[tarfile.TarInfo], data: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:xz") as tar:
        for member in members:
            body = data.get(member.name)
            if body is not None:
                member.size = len(body)
            tar.addfile(member, io.BytesIO(body) if body is not None else None)
    return buffer.getvalue()


def _ar(members: list[tuple[bytes, bytes]]) -> bytes:
    out = bytearray(b"!<arch>\n")
    for name, body in members:
        header = name.ljust(16) + b"0".ljust(12) + b"0".ljust(6) * 2 + b"100644".ljust(8)
        out += header + str(len(body)).encode().ljust(10) + b"`\n" + body
        if len(body) % 2:
            out += b"\n"
    return bytes(out)


def deb(
    package: str,
    *,
    changelog: bytes | None,
    link: str | None = None,
    name: str = "changelog.Debian.gz",
    data_member: bytes = b"data.tar.xz",
) -> io.BytesIO:
    """A `.deb` of `package` holding `changelog` (gzipped, as `usr/share/doc/<package>/<name>`),
    or whose documentation directory links to `link`."""
    members = [tarfile.TarInfo("./usr/share/doc/")]
    members[0].type = tarfile.DIRTYPE
    data: dict[str, bytes] = {}
    if link is not None:
        symlink = tarfile.TarInfo(f"./usr/share/doc/{package}")
        symlink.type, symlink.linkname = tarfile.SYMTYPE, link
        members.append(symlink)
    if changelog is not None:
        path = f"./usr/share/doc/{package}/{name}"
        members.append(tarfile.TarInfo(path))
        data[path] = gzip.compress(changelog)
    control = _tar_xz([], {})
    return io.BytesIO(
        _ar(
            [
                (b"debian-binary", b"2.0\n"),
                (b"control.tar.xz", control),
                (data_member, _tar_xz(members, data)),
            ]
        )
    )
