"""Answers built straight from rows: serialized once, by orjson, for the large
lists (a page of hosts, a host's ~2,000 packages), where building a model per row and FastAPI
validating it again cost more than the query. The route's `response_model` still documents the
shape, and the API tests read it."""

from __future__ import annotations

import orjson
from fastapi import Response


def as_json(document: object) -> Response:
    """A 200 answer of `document` (dicts, lists, UUIDs, datetimes) as JSON."""
    # asyncpg hands UUIDs of its own type (not uuid.UUID): written as their text, by `str`.
    return Response(orjson.dumps(document, default=str), media_type="application/json")
