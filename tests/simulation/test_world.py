"""The simulated world: deterministic, censored like real card traffic, and heavy-tailed."""
from __future__ import annotations

import datetime as dt
import math

import pandas as pd
import pytest
from pydantic import ValidationError

from release.core.io import file_sha256, list_partitions
from simulation.world import TX_COLUMNS, WorldConfig, simulate

TINY = {"days": 20, "tx_per_day": 300, "n_merchants": 30, "n_cards": 2000}


def read(out, table):
    return pd.concat([pd.read_parquet(f) for f in list_partitions(out / table)], ignore_index=True)


def all_bytes(out):
    return {str(p.relative_to(out)): file_sha256(p) for p in sorted(out.rglob("*.parquet"))}


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    # disputes arrive within days (median 4, at most 6) so that many land inside the 20-day horizon and
    # the maximum delay actually clips some of them
    cfg = WorldConfig(seed=11, dispute_median_days=4.0, dispute_max_days=6, **TINY)
    out = tmp_path_factory.mktemp("world") / "events"
    totals = simulate(cfg, out)
    return cfg, out, totals


@pytest.fixture(scope="module")
def explored_world(tmp_path_factory):
    """A world with many would-be blocks and a large exploration share."""
    cfg = WorldConfig(seed=3, exploration=0.2, legacy_threshold=0.4, **TINY)
    out = tmp_path_factory.mktemp("explored") / "events"
    simulate(cfg, out)
    return cfg, out


def test_same_seed_gives_identical_bytes(world, tmp_path):
    cfg, out, totals = world
    again = tmp_path / "again"
    assert simulate(cfg, again) == totals
    assert all_bytes(again) == all_bytes(out)


def test_a_different_seed_gives_a_different_world(world, tmp_path):
    cfg, out, _ = world
    other = tmp_path / "other"
    simulate(cfg.model_copy(update={"seed": cfg.seed + 1}), other)
    a, b = read(out, "transactions"), read(other, "transactions")
    assert len(a) != len(b) or not a["amount"].equals(b["amount"])


def test_one_partition_per_day_per_table_and_consistent_ids(world):
    cfg, out, totals = world
    for table in ("transactions", "decisions", "truth"):
        days = [p.parent.name for p in list_partitions(out / table)]
        assert days == [f"day={cfg.start + dt.timedelta(days=i)}" for i in range(cfg.days)]
    tx, dec, truth = read(out, "transactions"), read(out, "decisions"), read(out, "truth")
    assert list(tx.columns) == TX_COLUMNS
    assert tx["tx_id"].is_unique and len(tx) == totals["transactions"]
    assert set(dec["tx_id"]) == set(tx["tx_id"]) == set(truth["tx_id"])
    assert int(truth["is_fraud"].sum()) == totals["frauds"]
    # every transaction lies in its partition's day
    for f in list_partitions(out / "transactions"):
        day = pd.Timestamp(f.parent.name.removeprefix("day="), tz="UTC")
        ts = pd.read_parquet(f)["ts"]
        assert (ts >= day).all() and (ts < day + pd.Timedelta(days=1)).all()


def test_blocked_transactions_are_never_disputed(world):
    _, out, totals = world
    dec, disputes = read(out, "decisions"), read(out, "disputes")
    assert len(disputes) == totals["disputes"] > 0
    actions = dec.set_index("tx_id").loc[disputes["tx_id"], "action"]
    assert (actions == "allow").all()
    assert (dec["action"] == "block").sum() == totals["blocked"] > 0


def test_disputes_arrive_after_the_transaction_within_the_maximum_delay(world):
    cfg, out, _ = world
    tx, disputes = read(out, "transactions"), read(out, "disputes")
    d = disputes.merge(tx[["tx_id", "ts"]], on="tx_id", how="left", validate="one_to_one")
    assert d["ts"].notna().all()
    delay = d["dispute_ts"] - d["ts"]
    # the delay is clipped to [1 day, dispute_max_days]
    assert (delay >= pd.Timedelta(days=1)).all()
    assert (delay <= pd.Timedelta(days=cfg.dispute_max_days)).all()
    assert (delay == pd.Timedelta(days=cfg.dispute_max_days)).any()  # the clip is exercised
    # only disputes that arrived before the horizon are written, each in the partition of its arrival day
    assert (d["dispute_ts"] < pd.Timestamp(cfg.end, tz="UTC")).all()
    for f in list_partitions(out / "disputes"):
        days = pd.read_parquet(f)["dispute_ts"].dt.date.astype(str)
        assert (days == f.parent.name.removeprefix("day=")).all()


