"""Online features (one transaction at a time, from in-memory history) against the offline batch
definition (release.data.features.compute_features) on the same replayed days."""
from __future__ import annotations

import datetime as dt
import math

import numpy as np
import pandas as pd
import pytest

from release.data.features import FEATURE_COLUMNS, compute_features
from release.core.io import write_partition
from release.data.online_features import (OnlineFeatures, epoch_us, finish_rates, merchant_fraud_rates,
                                     prepare_rates)


def replay_online(events, seed_day, end, maturity_days) -> pd.DataFrame:
    """Every transaction of [seed_day, end) through OnlineFeatures, in time order, as the service sees them."""
    with OnlineFeatures(events, seed_day, maturity_days=maturity_days) as online:
        return _replay(online, events, seed_day, end)


def _replay(online, events, seed_day, end) -> pd.DataFrame:
    files = sorted((events / "transactions").glob("day=*/*.parquet"))
    tx = pd.concat([pd.read_parquet(f) for f in files], ignore_index=True)
    tx = tx[(tx["ts"] >= pd.Timestamp(seed_day, tz="UTC")) & (tx["ts"] < pd.Timestamp(end, tz="UTC"))]
    rows = []
    for r in tx.sort_values(["ts", "tx_id"]).itertuples():
        f = online.features_and_add(epoch_us(r.ts), str(r.card_id), r.card_country, r.merchant_id,
                                    r.merchant_country, r.merchant_category, r.amount)
        rows.append({"tx_id": r.tx_id, **f})
    return pd.DataFrame(rows).set_index("tx_id")


@pytest.fixture
def opened():
    """OnlineFeatures made by a test, closed after it (a library caller's next day is prepared ahead in a
    thread, which must not outlive the test)."""
    made: list[OnlineFeatures] = []

    def make(*args, **kwargs) -> OnlineFeatures:
        made.append(OnlineFeatures(*args, **kwargs))
        return made[-1]

    yield make
    for o in made:
        o.close()


def test_every_offline_feature_is_computed_online(tiny, tiny_events, opened):
    day = tiny.cfg.start + dt.timedelta(days=tiny.cfg.days - 1)
    f = opened(tiny_events, day, tiny.maturity_days).features_and_add(
        epoch_us(pd.Timestamp(day, tz="UTC")), "1", "US", "M000001", "US", "grocery", 10.0)
    assert sorted(f) == sorted(FEATURE_COLUMNS)


def test_online_features_equal_offline_on_replayed_days(tiny, tiny_events):
    """Two replayed days (so the merchant fraud rate rolls over at midnight), every feature, every row."""
    seed = tiny.cfg.start + dt.timedelta(days=tiny.cfg.days - 2)
    end = seed + dt.timedelta(days=2)
    offline = compute_features(tiny_events, seed, end, maturity_days=tiny.maturity_days).set_index("tx_id")
    online = replay_online(tiny_events, seed, end, tiny.maturity_days)
    assert len(online) == len(offline) > 500
    online = online.loc[offline.index]
    for c in FEATURE_COLUMNS:
        np.testing.assert_allclose(online[c].astype(float), offline[c].astype(float), rtol=1e-9, atol=1e-12,
                                   err_msg=f"feature {c} differs online")
    # the windows have something in them: a parity of zeros would prove nothing
    assert (offline["card_tx_24h"] > 0).mean() > 0.1 and (offline["merchant_tx_1h"] > 0).mean() > 0.5
    assert offline["merchant_fraud_rate"].notna().all() and (offline["merchant_matured_tx"] > 0).all()


def test_merchant_fraud_rates_equal_the_offline_rate_relation(tiny, tiny_events):
    day = tiny.cfg.start + dt.timedelta(days=tiny.cfg.days - 1)
    offline = compute_features(tiny_events, day, day + dt.timedelta(days=1), maturity_days=tiny.maturity_days)
    (rates, global_rate), = merchant_fraud_rates(tiny_events, day, tiny.maturity_days)
    per = offline.groupby("merchant_id")[["merchant_fraud_rate", "merchant_matured_tx"]].first()
    for mid, row in per.iterrows():
        rate, matured = rates.get(mid, (global_rate, 0))
        assert rate == pytest.approx(row["merchant_fraud_rate"], rel=1e-12) and matured == row["merchant_matured_tx"]
    assert 0 < global_rate < 0.1


def test_a_rate_table_prepared_a_day_ahead_counts_the_disputes_that_arrive_after(tiny, tiny_events, tmp_path):
    """The service prepares tomorrow's table while today's disputes are still arriving; finishing it at
    midnight must count them, exactly as offline does."""
    import shutil

    events = tmp_path / "events"
    shutil.copytree(tiny_events, events)
    day = tiny.cfg.start + dt.timedelta(days=tiny.cfg.days - 1)
    yesterday = events / "disputes" / f"day={day - dt.timedelta(days=1)}"
    assert yesterday.exists()
    shutil.move(yesterday, tmp_path / "later")  # not yet arrived when the table is prepared
    prep = prepare_rates(events, day, tiny.maturity_days)
    shutil.move(tmp_path / "later", yesterday)  # ... but by the time the day begins
    (rates, global_rate), = finish_rates(events, prep)
    assert [(rates, global_rate)] == merchant_fraud_rates(events, day, tiny.maturity_days)
    offline = compute_features(events, day, day + dt.timedelta(days=1), maturity_days=tiny.maturity_days)
    for mid, rate in offline.groupby("merchant_id")["merchant_fraud_rate"].first().items():
        assert rates.get(mid, (global_rate, 0))[0] == pytest.approx(rate, rel=1e-12)
    # the test means something only if yesterday's disputes hit the rate's window
    late = pd.read_parquet(yesterday)
    assert late["tx_id"].isin(prep.window["tx_id"]).sum() > 0


