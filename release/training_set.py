"""The training-set snapshot: point-in-time features, matured labels, a data contract and a content hash.

A transaction's label counts only once it is older than the maturity window (default 60 days): it is
fraud if a dispute arrived before the snapshot's as-of time. Blocked transactions were never disputed,
so they carry no label (censoring); exploration rows (would-be blocks let through) carry their
inverse-propensity weight. Immature rows never enter the snapshot.

Snapshots are content-addressed: the hash covers the input partitions' bytes, the build configuration
and the feature-code version, so the same inputs give the same hash and a rerun is a no-op.
"""
from __future__ import annotations

import datetime as dt
import hashlib
import json
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

import duckdb
import numpy as np
import pandas as pd

from release.features import FEATURE_COLUMNS, FEATURES_VERSION, LOOKBACK_DAYS, compute_features
from release.io import atomic_write_parquet, file_sha256, list_partitions
from release.settings import code_version


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


def matured_labels(tx: pd.DataFrame, disputes: pd.DataFrame, as_of: pd.Timestamp, maturity_days: int) -> pd.DataFrame:
    """Label columns for ``tx`` (tx_id, ts, action, propensity) as known at ``as_of``.

    Returns tx_id, matured (older than the maturity window), label (1 fraud, 0 legit, NA when blocked or
    immature) and weight (1/propensity for labelled rows, NA otherwise).
    """
    cutoff = as_of - pd.Timedelta(days=maturity_days)
    known = disputes.loc[utc(disputes["dispute_ts"]) < as_of, "tx_id"]
    matured = (utc(tx["ts"]) < cutoff).to_numpy()
    allowed = (tx["action"] == "allow").to_numpy()
    fraud = tx["tx_id"].isin(known).to_numpy()
    labelled = matured & allowed
    label = pd.array(np.where(labelled, fraud.astype(int), 0), dtype="Int8")
    label[~labelled] = pd.NA
    weight = pd.array(1.0 / tx["propensity"].to_numpy(), dtype="Float64")
    weight[~labelled] = pd.NA
    return pd.DataFrame({"tx_id": tx["tx_id"].to_numpy(), "matured": matured, "label": label, "weight": weight})


DATA_CHECKS = ("min_rows", "both_labels", "fraud_rate_band", "no_null_features", "volume_change")


def data_checks(df: pd.DataFrame, *, min_rows: int = 100, fraud_rate_band: tuple[float, float] = (1e-4, 0.2),
                previous_rows: int | None = None, max_volume_change: float = 0.5) -> list[dict]:
    """The training set's data contract, one named check per rule (names in DATA_CHECKS, which release
    contracts reference): each with passed, the observed value and a sentence."""
    out = []

    def add(name, passed, observed, sentence):
        out.append({"name": name, "passed": bool(passed), "observed": observed, "sentence": sentence})

    add("min_rows", len(df) >= min_rows, len(df),
        f"the snapshot has {len(df)} rows" + ("" if len(df) >= min_rows else f"; at least {min_rows} are required"))
    labelled = df[df["label"].notna()]
    classes = sorted(set(labelled["label"].astype(int).unique().tolist()))
    add("both_labels", classes == [0, 1], classes,
        f"both labels must be present among matured, allowed rows; found {classes}")
    rate = float(labelled["label"].astype(float).mean()) if len(labelled) else None
    lo, hi = fraud_rate_band
    if rate is None or classes != [0, 1]:
        add("fraud_rate_band", False, rate, "the matured fraud rate cannot be measured without both labels")
    else:
        ok = lo <= rate <= hi
        add("fraud_rate_band", ok, rate, f"the matured fraud rate is {rate:.4%}, "
            + ("inside" if ok else "outside") + f" the allowed band {lo:.4%} .. {hi:.4%}")
    nulls = [c for c in FEATURE_COLUMNS if c != "category_code" and df[c].isna().any()]
    add("no_null_features", not nulls, nulls,
        f"features that must never be null have nulls: {', '.join(nulls)}" if nulls else "no nulls in features")
    if previous_rows:
        change = abs(len(df) - previous_rows) / previous_rows
        ok = change <= max_volume_change
        add("volume_change", ok, change, f"row count moved {change:.0%} against the previous build "
            f"({previous_rows} -> {len(df)})" + ("" if ok else f", more than the allowed {max_volume_change:.0%}"))
    else:
        add("volume_change", True, None, "no previous build to compare volume with")
    return out


