"""The training-set snapshot: point-in-time features, matured labels, a data contract and a content hash.

A transaction's label counts only once it is older than the maturity window (default 60 days): it is
fraud if a dispute arrived before the snapshot's as-of time. Blocked transactions were never disputed,
so they carry no label (censoring); exploration rows (would-be blocks let through) carry their
inverse-propensity weight. Immature rows never enter the snapshot.

Snapshots are content-addressed: the hash covers the input partitions' bytes, the build configuration
(maturity, history, feature settings) and the feature code itself, so the same inputs give the same hash
and a rerun is a no-op. Maturity, history and feature settings make a snapshot's lineage: a build's volume
check compares it with the latest earlier snapshot of its own lineage, never one of another maturity.
"""
from __future__ import annotations

import datetime as dt
import hashlib
import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq

from release.data.features import (_sql_list, connect, feature_code_digest, feature_columns, feature_query,
                                   nullable_features, window_relations)
from release.core.pipeline import Features, lineage_key, lineage_of, pipeline
from release.data import data_quality
from release.core.io import (file_sha256, list_partitions, location, make_dirs, owned_temp_dir, relative_name,
                             remove_stale_temp_dirs)
from release.data import label_completeness
from release.core.settings import code_version


# The columns the data contract reads from a snapshot (string columns stay out: they cost memory and
# no rule reads them); the schema check requires all of them.
def snapshot_checked_columns(features: Features | None = None) -> list[str]:
    return ["tx_id", *feature_columns(features), "explored", "propensity", "label", "weight"]
# The default evaluation window: the last this many days of the matured window (Workflow.eval_days).
EVAL_DAYS = 21
# A build writes into <snapshots>/.tmp-XXXX and renames it to the snapshot's hash once it passes its contract
SNAPSHOT_TEMP_PREFIX = ".tmp-"


class DataContractError(ValueError):
    """The training set broke its data contract; the build is refused and the last good snapshot kept."""


@dataclass(frozen=True)
class Snapshot:
    hash: str
    path: Path

    @property
    def data(self) -> Path:
        return self.path / "data.parquet"

    @property
    def manifest(self) -> dict:
        return json.loads((self.path / "manifest.json").read_text())


def _check_int(name: str, value: int, lo: int, hi: int) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or not lo <= value <= hi:
        raise ValueError(
            f"The '{name}' parameter of build_training_set must be an int in [{lo}, {hi}]. Got {value!r} instead.")


def utc(s: pd.Series) -> pd.Series:
    """Timestamps as tz-aware UTC (naive ones are taken to be UTC already)."""
    s = pd.to_datetime(s)
    return s.dt.tz_localize("UTC") if s.dt.tz is None else s.dt.tz_convert("UTC")


def label_sql(as_of: pd.Timestamp, maturity_days: int, rows: str = "f", known: str = "known") -> str:
    """SQL select-list items ``matured, label, weight`` for the relation aliased ``rows`` (tx_id, ts,
    action, propensity) left-joined to ``known`` (tx_ids whose dispute arrived before as-of): a row is
    labelled once matured (strictly older than the maturity window) and allowed; fraud iff its dispute
    is known; weight 1/propensity. The one definition of a label, used by the build and by
    ``matured_labels``."""
    cutoff = (as_of - pd.Timedelta(days=maturity_days)).isoformat()
    matured = f"({rows}.ts < TIMESTAMPTZ '{cutoff}')"
    labelled = f"({matured} AND {rows}.action = 'allow')"
    return (f"{matured} AS matured, "
            f"CASE WHEN {labelled} THEN CAST({known}.tx_id IS NOT NULL AS TINYINT) END AS label, "
            f"CASE WHEN {labelled} THEN 1.0 / {rows}.propensity END AS weight")


def known_disputes_sql(disputes: str, as_of: pd.Timestamp) -> str:
    return f"SELECT DISTINCT tx_id FROM {disputes} WHERE dispute_ts < TIMESTAMPTZ '{as_of.isoformat()}'"


