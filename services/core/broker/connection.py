"""Connecting to RabbitMQ: a robust (self-reconnecting) connection as a role's broker user,
named for the management console, with a bounded handshake."""

from __future__ import annotations

from urllib.parse import urlsplit

import aio_pika
import aiormq

from services.core.broker.transport import CoalescingRobustConnection
from services.core.broker.users import BrokerRole, amqp_url, user_of
from services.core.diagnosis import explain
from services.core.errors import BrokerLoginRefused, BrokerUnavailable
from services.core.settings import Settings

# aio-pika waits 5 s between reconnection attempts by default; a restarted broker is usually
# back sooner than that.
RECONNECT_INTERVAL_S = 1.0


async def connect(
    settings: Settings, *, name: str, role: BrokerRole | None
) -> aio_pika.abc.AbstractRobustConnection:
    """A robust (self-reconnecting) connection as `role`'s broker user (`None`: the configured
    URL's, the broker administrator of bootstrap and teardown), named for the console."""
    url = amqp_url(settings, role)
    try:
        return await aio_pika.connect_robust(
            url,
            client_properties={"connection_name": f"siloflow {name}"},
            reconnect_interval=RECONNECT_INTERVAL_S,
            # A broker that accepts TCP but never starts the handshake must not hang us.
            timeout=settings.connect_timeout_s,
            connection_class=CoalescingRobustConnection,
        )
    except (
        aiormq.exceptions.ProbableAuthenticationError,
        aiormq.exceptions.ConnectionNotAllowed,
    ) as exc:
        raise BrokerLoginRefused(
            explain(exc, settings) or f"RabbitMQ refused {user_of(url)!r}: {exc}"
        ) from exc
    except (OSError, TimeoutError, aiormq.exceptions.AMQPError) as exc:
        parts = urlsplit(url)
        raise BrokerUnavailable(
            f"RabbitMQ at {parts.hostname}:{parts.port or 5672} (vhost {settings.vhost!r}, user "
            f"{user_of(url)!r}) is unreachable: {exc or type(exc).__name__}"
        ) from exc
