"""The state store: one SQLAlchemy schema on SQLite by default, any URL (PostgreSQL) allowed.

Holds the model registry and tags (with history), threshold sets, releases, contract verdicts, threshold
decisions, ramp state, alerts and an append-only audit log. Every state change is one transaction that also
writes its audit row, so a change without its record cannot exist (an alert changes nothing: its row is
its own record).
"""
from __future__ import annotations

import datetime as dt
import getpass
import json
import os
import re
import socket
import unicodedata
from contextlib import contextmanager
from contextvars import ContextVar
from functools import lru_cache
from pathlib import Path
from typing import Any, Iterator

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from release.core.settings import state_url, state_url_named

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
    sqlite_autoincrement=True,  # history ids are never reused (migration 0004)
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
    # the effect judged, the interval that decided it and the region that passes, in effect_unit
    # (contracts.base.Verdict; migration 0005)
    sa.Column("effect", sa.Float),
    sa.Column("effect_lo", sa.Float),
    sa.Column("effect_hi", sa.Float),
    sa.Column("allowed_lo", sa.Float),
    sa.Column("allowed_hi", sa.Float),
    sa.Column("effect_unit", sa.String(12)),
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

# Something a person must look at (release.state.alerts): a guardrail's rollback, a ramp ready to promote,
# thresholds awaiting a decision, a release's outcome, a monitoring finding. ``at`` is the wall clock,
# ``release_id`` the details' one (for reading a release's alerts), ``once_key`` what notify_once announces
# once: the database refuses a second alert of the same kind and key (NULL for raise_alert: never refused).
# Migration 0006, which imported the alerts.jsonl fraud-cd kept before.
alerts = sa.Table(
    "alerts", metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("at", sa.String(40), nullable=False),
    sa.Column("kind", sa.String(100), nullable=False),
    sa.Column("severity", sa.String(10), nullable=False),  # error | warning | info
    sa.Column("message", sa.Text, nullable=False),
    sa.Column("details_json", sa.Text, nullable=False),
    sa.Column("release_id", sa.String(40), index=True),
    sa.Column("once_key", sa.Text),
    sa.UniqueConstraint("kind", "once_key", name="one_alert_per_kind_and_once_key"),
    sqlite_autoincrement=True,  # ids never reused: the order alerts were raised in
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
    # who, from the environment (migration 0004): the stated name above is what a person typed; these are
    # what the machine knows. os_user: the login the process runs as; via: cli | airflow | service |
    # process; context_json: host, pid, the Airflow task and run, a token subject, how the name was given.
    sa.Column("os_user", sa.String(200)),
    sa.Column("via", sa.String(40)),
    sa.Column("context_json", sa.Text),
    # a pipeline action's data date (the end of its data interval); ``at`` is always the wall clock
    sa.Column("logical_date", sa.String(40)),
    sqlite_autoincrement=True,  # ids are never reused: a deleted last row leaves a gap (migration 0004)
)


# Rows that are history, never edited: a registered model (its id is the hash of its bytes), the audit
# log and the tag history. The database itself refuses UPDATE and DELETE on them (migration 0002), and
# audit and tag history ids are never reused (migration 0004).
WRITER_LOCK = 0x66726175  # PostgreSQL advisory lock key that serializes state changes ("frau")
VERSION_TABLE = "fraudcd_alembic_version"  # not alembic_version: the store may share a database
BASELINE = "0001"  # the tables as create_all made them before migrations existed
# The first revision whose database refuses UPDATE and DELETE on history. The schema never moves below
# it: below it, anyone who can connect could rewrite the audit log, and an audit log that can be
# rewritten proves nothing. (Keeping the triggers in 0001 instead would make 0001 mean two schemas.)
APPEND_ONLY_SINCE = "0002"
SQLITE_HEADER = b"SQLite format 3\x00"
UNVERSIONED = "unversioned"  # the store's tables without a version table: made before migrations existed


class StoreError(RuntimeError):
    """The state store cannot be used as it is: nothing was read or written. The message says what was
    found, where, and the command that fixes it."""


class StoreMissing(StoreError):
    """No store where the state URL points (a missing or empty file, a database without its tables)."""


class StoreCorrupt(StoreError):
    """Something is there, but it is not a readable state store."""


class StoreNeedsMigration(StoreError):
    """The store's schema revision is not the one this code reads and writes."""


