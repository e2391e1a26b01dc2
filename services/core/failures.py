"""Sorting failures: which ones to wait out and which ones are the data's fault. Used wherever a
database write may fail (workers, the registrar)."""

from __future__ import annotations

import asyncpg
from sqlalchemy.exc import DBAPIError

from services.core.errors import ResolutionError, Transient
from services.core.notices import CONNECT_REFUSALS, CONNECTION_ERRORS


def root_cause(exc: BaseException) -> BaseException:
    """The driver's own error under SQLAlchemy's wrappers (or the error itself)."""
    if isinstance(exc, DBAPIError) and exc.orig is not None:
        return exc.orig.__cause__ or exc.orig
    return exc


def classify(exc: BaseException) -> str:
    """`transient` (wait and retry), `rejected` (this data can never commit) or `unknown`."""
    root = root_cause(exc)
    if isinstance(exc, Transient | ResolutionError) or isinstance(
        root, CONNECTION_ERRORS + CONNECT_REFUSALS
    ):
        return "transient"
    if isinstance(root, asyncpg.exceptions.SerializationError | asyncpg.DeadlockDetectedError):
        return "transient"
    if isinstance(root, asyncpg.DataError | asyncpg.IntegrityConstraintViolationError):
        return "rejected"
    if isinstance(root, KeyError | TypeError | ValueError):
        return "rejected"
    return "unknown"