def matured_labels(tx: pd.DataFrame, disputes: pd.DataFrame, as_of: pd.Timestamp, maturity_days: int) -> pd.DataFrame:
    """Label columns for ``tx`` (tx_id, ts, action, propensity) as known at ``as_of`` (naive timestamps
    are UTC), computed by the same SQL as the snapshot build.

    Returns tx_id, matured (older than the maturity window), label (1 fraud, 0 legit, NA when blocked or
    immature) and weight (1/propensity for labelled rows, NA otherwise), in the order of ``tx``.
    """
    con = connect(threads=1)
    con.register("tx_in", tx.assign(ts=utc(tx["ts"]), _pos=np.arange(len(tx)))[
        ["tx_id", "ts", "action", "propensity", "_pos"]])
    con.register("disputes_in", disputes.assign(dispute_ts=utc(disputes["dispute_ts"]))[["tx_id", "dispute_ts"]])
    as_of = pd.Timestamp(as_of)
    out = con.execute(
        f"WITH known AS ({known_disputes_sql('disputes_in', as_of)}) "
        f"SELECT f.tx_id, {label_sql(as_of, maturity_days)} FROM tx_in f LEFT JOIN known USING (tx_id) "
        "ORDER BY f._pos").df()
    con.close()
    return pd.DataFrame({"tx_id": out["tx_id"].to_numpy(), "matured": out["matured"].to_numpy(bool),
                         "label": out["label"].astype("Int8"), "weight": out["weight"].astype("Float64")})


def data_checks(df: pd.DataFrame, *, required_columns: list[str] | None = None, min_rows: int = 100,
                fraud_rate_band: tuple[float, float] = (1e-4, 0.2), previous_rows: int | None = None,
                max_volume_change: float = 0.5, features: Features | None = None) -> list[dict]:
    """The training set's data contract, one named check per rule (names in DATA_CHECKS, which release
    contracts reference), evaluated by Great Expectations: each with passed, the observed value, a
    sentence and the expectation that decided it."""
    return data_quality.data_checks(
        df, feature_columns=feature_columns(features), nullable_features=nullable_features(features),
        required_columns=required_columns,
        min_rows=min_rows, fraud_rate_band=fraud_rate_band, previous_rows=previous_rows,
        max_volume_change=max_volume_change)


def check_data_contract(df: pd.DataFrame, *, required_columns: list[str] | None = None, min_rows: int = 100,
                        fraud_rate_band: tuple[float, float] = (1e-4, 0.2), previous_rows: int | None = None,
                        max_volume_change: float = 0.5, features: Features | None = None) -> list[dict]:
    """Refuse a snapshot that is empty, one-class, outside the fraud-rate band, has nulls in features, or
    whose volume moved more than ``max_volume_change`` against the previous build. Returns the named
    checks (all passed) for the manifest."""
    checks = data_checks(df, required_columns=required_columns, min_rows=min_rows, fraud_rate_band=fraud_rate_band,
                         previous_rows=previous_rows, max_volume_change=max_volume_change, features=features)
    problems = [c["sentence"] for c in checks if not c["passed"]]
    # one reason per broken rule: a fraud rate that cannot be measured is already said by both_labels
    problems = [p for p in problems if not p.startswith("the matured fraud rate cannot")]
    if problems:
        raise DataContractError("Training-set data contract failed: " + "; ".join(problems) + ".")
    return checks


def _inputs(events: Path, start: dt.date, end: dt.date, as_of: dt.date, maturity_days: int,
            features: Features) -> list[list[str]]:
    """Every partition the build reads: transactions and decisions back to the oldest the features
    look at (the merchant fraud rate reaches furthest), disputes up to as-of; and the transactions and
    disputes the manifest's label completeness rests on (its cohorts, as_of - horizon - cohort days to
    as_of - horizon, which the features' reach already covers with the default windows)."""
    first = start - dt.timedelta(days=max(features.lookback_days, features.reach(maturity_days) + 1))
    cohort_end = as_of - dt.timedelta(days=label_completeness.HORIZON_DAYS)
    cohort_start = cohort_end - dt.timedelta(days=label_completeness.COHORT_DAYS)
    files = (list_partitions(events / "transactions", min(first, cohort_start), max(end, cohort_end))
             + list_partitions(events / "decisions", first, end)
             + list_partitions(events / "disputes", min(first, cohort_start), as_of))
    return [[relative_name(f, events), file_sha256(f)] for f in files]


