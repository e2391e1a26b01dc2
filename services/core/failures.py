"""Sorting failures: which ones to wait out and which ones are the data's fault. Used wherever a
database write may fail (workers, the registrar)."""

from __future__ import annotations

import asyncpg
from sqlalchemy.exc import DBAPIError, EmulatedDBAPIException

from services.core.errors import ResolutionError, Transient
from services.core.outcomes import Failure

# Errors that mean "the database is not reachable right now", as asyncpg raises them.
CONNECTION_ERRORS: tuple[type[BaseException], ...] = (
    OSError,
    TimeoutError,
    asyncpg.PostgresConnectionError,
    asyncpg.InterfaceError,
    asyncpg.CannotConnectNowError,
    asyncpg.TooManyConnectionsError,
    asyncpg.exceptions.OperatorInterventionError,
)
# What PostgreSQL answers a new connection while it cannot take one: the database is closed to
# connections or being shut down, the login was refused. An outage, for whoever is waiting.
CONNECT_REFUSALS: tuple[type[BaseException], ...] = (
    asyncpg.ObjectNotInPrerequisiteStateError,
    asyncpg.InvalidCatalogNameError,
    asyncpg.InvalidAuthorizationSpecificationError,
    asyncpg.InvalidPasswordError,
)


def root_cause(exc: BaseException) -> BaseException:
    """The driver's own error under SQLAlchemy's wrappers (or the error itself): a statement's
    (`DBAPIError`) or a pool's (the dialect's emulated DBAPI error, raised when a pooled
    connection cannot be opened)."""
    if isinstance(exc, DBAPIError) and exc.orig is not None:
        return exc.orig.__cause__ or exc.orig
    if isinstance(exc, EmulatedDBAPIException) and exc.__cause__ is not None:
        return exc.__cause__
    return exc


def classify(exc: BaseException) -> Failure:
    """What a failure means: wait and retry, the data's fault, or not known. A `ResolutionError`
    is transient here though permanent as a question: see its docstring."""
    root = root_cause(exc)
    if isinstance(exc, Transient | ResolutionError) or isinstance(
        root, CONNECTION_ERRORS + CONNECT_REFUSALS
    ):
        return Failure.TRANSIENT
    if isinstance(root, asyncpg.exceptions.SerializationError | asyncpg.DeadlockDetectedError):
        return Failure.TRANSIENT
    if isinstance(root, asyncpg.DataError | asyncpg.IntegrityConstraintViolationError):
        return Failure.REJECTED
    if isinstance(root, KeyError | TypeError | ValueError):
        return Failure.REJECTED
    return Failure.UNKNOWN