# ---- who: identity from the environment, beside the stated name ----------------------------------------

_VIA: ContextVar[str | None] = ContextVar("fraudcd_via", default=None)
_CONTEXT: ContextVar[dict | None] = ContextVar("fraudcd_context", default=None)
_LOGICAL_DATE: ContextVar[str | None] = ContextVar("fraudcd_logical_date", default=None)

# What Airflow 3 exports to a task's environment while it runs (airflow.sdk.execution_time.task_runner:
# context_to_airflow_vars(in_env_var_format=True)); DAG_OWNER is the task's `owner`.
AIRFLOW_CONTEXT_VARS = ("DAG_ID", "TASK_ID", "DAG_RUN_ID", "TRY_NUMBER", "LOGICAL_DATE", "DAG_OWNER", "DAG_EMAIL",
                        "TEAM_NAME")
AUTOMATION_PREFIX = "fraudcd"  # names of fraud-cd's own automation ("fraud-cd pipeline", ...), normalised


def automation_name(name: str) -> bool:
    """Whether a stated name reads as one of fraud-cd's own automated actors ("fraud-cd pipeline",
    "Fraud CD bootstrap", "fraudcd ramp controller"): case, width, spaces and punctuation ignored."""
    folded = unicodedata.normalize("NFKC", name).casefold().translate(_LOOK_ALIKES)
    return "".join(ch for ch in folded if ch.isalnum()).startswith(AUTOMATION_PREFIX)


# Cyrillic and Greek letters that read as Latin ones (Unicode's confusables, the common lower-case
# ones): "frаud-cd pipeline" with a Cyrillic "а" reads as the pipeline's name, so it folds to it
_LOOK_ALIKES = str.maketrans({
    "а": "a", "в": "b", "с": "c", "ԁ": "d", "е": "e", "һ": "h", "і": "i", "ј": "j", "к": "k", "м": "m",
    "н": "h", "о": "o", "р": "p", "ԛ": "q", "г": "r", "ѕ": "s", "т": "t", "ц": "u", "ѵ": "v", "ԝ": "w",
    "х": "x", "у": "y", "ь": "b", "ɑ": "a", "ԍ": "g", "ӏ": "l",
    "α": "a", "β": "b", "ϲ": "c", "ε": "e", "η": "n", "ι": "i", "κ": "k", "ν": "v", "ο": "o", "ρ": "p",
    "τ": "t", "υ": "u", "χ": "x", "γ": "y", "ƒ": "f", "ꭍ": "r",
})


def os_user() -> str:
    """The login the process runs as (the uid when the system has no name for it)."""
    try:
        return getpass.getuser()
    except (KeyError, OSError):  # a container uid without a passwd entry
        return f"uid:{os.getuid()}"


def identity() -> dict:
    """What the environment says about who is acting: OS user, channel (``via``) and its context."""
    airflow = {k.lower(): os.environ[f"AIRFLOW_CTX_{k}"] for k in AIRFLOW_CONTEXT_VARS
               if os.environ.get(f"AIRFLOW_CTX_{k}")}
    via = _VIA.get() or ("airflow" if airflow else "process")
    context = {"host": socket.gethostname(), "pid": os.getpid(), **(_CONTEXT.get() or {})}
    if airflow:
        context["airflow"] = airflow
    return {"os_user": os_user(), "via": via, "context": context}


@contextmanager
def acting(via: str | None, **context: Any) -> Iterator[None]:
    """Audit rows written inside carry ``via`` (cli, service, ...; None: as outside) and ``context`` (e.g.
    the service's ``token_subject``, an ``airflow_user``, or ``actor_source="os_user"`` when the name was
    not stated)."""
    tv, tc = _VIA.set(via or _VIA.get()), _CONTEXT.set({**(_CONTEXT.get() or {}), **context})
    try:
        yield
    finally:
        _CONTEXT.reset(tc)
        _VIA.reset(tv)


def note_context(**context: Any) -> None:
    """Add to the context of the enclosing ``acting`` block (from then on, until it ends); outside one,
    nothing (there is no block to scope it to)."""
    current = _CONTEXT.get()
    if current is not None:
        current.update(context)


@contextmanager
def logical_date(value: str | None) -> Iterator[None]:
    """Audit rows written inside record ``value`` (a pipeline run's data date) as their logical date;
    their ``at`` stays the wall-clock time they were written."""
    token = _LOGICAL_DATE.set(value)
    try:
        yield
    finally:
        _LOGICAL_DATE.reset(token)