@dataclass(frozen=True)
class SnapshotPlan:
    """What a build of the snapshot as of ``as_of`` reads and where it lands, before any row is computed: the
    matured window [start, end), the build configuration and input partitions its hash covers, and the days
    of the window that hold transactions (the units a partitioned build maps over)."""
    as_of: dt.date
    maturity_days: int
    history_days: int
    features: Features
    start: dt.date
    end: dt.date
    config: dict
    inputs: list
    snapshot: Snapshot
    days: tuple[dt.date, ...]

    @property
    def hash(self) -> str:
        return self.snapshot.hash


def plan_snapshot(events: str | Path, snapshots: str | Path, as_of: dt.date, *, maturity_days: int | None = None,
                  history_days: int | None = None, features: Features | None = None) -> SnapshotPlan:
    """The plan (window, configuration, inputs, hash, days) of the snapshot as of ``as_of``; maturity, history
    and feature settings default to the pipeline configuration's. The one definition of a snapshot's identity,
    used by the single-process build and by the day-partitioned one."""
    cfg = pipeline()
    maturity_days = cfg.labels.maturity_days if maturity_days is None else maturity_days
    history_days = cfg.training_set.history_days if history_days is None else history_days
    features = cfg.features if features is None else features
    if not isinstance(as_of, dt.date) or isinstance(as_of, dt.datetime):
        raise ValueError(f"The 'as_of' parameter of a training-set build must be a date. Got {as_of!r} instead.")
    _check_int("maturity_days", maturity_days, 1, 180)
    _check_int("history_days", history_days, maturity_days + 1, 3650)
    events, snapshots = location(events), Path(snapshots)
    start = as_of - dt.timedelta(days=history_days)
    end = as_of - dt.timedelta(days=maturity_days)
    lineage = lineage_of(maturity_days, history_days, features)
    config = {"as_of": as_of.isoformat(), "maturity_days": maturity_days, "history_days": history_days,
              "features": features.model_dump(mode="json"), "feature_code": feature_code_digest(),
              "lineage": lineage_key(lineage)}
    inputs = _inputs(events, start, end, as_of, maturity_days, features)
    digest = hashlib.sha256(json.dumps({"config": config, "inputs": inputs}, sort_keys=True).encode()).hexdigest()
    days = tuple(sorted({dt.date.fromisoformat(f.parent.name.removeprefix("day="))
                         for f in list_partitions(events / "transactions", start, end)}))
    return SnapshotPlan(as_of=as_of, maturity_days=maturity_days, history_days=history_days, features=features,
                        start=start, end=end, config=config, inputs=inputs,
                        snapshot=Snapshot(hash=digest, path=snapshots / digest), days=days)


def _rows_sql(events: Path, plan: SnapshotPlan, start: dt.date, end: dt.date) -> str:
    """The SELECT of the snapshot's rows of the days [start, end) of ``plan``'s window: the features (the one
    definition, release.data.features) and the labels as known at as-of. The window relations must be
    registered in ``con`` (``window_relations``)."""
    dispute_files = list_partitions(events / "disputes", start, plan.as_of)
    disputes = (f"read_parquet({_sql_list(dispute_files)})" if dispute_files else
                "(SELECT CAST(NULL AS BIGINT) AS tx_id, CAST(NULL AS TIMESTAMPTZ) AS dispute_ts WHERE false)")
    at = pd.Timestamp(plan.as_of, tz="UTC")
    return f"""WITH known AS ({known_disputes_sql(disputes, at)})
        SELECT f.*, {label_sql(at, plan.maturity_days)}
        FROM ({feature_query(events, start, end, plan.maturity_days, plan.features)}) f LEFT JOIN known USING (tx_id)"""


