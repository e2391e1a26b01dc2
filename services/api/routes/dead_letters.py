"""Dead letters through the API: a tenant's (`/api/v1/tenants/{slug}/dead-letters`, the letters
that carry it: reports its workers could not commit; `operator` and above) and every letter
(`/api/v1/dead-letters`, reports no tenant could take included; `admin`). Listed without being
taken, shown with their body, replayed where they can succeed: what `siloflow dlq` does."""

from __future__ import annotations

from collections import Counter
from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Query
from pydantic import BaseModel, ConfigDict, Field, model_validator

from services.api.deps import Audit, Authenticated, Configured, permitted
from services.api.errors import ApiError, forbidden, not_found
from services.core import dead_letters as dlq
from services.core.access import Action, may
from services.core.names import DLQS
from services.core.registry.queries import TenantRecord
from services.core.settings import Settings

router = APIRouter(tags=["dead letters"])

MAY = permitted(Action.DEAD_LETTERS, "handle this tenant's dead letters")
Queue = Annotated[list[str] | None, Query(max_length=len(DLQS))]
Text = Annotated[str | None, Query(max_length=200)]
Limit = Annotated[int | None, Query(ge=1, le=10_000)]
LetterId = Annotated[str, Field(min_length=1, max_length=200)]


class Letter(BaseModel):
    """A dead letter: where it lies, what it is, why it died (and, shown alone, its body)."""

    queue: str
    message_id: str | None
    label: str  # how to name it: its message_id, or `sha256:<12 digits>`
    sha256: str
    host_id: str | None
    kind: str | None
    reason: str
    detail: str | None
    stage: str | None
    dead_at: datetime | None
    replays: int
    tenant: str | None
    copies: int
    undecodable: str | None
    size_bytes: int

    @classmethod
    def of(cls, letter: dlq.DeadLetter) -> Letter:
        """The view of a letter read from its queue."""
        return cls.model_validate(letter.as_json() | {"label": letter.label})


class ShownLetter(Letter):
    """A letter shown alone: with its headers and its body (as UTF-8, bad bytes replaced)."""

    headers: dict[str, Any]
    body: str

    @classmethod
    def of(cls, letter: dlq.DeadLetter) -> ShownLetter:
        """The view of a letter read from its queue, with its headers and body."""
        return cls.model_validate(letter.as_json(with_body=True) | {"label": letter.label})


class ReplayRequest(BaseModel):
    """Which letters to send back: named ones, or those matching a reason (and queues), or all
    of them, said explicitly (`"all": true`): an empty request replays nothing by accident."""

    model_config = ConfigDict(extra="forbid")

    letters: list[LetterId] | None = Field(None, min_length=1, max_length=10_000)
    reason: str | None = Field(None, max_length=200)
    queues: list[str] | None = Field(None, min_length=1, max_length=len(DLQS))
    all: bool = False
    limit: int | None = Field(None, ge=1, le=100_000)

    @model_validator(mode="after")
    def _says_which(self) -> ReplayRequest:
        if self.letters is None and self.reason is None and not self.all:
            raise ValueError('name the letters, a reason, or say "all": true')
        if self.queues and set(self.queues) - set(DLQS):
            raise ValueError(f"queues are among {', '.join(DLQS)}")
        return self


class Replayed(BaseModel):
    """What a replay did."""

    replayed: int
    failed: int
    copies_removed: int
    by_reason: dict[str, int]
    failures: list[str]


def _filters(
    queue: list[str] | None,
    reason: str | None,
    host: str | None,
    limit: int | None,
    *,
    tenant: str | None = None,
    within: frozenset[str] | None = None,
    letters: frozenset[str] | None = None,
) -> dlq.Filters:
    if queue and set(queue) - set(DLQS):
        raise ApiError(422, "invalid-request", f"queue is one of {', '.join(DLQS)}")
    return dlq.Filters(
        queues=tuple(queue) if queue else DLQS,
        reason=reason,
        host=host,
        tenant=tenant,
        limit=limit,
        within=within,
        letters=letters,
    )


