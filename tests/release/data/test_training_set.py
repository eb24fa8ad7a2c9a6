"""Training-set snapshot: matured labels, the data contract, content hashing and idempotence."""
from __future__ import annotations

import datetime as dt
import json
import shutil

import numpy as np
import pandas as pd
import pytest

from release.data.features import FEATURE_COLUMNS
from release.core.io import write_partition
from release.data.training_set import (
    DataContractError,
    Snapshot,
    build_training_set,
    check_data_contract,
    latest_snapshot,
    matured_labels,
)

NOW_TS = pd.Timestamp("2026-06-01", tz="UTC")
DAY = pd.Timedelta(days=1)


def _tx(rows):
    return pd.DataFrame(rows, columns=["tx_id", "ts", "action", "propensity"])


def _labels(tx, disputes, maturity_days=60):
    return matured_labels(tx, disputes, NOW_TS, maturity_days).set_index("tx_id")


def _disputes(rows):
    return pd.DataFrame(rows, columns=["tx_id", "dispute_ts"])


# ---------------------------------------------------------------- matured_labels

def test_maturity_boundary_is_strict_a_transaction_exactly_60_days_old_is_not_yet_matured():
    # Rule in the code: matured iff ts < as_of - maturity_days (strictly older than the window), which
    # matches the snapshot window [as_of - history, as_of - maturity) whose end is exclusive.
    tx = _tx([
        (59, NOW_TS - 59 * DAY, "allow", 1.0),
        (60, NOW_TS - 60 * DAY, "allow", 1.0),
        (600, NOW_TS - 60 * DAY - pd.Timedelta(seconds=1), "allow", 1.0),
        (61, NOW_TS - 61 * DAY, "allow", 1.0),
    ])
    out = _labels(tx, _disputes([]))
    assert out["matured"].to_dict() == {59: False, 60: False, 600: True, 61: True}
    assert out.loc[59, "label"] is pd.NA and out.loc[60, "label"] is pd.NA
    assert out.loc[600, "label"] == 0 and out.loc[61, "label"] == 0


def test_label_is_fraud_only_if_the_dispute_arrived_before_as_of():
    tx = _tx([
        (1, NOW_TS - 90 * DAY, "allow", 1.0),   # disputed well before as_of
        (2, NOW_TS - 90 * DAY, "allow", 1.0),   # disputed after as_of: not known yet
        (3, NOW_TS - 90 * DAY, "allow", 1.0),   # disputed exactly at as_of: not strictly before
        (4, NOW_TS - 90 * DAY, "allow", 1.0),   # never disputed
    ])
    disputes = _disputes([
        (1, NOW_TS - 10 * DAY),
        (2, NOW_TS + pd.Timedelta(hours=1)),
        (3, NOW_TS),
    ])
    out = _labels(tx, disputes)
    assert out["label"].astype(int).to_dict() == {1: 1, 2: 0, 3: 0, 4: 0}


def test_blocked_rows_are_never_labelled_even_if_a_dispute_exists():
    tx = _tx([
        (1, NOW_TS - 90 * DAY, "block", 0.995),
        (2, NOW_TS - 90 * DAY, "allow", 1.0),
    ])
    out = _labels(tx, _disputes([(1, NOW_TS - 50 * DAY), (2, NOW_TS - 50 * DAY)]))
    assert out.loc[1, "matured"]  # it is old enough, but censored
    assert out.loc[1, "label"] is pd.NA and out.loc[1, "weight"] is pd.NA
    assert out.loc[2, "label"] == 1


def test_immature_rows_get_no_label_even_when_already_disputed():
    tx = _tx([(1, NOW_TS - 20 * DAY, "allow", 1.0)])
    out = _labels(tx, _disputes([(1, NOW_TS - 5 * DAY)]))
    assert out.loc[1, "label"] is pd.NA and out.loc[1, "weight"] is pd.NA


def test_weight_is_inverse_propensity_for_labelled_rows():
    tx = _tx([
        (1, NOW_TS - 90 * DAY, "allow", 1.0),     # ordinary allow
        (2, NOW_TS - 90 * DAY, "allow", 0.005),   # exploration: a would-be block let through
        (3, NOW_TS - 90 * DAY, "allow", 0.25),
    ])
    out = _labels(tx, _disputes([(2, NOW_TS - 30 * DAY)]))
    assert out["weight"].astype(float).to_dict() == pytest.approx({1: 1.0, 2: 200.0, 3: 4.0})
    assert out.loc[2, "label"] == 1