def check_data_contract(df: pd.DataFrame, *, min_rows: int = 100, fraud_rate_band: tuple[float, float] = (1e-4, 0.2),
                        previous_rows: int | None = None, max_volume_change: float = 0.5) -> list[dict]:
    """Refuse a snapshot that is empty, one-class, outside the fraud-rate band, has nulls in features, or
    whose volume moved more than ``max_volume_change`` against the previous build. Returns the named
    checks (all passed) for the manifest."""
    checks = data_checks(df, min_rows=min_rows, fraud_rate_band=fraud_rate_band, previous_rows=previous_rows,
                         max_volume_change=max_volume_change)
    problems = [c["sentence"] for c in checks if not c["passed"]]
    # one reason per broken rule: a fraud rate that cannot be measured is already said by both_labels
    problems = [p for p in problems if not p.startswith("the matured fraud rate cannot")]
    if problems:
        raise DataContractError("Training-set data contract failed: " + "; ".join(problems) + ".")
    return checks


def _inputs(events: Path, start: dt.date, end: dt.date, as_of: dt.date) -> list[list[str]]:
    files = (list_partitions(events / "transactions", start - dt.timedelta(days=LOOKBACK_DAYS), end)
             + list_partitions(events / "decisions", start, end)
             + list_partitions(events / "disputes", start, as_of))
    return [[str(f.relative_to(events)), file_sha256(f)] for f in files]


def build_training_set(events: str | Path, snapshots: str | Path, as_of: dt.date, *, maturity_days: int = 60,
                       history_days: int = 120, previous_rows: int | None = None) -> Snapshot:
    """Build (or find) the snapshot of matured, labelled rows with ts in
    [as_of - history_days, as_of - maturity_days). Idempotent: same inputs, same hash, same folder."""
    _check_int("maturity_days", maturity_days, 1, 180)
    _check_int("history_days", history_days, maturity_days + 1, 3650)
    events, snapshots = Path(events), Path(snapshots)
    start = as_of - dt.timedelta(days=history_days)
    end = as_of - dt.timedelta(days=maturity_days)
    config = {"as_of": as_of.isoformat(), "maturity_days": maturity_days, "history_days": history_days,
              "features_version": FEATURES_VERSION}
    inputs = _inputs(events, start, end, as_of)
    digest = hashlib.sha256(json.dumps({"config": config, "inputs": inputs}, sort_keys=True).encode()).hexdigest()
    snap = Snapshot(hash=digest, path=snapshots / digest)
    if (snap.path / "manifest.json").exists():
        return snap
    con = duckdb.connect()
    feats = compute_features(events, start, end, con=con)
    dispute_files = list_partitions(events / "disputes", start, as_of)
    if dispute_files:
        from release.features import _sql_list

        disputes = con.execute(f"SELECT tx_id, dispute_ts FROM read_parquet({_sql_list(dispute_files)})").df()
    else:
        disputes = pd.DataFrame({"tx_id": pd.Series(dtype="int64"),
                                 "dispute_ts": pd.Series(dtype="datetime64[us, UTC]")})
    labels = matured_labels(feats, disputes, pd.Timestamp(as_of, tz="UTC"), maturity_days)
    df = feats.merge(labels.drop(columns="matured"), on="tx_id", how="left")
    checks = check_data_contract(df, previous_rows=previous_rows)
    manifest = {
        "hash": digest, "config": config, "inputs": inputs, "code_version": code_version(),
        "rows": len(df), "labelled_rows": int(df["label"].notna().sum()),
        "frauds": int((df["label"] == 1).sum()), "blocked_rows": int((df["action"] == "block").sum()),
        "explored_rows": int(df["explored"].sum()),
        "window": {"start": start.isoformat(), "end": end.isoformat()},
        "label_maturity_days": maturity_days,
        "data_contract": checks,
    }
    snapshots.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=snapshots, prefix=".tmp-"))
    try:
        atomic_write_parquet(df, tmp / "data.parquet")
        (tmp / "manifest.json").write_text(json.dumps(manifest, indent=2, sort_keys=True))
        try:
            tmp.rename(snap.path)
        except OSError:
            if not (snap.path / "manifest.json").exists():  # lost a race to an identical build: fine
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return snap


def latest_snapshot(snapshots: str | Path, before: dt.date | None = None) -> Snapshot | None:
    """The most recent good snapshot by as-of date (builds that failed their contract never land);
    with ``before``, the most recent one whose as-of date is earlier than it."""
    best = None
    for m in Path(snapshots).glob("*/manifest.json"):
        if m.parent.name.startswith("."):  # an in-flight (or crashed) build's temp folder has not landed
            continue
        man = json.loads(m.read_text())
        key = man["config"]["as_of"]
        if before is not None and key >= before.isoformat():
            continue
        if best is None or key > best[0]:
            best = (key, Snapshot(hash=man["hash"], path=m.parent))
    return best[1] if best else None
