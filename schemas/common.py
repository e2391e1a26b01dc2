"""Building blocks of every wire message: a strict, frozen base model and bounded text types
(PostgreSQL text cannot hold NUL, so a NUL is refused here rather than at commit)."""

from __future__ import annotations

from typing import Annotated

from pydantic import AfterValidator, BaseModel, ConfigDict, StringConstraints


def _no_nul(value: str) -> str:
    if "\x00" in value:
        raise ValueError("must not contain NUL characters")
    return value


class WireModel(BaseModel):
    """Strict (no type coercion), frozen, and unknown fields rejected."""

    model_config = ConfigDict(frozen=True, extra="forbid", strict=True, populate_by_name=True)


Name = Annotated[str, StringConstraints(min_length=1, max_length=255), AfterValidator(_no_nul)]
ShortText = Annotated[str, StringConstraints(min_length=1, max_length=64), AfterValidator(_no_nul)]
OptionalText = Annotated[
    str, StringConstraints(min_length=0, max_length=255), AfterValidator(_no_nul)
]
