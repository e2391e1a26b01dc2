"""registrations remember the hash of the enrollment token they spent, so a retried request (same
message_id) is answered only when it presents the same token: a message_id alone must never
return a host key

Revision ID: r0004
Revises: r0003
Create Date: 2026-12-01
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "r0004"
down_revision: str | None = "r0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column("registry_registrations", sa.Column("token_hash", sa.LargeBinary, nullable=True))
    # Registrations made before this revision: their token's hash, while the token row exists.
    # One whose token is gone keeps null, and a retry of it is refused (it registered long ago).
    op.execute(
        """
        update registry_registrations r set token_hash = t.token_hash
        from registry_enrollment_tokens t where t.id = r.token_id
        """
    )


def downgrade() -> None:
    op.drop_column("registry_registrations", "token_hash")
