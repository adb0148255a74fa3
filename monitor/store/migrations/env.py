"""Alembic's environment: railguard lends its own connection (monitor.store.schema.migrate).

Each revision runs in a transaction of its own, so a failed one leaves the database at the
last complete revision. There is no engine of its own here and no ``--sql`` mode: upgrading
goes through railguard, which takes PostgreSQL's migration lock and adopts databases the
hand-written runner made.
"""

from __future__ import annotations

from alembic import context

config = context.config
connection = config.attributes.get("connection")
if connection is None:
    raise RuntimeError("the schema is upgraded by railguard itself, when it opens the store")
context.configure(
    connection=connection,
    transaction_per_migration=True,
    on_version_apply=config.attributes.get("on_version_apply", ()),
)
with context.begin_transaction():
    context.run_migrations()
