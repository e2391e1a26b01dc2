"""Short-lived tenant logins as PostgreSQL sees them, whoever issues them: their names and the
dropping of a tenant's logins (the built-in broker's expired ones, or all of a deleted tenant's,
with OpenBao's), their sessions ended first."""

from __future__ import annotations

import secrets

import structlog
from sqlalchemy.ext.asyncio import AsyncConnection

from services.core.names import Names
from services.core.pgadmin import end_login, member_logins

log = structlog.get_logger(__name__)

# Random part of a login's name: 16 characters of [a-z0-9] (about 82 bits).
_NAME_ALPHABET = "abcdefghijklmnopqrstuvwxyz0123456789"


def new_login_name(names: Names) -> str:
    """A new login's name: the deployment's prefix and 16 random characters."""
    return names.login_prefix + "".join(secrets.choice(_NAME_ALPHABET) for _ in range(16))


async def drop_logins(
    conn: AsyncConnection, names: Names, owner: str, *, expired_only: bool
) -> list[str]:
    """End and drop a tenant's logins (only the expired ones, or all). Another process may be
    dropping the same expired login: losing that race is fine."""
    dropped = []
    for login in await member_logins(conn, owner, names.login_prefix, expired_only=expired_only):
        try:
            await end_login(conn, login)
        except Exception as exc:  # already gone (a concurrent sweep), or not ours to end
            log.debug("credentials.drop_skipped", login=login, error=str(exc).splitlines()[0])
            continue
        dropped.append(login)
    return dropped
