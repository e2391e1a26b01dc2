"""Alembic environment of the `shared` chain."""

from migrations.env_common import run
from migrations.metadata import METADATA

run("shared", METADATA["shared"])