async def _replay(settings: Settings, filters: dlq.Filters) -> Replayed:
    summary = await dlq.replay(settings, filters)
    return Replayed(
        replayed=summary.done,
        failed=summary.failed,
        copies_removed=summary.copies_removed,
        by_reason=dict(Counter(summary.by_reason)),
        failures=summary.failures,
    )


def _one(found: list[dlq.DeadLetter]) -> list[ShownLetter]:
    if not found:
        raise not_found("such dead letter")
    return [ShownLetter.of(x) for x in found]


# -- a tenant's letters (operator and above) ---------------------------------------------------


@router.get("/tenants/{slug}/dead-letters")
async def tenant_letters(
    settings: Configured,
    queue: Queue = None,
    reason: Text = None,
    host: Text = None,
    limit: Limit = None,
    tenant: TenantRecord = MAY,
) -> list[Letter]:
    """The letters carrying the tenant, oldest first (none is taken from its queue)."""
    filters = _filters(queue, reason, host, limit, within=frozenset({tenant.slug}))
    return [Letter.of(x) for x in await dlq.browse(settings, filters)]


@router.get("/tenants/{slug}/dead-letters/{letter}")
async def tenant_letter(
    letter: str, settings: Configured, tenant: TenantRecord = MAY
) -> list[ShownLetter]:
    """The letters of the tenant named so (one, or several that share a message_id), with
    their headers and body. A letter of another tenant is no letter here."""
    filters = _filters(
        None, None, None, None, within=frozenset({tenant.slug}), letters=frozenset({letter})
    )
    return _one(await dlq.browse(settings, filters))


@router.post("/tenants/{slug}/dead-letters/replay")
async def tenant_replay(
    request: ReplayRequest, settings: Configured, audit: Audit, tenant: TenantRecord = MAY
) -> Replayed:
    """Send the tenant's chosen letters back where they can succeed (the queue takes them back
    only once confirmed: a failed one stays, and is said)."""
    filters = _filters(
        request.queues,
        request.reason,
        None,
        request.limit,
        within=frozenset({tenant.slug}),
        letters=frozenset(request.letters) if request.letters else None,
    )
    async with audit.act("dlq.replay", tenant, **request.model_dump(exclude_none=True)) as detail:
        done = await _replay(settings, filters)
        detail.update(replayed=done.replayed, failed=done.failed)
    return done


# -- every letter (admin) ----------------------------------------------------------------------


def _admin(who: Any) -> None:
    if not may(who.grants, Action.SERVER):
        raise forbidden("handle every dead letter")


@router.get("/dead-letters")
async def letters(
    who: Authenticated,
    settings: Configured,
    queue: Queue = None,
    reason: Text = None,
    host: Text = None,
    tenant: Text = None,
    limit: Limit = None,
) -> list[Letter]:
    """Every letter, oldest first: reports no tenant could take included."""
    _admin(who)
    filters = _filters(queue, reason, host, limit, tenant=tenant)
    return [Letter.of(x) for x in await dlq.browse(settings, filters)]


@router.get("/dead-letters/{letter}")
async def letter_(letter: str, who: Authenticated, settings: Configured) -> list[ShownLetter]:
    """The letters named so, with their headers and body."""
    _admin(who)
    filters = _filters(None, None, None, None, letters=frozenset({letter}))
    return _one(await dlq.browse(settings, filters))


@router.post("/dead-letters/replay")
async def replay(
    request: ReplayRequest, who: Authenticated, settings: Configured, audit: Audit
) -> Replayed:
    """Send the chosen letters back where they can succeed."""
    _admin(who)
    filters = _filters(
        request.queues,
        request.reason,
        None,
        request.limit,
        letters=frozenset(request.letters) if request.letters else None,
    )
    async with audit.act("dlq.replay", None, **request.model_dump(exclude_none=True)) as detail:
        done = await _replay(settings, filters)
        detail.update(replayed=done.replayed, failed=done.failed)
    return done
