"""Registration, protocol v1: an agent trades an enrollment token for a host id and a host key
(request and reply over RabbitMQ's direct reply-to)."""

from __future__ import annotations

import uuid
from typing import Annotated, Literal, get_args

from pydantic import Field, StringConstraints

from schemas.common import Name, ShortText, WireModel

# Codes a rejected registration carries.
RejectionReason = Literal[
    "token-unknown",
    "token-expired",
    "token-exhausted",
    "token-revoked",
    "tenant-suspended",
    "invalid",
    "rate-limited",  # too many bad tokens from this source (or from everyone): retry later
]
REJECTION_REASONS: tuple[str, ...] = get_args(RejectionReason)


class RegisterRequest(WireModel):
    """A registration request: an enrollment token and what the host says of itself."""

    schema_: Literal["register/v1"] = Field(alias="schema")
    enrollment_token: Annotated[str, StringConstraints(min_length=1, max_length=200)]
    hostname: Name
    fqdn: Name
    machine_id: Annotated[str, StringConstraints(min_length=1, max_length=128)]
    platform: Name
    agent_version: ShortText


class RegisterAccepted(WireModel):
    """The host's id and its key (keep the key secret: it signs every report)."""

    status: Literal["accepted"] = "accepted"
    host_id: uuid.UUID
    host_key: str  # base64 of the host's 32-byte key: keep it secret, it signs every report
    key_version: int


class RegisterRejected(WireModel):
    """Why the registration was refused (and, when rate-limited, how long to wait)."""

    status: Literal["rejected"] = "rejected"
    reason: RejectionReason
    # With `rate-limited`: seconds to wait before asking again (the token was not checked).
    retry_after_s: Annotated[float, Field(ge=0)] | None = None
