"""structlog, configured once per process: JSON lines when stderr is not a terminal, readable
console output when it is. Per-message context (message_id, host_id, stage) is bound with a
context variable so every line of one message's story carries it."""

from __future__ import annotations

import logging
import sys
from collections.abc import MutableMapping
from contextvars import ContextVar
from typing import Any

import structlog

from services.core.settings import Settings

_LEVELS = {
    "debug": logging.DEBUG,
    "info": logging.INFO,
    "warning": logging.WARNING,
    "error": logging.ERROR,
}


# The message being handled in this task: (message_id, host_id, stage). One context variable set
# per delivery, read only when a line is logged: structlog's bound_contextvars costs a context
# variable per key, set and reset on every message (2% of the router's CPU, measured), for
# lines that are rarely written.
MESSAGE: ContextVar[tuple[str | None, str | None, str] | None] = ContextVar(
    "siloflow_message", default=None
)


def add_message(
    _logger: Any, _method: str, event: MutableMapping[str, Any]
) -> MutableMapping[str, Any]:
    """structlog processor: name the message this task is handling, unless the line does."""
    current = MESSAGE.get()
    if current is not None:
        message_id, host_id, stage = current
        if message_id is not None:
            event.setdefault("message_id", message_id)
        if host_id is not None:
            event.setdefault("host_id", host_id)
        event.setdefault("stage", stage)
    return event


# A logged value longer than this is cut (ids and header values come from whoever published the
# message: a 100 KB host_id must not become a 100 KB log line). Tracebacks are kept whole.
MAX_LOGGED_CHARS = 512
_WHOLE = frozenset({"exception", "stack"})


def bounded(value: object, limit: int = MAX_LOGGED_CHARS) -> object:
    """A value as it may be logged: text (or bytes, shown as text) cut to `limit` characters,
    saying how many more there were; anything else as it is."""
    if isinstance(value, bytes | bytearray):
        value = bytes(value).decode("utf-8", "replace")
    if isinstance(value, str) and len(value) > limit:
        return f"{value[:limit]}...(+{len(value) - limit} chars)"
    return value


def bound_values(
    _logger: Any, _method: str, event: MutableMapping[str, Any]
) -> MutableMapping[str, Any]:
    """structlog processor: every value of a line `bounded`, tracebacks apart."""
    for key, value in event.items():
        if key not in _WHOLE and isinstance(value, str | bytes | bytearray):
            event[key] = bounded(value)
    return event


# Libraries that log through the standard library (aiormq's "error when creating transport").
LIBRARY_LOGGERS = ("aiormq", "aio_pika", "asyncio", "hvac", "httpx", "alembic")


def configure_logging(settings: Settings, *, quiet_libraries: bool = False) -> None:
    """Configure structlog for this process, once. `quiet_libraries`: a command, which says
    what failed in its own line, keeps the libraries' lines for -v."""
    json_output = settings.log_format == "json" or (
        settings.log_format == "auto" and not sys.stderr.isatty()
    )
    renderer: structlog.typing.Processor = (
        structlog.processors.JSONRenderer() if json_output else structlog.dev.ConsoleRenderer()
    )
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            add_message,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.StackInfoRenderer(),
            structlog.processors.format_exc_info,
            bound_values,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(_LEVELS[settings.log_level]),
        # One write per line (PrintLogger's print() writes the newline apart): `run all`'s
        # children share one stderr, and their JSON lines must not interleave mid-line.
        logger_factory=structlog.WriteLoggerFactory(file=sys.stderr),
        cache_logger_on_first_use=False,
    )
    _route_libraries(renderer)
    if quiet_libraries:
        for name in LIBRARY_LOGGERS:
            logging.getLogger(name).setLevel(logging.CRITICAL)


def _route_libraries(renderer: structlog.typing.Processor) -> None:
    """The libraries' own (stdlib) log lines, in the same format as ours: a JSON log stays JSON
    lines."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(
            foreign_pre_chain=[
                structlog.stdlib.add_log_level,
                structlog.stdlib.add_logger_name,
                structlog.processors.TimeStamper(fmt="iso", utc=True),
            ],
            processors=[structlog.stdlib.ProcessorFormatter.remove_processors_meta, renderer],
        )
    )
    root = logging.getLogger()
    root.handlers[:] = [handler]
    # Their info and debug lines narrate every channel and frame: warnings up only, even at
    # SILOFLOW_LOG_LEVEL=debug, or a debug log is the libraries' and not ours.
    root.setLevel(logging.WARNING)
    # aiormq logs every failed connect at error level; the service's own outage line says it
    # once, naming the setting, and the retries quietly (services.core.diagnosis.Outage).
    logging.getLogger("aiormq.connection").setLevel(logging.CRITICAL)
