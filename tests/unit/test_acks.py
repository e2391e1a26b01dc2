"""The ack ledger: a multiple ack only ever covers finished deliveries, nothing finished waits
behind a gap, and every finished delivery is acked exactly once."""

from __future__ import annotations

import asyncio

import pytest
from hypothesis import given
from hypothesis import strategies as st

from services.core.broker import acks
from services.core.broker.acks import Ack, AckLedger


@pytest.mark.parametrize(
    ("finished", "rejected", "expected", "through"),
    [
        ([1], [], [Ack(1, multiple=False)], 1),
        ([1, 2, 3], [], [Ack(3, multiple=True)], 3),
        ([3, 1, 2], [], [Ack(3, multiple=True)], 3),
        # 2 still in hand: 1 alone, 3 and 4 alone (never held back behind 2)
        (
            [1, 3, 4],
            [],
            [Ack(1, multiple=False), Ack(3, multiple=False), Ack(4, multiple=False)],
            1,
        ),
        # a nacked delivery is passed over, never acked
        ([1, 3], [2], [Ack(3, multiple=True)], 3),
        ([2, 3], [1], [Ack(3, multiple=True)], 3),
        ([], [1, 2], [], 2),
    ],
)
def test_acks_for_a_turn(
    finished: list[int], rejected: list[int], expected: list[Ack], through: int
) -> None:
    ledger = AckLedger()
    for tag in rejected:
        ledger.rejected(tag)
    for tag in finished:
        ledger.finish(tag)
    assert ledger.acks() == expected
    assert ledger.settled_through == through


def test_a_gap_filled_later_lets_the_next_run_pass_over_what_was_acked_alone() -> None:
    ledger = AckLedger()
    for tag in (1, 3, 4):
        ledger.finish(tag)
    assert ledger.acks() == [Ack(1, False), Ack(3, False), Ack(4, False)]
    ledger.finish(2)
    ledger.finish(5)
    # 2 and 5 in one frame: 5 covers 2 (3 and 4 are settled already, so not acked twice)
    assert ledger.acks() == [Ack(5, multiple=True)]
    assert ledger.settled_through == 5
    assert ledger.acks() == []


@given(st.permutations(list(range(1, 41))), st.sets(st.integers(1, 40)), st.data())
def test_every_delivery_is_settled_once_and_no_ack_covers_one_in_hand(
    order: list[int], nacked: set[int], data: st.DataObject
) -> None:
    """Random completion orders, nacks and turn boundaries, against a model of the broker."""
    ledger = AckLedger()
    unsettled = set(range(1, 41))
    acked: list[int] = []
    in_hand = set(range(1, 41))
    for tag in order:
        in_hand.discard(tag)
        if tag in nacked:
            unsettled.discard(tag)  # the caller's nack frame
            ledger.rejected(tag)
        else:
            ledger.finish(tag)
        if data.draw(st.booleans(), label="turn ends"):
            for ack in ledger.acks():
                covered = {t for t in unsettled if t <= ack.tag} if ack.multiple else {ack.tag}
                assert ack.tag in unsettled, "acked twice or never delivered"
                assert not covered & in_hand, "acked a delivery still in hand"
                unsettled -= covered
                acked.extend(covered)
    for ack in ledger.acks():
        covered = {t for t in unsettled if t <= ack.tag} if ack.multiple else {ack.tag}
        assert ack.tag in unsettled
        unsettled -= covered
        acked.extend(covered)
    assert unsettled == set()
    assert sorted(acked) == sorted(set(range(1, 41)) - nacked)


def test_each_event_loop_has_one_acker_of_its_own() -> None:
    async def which() -> acks.Acker:
        return acks.acker()

    first, second = asyncio.new_event_loop(), asyncio.new_event_loop()
    try:
        a = first.run_until_complete(which())
        b = second.run_until_complete(which())
        assert a is not b
        # asked again, alternately: the last-asked shortcut never hands one loop another's
        assert first.run_until_complete(which()) is a
        assert second.run_until_complete(which()) is b
        assert second.run_until_complete(which()) is b
        assert first.run_until_complete(which()) is a
    finally:
        first.close()
        second.close()
