"""deployments, rollbacks, rule state, freezes, events

Times are DOUBLE PRECISION (PostgreSQL's REAL is 4 bytes: Unix seconds would round to
minutes); JSON is TEXT. No foreign keys to deployments: a manual rollback may name a release
railguard has not recorded yet, and losing its audit entry to a constraint would be worse than
the dangling id.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision: str | None = None
branch_labels: str | None = None
depends_on: str | None = None


def identity() -> sa.Column[int]:
    """SQLite: ``id INTEGER PRIMARY KEY``, the rowid (NOT NULL left out, as 0001 was released
    there); PostgreSQL: BIGINT GENERATED ALWAYS AS IDENTITY."""
    return sa.Column(
        "id",
        sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
        sa.Identity(always=True),
        primary_key=True,
        nullable=op.get_bind().dialect.name == "sqlite",
    )


def upgrade() -> None:
    time, text = sa.DOUBLE_PRECISION, sa.Text
    op.create_table(
        "deployments",
        sa.Column("service", text, nullable=False),
        sa.Column("id", text, nullable=False),
        sa.Column("status", text, nullable=False),
        sa.Column("created_at", time, nullable=False),
        sa.Column("first_seen", time, nullable=False),
        sa.Column("live_at", time),
        sa.Column("ended_at", time),
        sa.Column("can_rollback", sa.Boolean, nullable=False),
        sa.Column("meta", text, nullable=False),
        sa.Column("verdict", text, nullable=False, server_default="unverified"),
        sa.Column("verdict_at", time),
        sa.Column("verdict_reason", text, nullable=False, server_default=""),
        sa.Column("evidence", text, nullable=False, server_default="{}"),
        sa.PrimaryKeyConstraint("service", "id"),
        sa.CheckConstraint("verdict IN ('unverified', 'good', 'bad')"),
    )
    op.create_index("deployments_newest", "deployments", ["service", "created_at"])

    op.create_table(
        "rollbacks",
        identity(),
        sa.Column("service", text, nullable=False),
        sa.Column("from_deployment", text, nullable=False),
        sa.Column("to_deployment", text, nullable=False),
        sa.Column("trigger", text, nullable=False),
        sa.Column("actor", text, nullable=False),
        sa.Column("rule", text),
        sa.Column("reason", text, nullable=False),
        sa.Column("evidence", text, nullable=False),
        sa.Column("dry_run", sa.Boolean, nullable=False),
        sa.Column("state", text, nullable=False),
        sa.Column("new_deployment", text),
        sa.Column("decided_at", time, nullable=False),
        sa.Column("sent_at", time),
        sa.Column("deploying_at", time),
        sa.Column("live_at", time),
        sa.Column("recovered_at", time),
        sa.Column("finished_at", time),
        sa.Column("error", text),
        sa.CheckConstraint("trigger IN ('auto', 'manual')"),
        sa.CheckConstraint(
            "state IN ('intent', 'sent', 'deploying', 'succeeded', 'failed', 'abandoned', "
            "'dry_run')"
        ),
    )
    # At most one unfinished rollback per service, whichever task or replica begins it.
    unfinished = sa.text("state IN ('intent', 'sent', 'deploying')")
    op.create_index(
        "rollbacks_one_unfinished",
        "rollbacks",
        ["service"],
        unique=True,
        sqlite_where=unfinished,
        postgresql_where=unfinished,
    )
    op.create_index("rollbacks_by_service", "rollbacks", ["service", "decided_at"])

    op.create_table(
        "rule_states",
        sa.Column("service", text, nullable=False),
        sa.Column("rule", text, nullable=False),
        sa.Column("state", text, nullable=False),
        sa.Column("updated_at", time, nullable=False),
        sa.PrimaryKeyConstraint("service", "rule"),
    )

    op.create_table(
        "freezes",
        # Nullable as released on SQLite (``TEXT PRIMARY KEY``); PostgreSQL's key forbids NULL.
        sa.Column("service", text, primary_key=True, nullable=True),
        sa.Column("reason", text, nullable=False),
        sa.Column("actor", text, nullable=False),
        sa.Column("at", time, nullable=False),
        sa.Column("until", time),
    )

    op.create_table(
        "events",
        identity(),
        sa.Column("service", text),
        sa.Column("kind", text, nullable=False),
        sa.Column("at", time, nullable=False),
        sa.Column("data", text, nullable=False),
    )
    op.create_index("events_by_time", "events", ["at"])
    op.create_index("events_by_service", "events", ["service", "at"])


def downgrade() -> None:
    raise NotImplementedError("the schema only moves forward: restore a backup to go back")
