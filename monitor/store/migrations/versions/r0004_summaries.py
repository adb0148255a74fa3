"""release summaries (the baselines later releases are judged against)

One row per (service, release, signal): a ``monitor.baseline.Summary`` as JSON.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision: str | None = "0003"
branch_labels: str | None = None
depends_on: str | None = None


def upgrade() -> None:
    op.create_table(
        "release_summaries",
        sa.Column("service", sa.Text, nullable=False),
        sa.Column("release", sa.Text, nullable=False),
        sa.Column("signal", sa.Text, nullable=False),
        sa.Column("data", sa.Text, nullable=False),
        sa.Column("updated_at", sa.DOUBLE_PRECISION, nullable=False),
        sa.PrimaryKeyConstraint("service", "release", "signal"),
    )


def downgrade() -> None:
    raise NotImplementedError("the schema only moves forward: restore a backup to go back")
