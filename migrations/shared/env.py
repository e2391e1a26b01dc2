"""Alembic environment of the `shared` chain."""

from migrations.env_common import run
from services.core.models import METADATA

run("shared", METADATA["shared"])