def test_naive_timestamps_are_read_as_utc():
    aware = _tx([(1, NOW_TS - 60 * DAY - pd.Timedelta(seconds=1), "allow", 1.0),
                 (2, NOW_TS - 60 * DAY + pd.Timedelta(seconds=1), "allow", 1.0)])
    naive = aware.assign(ts=aware["ts"].dt.tz_localize(None))
    disputes = _disputes([(1, NOW_TS - pd.Timedelta(seconds=1))])
    naive_disputes = disputes.assign(dispute_ts=disputes["dispute_ts"].dt.tz_localize(None))
    a = _labels(aware, disputes)
    n = _labels(naive, naive_disputes)
    pd.testing.assert_frame_equal(a, n)
    assert a.loc[1, "label"] == 1 and a.loc[2, "label"] is pd.NA


# ---------------------------------------------------------------- check_data_contract

def _contract_frame(n=200, frauds=4, blocked=0):
    df = pd.DataFrame({c: np.ones(n) for c in FEATURE_COLUMNS})
    label = pd.array([1] * frauds + [0] * (n - frauds - blocked) + [pd.NA] * blocked, dtype="Int8")
    df["label"] = label
    return df


def test_a_healthy_frame_passes_the_contract():
    check_data_contract(_contract_frame())  # no exception


def test_contract_refuses_too_few_rows():
    with pytest.raises(DataContractError, match="the snapshot has 50 rows; at least 100 are required"):
        check_data_contract(_contract_frame(n=50, frauds=2))


def test_contract_refuses_one_class():
    with pytest.raises(DataContractError, match=r"both labels must be present .*; found \[0\]"):
        check_data_contract(_contract_frame(frauds=0))


def test_contract_refuses_a_fraud_rate_outside_the_band():
    # 60 frauds among 200 labelled rows is a 30% fraud rate, above the 20% ceiling
    with pytest.raises(DataContractError, match=r"matured fraud rate is 30\.0000%, outside the allowed band"):
        check_data_contract(_contract_frame(frauds=60))


def test_fraud_rate_counts_only_labelled_rows():
    # 4 frauds among 150 labelled rows (50 blocked, unlabelled): 2.7%, inside the band
    check_data_contract(_contract_frame(n=200, frauds=4, blocked=50))
    # 35 frauds among 150 labelled rows is 23.3% (above 20%) although 35/200 = 17.5% would pass
    with pytest.raises(DataContractError, match=r"fraud rate is 23\.3333%"):
        check_data_contract(_contract_frame(n=200, frauds=35, blocked=50))


def test_contract_refuses_nulls_in_features_but_allows_unknown_category():
    df = _contract_frame()
    df.loc[3, "category_code"] = np.nan  # an unknown category is allowed to be null
    check_data_contract(df)
    df.loc[5, "card_tx_24h"] = np.nan
    with pytest.raises(DataContractError, match="features that must never be null have nulls: card_tx_24h"):
        check_data_contract(df)


def test_contract_refuses_a_volume_jump_against_the_previous_build():
    df = _contract_frame(n=200)
    check_data_contract(df, previous_rows=150)  # +33%: within 50%
    with pytest.raises(DataContractError, match=r"row count moved 100% against the previous build \(100 -> 200\)"):
        check_data_contract(df, previous_rows=100)


def test_contract_reports_every_problem_at_once():
    df = _contract_frame(n=10, frauds=0)
    with pytest.raises(DataContractError) as e:
        check_data_contract(df)
    msg = str(e.value)
    assert msg.startswith("Training-set data contract failed: ")
    assert "10 rows" in msg and "both labels must be present" in msg


# ---------------------------------------------------------------- build_training_set

