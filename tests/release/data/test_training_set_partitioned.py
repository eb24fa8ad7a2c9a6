"""The day-partitioned training-set build (one task a day, then an assembly) gives the single-process build's
snapshot: same hash, same manifest, the same rows with the same values, bit for bit. The world is long enough
(75 days before as-of with a 60-day lookback) that a day's own lookback starts after cards were first seen, so the
card-age feature needs the snapshot window's first-seen reach; amounts summed over sliding windows would differ
in their last bits without exact sums. Partitions land whole, reruns write nothing, missing ones are named."""
from __future__ import annotations

import datetime as dt

import pandas as pd
import pyarrow.parquet as pq
import pytest

MATURITY, HISTORY = 5, 15  # the windows the `long_world` fits (tests/release/conftest.py)


def _partitioned(events, snaps, as_of, **kw):
    from release.data.training_set import assemble_snapshot, build_day_partition, plan_snapshot

    plan = plan_snapshot(events, snaps, as_of, maturity_days=MATURITY, history_days=HISTORY)
    parts = [build_day_partition(events, snaps, as_of, d, maturity_days=MATURITY, history_days=HISTORY)
             for d in plan.days]
    return plan, parts, assemble_snapshot(events, snaps, as_of, maturity_days=MATURITY, history_days=HISTORY, **kw)


def test_the_assembled_snapshot_is_the_single_process_one_value_for_value(long_world, tmp_path):
    from release.data.features import feature_columns
    from release.data.training_set import build_training_set

    cfg, events, as_of = long_world
    single = build_training_set(events, tmp_path / "single", as_of, maturity_days=MATURITY, history_days=HISTORY)
    plan, parts, assembled = _partitioned(events, tmp_path / "parts", as_of)
    assert len(plan.days) == HISTORY - MATURITY and all(p is not None for p in parts)
    assert assembled.hash == single.hash
    assert assembled.manifest == single.manifest  # counts, data contract, label completeness: all of it
    a, b = pq.read_table(single.data), pq.read_table(assembled.data)
    assert a.num_rows > 2000 and a.schema == b.schema
    for column in a.column_names:  # exact equality: no tolerance on any feature, label or weight
        assert a[column].equals(b[column]), column
    assert set(feature_columns()) <= set(a.column_names)
    # the partitions went once the snapshot landed
    assert not (tmp_path / "parts" / ".days").exists() or not any((tmp_path / "parts" / ".days").iterdir())


def test_the_world_needs_the_snapshot_windows_first_seen_reach(long_world):
    """Without it the test above could not fail on card age: here some rows' cards were first seen (in the
    snapshot window's lookback) before their own day's lookback starts, and again within the age cap of the
    row's own lookback, so a day built from its own lookback alone would give them a younger card."""
    from release.core.pipeline import pipeline

    cfg, events, as_of = long_world
    f = pipeline().features
    tx = pd.read_parquet(events / "transactions", columns=["card_id", "ts"])
    tx["ts"] = pd.to_datetime(tx["ts"], utc=True)
    start = pd.Timestamp(as_of - dt.timedelta(days=HISTORY), tz="UTC")
    rows = tx[(tx.ts >= start) & (tx.ts < pd.Timestamp(as_of - dt.timedelta(days=MATURITY), tz="UTC"))]
    first = tx[tx.ts >= start - pd.Timedelta(days=f.lookback_days)].groupby("card_id")["ts"].min()
    own_start = rows.ts.dt.floor("D") - pd.Timedelta(days=f.lookback_days)
    seen_since_own = rows.merge(tx.rename(columns={"ts": "t2"}), on="card_id")
    seen_since_own = seen_since_own[(seen_since_own.t2 >= seen_since_own.ts.dt.floor("D")
                                     - pd.Timedelta(days=f.lookback_days))]
    own_first = seen_since_own.groupby(["card_id", "ts"])["t2"].min()
    r = rows.set_index(["card_id", "ts"]).index
    differs = (first.reindex(r.get_level_values(0)).to_numpy() < (own_start.to_numpy())) & (
        (r.get_level_values(1) - own_first.reindex(r).to_numpy()) < pd.Timedelta(days=f.card_age_cap_days))
    assert differs.sum() >= 5


def test_a_day_partition_lands_whole_and_a_rerun_writes_nothing(long_world, tmp_path):
    from release.data.training_set import assemble_snapshot, build_day_partition, plan_snapshot

    cfg, events, as_of = long_world
    snaps = tmp_path / "snaps"
    plan = plan_snapshot(events, snaps, as_of, maturity_days=MATURITY, history_days=HISTORY)
    day = plan.days[3]
    part = build_day_partition(events, snaps, as_of, day, maturity_days=MATURITY, history_days=HISTORY)
    assert part.name == f"day={day}.parquet" and part.parent.name == plan.hash
    assert not [p for p in part.parent.iterdir() if p.name.startswith(".")]  # no temp left behind
    rows = pq.read_table(part)
    assert rows.num_rows > 100 and set(pd.Series(rows["day"].to_pylist()).unique()) == {day}
    assert "matured" not in rows.column_names and {"label", "weight"} <= set(rows.column_names)
    before = part.stat().st_mtime_ns
    assert build_day_partition(events, snaps, as_of, day, maturity_days=MATURITY, history_days=HISTORY) == part
    assert part.stat().st_mtime_ns == before

    # the others are missing: the assembly names them and lands nothing
    with pytest.raises(FileNotFoundError, match=rf"{HISTORY - MATURITY - 1} of its {HISTORY - MATURITY} day "
                                                rf"partitions are missing .*\({plan.days[0]}, {plan.days[1]}"):
        assemble_snapshot(events, snaps, as_of, maturity_days=MATURITY, history_days=HISTORY)
    assert not (plan.snapshot.path / "manifest.json").exists()

    for d in plan.days:
        build_day_partition(events, snaps, as_of, d, maturity_days=MATURITY, history_days=HISTORY)
    snap = assemble_snapshot(events, snaps, as_of, maturity_days=MATURITY, history_days=HISTORY)
    landed = (snap.path / "manifest.json").stat().st_mtime_ns
    # after the snapshot landed: a rerun of a day's task or of the assembly writes nothing
    assert build_day_partition(events, snaps, as_of, day, maturity_days=MATURITY, history_days=HISTORY) is None
    assert assemble_snapshot(events, snaps, as_of, maturity_days=MATURITY, history_days=HISTORY) == snap
    assert (snap.path / "manifest.json").stat().st_mtime_ns == landed


def test_bad_days_and_dates_say_what_is_allowed(long_world, tmp_path):
    from release.data.training_set import build_day_partition, plan_snapshot

    cfg, events, as_of = long_world
    first, last = as_of - dt.timedelta(days=HISTORY), as_of - dt.timedelta(days=MATURITY + 1)
    with pytest.raises(ValueError, match=rf"must be a date in the matured window of the snapshot as of {as_of} "
                                         rf"\({first} \.\. {last}\)\. Got datetime.date\({as_of.year}, "):
        build_day_partition(events, tmp_path, as_of, as_of, maturity_days=MATURITY, history_days=HISTORY)
    with pytest.raises(ValueError, match=r"'as_of' parameter of a training-set build must be a date\. "
                                         r"Got '2026-03-01' instead"):
        plan_snapshot(events, tmp_path, "2026-03-01", maturity_days=MATURITY, history_days=HISTORY)
    assert not list(tmp_path.iterdir())  # nothing written