def utc_now() -> str:
    """Wall-clock time in UTC, the form every ``at`` of the store takes."""
    return dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")


# ---- opening --------------------------------------------------------------------------------------------

@lru_cache(maxsize=16)
def _engine(url: str, write: bool) -> Engine:
    """Writers (``write``) take SQLite's write lock at BEGIN (BEGIN IMMEDIATE), so state changes are
    serialized; readers begin deferred and, the store being in WAL mode, never wait for a writer."""
    if not url.startswith("sqlite"):
        return sa.create_engine(url, pool_pre_ping=True)
    eng = sa.create_engine(url, connect_args={"timeout": 30})
    path = _sqlite_path(url)

    @sa.event.listens_for(eng, "connect")
    def _pragmas(dbapi_conn, _):  # noqa: ANN001
        dbapi_conn.isolation_level = None  # SQLAlchemy's "begin" event below opens transactions
        cur = dbapi_conn.cursor()
        if write:
            cur.execute("PRAGMA journal_mode=WAL")  # persistent in the file; readers need not set it
        cur.execute("PRAGMA foreign_keys=ON")
        cur.close()
        if path is not None:
            _narrow_modes(path)

    @sa.event.listens_for(eng, "begin")
    def _begin(conn):  # noqa: ANN001
        conn.exec_driver_sql("BEGIN IMMEDIATE" if write else "BEGIN")

    return eng


def _narrow_modes(path: Path) -> None:
    """The permission policy (release/core/io.py) on the SQLite files, whatever umask the process that made
    them had (an Airflow task, a library caller): never wider than 0640, never widened."""
    import os

    from release.core.io import FILE_MODE

    for p in (path, path.with_name(path.name + "-wal"), path.with_name(path.name + "-shm")):
        try:
            mode = p.stat().st_mode & 0o777
            if mode & ~FILE_MODE:
                os.chmod(p, mode & FILE_MODE)
        except OSError:  # not there (yet), or not ours: nothing to narrow
            pass


def _sqlite_path(url: str) -> Path | None:
    u = sa.engine.make_url(url)
    if u.get_backend_name() != "sqlite" or not u.database or u.database == ":memory:" or u.database.startswith("file:"):
        return None
    return Path(u.database)


def where(url: str | None = None) -> str:
    """The store's location as a person reads it (a file path, or the URL without its password)."""
    url = url or state_url()
    path = _sqlite_path(url)
    return str(path) if path is not None else sa.engine.make_url(url).render_as_string(hide_password=True)


@lru_cache(maxsize=1)
def revisions() -> tuple[str, ...]:
    """The migrations' revisions, oldest first (the history is linear): each migration file's ``revision`` and
    ``down_revision``, read from its text (``ast``) rather than through alembic's script directory, which every
    command that opens the store would otherwise pay for (~0.9 s of CPU: alembic's import and its walk).
    tests/release/state/test_store_backends.py checks it against alembic's walk; anything this reading does not
    expect (a branch, a merge, a revision that is not a string) is left to alembic."""
    import ast

    down: dict[str, str | None] = {}
    for f in sorted((Path(__file__).parent / "migrations" / "versions").glob("*.py")):
        found = {}
        for node in ast.parse(f.read_text(encoding="utf-8")).body:
            if isinstance(node, ast.Assign) and len(node.targets) == 1 and isinstance(node.targets[0], ast.Name) \
                    and node.targets[0].id in ("revision", "down_revision"):
                found[node.targets[0].id] = node.value.value if isinstance(node.value, ast.Constant) else node.value
        if "revision" in found:
            down[found["revision"]] = found.get("down_revision")
    chain, at = [], None
    after = {d: r for r, d in down.items()}
    linear = len(after) == len(down) and all(isinstance(v, (str, type(None))) for v in (*down, *down.values()))
    while linear and at in after:
        at = after[at]
        chain.append(at)
    if linear and len(chain) == len(down):
        return tuple(chain)
    from alembic.script import ScriptDirectory

    script = ScriptDirectory.from_config(_alembic_config())
    return tuple(reversed([r.revision for r in script.walk_revisions()]))


def head_revision() -> str:
    return revisions()[-1]


