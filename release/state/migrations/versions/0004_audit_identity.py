"""Who, from the environment, and when, by the clock: audit rows gain ``os_user``, ``via`` and
``context_json`` (the login, the channel - cli, airflow, service - and its context: host, Airflow task
and run, token subject) beside the stated name, and ``logical_date`` (a pipeline run's data date; ``at``
is the wall clock). On SQLite, ``audit`` and ``tag_history`` are rebuilt with AUTOINCREMENT so an id is
never reused: a deleted last row leaves a gap. Their append-only triggers are made again after the
rebuild. Idempotent, like 0002 and 0003.

The downgrade keeps all of it: dropping recorded identity would rewrite history, and code of 0003
ignores the extra nullable columns.

Revision ID: 0004
Revises: 0003
"""
from __future__ import annotations

import importlib

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None

COLUMNS = (("os_user", sa.String(200)), ("via", sa.String(40)), ("context_json", sa.Text()),
           ("logical_date", sa.String(40)))
REBUILT = ("audit", "tag_history")


def _autoincrement(conn, table: str) -> bool:
    sql = conn.execute(sa.text("SELECT sql FROM sqlite_master WHERE type = 'table' AND name = :t"), {"t": table}).scalar()
    return "AUTOINCREMENT" in (sql or "").upper()


def upgrade() -> None:
    conn = op.get_bind()
    have = {c["name"] for c in sa.inspect(conn).get_columns("audit")}
    missing = [(n, t) for n, t in COLUMNS if n not in have]
    if conn.dialect.name != "sqlite":  # PostgreSQL: ids come from sequences, never reused
        for name, type_ in missing:
            op.add_column("audit", sa.Column(name, type_, nullable=True))
        return
    rebuilt = False
    for table in REBUILT:
        if _autoincrement(conn, table) and not (table == "audit" and missing):
            continue
        with op.batch_alter_table(table, recreate="always", table_kwargs={"sqlite_autoincrement": True}) as batch:
            for name, type_ in missing if table == "audit" else ():
                batch.add_column(sa.Column(name, type_, nullable=True))
        rebuilt = True
    if rebuilt:  # the rebuild dropped the old tables and their triggers: the same triggers again
        importlib.import_module("release.state.migrations.versions.0002_append_only").upgrade()


def downgrade() -> None:
    """Nothing is dropped: identity already recorded stays, and so do never-reused ids (see above)."""