def build_training_set(events: str | Path, snapshots: str | Path, as_of: dt.date, *, maturity_days: int | None = None,
                       history_days: int | None = None, features: Features | None = None,
                       previous_rows: int | None = None, memory_limit: str = "3GB") -> Snapshot:
    """Build (or find) the snapshot of matured, labelled rows with ts in
    [as_of - history_days, as_of - maturity_days). Idempotent: same inputs, same hash, same folder.
    Maturity, history and feature settings default to the pipeline configuration's.

    The rows stay in DuckDB (spilling to disk past ``memory_limit``) from the feature query to the
    Parquet file; only the columns the labels and the data contract need come into pandas."""
    events, snapshots = location(events), Path(snapshots)
    plan = plan_snapshot(events, snapshots, as_of, maturity_days=maturity_days, history_days=history_days,
                         features=features)
    snap = plan.snapshot
    if (snap.path / "manifest.json").exists():
        return snap
    # a killed build's temp folder is removed here; one another build is still writing is left alone
    remove_stale_temp_dirs(snapshots, SNAPSHOT_TEMP_PREFIX)
    with owned_temp_dir(snapshots, SNAPSHOT_TEMP_PREFIX) as tmp:
        con = connect(memory_limit=memory_limit)
        con.execute(f"SET temp_directory = '{tmp / 'spill'}'")
        with window_relations(con, events, plan.start, plan.end, plan.features):
            con.execute(f"CREATE TEMP TABLE snap AS {_rows_sql(events, plan, plan.start, plan.end)}")
        con.execute("ALTER TABLE snap DROP COLUMN matured")
        _land(con, tmp, events, plan, previous_rows)
    return snap


# ---- the day-partitioned build: one task a day (each reading its own lookback), then one that assembles ----

DAY_PARTITIONS = ".days"  # <snapshots>/.days/<snapshot hash>/day=YYYY-MM-DD.parquet, until the snapshot lands


def day_partition_path(plan: SnapshotPlan, day: dt.date) -> Path:
    return plan.snapshot.path.parent / DAY_PARTITIONS / plan.hash / f"day={day.isoformat()}.parquet"


def build_day_partition(events: str | Path, snapshots: str | Path, as_of: dt.date, day: dt.date, *,
                        maturity_days: int | None = None, history_days: int | None = None,
                        features: Features | None = None, memory_limit: str = "2GB",
                        plan: SnapshotPlan | None = None) -> Path | None:
    """One day of the snapshot as of ``as_of``: the rows of transactions of ``day`` with the same features and
    labels the single-process build gives them, read from the day's own lookback (the window features' days
    before it, the merchant fraud rate's reach, the disputes up to as-of); only the card's first-seen time reads
    further back, to the snapshot window's lookback, as the single-process build's does (``first_seen_from``
    of ``window_relations``). Written to a temp file and renamed into ``day_partition_path``: a rerun finds
    it (or the landed snapshot) and writes nothing. Returns the partition, or None when the snapshot has
    landed already. ``plan``: the caller's ``plan_snapshot`` of the same snapshot, so its inputs are not
    hashed again."""
    events, snapshots = location(events), Path(snapshots)
    plan = plan or plan_snapshot(events, snapshots, as_of, maturity_days=maturity_days, history_days=history_days,
                                 features=features)
    if not isinstance(day, dt.date) or isinstance(day, dt.datetime) or not plan.start <= day < plan.end:
        raise ValueError(f"The 'day' parameter of build_day_partition must be a date in the matured window of "
                         f"the snapshot as of {as_of} ({plan.start} .. {plan.end - dt.timedelta(days=1)}). "
                         f"Got {day!r} instead.")
    if (plan.snapshot.path / "manifest.json").exists():
        return None
    target = day_partition_path(plan, day)
    if target.exists():
        return target
    make_dirs(target.parent)
    with owned_temp_dir(target.parent, SNAPSHOT_TEMP_PREFIX) as tmp:
        con = connect(threads=1, memory_limit=memory_limit)
        con.execute(f"SET temp_directory = '{tmp / 'spill'}'")
        end = day + dt.timedelta(days=1)
        first_seen_from = plan.start - dt.timedelta(days=plan.features.lookback_days)
        with window_relations(con, events, day, end, plan.features, first_seen_from=first_seen_from):
            con.execute(f"COPY (SELECT * EXCLUDE (matured) FROM ({_rows_sql(events, plan, day, end)})) "
                        f"TO '{tmp / 'part.parquet'}' (FORMAT parquet, COMPRESSION zstd)")
        con.close()
        os.replace(tmp / "part.parquet", target)  # one rename: the partition is there whole or not at all
    return target