def store_revision(url: str | None = None) -> str | None:
    """The store's schema revision, read without the write lock and without creating anything. None:
    no store there (a missing or empty file, a database without the store's tables); ``UNVERSIONED``:
    the tables of a store made before migrations. Raises StoreCorrupt for something that is not a store."""
    url = url or state_url()
    path = _sqlite_path(url)
    if path is not None:
        if path.is_dir():
            raise StoreCorrupt(f"The state store {path} is a directory, not a SQLite file. Point FRAUDCD_STATE_URL "
                               "(or FRAUDCD_HOME) at the store's file.")
        if not path.exists() or path.stat().st_size == 0:
            return None
        # The file is not opened here, only by SQLite: on POSIX, closing any descriptor of a file drops every
        # lock the process holds on it, SQLite's too, and another process closing its last connection would
        # then delete the write-ahead log this process still reads (a frozen snapshot; tests/release/state/
        # test_store_locks.py). Its header is read only once SQLite has refused it (_not_sqlite).
    try:
        with _engine(url, False).connect() as conn:
            names = set(sa.inspect(conn).get_table_names())
            if VERSION_TABLE in names:
                return conn.execute(sa.text(f"SELECT version_num FROM {VERSION_TABLE}")).scalar() or None
    except sa.exc.OperationalError as e:
        if path is not None and "malformed" not in str(e.orig) and "not a database" not in str(e.orig):
            raise StoreError(f"Cannot open the state store {where(url)}: {e.orig}") from None
        if path is None:
            raise StoreError(f"Cannot connect to the state store {where(url)}: {e.orig}") from None
        _not_sqlite(path)
        raise StoreCorrupt(f"The state store {path} is damaged ({e.orig}); nothing was read or changed. Restore "
                           "it from a backup.") from None
    except sa.exc.DatabaseError as e:
        if path is not None:
            _not_sqlite(path)
        raise StoreCorrupt(f"The state store {where(url)} is damaged ({e.orig}); nothing was read or changed. "
                           "Restore it from a backup.") from None
    return UNVERSIONED if names & {t.name for t in metadata.sorted_tables} else None


def _not_sqlite(path: Path) -> None:
    """Raise StoreCorrupt saying so when the file SQLite refused is not a SQLite file at all (its header)."""
    _engine.cache_clear()  # the refused file's engines: nothing of this process reads it any more
    with path.open("rb") as f:
        head = f.read(len(SQLITE_HEADER))
    if head != SQLITE_HEADER:
        raise StoreCorrupt(f"The state store {path} is not a SQLite database: a SQLite file begins with "
                           f"{SQLITE_HEADER!r}, this one with {head!r}. Nothing was read or changed; restore "
                           "the file from a backup or point FRAUDCD_STATE_URL at the right one.")


def missing_store(url: str | None = None) -> StoreMissing:
    url = url or state_url()
    path = _sqlite_path(url)
    found = ("the database has none of the store's tables" if path is None
             else "the file does not exist" if not path.exists() else "the file is empty")
    return StoreMissing(f"No state store at {where(url)}: {found}. Nothing was read or created. Check "
                        "FRAUDCD_HOME / FRAUDCD_STATE_URL; to start a new, empty store there, run "
                        "`fraudcd db --create`.")


def _check_revision(url: str, rev: str | None) -> None:
    if rev is None:
        raise missing_store(url)
    head = head_revision()
    if rev == head:
        return
    if rev == UNVERSIONED or rev in revisions():
        found = "was made before migrations existed" if rev == UNVERSIONED else f"is at schema revision {rev}"
        raise StoreNeedsMigration(f"The state store {where(url)} {found}; this fraud-cd reads and writes revision "
                                  f"{head}. Nothing was read or changed. Run `fraudcd db --to head` to migrate it "
                                  "(one process, under the write lock).")
    raise StoreNeedsMigration(f"The state store {where(url)} is at schema revision {rev!r}, which this fraud-cd does "
                              f"not know (it knows {', '.join(revisions())}): a newer fraud-cd migrated it. "
                              "Use that version.")