D = dt.date(2026, 3, 10)


def at(hh, mm=0, day=D):
    return epoch_us(pd.Timestamp(day, tz="UTC") + pd.Timedelta(hours=hh, minutes=mm))


@pytest.fixture
def empty_events(tmp_path):
    events = tmp_path / "events"
    # one old transaction so the logs exist; nothing within any window of day D
    write_partition(events / "transactions", D - dt.timedelta(days=50), pd.DataFrame({
        "tx_id": [1], "ts": [pd.Timestamp(D - dt.timedelta(days=50), tz="UTC")], "card_id": [9],
        "card_country": ["US"], "merchant_id": ["MZ"], "merchant_country": ["US"], "merchant_category": ["fuel"],
        "amount": [5.0]}))
    return events


def test_same_instant_is_not_known_and_windows_are_closed_on_the_left(empty_events, opened):
    o = opened(empty_events, D)
    args = ("US", "MA", "US", "grocery")
    first = o.features_and_add(at(10), "1", args[0], args[1], args[2], args[3], 10.0)
    same = o.features_and_add(at(10), "1", *args, 20.0)
    later = o.features_and_add(at(11), "1", *args, 30.0)  # exactly one hour after 10:00: inside [t - 1h, t)
    assert first["card_tx_1h"] == same["card_tx_1h"] == 0
    assert later["card_tx_1h"] == 2 and later["card_amount_24h"] == 30.0
    assert later["amount_vs_card_avg_30d"] == pytest.approx(30 / 16) and later["card_merchants_24h"] == 1


def test_an_out_of_order_transaction_lands_where_it_belongs(empty_events, opened):
    o = opened(empty_events, D)
    args = ("US", "MA", "US", "grocery")
    o.features_and_add(at(12), "1", *args, 10.0)
    o.features_and_add(at(9), "1", *args, 99.0)  # arrives late
    f = o.features_and_add(at(9, 30), "1", *args, 5.0)
    assert f["card_tx_1h"] == 1 and f["card_amount_24h"] == 99.0  # sees 9:00, not 12:00


def test_unknown_card_merchant_and_category(empty_events, opened):
    o = opened(empty_events, D)
    assert not o.knows_merchant("NEW")
    f = o.features_and_add(at(8), "77", "US", "NEW", "GB", "space_tourism", 50.0)
    assert f["card_tx_30d"] == 0 and f["merchant_tx_7d"] == 0 and f["card_age_days"] == 0
    assert math.isnan(f["category_code"]) and f["cross_border"] == 1.0 and f["hour"] == 8.0
    assert f["amount_vs_card_avg_30d"] == pytest.approx(50 / 51)
    # no matured labels anywhere before D: the rate is unknown (null), as offline
    assert math.isnan(f["merchant_fraud_rate"]) and f["merchant_matured_tx"] == 0
    assert o.knows_merchant("NEW")


def test_a_transaction_time_needs_a_timezone():
    with pytest.raises(ValueError, match="needs a timezone"):
        epoch_us(dt.datetime(2026, 3, 10, 10, 0))


