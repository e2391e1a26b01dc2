"""Ingest's decisions, with no I/O: where a registration's answer may go, and whose request it
is for the throttle (table-tested in tests/unit/test_ingest_handlers.py)."""

from __future__ import annotations

from services.core import wire

# `amq.rabbitmq.reply-to.<channel>.<key>`: what RabbitMQ puts in reply_to when a requester
# publishes with `reply_to=amq.rabbitmq.reply-to` from a channel that consumes that
# pseudo-queue. <channel> encodes the requester's channel process, <key> is random per consumer.
DIRECT_REPLY_PREFIX = wire.DIRECT_REPLY_TO + "."


def reply_source(reply_to: str | None) -> str | None:
    """The throttle's source of a request whose answer may be sent: the channel part of a direct
    reply-to address, which the broker assigns (a requester cannot pick one that reaches
    another's channel: the random key part is the channel's secret, and a made-up address
    delivers nowhere, so whoever forges one never reads an answer). None when `reply_to` is no
    direct reply-to address at all: a queue name, which ingest must never publish to (its broker
    user may write to the default exchange, which reaches every queue of the vhost)."""
    if reply_to is None or not reply_to.startswith(DIRECT_REPLY_PREFIX):
        return None
    channel, dot, key = reply_to[len(DIRECT_REPLY_PREFIX) :].partition(".")
    if not channel or not dot or not key:
        return None
    return channel