def open_store(mode: str = "read") -> str:
    """Check the state store before a command uses it; return its schema revision. Never migrates.

    ``read`` and ``write``: the store must exist, be readable and be at this code's revision, otherwise a
    StoreError says what was found and which command fixes it. ``create``: a missing or empty store is
    created at head (the commands that legitimately start one: ``fraudcd db --create``, ``train``,
    ``release``, ``backfill``, ``demo``); an existing one must still be at this code's revision.
    """
    if mode not in ("read", "write", "create"):
        raise ValueError(f"The 'mode' parameter of open_store must be one of 'read', 'write', 'create'. "
                         f"Got {mode!r} instead.")
    url = state_url()
    rev = store_revision(url)
    if rev is None and mode == "create":
        return _create(url)
    _check_revision(url, rev)
    return rev


def _create(url: str, *, actor: str | None = None, reason: str | None = None) -> str:
    path = _sqlite_path(url)
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
    return migrate(_engine(url, True), "head", actor=actor, reason=reason)


def create_store(*, actor: str, reason: str) -> tuple[str | None, str]:
    """`fraudcd db --create`: a new store at head where none is (audited); an existing one is left as it
    is. Returns (revision before, revision after); before is None when it was created."""
    url = state_url()
    rev = store_revision(url)
    if rev is not None:
        return rev, rev
    return None, _create(url, actor=actor, reason=reason)


_ready: set[str] = set()


def _ready_url() -> str:
    """The state URL, checked once per process: library callers (pipeline tasks, tests) start a new
    store where none is; a store at another revision or a damaged one is an error, never migrated here."""
    url = state_url()
    if url not in _ready:
        rev = store_revision(url)
        if rev is None:
            # a SQLite file named on purpose: a typo must not start an empty store (a server database that
            # exists but holds no tables was made on purpose, and is started here)
            if state_url_named() and _sqlite_path(url) is not None:
                raise StoreMissing(f"No state store at {sa.engine.make_url(url).render_as_string(hide_password=True)}"
                                   " (FRAUDCD_STATE_URL). A pipeline task never starts one where a store was named: "
                                   "start it with `fraudcd db --create --as NAME --reason ...`, or fix the URL.")
            rev = _create(url)  # the project's own default under FRAUDCD_HOME: a new project starts here
        _check_revision(url, rev)
        _ready.add(url)
    return url


def writer_engine() -> Engine:
    """The writer engine of the state URL as it is, unchecked: for moving the schema (``migrate``)."""
    return _engine(state_url(), True)


def engine() -> Engine:
    """The store for reading (and for writes that need no ordering): never takes the write lock first."""
    return _engine(_ready_url(), False)


def _writer_lock(conn: Connection) -> None:
    """Hold the writer lock until the transaction ends (PostgreSQL; SQLite's BEGIN IMMEDIATE already does)."""
    if conn.dialect.name == "postgresql":
        conn.execute(sa.text("SELECT pg_advisory_xact_lock(:key)"), {"key": WRITER_LOCK})


def _alembic_config():
    from alembic.config import Config

    cfg = Config()
    cfg.set_main_option("script_location", str(Path(__file__).parent / "migrations"))
    return cfg


def migration_target(revision: str) -> str:
    """The revision ``revision`` names (``head`` or one of ``revisions()``); ValueError for an unknown one
    and for any below APPEND_ONLY_SINCE."""
    revs = revisions()
    target = revs[-1] if revision == "head" else revision
    if target not in revs:
        raise ValueError(f"Cannot migrate the state store to {revision!r}: no such revision. Allowed: "
                         f"{', '.join(revs[revs.index(APPEND_ONLY_SINCE):])} or head.")
    if revs.index(target) < revs.index(APPEND_ONLY_SINCE):
        raise ValueError(f"Refusing to move the state store to revision {target}: below {APPEND_ONLY_SINCE} the "
                         "database no longer refuses UPDATE and DELETE on the audit log, models and tag history, "
                         "so history could be rewritten without a trace. Allowed: "
                         f"{', '.join(revs[revs.index(APPEND_ONLY_SINCE):])} or head. Got {revision!r}.")
    return target


