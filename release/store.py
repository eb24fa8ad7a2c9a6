"""The state store: one SQLAlchemy schema on SQLite by default, any URL (PostgreSQL) allowed.

Holds the model registry and tags (with history), threshold sets, releases, contract verdicts, threshold
decisions, ramp state and an append-only audit log. Every state change is one transaction that also
writes its audit row, so a change without its record cannot exist.
"""
from __future__ import annotations

import json
from contextlib import contextmanager
from functools import lru_cache
from typing import Any, Iterator

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from release.settings import paths, state_url

metadata = sa.MetaData()

models = sa.Table(
    "models", metadata,
    sa.Column("id", sa.String(64), primary_key=True),
    sa.Column("sha256", sa.String(64), nullable=False, unique=True),
    sa.Column("path", sa.Text, nullable=False),
    sa.Column("workflow", sa.String(200), nullable=False),
    sa.Column("workflow_json", sa.Text, nullable=False),
    sa.Column("snapshot_hash", sa.String(64), nullable=False),
    sa.Column("code_version", sa.String(100), nullable=False),
    sa.Column("features_json", sa.Text, nullable=False),
    sa.Column("metrics_json", sa.Text, nullable=False),
    sa.Column("created_at", sa.String(40), nullable=False),
    sa.Column("created_by", sa.String(200), nullable=False),
)

tags = sa.Table(
    "tags", metadata,
    sa.Column("tag", sa.String(20), primary_key=True),
    sa.Column("model_id", sa.String(64), sa.ForeignKey("models.id"), nullable=False),
    sa.Column("since", sa.String(40), nullable=False),
    sa.Column("actor", sa.String(200), nullable=False),
)

tag_history = sa.Table(
    "tag_history", metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("tag", sa.String(20), nullable=False),
    sa.Column("model_id", sa.String(64)),
    sa.Column("previous_model_id", sa.String(64)),
    sa.Column("at", sa.String(40), nullable=False),
    sa.Column("actor", sa.String(200), nullable=False),
    sa.Column("reason", sa.Text, nullable=False),
)

releases = sa.Table(
    "releases", metadata,
    sa.Column("id", sa.String(40), primary_key=True),
    sa.Column("as_of", sa.String(40), nullable=False),
    sa.Column("status", sa.String(40), nullable=False),
    sa.Column("snapshot_hash", sa.String(64)),
    sa.Column("workflow", sa.String(200)),
    sa.Column("candidate_model_id", sa.String(64)),
    sa.Column("incumbent_model_id", sa.String(64)),
    sa.Column("incumbent_bootstrap", sa.Boolean, nullable=False, default=False),
    sa.Column("stop_reason", sa.Text),
    sa.Column("report_path", sa.Text),
    sa.Column("updated_at", sa.String(40), nullable=False),
)

verdicts = sa.Table(
    "verdicts", metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("release_id", sa.String(40), nullable=False, index=True),
    sa.Column("stage", sa.String(20), nullable=False),  # offline | approved | shadow | ramp
    sa.Column("contract", sa.String(100), nullable=False),
    sa.Column("kind", sa.String(100), nullable=False),
    sa.Column("gate", sa.Boolean, nullable=False),
    sa.Column("slice_type", sa.String(40), nullable=False),
    sa.Column("slice", sa.String(100), nullable=False),
    sa.Column("verdict", sa.String(20), nullable=False),  # pass | fail | insufficient data
    sa.Column("candidate_value", sa.Float),
    sa.Column("incumbent_value", sa.Float),
    sa.Column("limit_value", sa.Float),
    sa.Column("support", sa.Integer),
    sa.Column("p_value", sa.Float),  # multiple-testing adjusted where the contract tests many slices
    sa.Column("sentence", sa.Text, nullable=False),
    sa.Column("on_insufficient", sa.String(10)),  # stop | warn: what an unjudged gate does (migration 0003)
)

evaluation_summary = sa.Table(  # the all-traffic rows of a release's tidy metrics (the rest: metrics.parquet)
    "evaluation_summary", metadata,
    sa.Column("release_id", sa.String(40), primary_key=True),
    sa.Column("metric", sa.String(40), primary_key=True),
    sa.Column("estimator", sa.String(10), primary_key=True),
    sa.Column("model", sa.String(60), primary_key=True),
    sa.Column("estimate", sa.Float),
    sa.Column("lo", sa.Float),
    sa.Column("hi", sa.Float),
    sa.Column("transactions", sa.Integer, nullable=False),
    sa.Column("frauds", sa.Integer, nullable=False),
)

overrides = sa.Table(
    "overrides", metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("release_id", sa.String(40), nullable=False),
    sa.Column("contract", sa.String(100), nullable=False),
    sa.Column("actor", sa.String(200), nullable=False),
    sa.Column("reason", sa.Text, nullable=False),
    sa.Column("at", sa.String(40), nullable=False),
    sa.UniqueConstraint("release_id", "contract", name="one_override_per_contract_and_release"),
)

