"""Durations as operators type them: `90s`, `30m`, `24h`, `7d`, `2w` (or a bare number of
seconds)."""

from __future__ import annotations

import re
from datetime import timedelta

from services.core.errors import InvalidArgument

_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86_400, "w": 604_800}
_DURATION_RE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhdw]?)\s*$")


def parse_duration(text: str) -> timedelta:
    """`"24h"` -> 24 hours; `InvalidArgument` for anything else (including zero)."""
    match = _DURATION_RE.match(text.lower())
    if not match:
        raise InvalidArgument(
            f"invalid duration {text!r}: use a number with s, m, h, d or w (e.g. 30m, 24h, 7d)"
        )
    seconds = float(match.group(1)) * _UNITS[match.group(2) or "s"]
    if seconds <= 0:
        raise InvalidArgument(f"invalid duration {text!r}: must be more than zero")
    return timedelta(seconds=seconds)
