"""Baseline: the state store's tables as the first releases created them (before migrations existed).

Revision ID: 0001
Revises:
"""
from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('audit',
    sa.Column('id', sa.Integer(), autoincrement=True, nullable=False),
    sa.Column('at', sa.String(length=40), nullable=False),
    sa.Column('actor', sa.String(length=200), nullable=False),
    sa.Column('action', sa.String(length=60), nullable=False),
    sa.Column('entity', sa.String(length=200), nullable=False),
    sa.Column('before_json', sa.Text(), nullable=True),
    sa.Column('after_json', sa.Text(), nullable=True),
    sa.Column('reason', sa.Text(), nullable=False),
    sa.PrimaryKeyConstraint('id')
    )
    op.create_table('evaluation_summary',
    sa.Column('release_id', sa.String(length=40), nullable=False),
    sa.Column('metric', sa.String(length=40), nullable=False),
    sa.Column('estimator', sa.String(length=10), nullable=False),
    sa.Column('model', sa.String(length=60), nullable=False),
    sa.Column('estimate', sa.Float(), nullable=True),
    sa.Column('lo', sa.Float(), nullable=True),
    sa.Column('hi', sa.Float(), nullable=True),
    sa.Column('transactions', sa.Integer(), nullable=False),
    sa.Column('frauds', sa.Integer(), nullable=False),
    sa.PrimaryKeyConstraint('release_id', 'metric', 'estimator', 'model')
    )
    op.create_table('models',
    sa.Column('id', sa.String(length=64), nullable=False),
    sa.Column('sha256', sa.String(length=64), nullable=False),
    sa.Column('path', sa.Text(), nullable=False),
    sa.Column('workflow', sa.String(length=200), nullable=False),
    sa.Column('workflow_json', sa.Text(), nullable=False),
    sa.Column('snapshot_hash', sa.String(length=64), nullable=False),
    sa.Column('code_version', sa.String(length=100), nullable=False),
    sa.Column('features_json', sa.Text(), nullable=False),
    sa.Column('metrics_json', sa.Text(), nullable=False),
    sa.Column('created_at', sa.String(length=40), nullable=False),
    sa.Column('created_by', sa.String(length=200), nullable=False),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('sha256')
    )
    op.create_table('overrides',
    sa.Column('id', sa.Integer(), autoincrement=True, nullable=False),
    sa.Column('release_id', sa.String(length=40), nullable=False),
    sa.Column('contract', sa.String(length=100), nullable=False),
    sa.Column('actor', sa.String(length=200), nullable=False),
    sa.Column('reason', sa.Text(), nullable=False),
    sa.Column('at', sa.String(length=40), nullable=False),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('release_id', 'contract', name='one_override_per_contract_and_release')
    )
    op.create_table('ramp_state',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('release_id', sa.String(length=40), nullable=True),
    sa.Column('candidate_model_id', sa.String(length=64), nullable=True),
    sa.Column('pct', sa.Float(), nullable=False),
    sa.Column('state', sa.String(length=20), nullable=False),
    sa.Column('updated_at', sa.String(length=40), nullable=False),
    sa.Column('updated_by', sa.String(length=200), nullable=False),
    sa.Column('reason', sa.Text(), nullable=False),
    sa.PrimaryKeyConstraint('id')
    )
    op.create_table('ramp_steps',
    sa.Column('id', sa.Integer(), autoincrement=True, nullable=False),
    sa.Column('release_id', sa.String(length=40), nullable=False),
    sa.Column('step', sa.Integer(), nullable=False),
    sa.Column('pct', sa.Float(), nullable=False),
    sa.Column('outcome', sa.String(length=20), nullable=False),
    sa.Column('rows', sa.Integer(), nullable=False),
    sa.Column('candidate_rows', sa.Integer(), nullable=False),
    sa.Column('details_json', sa.Text(), nullable=False),
    sa.Column('at', sa.String(length=40), nullable=False),
    sa.PrimaryKeyConstraint('id')
    )
    op.create_index(op.f('ix_ramp_steps_release_id'), 'ramp_steps', ['release_id'], unique=False)
    op.create_table('releases',
    sa.Column('id', sa.String(length=40), nullable=False),
    sa.Column('as_of', sa.String(length=40), nullable=False),
    sa.Column('status', sa.String(length=40), nullable=False),
    sa.Column('snapshot_hash', sa.String(length=64), nullable=True),
    sa.Column('workflow', sa.String(length=200), nullable=True),
    sa.Column('candidate_model_id', sa.String(length=64), nullable=True),
    sa.Column('incumbent_model_id', sa.String(length=64), nullable=True),
    sa.Column('incumbent_bootstrap', sa.Boolean(), nullable=False),
    sa.Column('stop_reason', sa.Text(), nullable=True),
    sa.Column('report_path', sa.Text(), nullable=True),
    sa.Column('updated_at', sa.String(length=40), nullable=False),
    sa.PrimaryKeyConstraint('id')
    )
    op.create_table('tag_history',
    sa.Column('id', sa.Integer(), autoincrement=True, nullable=False),
    sa.Column('tag', sa.String(length=20), nullable=False),
    sa.Column('model_id', sa.String(length=64), nullable=True),
    sa.Column('previous_model_id', sa.String(length=64), nullable=True),
    sa.Column('at', sa.String(length=40), nullable=False),
    sa.Column('actor', sa.String(length=200), nullable=False),
    sa.Column('reason', sa.Text(), nullable=False),
    sa.PrimaryKeyConstraint('id')
    )
    op.create_table('threshold_versions',
    sa.Column('id', sa.Integer(), autoincrement=True, nullable=False),
    sa.Column('model_id', sa.String(length=64), nullable=False),
    sa.Column('merchant_id', sa.String(length=64), nullable=False),
    sa.Column('version', sa.Integer(), nullable=False),
    sa.Column('value', sa.Float(), nullable=True),
    sa.Column('previous_value', sa.Float(), nullable=True),
    sa.Column('set_id', sa.Integer(), nullable=True),
    sa.Column('change_id', sa.Integer(), nullable=False),
    sa.Column('change', sa.String(length=30), nullable=False),
    sa.Column('automatic', sa.Boolean(), nullable=False),
    sa.Column('at', sa.String(length=40), nullable=False),
    sa.Column('actor', sa.String(length=200), nullable=False),
    sa.Column('reason', sa.Text(), nullable=False),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('model_id', 'merchant_id', 'version', name='one_version_per_model_merchant')
    )
    op.create_index(op.f('ix_threshold_versions_change_id'), 'threshold_versions', ['change_id'], unique=False)
    op.create_index('threshold_versions_lookup', 'threshold_versions', ['model_id', 'merchant_id', 'version'], unique=False)
    op.create_table('verdicts',
    sa.Column('id', sa.Integer(), autoincrement=True, nullable=False),
    sa.Column('release_id', sa.String(length=40), nullable=False),
    sa.Column('stage', sa.String(length=20), nullable=False),
    sa.Column('contract', sa.String(length=100), nullable=False),
    sa.Column('kind', sa.String(length=100), nullable=False),
    sa.Column('gate', sa.Boolean(), nullable=False),
    sa.Column('slice_type', sa.String(length=40), nullable=False),
    sa.Column('slice', sa.String(length=100), nullable=False),
    sa.Column('verdict', sa.String(length=20), nullable=False),
    sa.Column('candidate_value', sa.Float(), nullable=True),
    sa.Column('incumbent_value', sa.Float(), nullable=True),
    sa.Column('limit_value', sa.Float(), nullable=True),
    sa.Column('support', sa.Integer(), nullable=True),
    sa.Column('p_value', sa.Float(), nullable=True),
    sa.Column('sentence', sa.Text(), nullable=False),
    sa.PrimaryKeyConstraint('id')
    )
    op.create_index(op.f('ix_verdicts_release_id'), 'verdicts', ['release_id'], unique=False)
    op.create_table('tags',
    sa.Column('tag', sa.String(length=20), nullable=False),
    sa.Column('model_id', sa.String(length=64), nullable=False),
    sa.Column('since', sa.String(length=40), nullable=False),
    sa.Column('actor', sa.String(length=200), nullable=False),
    sa.ForeignKeyConstraint(['model_id'], ['models.id'], ),
    sa.PrimaryKeyConstraint('tag')
    )
    op.create_table('threshold_sets',
    sa.Column('id', sa.Integer(), autoincrement=True, nullable=False),
    sa.Column('model_id', sa.String(length=64), nullable=False),
    sa.Column('release_id', sa.String(length=40), nullable=True),
    sa.Column('status', sa.String(length=20), nullable=False),
    sa.Column('global_threshold', sa.Float(), nullable=False),
    sa.Column('created_at', sa.String(length=40), nullable=False),
    sa.Column('decided_by', sa.String(length=200), nullable=True),
    sa.Column('decided_at', sa.String(length=40), nullable=True),
    sa.Column('reason', sa.Text(), nullable=True),
    sa.Column('automatic', sa.Boolean(), nullable=False),
    sa.ForeignKeyConstraint(['model_id'], ['models.id'], ),
    sa.PrimaryKeyConstraint('id')
    )
    op.create_table('threshold_items',
    sa.Column('set_id', sa.Integer(), nullable=False),
    sa.Column('merchant_id', sa.String(length=64), nullable=False),
    sa.Column('segment', sa.String(length=100), nullable=False),
    sa.Column('policy', sa.String(length=40), nullable=False),
    sa.Column('suggested', sa.Float(), nullable=False),
    sa.Column('edited', sa.Boolean(), nullable=False),
    sa.Column('outcome', sa.String(length=20), nullable=False),
    sa.ForeignKeyConstraint(['set_id'], ['threshold_sets.id'], ),
    sa.PrimaryKeyConstraint('set_id', 'merchant_id')
    )
    op.create_table('thresholds',
    sa.Column('set_id', sa.Integer(), nullable=False),
    sa.Column('merchant_id', sa.String(length=64), nullable=False),
    sa.Column('value', sa.Float(), nullable=False),
    sa.Column('current_value', sa.Float(), nullable=True),
    sa.Column('support', sa.Integer(), nullable=True),
    sa.Column('shrunk', sa.Boolean(), nullable=True),
    sa.Column('reason', sa.Text(), nullable=True),
    sa.ForeignKeyConstraint(['set_id'], ['threshold_sets.id'], ),
    sa.PrimaryKeyConstraint('set_id', 'merchant_id')
    )



def downgrade() -> None:  # reverse order of creation: tables with foreign keys go first
    for table in ("thresholds", "threshold_items", "threshold_sets", "tags", "verdicts", "threshold_versions",
                  "tag_history", "releases", "ramp_steps", "ramp_state", "overrides", "models",
                  "evaluation_summary", "audit"):
        op.drop_table(table)
