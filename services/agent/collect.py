"""What the reference agent reads of its own host: the installed packages, from dpkg, with the
source package each was built from (advisories are keyed by source and source version)."""

from __future__ import annotations

import shutil
import subprocess
from typing import Any

# One line per installed binary: name, version, architecture, source name, source version.
# dpkg fills ${source:Package} and ${source:Version} in with the binary's own when they are the
# same; `db:Status-Abbrev` keeps only what is installed ("ii"), not what was removed and left
# its configuration behind ("rc").
DPKG_FORMAT = (
    "${db:Status-Abbrev}\\t${Package}\\t${Version}\\t${Architecture}\\t"
    "${source:Package}\\t${source:Version}\\n"
)
INSTALLED = "ii"


def parse_dpkg(output: str) -> list[dict[str, str]]:
    """The packages of `dpkg-query -W -f DPKG_FORMAT`'s output (pure). The source fields are
    left out where they are the binary's own (the protocol's default)."""
    packages = []
    for line in output.splitlines():
        fields = line.split("\t")
        if len(fields) != 6 or fields[0].strip() != INSTALLED:
            continue
        _, name, version, arch, source, source_version = fields
        entry = {"name": name, "version": version, "arch": arch}
        if source and source != name:
            entry["source"] = source
        if source_version and source_version != version:
            entry["source_version"] = source_version
        packages.append(entry)
    return packages


def dpkg_packages() -> dict[str, Any]:
    """This host's packages report data, read from dpkg; RuntimeError where there is no dpkg."""
    query = shutil.which("dpkg-query")
    if query is None:
        raise RuntimeError("no dpkg-query here: --collect reads a Debian host's packages")
    output = subprocess.run(
        [query, "-W", "-f", DPKG_FORMAT], check=True, capture_output=True, text=True
    ).stdout
    return {"manager": "dpkg", "packages": parse_dpkg(output)}