@pytest.mark.parametrize("kwargs, message", [
    ({"maturity_days": 0},
     "The 'maturity_days' parameter of build_training_set must be an int in [1, 180]. Got 0 instead."),
    ({"maturity_days": True},
     "The 'maturity_days' parameter of build_training_set must be an int in [1, 180]. Got True instead."),
    ({"maturity_days": 5, "history_days": 5},
     "The 'history_days' parameter of build_training_set must be an int in [6, 3650]. Got 5 instead."),
])
def test_build_refuses_bad_parameters_with_a_readable_message(tiny, tmp_path, kwargs, message):
    with pytest.raises(ValueError) as e:
        build_training_set(tmp_path / "events", tmp_path / "snaps", tiny.as_of, **kwargs)
    assert str(e.value) == message


def test_build_without_events_says_where_it_looked(tiny, tmp_path):
    with pytest.raises(FileNotFoundError, match="No transactions found in .*transactions"):
        build_training_set(tmp_path / "events", tmp_path / "snaps", tiny.as_of, maturity_days=5, history_days=15)


def test_snapshot_covers_the_matured_window_only(tiny, tiny_snapshot):
    df = pd.read_parquet(tiny_snapshot.data)
    start = pd.Timestamp(tiny.as_of - dt.timedelta(days=tiny.history_days), tz="UTC")
    end = pd.Timestamp(tiny.as_of - dt.timedelta(days=tiny.maturity_days), tz="UTC")
    assert df["ts"].min() >= start and df["ts"].max() < end
    man = tiny_snapshot.manifest
    assert man["window"] == {"start": start.date().isoformat(), "end": end.date().isoformat()}
    assert man["rows"] == len(df)
    assert man["hash"] == tiny_snapshot.hash == tiny_snapshot.path.name


def test_snapshot_labels_agree_with_the_raw_event_logs(tiny, tiny_events, tiny_snapshot):
    df = pd.read_parquet(tiny_snapshot.data)
    disputes = pd.read_parquet(tiny_events / "disputes")
    known = set(disputes.loc[disputes["dispute_ts"] < pd.Timestamp(tiny.as_of, tz="UTC"), "tx_id"])
    blocked = df["action"] == "block"
    assert blocked.any() and df.loc[blocked, "label"].isna().all()
    allowed = df[~blocked]
    assert allowed["label"].notna().all()
    expected = allowed["tx_id"].isin(known).astype(int)
    assert (allowed["label"].astype(int).to_numpy() == expected.to_numpy()).all()
    assert allowed["label"].astype(int).sum() > 0
    np.testing.assert_allclose(allowed["weight"].astype(float), 1.0 / allowed["propensity"])
    man = tiny_snapshot.manifest
    assert man["labelled_rows"] == len(allowed) and man["frauds"] == int(expected.sum())
    assert man["blocked_rows"] == int(blocked.sum())


def test_same_inputs_give_the_same_hash_wherever_the_folders_are(tiny, tiny_events, tiny_snapshot, tmp_path):
    events = tmp_path / "elsewhere" / "events"
    shutil.copytree(tiny_events, events)
    again = build_training_set(events, tmp_path / "other-snaps", tiny.as_of, maturity_days=tiny.maturity_days,
                               history_days=tiny.history_days)
    assert again.hash == tiny_snapshot.hash
    pd.testing.assert_frame_equal(pd.read_parquet(again.data), pd.read_parquet(tiny_snapshot.data))


def test_rerun_is_a_no_op(tiny, tiny_events, tiny_snapshot):
    before = tiny_snapshot.data.stat()
    again = build_training_set(tiny_events, tiny_snapshot.path.parent, tiny.as_of, maturity_days=tiny.maturity_days,
                               history_days=tiny.history_days)
    assert again == tiny_snapshot
    after = again.data.stat()
    assert (after.st_ino, after.st_mtime_ns) == (before.st_ino, before.st_mtime_ns)
    assert [p.name for p in tiny_snapshot.path.parent.iterdir()] == [tiny_snapshot.hash]


def test_hash_changes_with_configuration(tiny, tiny_events, tiny_snapshot, tmp_path):
    other = build_training_set(tiny_events, tmp_path / "snaps", tiny.as_of, maturity_days=tiny.maturity_days,
                               history_days=tiny.history_days - 1)
    assert other.hash != tiny_snapshot.hash


