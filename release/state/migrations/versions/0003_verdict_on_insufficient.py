"""Verdicts record what an unjudged gate does (``on_insufficient``: stop | warn), so a stored
"insufficient data" verdict says whether it stopped the release. Rows written before are NULL, read as
"stop" (contracts.base.stops).

Revision ID: 0003
Revises: 0002
"""
from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    cols = {c["name"] for c in sa.inspect(op.get_bind()).get_columns("verdicts")}
    if "on_insufficient" not in cols:
        with op.batch_alter_table("verdicts") as batch:
            batch.add_column(sa.Column("on_insufficient", sa.String(10), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("verdicts") as batch:
        batch.drop_column("on_insufficient")
