"""History is append-only: the database refuses UPDATE and DELETE on registered models (a model id is
the hash of its bytes), the audit log and the tag history, whoever connects. Idempotent: a store that
already has the triggers (made between their introduction and this migration) keeps them.

Revision ID: 0002
Revises: 0001
"""
from __future__ import annotations

from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

TABLES = ("models", "audit", "tag_history")


def upgrade() -> None:
    dialect = op.get_bind().dialect.name
    for name in TABLES:
        if dialect == "sqlite":
            for action in ("UPDATE", "DELETE"):
                op.execute(f"CREATE TRIGGER IF NOT EXISTS {name}_no_{action.lower()} BEFORE {action} ON {name} "
                           f"BEGIN SELECT RAISE(ABORT, '{name} is append-only: {action} refused'); END")
        elif dialect == "postgresql":
            op.execute(f"CREATE OR REPLACE FUNCTION {name}_append_only() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN "
                       f"RAISE EXCEPTION '{name} is append-only: % refused', TG_OP; END $$")
            op.execute(f"DROP TRIGGER IF EXISTS {name}_append_only ON {name}")
            op.execute(f"CREATE TRIGGER {name}_append_only BEFORE UPDATE OR DELETE ON {name} "
                       f"FOR EACH ROW EXECUTE FUNCTION {name}_append_only()")
        else:
            raise NotImplementedError(f"Append-only triggers for {dialect} are not written yet; "
                                      "the state store supports SQLite and PostgreSQL.")


def downgrade() -> None:
    dialect = op.get_bind().dialect.name
    for name in TABLES:
        if dialect == "sqlite":
            for action in ("update", "delete"):
                op.execute(f"DROP TRIGGER {name}_no_{action}")
        elif dialect == "postgresql":
            op.execute(f"DROP TRIGGER {name}_append_only ON {name}")
            op.execute(f"DROP FUNCTION {name}_append_only()")
