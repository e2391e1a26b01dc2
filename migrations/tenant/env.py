"""Alembic environment of the `tenant` chain."""

from migrations.env_common import run
from migrations.metadata import METADATA

run("tenant", METADATA["tenant"])