def migrate(eng: Engine, revision: str = "head", *, actor: str | None = None, reason: str | None = None) -> str:
    """Bring the store's schema to ``revision`` (up or down) with Alembic (release/state/migrations) and return
    where it is. One migrator at a time: under the writer lock.

    A store made before migrations existed (tables, no version table) is stamped at the baseline first.
    Never below APPEND_ONLY_SINCE. Going back needs ``actor`` and ``reason``; a move with an actor is
    written to the audit log in the same transaction (ValueError for a refused move). What a migration does
    outside the database (0006 renames the alerts file it imported) it hands to ``after_commit`` (a list in
    the Alembic config's attributes): run once the move committed, never for one rolled back."""
    from alembic import command
    from alembic.runtime.migration import MigrationContext

    target = migration_target(revision)
    cfg = _alembic_config()
    cfg.attributes["after_commit"] = after_commit = []
    with eng.begin() as conn:
        _writer_lock(conn)
        cfg.attributes["connection"] = conn
        inspector = sa.inspect(conn)
        if inspector.has_table("models") and not inspector.has_table(VERSION_TABLE):
            command.stamp(cfg, BASELINE)

        def current() -> str | None:
            return MigrationContext.configure(conn, opts={"version_table": VERSION_TABLE}).get_current_revision()

        revs = revisions()
        now = current()
        down = now is not None and now in revs and revs.index(target) < revs.index(now)
        if down:  # checked before anything moves: the audit row is written after
            try:
                checked_actor(actor), checked_reason(reason, "a schema downgrade")
            except ValueError as e:
                raise ValueError(f"Moving the state store's schema back (from {now} to {target}): {e}") from None
        (command.downgrade if down else command.upgrade)(cfg, target)
        after = current()
        if actor and after != now:
            action = "store_created" if now is None else "schema_downgrade" if down else "schema_upgrade"
            row = _audit_row(at=utc_now(), actor=actor, action=action, entity="schema", before={"revision": now},
                             after={"revision": after}, reason=reason or f"schema {now} -> {after}")
            present = {c["name"] for c in sa.inspect(conn).get_columns("audit")}
            conn.execute(audit.insert().values(**{k: v for k, v in row.items() if k in present}))
    for step in after_commit:
        step()
    return after


@contextmanager
def transaction() -> Iterator[Connection]:
    """One state change: everything inside commits together or not at all, and state changes run one at
    a time (SQLite: BEGIN IMMEDIATE; PostgreSQL: a transaction-scoped advisory lock), so a change that
    checks what it read (a ramp control's expected version) cannot interleave with another."""
    with _engine(_ready_url(), True).begin() as conn:
        _writer_lock(conn)
        yield conn


MAX_NAME = 200  # the audit log's actor column
# control characters a stored reason may not hold (tabs and line breaks are text)
CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f]")


def checked_actor(actor: str | None) -> str:
    """Who made a change, as the audit records it: a name of at most MAX_NAME printable characters. The one
    check, used by the audit itself, the CLI and the Airflow tasks (a person's change also may not use a name
    of fraud-cd's own automation: the CLI's rule, ``automation_name``)."""
    name = (actor or "").strip()
    if not name:
        raise ValueError("Every audited change needs a named actor (who). Got an empty name.")
    if any(not ch.isprintable() for ch in name) or len(name) > MAX_NAME:
        raise ValueError(f"An actor must be a name of at most {MAX_NAME} printable characters (no newlines or "
                         f"control characters); got {name[:60]!r}{'...' if len(name) > 60 else ''} "
                         f"({len(name)} characters).")
    return name


def checked_reason(reason: str | None, doing: str) -> str:
    """Why a change was made (``doing``: what, for the message): printable text, line breaks and tabs allowed."""
    text = (reason or "").strip()
    if not text:
        raise ValueError(f"Every audited change needs a reason (why). Got none for {doing}.")
    m = CONTROL.search(text)
    if m:
        raise ValueError(f"A reason must be printable text: it holds the control character {m.group()!r} at "
                         f"position {m.start()} (line breaks and tabs are fine).")
    return text


def _audit_row(*, at: str, actor: str, action: str, entity: str, before: Any, after: Any, reason: str,
               logical_date: str | None = None) -> dict:
    actor, reason = checked_actor(actor), checked_reason(reason, f"{action} on {entity}")
    who = identity()
    return dict(
        at=at, actor=actor, action=action, entity=entity,
        before_json=None if before is None else json.dumps(before, sort_keys=True, default=str),
        after_json=None if after is None else json.dumps(after, sort_keys=True, default=str),
        reason=reason, os_user=who["os_user"], via=who["via"],
        context_json=json.dumps(who["context"], sort_keys=True, default=str),
        logical_date=logical_date if logical_date is not None else _LOGICAL_DATE.get(),
    )