def test_a_declared_feature_spec_is_equal_online_and_offline(tiny, tiny_events, opened):
    """The declarative spec, not the default one: window aggregates of other lengths and kinds (a 2-hour
    card sum, a 3-day merchant count, 12-hour distinct merchants, the amount against a 14-day maximum) and
    three windows of the merchant fraud rate (1, 7 and 30 days, each with its prior; the 1-day one with a
    3-day delay instead of the label maturity), and a 7-day one on the exact clock: every column the
    same online as offline on two replayed days."""
    from release.data.features import feature_columns
    from release.core.pipeline import Features, RiskFeature, WindowFeature

    windows = [WindowFeature(name=n, entity=e, window=w, aggregation=a) for n, e, w, a in (
        ("card_sum_2h", "card", "2h", "sum"), ("merchant_tx_3d", "merchant", "3d", "count"),
        ("card_merchants_12h", "card", "12h", "distinct_merchants"),
        ("amount_vs_card_max_14d", "card", "14d", "amount_over_max"),
        ("amount_vs_merchant_avg_2d", "merchant", "2d", "amount_over_mean"))]
    spec = Features(windows=windows,
                    risk=[RiskFeature(rate=f"mfr_{w}d", count=f"mtx_{w}d", window_days=w, prior_tx=p, delay_days=d)
                          for w, p, d in ((1, 1.0, 3), (7, 5.0, None), (30, 50.0, None))]
                    + [RiskFeature(rate="mfr_x7d", count="mtx_x7d", window_days=7, prior_tx=5.0, delay_days=3,
                                   clock="exact")])
    seed = tiny.cfg.start + dt.timedelta(days=tiny.cfg.days - 2)
    end = seed + dt.timedelta(days=2)
    offline = compute_features(tiny_events, seed, end, maturity_days=tiny.maturity_days,
                               features=spec).set_index("tx_id")
    online = opened(tiny_events, seed, maturity_days=tiny.maturity_days, features=spec)
    tx = offline.sort_values(["ts"], kind="stable")
    rows = {}
    for r in tx.itertuples():
        rows[r.Index] = online.features_and_add(epoch_us(r.ts), str(r.card_id), r.card_country, r.merchant_id,
                                                r.merchant_country, r.merchant_category, r.amount)
    got = pd.DataFrame.from_dict(rows, orient="index").loc[offline.index]
    assert sorted(got.columns) == sorted(feature_columns(spec)) and "card_tx_24h" not in got.columns
    for c in feature_columns(spec):
        np.testing.assert_allclose(got[c].astype(float), offline[c].astype(float), rtol=1e-9, atol=1e-12,
                                   err_msg=f"risk feature {c} differs online")
    # the windows differ: a 1-day rate is not the 30-day one, and the counts grow with the window
    assert (offline["mtx_7d"] <= offline["mtx_30d"]).all() and (offline["mtx_1d"] < offline["mtx_30d"]).mean() > 0.5
    assert not np.allclose(offline["mfr_1d"], offline["mfr_30d"])
    # the exact clock slides with each transaction: its counts change within a day, the daily table's do not
    per_day = offline.groupby([offline["merchant_id"], pd.to_datetime(offline["ts"]).dt.date])
    assert (per_day["mtx_x7d"].nunique() > 1).mean() > 0.5 and (per_day["mtx_7d"].nunique() == 1).all()
    assert (offline["merchant_tx_3d"] > 0).mean() > 0.5 and (offline["card_sum_2h"] > 0).mean() > 0.01


def test_one_transaction_far_in_the_future_does_not_age_out_the_history(empty_events, opened):
    """Issue 16, item 1: pruning took the largest time ever seen as "now", so one row dated 2200 (a
    request, or a decision-log row resumed at a restart) made every card's history look older than every
    window and dropped it. Pruning now measures the present by the median of the latest transactions."""
    o = opened(empty_events, D)
    args = ("US", "MA", "US", "grocery")
    for h in range(1, 9):
        o.features_and_add(at(h), "1", *args, 10.0)
    poisoned = pd.DataFrame({"ts": [pd.Timestamp("2200-01-01", tz="UTC")], "card_id": ["2"],
                             "merchant_id": ["MA"], "amount": [1.0]})
    o.add_many(poisoned)  # as a restart resumes a logged row; add_many prunes
    assert at(1) <= o.present() <= at(8)  # the present is among the real times, not in 2200
    f = o.features_and_add(at(10), "1", *args, 10.0)
    assert f["card_tx_24h"] == 8 and f["card_amount_24h"] == 80.0 and f["merchant_tx_24h"] == 8


def test_pruning_forgets_what_no_window_can_see(empty_events, opened):
    """The robust present still prunes: transactions older than the longest window plus a day before the
    median of the latest ones are forgotten (the card's age is kept)."""
    o = opened(empty_events, D)
    args = ("US", "MA", "US", "grocery")
    o.features_and_add(at(1), "1", *args, 10.0)
    late = D + dt.timedelta(days=40)
    for h in range(3):
        o.features_and_add(at(h, day=late), "2", *args, 5.0)
    o._prune_all()
    assert o._cards["1"].ts == [] and o._cards["1"].first_seen == at(1)
    assert len(o._cards["2"].ts) == 3


def test_running_sums_stay_the_window_sums_through_late_arrivals_removals_and_pruning():
    """The running sums behind window sums (_History.csum) against a plain sum over the same positions, while
    transactions arrive out of time order, are taken back and pruned away (2,000 random steps, seeded)."""
    import random

    from release.data.online_features import _History

    rng = random.Random(5)
    h = _History()
    for step in range(2000):
        r = rng.random()
        if r < 0.75 or not h.ts:
            t = (h.ts[-1] if h.ts and r < 0.6 else 0) + rng.randrange(0, 5_000)
            h.add(t, round(rng.lognormvariate(3, 1.5), 2), "M1")
        elif r < 0.9:
            i = rng.randrange(len(h.ts))
            assert h.remove(h.ts[i], h.amount[i])
        else:
            h.prune(h.ts[len(h.ts) // 3])
        assert len(h.csum) == len(h.ts) + 1 and h.ts == sorted(h.ts)
        lo = rng.randrange(len(h.ts) + 1)
        hi = rng.randrange(lo, len(h.ts) + 1)
        assert h.window_sum(lo, hi) == pytest.approx(sum(h.amount[lo:hi]), rel=1e-12, abs=1e-9), step
