"""The API's memory of callers and tenants: kept only while notices are heard, forgotten on a
notice, and never kept when a notice came while it was being looked up."""

from __future__ import annotations

import asyncio

from services.api.known import Remembered


async def test_kept_while_listening_and_forgotten_on_a_notice() -> None:
    lookups: list[str] = []

    async def look_up() -> str:
        lookups.append("x")
        return "alice"

    listening = True
    kept: Remembered[str, str] = Remembered(lambda: listening)
    assert await kept.get("t", look_up) == "alice"
    assert await kept.get("t", look_up) == "alice"
    assert len(lookups) == 1  # remembered
    kept.forget("notice")
    assert await kept.get("t", look_up) == "alice"
    assert len(lookups) == 2
    listening = False  # the channel lost: every call looks up, nothing is kept
    await kept.get("t", look_up)
    await kept.get("t", look_up)
    assert len(lookups) == 4


async def test_an_answer_that_raced_with_a_notice_is_not_kept() -> None:
    kept: Remembered[str, str] = Remembered(lambda: True)
    started, release = asyncio.Event(), asyncio.Event()
    calls = 0

    async def slow() -> str:
        nonlocal calls
        calls += 1
        started.set()
        await release.wait()
        return "before the revoke"

    pending = asyncio.create_task(kept.get("t", slow))
    await started.wait()
    kept.forget("a token revoked while it was being looked up")
    release.set()
    assert await pending == "before the revoke"  # answered, but not remembered
    await kept.get("t", slow)
    assert calls == 2


async def test_nothing_is_kept_for_an_unknown_token() -> None:
    kept: Remembered[str, str] = Remembered(lambda: True)
    calls = 0

    async def nobody() -> None:
        nonlocal calls
        calls += 1

    assert await kept.get("guess", nobody) is None
    assert await kept.get("guess", nobody) is None
    assert calls == 2
