"""rollback attempts (a mutation resent only when Railway provably did not apply it)"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision: str | None = "0002"
branch_labels: str | None = None
depends_on: str | None = None


def upgrade() -> None:
    op.add_column(
        "rollbacks", sa.Column("attempts", sa.Integer, nullable=False, server_default=sa.text("0"))
    )
    op.add_column("rollbacks", sa.Column("attempted_at", sa.DOUBLE_PRECISION))


def downgrade() -> None:
    raise NotImplementedError("the schema only moves forward: restore a backup to go back")
