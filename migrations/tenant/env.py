"""Alembic environment of the `tenant` chain."""

from migrations.env_common import run
from services.core.models import METADATA

run("tenant", METADATA["tenant"])
