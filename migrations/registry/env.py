"""Alembic environment of the `registry` chain."""

from migrations.env_common import run
from migrations.metadata import METADATA

run("registry", METADATA["registry"])
