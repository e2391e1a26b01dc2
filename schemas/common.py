"""Building blocks of every wire message: a strict, frozen base model and bounded text types
(PostgreSQL text cannot hold NUL, so a NUL is refused here rather than at commit)."""

from __future__ import annotations

from typing import Annotated

from pydantic import BaseModel, ConfigDict, StringConstraints

# Refused by the validator's own regex engine, not by a Python call per string: a packages
# snapshot carries thousands of strings (a Python validator per string doubled its cost).
NO_NUL = r"^[^\x00]*$"


class WireModel(BaseModel):
    """Strict (no type coercion), frozen, and unknown fields rejected."""

    model_config = ConfigDict(frozen=True, extra="forbid", strict=True, populate_by_name=True)


Name = Annotated[str, StringConstraints(min_length=1, max_length=255, pattern=NO_NUL)]
ShortText = Annotated[str, StringConstraints(min_length=1, max_length=64, pattern=NO_NUL)]
OptionalText = Annotated[str, StringConstraints(min_length=0, max_length=255, pattern=NO_NUL)]

# Entries of long lists (packages, rule results) are validated as typed dicts, not models: the
# same checks without building a Python object per entry (about twice as fast on a snapshot of
# 2,000 packages). Nothing downstream uses the parsed entries; ingest only judges them.
ENTRY_CONFIG = ConfigDict(extra="forbid", strict=True)