def assemble_snapshot(events: str | Path, snapshots: str | Path, as_of: dt.date, *, maturity_days: int | None = None,
                      history_days: int | None = None, features: Features | None = None,
                      previous_rows: int | None = None, memory_limit: str = "3GB",
                      plan: SnapshotPlan | None = None) -> Snapshot:
    """The snapshot as of ``as_of`` from its day partitions (``build_day_partition``, every day of its window
    that holds transactions): the same rows in the same order, the same data contract, manifest and hash as
    ``build_training_set``. Idempotent: a landed snapshot is returned as it is. The partitions are removed
    once the snapshot has landed. A missing partition is an error naming the days. ``plan``: as for
    ``build_day_partition``."""
    events, snapshots = location(events), Path(snapshots)
    plan = plan or plan_snapshot(events, snapshots, as_of, maturity_days=maturity_days, history_days=history_days,
                                 features=features)
    snap = plan.snapshot
    parts_dir = snapshots / DAY_PARTITIONS / plan.hash
    if not (snap.path / "manifest.json").exists():
        if not plan.days:
            feature_query(events, plan.start, plan.end, plan.maturity_days, plan.features)  # the clear error
        files = [day_partition_path(plan, d) for d in plan.days]
        missing = [d.isoformat() for d, f in zip(plan.days, files) if not f.exists()]
        if missing:
            raise FileNotFoundError(
                f"The snapshot as of {as_of} cannot be assembled: {len(missing)} of its {len(files)} day partitions "
                f"are missing in {parts_dir} ({', '.join(missing[:5])}{', ...' if len(missing) > 5 else ''}). "
                "Build them first (build_day_partition; the training_set_backfill DAG's build_day tasks).")
        remove_stale_temp_dirs(snapshots, SNAPSHOT_TEMP_PREFIX)
        with owned_temp_dir(snapshots, SNAPSHOT_TEMP_PREFIX) as tmp:
            con = connect(memory_limit=memory_limit)
            con.execute(f"SET temp_directory = '{tmp / 'spill'}'")
            con.execute(f"CREATE TEMP TABLE snap AS SELECT * FROM read_parquet({_sql_list(files)})")
            _land(con, tmp, events, plan, previous_rows)
    shutil.rmtree(parts_dir, ignore_errors=True)
    return snap


def _land(con, tmp: Path, events: Path, plan: SnapshotPlan, previous_rows: int | None) -> None:
    """From the rows in ``con``'s table ``snap`` (labels attached, ``matured`` dropped): the sorted Parquet
    file, the data contract, the label completeness and the manifest in ``tmp``, then ``tmp`` renamed to the
    snapshot's folder. Closes ``con``."""
    features, start, end, as_of = plan.features, plan.start, plan.end, plan.as_of
    rows, labelled, frauds, blocked, explored = con.execute(
        "SELECT count(*), count(label), count(*) FILTER (WHERE label = 1),"
        " count(*) FILTER (WHERE action = 'block'), count(*) FILTER (WHERE explored) FROM snap").fetchone()
    labelled_per_day = dict(con.execute("SELECT day, count(label) FROM snap GROUP BY day").fetchall())
    # one sort, where the rows land: the same inputs give the same file, row for row
    con.execute(f"COPY (SELECT * FROM snap ORDER BY ts, tx_id) TO '{tmp / 'data.parquet'}' "
                "(FORMAT parquet, COMPRESSION zstd)")
    con.close()  # DuckDB's memory is released before the contract loads its columns
    # the data contract reads numbers only (Arrow to pandas: no per-value Python objects); a failure
    # raises here and the temp folder goes: nothing lands, the last good snapshot stays
    checked_columns = snapshot_checked_columns(features)
    checked = pq.read_table(tmp / "data.parquet", columns=checked_columns).to_pandas()
    checks = check_data_contract(checked, required_columns=checked_columns, previous_rows=previous_rows,
                                 features=features)
    del checked
    # how many of the eventual disputes of the matured window, and of its default evaluation window,
    # had arrived at as_of: a description of the labels, not part of the hash (its inputs are hashed)
    completeness = label_completeness.snapshot_entry(
        events, as_of, {"matured_window": (start, end),
                        "evaluation_window": (max(start, end - dt.timedelta(days=EVAL_DAYS)), end)},
        day_counts=labelled_per_day, weighted_by="labelled rows per day",
        horizon_days=label_completeness.HORIZON_DAYS, cohort_days=label_completeness.COHORT_DAYS)
    completeness["evaluation_days"] = EVAL_DAYS
    manifest = {
        "hash": plan.hash, "config": plan.config, "inputs": plan.inputs, "code_version": code_version(),
        "rows": rows, "labelled_rows": labelled, "frauds": frauds, "blocked_rows": blocked,
        "explored_rows": explored,
        "window": {"start": start.isoformat(), "end": end.isoformat()},
        "label_maturity_days": plan.maturity_days,
        "label_completeness": completeness,
        "data_contract": checks,
    }
    shutil.rmtree(tmp / "spill", ignore_errors=True)
    (tmp / "manifest.json").write_text(json.dumps(manifest, indent=2, sort_keys=True))
    try:
        tmp.rename(plan.snapshot.path)
    except OSError:
        if not (plan.snapshot.path / "manifest.json").exists():  # lost a race to an identical build: fine
            raise


