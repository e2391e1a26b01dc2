"""Enrolling many hosts at once through the reference client: each (token, hostname) pair is
registered as an agent would register it, a bounded number at a time on one connection. Used by
the demo, the simulator and the benchmark."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Callable, Sequence

from schemas.register import RegisterAccepted
from services.agent.client import AgentPublisher, Identity
from services.core.broker.users import agent_url
from services.core.errors import EnrollmentRefused
from services.core.settings import Settings


async def register_hosts(
    settings: Settings,
    requests: Sequence[tuple[str, str]],
    *,
    concurrency: int = 32,
    on_registered: Callable[[], None] | None = None,
) -> list[Identity]:
    """Register each (enrollment token, hostname); the identities in the order asked."""
    limit = asyncio.Semaphore(concurrency)
    async with AgentPublisher(agent_url(settings), settings.namespace) as agent:

        async def one(token: str, hostname: str) -> Identity:
            async with limit:
                answer = await agent.register(
                    token,
                    hostname=hostname,
                    fqdn=f"{hostname}.fleet.example",
                    machine_id=uuid.uuid4().hex,
                )
            if not isinstance(answer, RegisterAccepted):
                raise EnrollmentRefused(f"{hostname}: registration rejected ({answer.reason})")
            if on_registered is not None:
                on_registered()
            return Identity.from_answer(answer)

        return list(await asyncio.gather(*(one(t, h) for t, h in requests)))
