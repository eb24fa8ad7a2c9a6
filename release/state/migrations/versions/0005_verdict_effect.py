"""Verdicts carry the effect they judged as numbers, so a report can draw each one as an interval against
its allowed region: ``effect``, ``effect_lo`` and ``effect_hi`` (the interval that decided it),
``allowed_lo`` and ``allowed_hi`` (the region that passes; NULL is unbounded) and ``effect_unit``
(contracts.base.EFFECT_UNITS). Rows written before are NULL: their figures are in their sentences only.
Idempotent, like 0002 to 0004. The downgrade drops the columns, as 0003's does (code of 0004 would never
write them, so rows judged meanwhile would hold none); every sentence still prints its figures.

Revision ID: 0005
Revises: 0004
"""
from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None

COLUMNS = (("effect", sa.Float()), ("effect_lo", sa.Float()), ("effect_hi", sa.Float()), ("allowed_lo", sa.Float()),
           ("allowed_hi", sa.Float()), ("effect_unit", sa.String(12)))


def upgrade() -> None:
    have = {c["name"] for c in sa.inspect(op.get_bind()).get_columns("verdicts")}
    missing = [(n, t) for n, t in COLUMNS if n not in have]
    if missing:
        with op.batch_alter_table("verdicts") as batch:
            for n, t in missing:
                batch.add_column(sa.Column(n, t, nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("verdicts") as batch:
        for n, _ in reversed(COLUMNS):
            batch.drop_column(n)