def snapshot_settings(manifest: dict) -> tuple[Features, int]:
    """The feature settings and label maturity a snapshot was built with: whoever scores for its model
    (shadow, the scoring service) computes features the same way."""
    cfg = manifest["config"]
    feats = Features.model_validate(cfg["features"]) if "features" in cfg else Features()
    return feats, int(cfg["maturity_days"])


def model_settings(snapshot_hash: str | None) -> tuple[Features, int]:
    """The feature settings and label maturity of the snapshot a model was trained on (the pipeline
    configuration's when the snapshot is not here)."""
    from release.core.settings import paths

    manifest = paths().snapshots / snapshot_hash / "manifest.json" if snapshot_hash else None
    if manifest is not None and manifest.exists():
        return snapshot_settings(json.loads(manifest.read_text()))
    return pipeline().features, pipeline().labels.maturity_days


def configured_lineage() -> str:
    """The lineage key of the snapshots the pipeline configuration builds."""
    return lineage_key(pipeline().lineage())


def latest_snapshot(snapshots: str | Path, before: dt.date | None = None, lineage: str | None = None) -> Snapshot | None:
    """The most recent good snapshot by as-of date (builds that failed their contract never land);
    with ``before``, the most recent one whose as-of date is earlier than it; with ``lineage``, only
    snapshots of that lineage (same maturity, history and feature settings)."""
    best = None
    for m in Path(snapshots).glob("*/manifest.json"):
        if m.parent.name.startswith("."):  # an in-flight (or crashed) build's temp folder has not landed
            continue
        man = json.loads(m.read_text())
        if lineage is not None and man["config"].get("lineage") != lineage:
            continue
        key = man["config"]["as_of"]
        if before is not None and key >= before.isoformat():
            continue
        if best is None or key > best[0]:
            best = (key, Snapshot(hash=man["hash"], path=m.parent))
    return best[1] if best else None


def resolve_snapshot(snapshots: str | Path, selector: str) -> Snapshot:
    """A training workflow's snapshot selector: "latest" (the most recent good build of the configured
    lineage: the pipeline configuration's maturity, history and feature settings), a snapshot hash, or
    "as_of:YYYY-MM-DD" (the most recent build of that lineage before that date)."""
    snapshots = Path(snapshots)
    if selector == "latest":
        snap = latest_snapshot(snapshots, lineage=configured_lineage())
    elif selector.startswith("as_of:"):
        snap = latest_snapshot(snapshots, before=dt.date.fromisoformat(selector[6:]), lineage=configured_lineage())
    else:
        snap = Snapshot(hash=selector, path=snapshots / selector)
        if not (snap.path / "manifest.json").exists():
            snap = None
    if snap is None:
        raise FileNotFoundError(f"No training-set snapshot matches {selector!r} in {snapshots}. Build one with "
                                "`fraudcd training-set --as-of YYYY-MM-DD` (the daily training_set DAG does it).")
    return snap
