"""the leader lease, and the epoch intents and outbox claims were written under

The lease is for high availability on PostgreSQL (unused on SQLite). IF NOT EXISTS: the
lease's own code (monitor/store/lease_pg.py) may have made the table already.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision: str | None = "0004"
branch_labels: str | None = None
depends_on: str | None = None


def upgrade() -> None:
    op.create_table(
        "leases",
        # Nullable as released on SQLite (``TEXT PRIMARY KEY``); PostgreSQL's key forbids NULL.
        sa.Column("name", sa.Text, primary_key=True, nullable=True),
        sa.Column("holder", sa.Text),
        sa.Column("epoch", sa.BigInteger, nullable=False),
        sa.Column("expires_at", sa.DOUBLE_PRECISION, nullable=False),
        if_not_exists=True,
    )
    op.add_column("rollbacks", sa.Column("epoch", sa.BigInteger))
    op.add_column("outbox", sa.Column("claimed_epoch", sa.BigInteger))
    op.add_column("outbox", sa.Column("claimed_at", sa.DOUBLE_PRECISION))


def downgrade() -> None:
    raise NotImplementedError("the schema only moves forward: restore a backup to go back")
