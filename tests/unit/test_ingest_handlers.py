"""Where a registration's answer may go (only the requester's own direct reply-to address), and
the throttle's source of it."""

from __future__ import annotations

import pytest

from services.ingest.handlers import reply_source

REAL = "amq.rabbitmq.reply-to.g1h2AA1yZXBseUA5MjQ4ODg0AAAFnQAAAABrFNv2.HXLXDpRZDs1xjOCB/MANSg=="


@pytest.mark.parametrize(
    ("reply_to", "source"),
    [
        (REAL, "g1h2AA1yZXBseUA5MjQ4ODg0AAAFnQAAAABrFNv2"),
        # The same channel with another consumer key is the same source.
        (REAL.rsplit(".", 1)[0] + ".OTHERKEY==", "g1h2AA1yZXBseUA5MjQ4ODg0AAAFnQAAAABrFNv2"),
        (None, None),
        ("", None),
        ("sft.tenant.acme", None),  # a tenant queue
        ("sft.dlq.invalid", None),  # a dead-letter queue
        ("other.intake", None),  # another deployment's queue on the same vhost
        ("amq.rabbitmq.reply-to", None),  # the pseudo-queue itself: the broker rewrites it
        ("amq.rabbitmq.reply-to.", None),
        ("amq.rabbitmq.reply-to.nokey", None),
        ("amq.rabbitmq.reply-to..key", None),
        ("amq.rabbitmq.reply-tox.a.b", None),
    ],
)
def test_only_a_direct_reply_to_address_is_answered(
    reply_to: str | None, source: str | None
) -> None:
    assert reply_source(reply_to) == source
