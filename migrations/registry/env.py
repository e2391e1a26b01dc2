"""Alembic environment of the `registry` chain."""

from migrations.env_common import run
from services.core.models import METADATA

run("registry", METADATA["registry"])
