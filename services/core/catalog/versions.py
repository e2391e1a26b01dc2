"""Debian version order, as dpkg has it (Debian Policy 5.6.12; dpkg's `verrevcmp`).

univers (Apache-2.0, nexB's AboutCode) parses and validates a version: what dpkg would refuse is
refused here. Comparing two of its `Version`s costs about 18 us in Python, and matching a host's
snapshot takes thousands of comparisons (a kernel has thousands of advisories), so each version
is turned once into a sort key whose tuples Python compares natively: `key(a) < key(b)` exactly
when dpkg says `a lt b`. tests/unit/test_versions.py proves it against `dpkg --compare-versions`
itself, on the real snapshot's versions and on generated ones."""

from __future__ import annotations

import functools
import re

from univers.debian import Version

# One step of a version string: a run of non-digits, then a run of digits (either may be empty).
_STEP = re.compile(r"([^0-9]*)([0-9]*)")

Token = tuple[int, ...]
Key = tuple[int, tuple[Token, ...], tuple[Token, ...]]


def _weight(char: str) -> int:
    """dpkg's `order()`: `~` before the end of a part, the end before letters, letters before
    everything else."""
    if char == "~":
        return -1
    if char.isalpha():
        return ord(char)
    return ord(char) + 256


def _part_key(text: str) -> tuple[Token, ...]:
    """An upstream version or a revision as comparable tokens.

    dpkg walks both strings a step at a time (non-digits by weight, each run ended by weight 0;
    then the run of digits as a number), a string that has ended counting as zeros. Flattened,
    that is a sequence of integers where the shorter is padded with zeros, so what decides is
    the first place they differ. Each non-zero element becomes a token with the zeros before it:
    (1, -zeros, value) when positive, (-1, zeros, value) when negative, and (0,) ends the
    sequence. Tuples of tokens then compare as dpkg compares the strings (the proof is in the
    tests: against dpkg itself)."""
    flat: list[int] = []
    position = 0
    while position < len(text):
        match = _STEP.match(text, position)
        assert match is not None and match.end() > position  # every position starts a step
        letters, digits = match.groups()
        flat.extend(_weight(c) for c in letters)
        flat.append(0)
        flat.append(int(digits) if digits else 0)
        position = match.end()
    tokens: list[Token] = []
    zeros = 0
    for value in flat:
        if value == 0:
            zeros += 1
        else:
            tokens.append((1, -zeros, value) if value > 0 else (-1, zeros, value))
            zeros = 0
    tokens.append((0,))
    return tuple(tokens)


@functools.lru_cache(maxsize=65_536)
def key(version: str) -> Key:
    """The sort key of a Debian version; ValueError if dpkg would refuse it. Cached: a fleet
    shares most versions."""
    if version != version.strip() or version.endswith("-"):
        # univers strips white space and takes an empty revision; dpkg refuses both.
        raise ValueError(f"invalid Debian version {version!r}")
    parsed = Version.from_string(version)  # type: ignore[no-untyped-call]  # univers: no hints
    if parsed.upstream == "" or not parsed.upstream[0].isdigit():
        raise ValueError(f"invalid Debian version {version!r}: upstream must start with a digit")
    return (int(parsed.epoch), _part_key(parsed.upstream), _part_key(parsed.revision))


def valid(version: str) -> bool:
    """Whether dpkg would take this version."""
    try:
        key(version)
    except ValueError:
        return False
    return True


def compare(a: str, b: str) -> int:
    """-1, 0 or 1 as dpkg orders `a` and `b`."""
    ka, kb = key(a), key(b)
    return (ka > kb) - (ka < kb)