def write_audit(conn: Connection, *, at: str, actor: str, action: str, entity: str,
                before: Any = None, after: Any = None, reason: str, logical_date: str | None = None) -> None:
    """One audit row: ``at`` when it happened (wall clock), who said they acted (``actor``) and what the
    environment says (OS user, channel, Airflow run, token subject), what, on what, why, before and after;
    ``logical_date`` (default: the enclosing ``logical_date(...)`` block's) the data date of a pipeline run."""
    conn.execute(audit.insert().values(**_audit_row(at=at, actor=actor, action=action, entity=entity, before=before,
                                                    after=after, reason=reason, logical_date=logical_date)))


def audit_log(limit: int | None = None, entity_prefix: str | None = None) -> list[dict]:
    """The audit log's rows, oldest first: every row, or the latest ``limit`` (read as such, not the whole log)."""
    if limit is not None and limit < 1:
        raise ValueError(f"audit_log's limit must be at least 1 (or None for every row); got {limit!r}")
    q = sa.select(audit)
    if entity_prefix:
        q = q.where(audit.c.entity.startswith(entity_prefix))
    if limit is not None:
        q = q.order_by(audit.c.id.desc()).limit(limit)
    with engine().connect() as conn:
        rows = [dict(r._mapping) for r in conn.execute(q.order_by(audit.c.id) if limit is None else q)]
    return rows if limit is None else rows[::-1]


def copy_store(src_url: str, dst_url: str, *, actor: str, reason: str) -> dict[str, int]:
    """Move a whole store to another database (`fraudcd up` taking a data folder's SQLite store into its local
    PostgreSQL). The source must be at this code's revision and is only read; the destination is brought to head
    and gets every row of every table, history and audit log included, in one transaction, with one audit row
    of its own ("store_moved": from where, to where, the rows of each table). Returns the rows per table.

    Idempotent: a destination that already holds exactly the source's rows (a move that committed, then the
    process died before it was recorded) is left as it is; one that holds other rows is refused (StoreError),
    nothing is written."""
    rev = store_revision(src_url)
    if rev is None:
        raise missing_store(src_url)
    _check_revision(src_url, rev)
    actor, reason = checked_actor(actor), checked_reason(reason, "moving the state store")
    migrate(_engine(dst_url, True), "head")
    tables = [t for t in metadata.sorted_tables]
    with _engine(src_url, False).connect() as src:
        counts = {t.name: src.execute(sa.select(sa.func.count()).select_from(t)).scalar_one() for t in tables}
        with _engine(dst_url, True).begin() as dst:
            _writer_lock(dst)
            have = {t.name: dst.execute(sa.select(sa.func.count()).select_from(t)).scalar_one() for t in tables}
            moved = [a for a in dst.execute(sa.select(audit.c.after_json).where(audit.c.action == "store_moved"))]
            if any(have.values()):
                if moved and {k: v for k, v in have.items() if k != "audit"} == \
                        {k: v for k, v in counts.items() if k != "audit"} and have["audit"] == counts["audit"] + 1:
                    return counts  # the move committed before: nothing to do
                raise StoreError(f"Cannot move the state store {where(src_url)} into {where(dst_url)}: the destination "
                                 "already holds a store (" + ", ".join(f"{k} {v}" for k, v in have.items() if v) +
                                 "). Nothing was written. Point FRAUDCD_STATE_URL at the one to keep.")
            for t in tables:
                rows = [dict(r._mapping) for r in src.execute(sa.select(t))]
                if rows:
                    dst.execute(t.insert(), rows)
            if dst.dialect.name == "postgresql":  # the serial ids go on after the copied ones
                for t in tables:
                    pk = list(t.primary_key.columns)
                    if len(pk) == 1 and isinstance(pk[0].type, sa.Integer) and counts[t.name]:
                        dst.execute(sa.text(f"SELECT setval(pg_get_serial_sequence('{t.name}', '{pk[0].name}'), "
                                            f"(SELECT max({pk[0].name}) FROM {t.name}))"))
            got = {t.name: dst.execute(sa.select(sa.func.count()).select_from(t)).scalar_one() for t in tables}
            if got != counts:  # pragma: no cover - an insert that silently dropped rows
                raise StoreError(f"Moving the state store: copied {got}, the source holds {counts}; rolled back.")
            write_audit(dst, at=utc_now(), actor=actor, action="store_moved", entity="schema",
                        before={"store": where(src_url), "revision": rev},
                        after={"store": where(dst_url), "rows": counts}, reason=reason)
    return counts