threshold_sets = sa.Table(
    "threshold_sets", metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("model_id", sa.String(64), sa.ForeignKey("models.id"), nullable=False),
    sa.Column("release_id", sa.String(40)),
    sa.Column("status", sa.String(20), nullable=False),  # pending | approved | rejected
    sa.Column("global_threshold", sa.Float, nullable=False),
    sa.Column("created_at", sa.String(40), nullable=False),
    sa.Column("decided_by", sa.String(200)),
    sa.Column("decided_at", sa.String(40)),
    sa.Column("reason", sa.Text),
    sa.Column("automatic", sa.Boolean, nullable=False, default=False),
)

thresholds = sa.Table(
    "thresholds", metadata,
    sa.Column("set_id", sa.Integer, sa.ForeignKey("threshold_sets.id"), primary_key=True),
    sa.Column("merchant_id", sa.String(64), primary_key=True),
    sa.Column("value", sa.Float, nullable=False),
    sa.Column("current_value", sa.Float),
    sa.Column("support", sa.Integer),
    sa.Column("shrunk", sa.Boolean),
    sa.Column("reason", sa.Text),
)

# One row per suggestion of a threshold set: its segment and policy, the value the pipeline suggested
# (``thresholds.value`` holds the proposal, which edits change while the set is pending), whether a
# person edited it, and what became of it: pending | approved | auto_approved | not_approved | rejected
# | expired. Automation readiness is computed from these rows.
threshold_items = sa.Table(
    "threshold_items", metadata,
    sa.Column("set_id", sa.Integer, sa.ForeignKey("threshold_sets.id"), primary_key=True),
    sa.Column("merchant_id", sa.String(64), primary_key=True),
    sa.Column("segment", sa.String(100), nullable=False),
    sa.Column("policy", sa.String(40), nullable=False),
    sa.Column("suggested", sa.Float, nullable=False),
    sa.Column("edited", sa.Boolean, nullable=False, default=False),
    sa.Column("outcome", sa.String(20), nullable=False),
)

# The live thresholds, versioned per model and merchant (``__global__`` is the model's global threshold).
# Append-only: an approval, a live edit or a rollback adds a version; a model's live threshold for a
# merchant is its highest version. ``value`` NULL: the merchant has no threshold of its own (the
# global one applies). ``change_id`` groups the versions written by one action, so it can be rolled back.
threshold_versions = sa.Table(
    "threshold_versions", metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("model_id", sa.String(64), nullable=False),
    sa.Column("merchant_id", sa.String(64), nullable=False),
    sa.Column("version", sa.Integer, nullable=False),
    sa.Column("value", sa.Float),
    sa.Column("previous_value", sa.Float),
    sa.Column("set_id", sa.Integer),
    sa.Column("change_id", sa.Integer, nullable=False, index=True),
    sa.Column("change", sa.String(30), nullable=False),  # approved | auto_approved | not_approved | edited | rollback
    sa.Column("automatic", sa.Boolean, nullable=False, default=False),
    sa.Column("at", sa.String(40), nullable=False),
    sa.Column("actor", sa.String(200), nullable=False),
    sa.Column("reason", sa.Text, nullable=False),
    sa.UniqueConstraint("model_id", "merchant_id", "version", name="one_version_per_model_merchant"),
    sa.Index("threshold_versions_lookup", "model_id", "merchant_id", "version"),
)

ramp_state = sa.Table(
    "ramp_state", metadata,
    sa.Column("id", sa.Integer, primary_key=True),  # always 1: one deployment
    sa.Column("release_id", sa.String(40)),
    sa.Column("candidate_model_id", sa.String(64)),
    sa.Column("pct", sa.Float, nullable=False),
    sa.Column("state", sa.String(20), nullable=False),  # idle | shadow | ramping | paused | rolled_back | promoted
    sa.Column("updated_at", sa.String(40), nullable=False),
    sa.Column("updated_by", sa.String(200), nullable=False),
    sa.Column("reason", sa.Text, nullable=False),
)

ramp_steps = sa.Table(
    "ramp_steps", metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("release_id", sa.String(40), nullable=False, index=True),
    sa.Column("step", sa.Integer, nullable=False),
    sa.Column("pct", sa.Float, nullable=False),
    sa.Column("outcome", sa.String(20), nullable=False),  # passed | breached
    sa.Column("rows", sa.Integer, nullable=False),
    sa.Column("candidate_rows", sa.Integer, nullable=False),
    sa.Column("details_json", sa.Text, nullable=False),
    sa.Column("at", sa.String(40), nullable=False),
)

audit = sa.Table(
    "audit", metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("at", sa.String(40), nullable=False),
    sa.Column("actor", sa.String(200), nullable=False),
    sa.Column("action", sa.String(60), nullable=False),
    sa.Column("entity", sa.String(200), nullable=False),
    sa.Column("before_json", sa.Text),
    sa.Column("after_json", sa.Text),
    sa.Column("reason", sa.Text, nullable=False),
)