def test_hash_follows_disputes_known_before_as_of_and_ignores_later_ones(tiny, tiny_events, tiny_snapshot, tmp_path):
    events = tmp_path / "events"
    shutil.copytree(tiny_events, events)
    # a dispute partition dated at as_of cannot be known at as_of: same inputs, same hash
    late = pd.DataFrame({"tx_id": [1], "dispute_ts": [pd.Timestamp(tiny.as_of, tz="UTC") + pd.Timedelta(hours=2)]})
    write_partition(events / "disputes", tiny.as_of, late)
    snaps = tmp_path / "snaps"
    same = build_training_set(events, snaps, tiny.as_of, maturity_days=tiny.maturity_days,
                              history_days=tiny.history_days)
    assert same.hash == tiny_snapshot.hash
    # a new dispute that arrived before as_of changes what is known: new hash, and the label flips to fraud
    df = pd.read_parquet(same.data)
    target = df[(df["label"] == 0)].iloc[0]
    day = tiny.as_of - dt.timedelta(days=1)
    write_partition(events / "disputes", day, pd.DataFrame({
        "tx_id": [int(target["tx_id"])], "dispute_ts": [pd.Timestamp(day, tz="UTC") + pd.Timedelta(hours=23)]}))
    changed = build_training_set(events, snaps, tiny.as_of, maturity_days=tiny.maturity_days,
                              history_days=tiny.history_days)
    assert changed.hash != tiny_snapshot.hash
    new = pd.read_parquet(changed.data).set_index("tx_id")
    assert new.loc[int(target["tx_id"]), "label"] == 1


def test_a_contract_failure_lands_nothing_and_the_last_good_snapshot_stays(tiny, tiny_events, tmp_path):
    snaps = tmp_path / "snaps"
    good = build_training_set(tiny_events, snaps, tiny.as_of - dt.timedelta(days=1), maturity_days=tiny.maturity_days,
                              history_days=tiny.history_days)
    with pytest.raises(DataContractError, match="row count moved"):
        build_training_set(tiny_events, snaps, tiny.as_of, maturity_days=tiny.maturity_days,
                           history_days=tiny.history_days, previous_rows=good.manifest["rows"] * 10)
    assert [p.name for p in snaps.iterdir()] == [good.hash]
    assert latest_snapshot(snaps) == good


def test_latest_snapshot_picks_the_latest_as_of(tiny, tiny_events, tmp_path):
    snaps = tmp_path / "snaps"
    assert latest_snapshot(snaps) is None
    newer = build_training_set(tiny_events, snaps, tiny.as_of, maturity_days=tiny.maturity_days,
                              history_days=tiny.history_days)
    older = build_training_set(tiny_events, snaps, tiny.as_of - dt.timedelta(days=2), maturity_days=tiny.maturity_days,
                               history_days=tiny.history_days)
    assert older.hash != newer.hash
    assert latest_snapshot(snaps) == newer


def test_latest_snapshot_ignores_a_build_that_never_landed(tiny, tiny_snapshot, tmp_path):
    # A build writes into a hidden temp folder and renames it into place; one killed before the rename
    # leaves that folder behind. It is not a snapshot, even with a later as-of.
    snaps = tmp_path / "snaps"
    shutil.copytree(tiny_snapshot.path, snaps / tiny_snapshot.hash)
    crashed = snaps / ".tmp-crashed"
    shutil.copytree(tiny_snapshot.path, crashed)
    man = json.loads((crashed / "manifest.json").read_text())
    man["config"]["as_of"] = (tiny.as_of + dt.timedelta(days=30)).isoformat()
    man["hash"] = "f" * 64
    (crashed / "manifest.json").write_text(json.dumps(man))
    assert latest_snapshot(snaps) == Snapshot(hash=tiny_snapshot.hash, path=snaps / tiny_snapshot.hash)


def test_the_manifest_records_every_named_data_check(tiny_snapshot):
    from release.data.data_quality import DATA_CHECKS

    checks = tiny_snapshot.manifest["data_contract"]
    assert [c["name"] for c in checks] == list(DATA_CHECKS)
    assert all(c["passed"] for c in checks)
    rows = {c["name"]: c for c in checks}["min_rows"]
    assert rows["observed"] == tiny_snapshot.manifest["rows"]
