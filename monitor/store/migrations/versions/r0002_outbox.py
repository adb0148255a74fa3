"""alert outbox and event cursors

Every notification for every channel is a row before anything is sent; ``(channel,
message_id)`` is unique, so routing an event twice (after a restart) queues it once.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision: str | None = "0001"
branch_labels: str | None = None
depends_on: str | None = None


def upgrade() -> None:
    time, text = sa.DOUBLE_PRECISION, sa.Text
    op.create_table(
        "outbox",
        # As 0001's ids: SQLite's rowid (no NOT NULL, as released), PostgreSQL's identity.
        sa.Column(
            "id",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            sa.Identity(always=True),
            primary_key=True,
            nullable=op.get_bind().dialect.name == "sqlite",
        ),
        sa.Column("channel", text, nullable=False),
        sa.Column("message_id", text, nullable=False),
        sa.Column("payload", text, nullable=False),
        sa.Column("state", text, nullable=False),
        sa.Column("attempts", sa.Integer, nullable=False),
        sa.Column("created_at", time, nullable=False),
        sa.Column("next_at", time, nullable=False),
        sa.Column("sent_at", time),
        sa.Column("last_error", text),
        sa.UniqueConstraint("channel", "message_id"),
    )
    op.create_index("outbox_queue", "outbox", ["channel", "state", "id"])

    op.create_table(
        "cursors",
        # Nullable as released on SQLite (``TEXT PRIMARY KEY``); PostgreSQL's key forbids NULL.
        sa.Column("name", text, primary_key=True, nullable=True),
        sa.Column("value", text, nullable=False),
    )


def downgrade() -> None:
    raise NotImplementedError("the schema only moves forward: restore a backup to go back")