@lru_cache(maxsize=8)
def _engine(url: str) -> Engine:
    if url.startswith("sqlite:///"):
        from pathlib import Path

        Path(url.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
        eng = sa.create_engine(url, connect_args={"timeout": 30})

        @sa.event.listens_for(eng, "connect")
        def _pragmas(dbapi_conn, _):  # noqa: ANN001
            dbapi_conn.isolation_level = None  # SQLAlchemy's "begin" event below opens transactions
            cur = dbapi_conn.cursor()
            cur.execute("PRAGMA journal_mode=WAL")
            cur.execute("PRAGMA foreign_keys=ON")
            cur.close()

        # Serialize writers: BEGIN IMMEDIATE takes the write lock at the start of the transaction.
        @sa.event.listens_for(eng, "begin")
        def _begin(conn):  # noqa: ANN001
            conn.exec_driver_sql("BEGIN IMMEDIATE")
    else:
        eng = sa.create_engine(url, pool_pre_ping=True)
    migrate(eng)
    return eng


# Rows that are history, never edited: a registered model (its id is the hash of its bytes), the audit
# log and the tag history. The database itself refuses UPDATE and DELETE on them (migration 0002).
WRITER_LOCK = 0x66726175  # PostgreSQL advisory lock key that serializes state changes ("frau")
VERSION_TABLE = "fraudcd_alembic_version"  # not alembic_version: the store may share a database
BASELINE = "0001"  # the tables as create_all made them before migrations existed


def _writer_lock(conn: Connection) -> None:
    """Hold the writer lock until the transaction ends (PostgreSQL; SQLite's BEGIN IMMEDIATE already does)."""
    if conn.dialect.name == "postgresql":
        conn.execute(sa.text("SELECT pg_advisory_xact_lock(:key)"), {"key": WRITER_LOCK})


def migrate(eng: Engine, revision: str = "head") -> str:
    """Bring the store's schema to ``revision`` (up or down) with Alembic (release/migrations) and return
    where it is.
    A store made before migrations existed (tables, no version table) is stamped at the baseline first.
    One migrator at a time: under the writer lock."""
    from pathlib import Path

    from alembic import command
    from alembic.config import Config
    from alembic.runtime.migration import MigrationContext
    from alembic.script import ScriptDirectory

    cfg = Config()
    cfg.set_main_option("script_location", str(Path(__file__).parent / "migrations"))
    with eng.begin() as conn:
        _writer_lock(conn)
        cfg.attributes["connection"] = conn
        inspector = sa.inspect(conn)
        if inspector.has_table("models") and not inspector.has_table(VERSION_TABLE):
            command.stamp(cfg, BASELINE)

        def current() -> str | None:
            return MigrationContext.configure(conn, opts={"version_table": VERSION_TABLE}).get_current_revision()

        script = ScriptDirectory.from_config(cfg)
        target = script.get_current_head() if revision == "head" else script.get_revision(revision).revision
        now = current()
        below = {r.revision for r in script.iterate_revisions(now, "base")} - {now} if now else set()
        (command.downgrade if target in below else command.upgrade)(cfg, target)
        return current()


def engine() -> Engine:
    paths().home.mkdir(parents=True, exist_ok=True)
    return _engine(state_url())


@contextmanager
def transaction() -> Iterator[Connection]:
    """One state change: everything inside commits together or not at all, and state changes run one at
    a time (SQLite: BEGIN IMMEDIATE; PostgreSQL: a transaction-scoped advisory lock), so a change that
    checks what it read (a ramp control's expected version) cannot interleave with another."""
    with engine().begin() as conn:
        _writer_lock(conn)
        yield conn


def write_audit(conn: Connection, *, at: str, actor: str, action: str, entity: str,
                before: Any = None, after: Any = None, reason: str) -> None:
    if not actor or not actor.strip():
        raise ValueError("Every audited change needs a named actor (who). Got an empty name.")
    if not reason or not reason.strip():
        raise ValueError(f"Every audited change needs a reason (why). Got none for {action} on {entity}.")
    conn.execute(audit.insert().values(
        at=at, actor=actor, action=action, entity=entity,
        before_json=None if before is None else json.dumps(before, sort_keys=True, default=str),
        after_json=None if after is None else json.dumps(after, sort_keys=True, default=str),
        reason=reason,
    ))


def audit_log(limit: int | None = None, entity_prefix: str | None = None) -> list[dict]:
    q = sa.select(audit).order_by(audit.c.id)
    if entity_prefix:
        q = q.where(audit.c.entity.startswith(entity_prefix))
    with engine().connect() as conn:
        rows = [dict(r._mapping) for r in conn.execute(q)]
    return rows[-limit:] if limit else rows