def test_with_certain_disputes_every_allowed_fraud_old_enough_is_disputed_and_nothing_else(tmp_path):
    cfg = WorldConfig(seed=5, dispute_rate=1.0, friendly_rate=0.0, dispute_max_days=3, **TINY)
    simulate(cfg, tmp_path)
    tx, dec, truth = read(tmp_path, "transactions"), read(tmp_path, "decisions"), read(tmp_path, "truth")
    rows = tx.merge(dec[["tx_id", "action"]], on="tx_id").merge(truth, on="tx_id")
    disputed = set(read(tmp_path, "disputes")["tx_id"])
    # a dispute arrives at most dispute_max_days later, so these must all have been written
    old_enough = rows["ts"] < pd.Timestamp(cfg.end, tz="UTC") - pd.Timedelta(days=cfg.dispute_max_days)
    must = rows[old_enough & rows["is_fraud"] & (rows["action"] == "allow")]
    assert len(must) > 20 and set(must["tx_id"]) <= disputed
    may = rows[rows["is_fraud"] & (rows["action"] == "allow")]
    assert disputed <= set(may["tx_id"])  # no legit (friendly_rate=0) and no blocked transaction disputed
    assert (rows["is_fraud"] & (rows["action"] == "block")).any()  # censoring had something to hide


def test_propensity_is_the_probability_of_the_logged_action(explored_world):
    cfg, out = explored_world
    dec = read(out, "decisions")
    explored, blocked = dec[dec["explored"]], dec[dec["action"] == "block"]
    plain = dec[(dec["action"] == "allow") & ~dec["explored"]]
    assert (explored["action"] == "allow").all()
    assert (explored["propensity"] == cfg.exploration).all()
    assert (blocked["propensity"] == 1 - cfg.exploration).all()
    assert (plain["propensity"] == 1.0).all()
    # exploration happens only among would-be blocks (score at or above the threshold)
    assert (explored["score"] >= cfg.legacy_threshold).all()
    assert (plain["score"] < cfg.legacy_threshold).all()


def test_explored_share_of_would_be_blocks_is_near_the_configured_rate(explored_world):
    cfg, out = explored_world
    dec = read(out, "decisions")
    would_block = dec[dec["score"] >= cfg.legacy_threshold]
    n = len(would_block)
    assert n > 500
    share = would_block["explored"].mean()
    se = math.sqrt(cfg.exploration * (1 - cfg.exploration) / n)
    assert abs(share - cfg.exploration) < 4 * se


def test_merchant_volume_is_heavy_tailed(world):
    _, out, _ = world
    per_merchant = read(out, "transactions")["merchant_id"].value_counts()
    # Pareto(1.1) volumes: among 30 merchants the largest is typically ~20x the median; a uniform world
    # would have a ratio near 1
    assert per_merchant.max() > 5 * per_merchant.median()
    top_share = per_merchant.nlargest(3).sum() / per_merchant.sum()
    assert top_share > 0.25  # the top 10% of merchants carry well over 10% of traffic


def test_the_merchant_reference_is_written(world):
    cfg, out, _ = world
    ref = pd.read_parquet(out / "reference" / "merchants.parquet")
    assert len(ref) == cfg.n_merchants and ref["merchant_id"].is_unique
    tx = read(out, "transactions")
    assert set(tx["merchant_id"]) <= set(ref["merchant_id"])
    countries = tx.merge(ref, on="merchant_id", suffixes=("", "_ref"))
    assert (countries["merchant_country"] == countries["merchant_country_ref"]).all()


@pytest.mark.parametrize("bad, field", [
    ({"days": 0}, "days"), ({"exploration": 0}, "exploration"), ({"exploration": 1}, "exploration"),
    ({"n_countries": 21}, "n_countries"), ({"tx_per_day": 5}, "tx_per_day"), ({"sneaky": 1}, "sneaky"),
])
def test_config_is_validated(bad, field):
    with pytest.raises(ValidationError, match=field):
        WorldConfig(**bad)


def test_end_is_start_plus_days():
    cfg = WorldConfig(days=31)
    assert cfg.end == dt.date(2026, 2, 1)


def test_default_dispute_delays_median_3_to_4_weeks_about_90_percent_within_60_days(tmp_path):
    # defaults for the dispute process; a world long enough that every dispute of the first 70 days
    # (at most 120 days late) has arrived before the horizon, so the delays seen are not truncated
    cfg = WorldConfig(days=200, tx_per_day=300, n_merchants=60, n_cards=3000)
    simulate(cfg, tmp_path / "events")
    tx, disputes = read(tmp_path / "events", "transactions"), read(tmp_path / "events", "disputes")
    d = disputes.merge(tx[["tx_id", "ts"]], on="tx_id")
    d = d[d["ts"] < pd.Timestamp(cfg.start + dt.timedelta(days=70), tz="UTC")]
    delay_days = (d["dispute_ts"] - d["ts"]).dt.total_seconds() / 86400
    assert len(d) > 200
    assert 21 <= delay_days.median() <= 28
    assert 0.85 <= (delay_days <= 60).mean() <= 0.95
    assert delay_days.max() <= 120


def test_default_world_has_2000_merchants_a_few_carrying_most_traffic_hundreds_a_handful_a_week():
    import numpy as np

    from simulation.world import _world_entities

    cfg = WorldConfig()
    merchants, _ = _world_entities(cfg, np.random.default_rng(cfg.seed))
    assert len(merchants) == 2000 and cfg.n_countries >= 10
    share = merchants["volume"].sort_values(ascending=False).to_numpy()
    assert share[:20].sum() > 0.35  # the top 1% of merchants carry over a third of all traffic
    per_week = share * cfg.tx_per_day * 7
    assert (per_week < 7).sum() >= 300  # hundreds expect less than one transaction a day
