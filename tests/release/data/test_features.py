"""Point-in-time features on hand-built event logs with known answers."""
from __future__ import annotations

import datetime as dt
import math

import pandas as pd
import pytest

from release.data.features import CATEGORIES, compute_features
from release.core.pipeline import PipelineConfig

CARD_AGE_CAP_DAYS = PipelineConfig().features.card_age_cap_days
LOOKBACK_DAYS = PipelineConfig().features.lookback_days
from release.core.io import write_partition

D = dt.date(2026, 3, 10)


def ts(day: dt.date, hh: int, mm: int = 0) -> pd.Timestamp:
    return pd.Timestamp(day, tz="UTC") + pd.Timedelta(hours=hh, minutes=mm)


def write_events(events, rows, decided_days):
    """rows: (tx_id, ts, card_id, merchant_id, amount[, card_country, merchant_country, category]).
    Decisions are written only for ``decided_days`` (as in live logs, the query joins them)."""
    full = [r + ("US", "US", "grocery")[len(r) - 5:] if len(r) < 8 else r for r in rows]
    tx = pd.DataFrame(full, columns=["tx_id", "ts", "card_id", "merchant_id", "amount", "card_country",
                                     "merchant_country", "merchant_category"])
    tx["ts"] = pd.to_datetime(tx["ts"], utc=True)
    tx = tx[["tx_id", "ts", "card_id", "card_country", "merchant_id", "merchant_country", "merchant_category",
             "amount"]]
    tx["day"] = tx["ts"].dt.date
    for day, g in tx.groupby("day"):
        write_partition(events / "transactions", day, g.drop(columns="day").sort_values("ts"))
        if day in decided_days:
            write_partition(events / "decisions", day, pd.DataFrame({
                "tx_id": g["tx_id"].to_numpy(), "ts": g["ts"].to_numpy(), "policy": "test", "score": 0.1,
                "threshold": 0.7, "action": "allow", "explored": False, "propensity": 1.0}))


# card 1 on day D: 10:00 (10), 10:30 (20) and 10:30 (30) at the same instant, 11:20 (40)
CARD1 = [
    (1, ts(D, 10), 1, "MA", 10.0),
    (2, ts(D, 10, 30), 1, "MA", 20.0),
    (3, ts(D, 10, 30), 1, "MB", 30.0),
    (4, ts(D, 11, 20), 1, "MA", 40.0),
]


@pytest.fixture
def card1_events(tmp_path):
    events = tmp_path / "events"
    write_events(events, CARD1, {D})
    return events


def test_windows_count_only_strictly_earlier_events(card1_events):
    f = compute_features(card1_events, D, D + dt.timedelta(days=1)).set_index("tx_id")
    # the first transaction knows nothing about the card
    assert f.loc[1, ["card_tx_1h", "card_tx_24h", "card_amount_24h", "card_tx_30d"]].tolist() == [0, 0, 0, 0]
    # 10:30: only 10:00 is earlier; the other 10:30 transaction happened at the same instant and is not known
    for i in (2, 3):
        assert f.loc[i, ["card_tx_1h", "card_tx_24h", "card_amount_24h"]].tolist() == [1, 1, 10.0]
    # 11:20: 10:30 twice within the hour (50 min), 10:00 is 80 min back: in 24 h but not in 1 h
    assert f.loc[4, ["card_tx_1h", "card_tx_24h", "card_amount_24h", "card_tx_30d"]].tolist() == [2, 3, 60.0, 3]


def test_amount_ratio_uses_the_average_of_earlier_amounts(card1_events):
    f = compute_features(card1_events, D, D + dt.timedelta(days=1)).set_index("tx_id")
    # no history: the row is compared with itself; otherwise with the mean of earlier amounts, plus one
    assert f.loc[1, "amount_vs_card_avg_30d"] == pytest.approx(10 / 11)
    assert f.loc[2, "amount_vs_card_avg_30d"] == pytest.approx(20 / 11)
    assert f.loc[3, "amount_vs_card_avg_30d"] == pytest.approx(30 / 11)
    assert f.loc[4, "amount_vs_card_avg_30d"] == pytest.approx(40 / (20 + 1))


def test_merchant_window_counts_other_cards_but_not_the_same_instant(tmp_path):
    events = tmp_path / "events"
    write_events(events, [
        (1, ts(D - dt.timedelta(days=1), 12), 1, "MA", 5.0),  # yesterday noon
        (2, ts(D, 9), 2, "MA", 5.0),
        (3, ts(D, 10), 3, "MA", 5.0),
        (4, ts(D, 10), 4, "MA", 5.0),
        (5, ts(D, 10), 5, "MB", 5.0),
        (6, ts(D, 12, 30), 6, "MA", 5.0),                     # yesterday noon is 24.5 h back
    ], {D})
    f = compute_features(events, D, D + dt.timedelta(days=1)).set_index("tx_id")
    assert sorted(f.index) == [2, 3, 4, 5, 6]  # yesterday had no decisions: read as history only
    assert f.loc[2, "merchant_tx_24h"] == 1
    # 10:00 twice: yesterday noon and 09:00 are known; the other 10:00 transaction is not
    assert f.loc[3, "merchant_tx_24h"] == 2 and f.loc[4, "merchant_tx_24h"] == 2
    assert f.loc[5, "merchant_tx_24h"] == 0
    assert f.loc[6, "merchant_tx_24h"] == 3


def test_future_events_do_not_change_past_features(tmp_path):
    base, more = tmp_path / "base", tmp_path / "more"
    write_events(base, CARD1, {D})
    future = [
        (10, ts(D, 11, 21), 1, "MA", 5000.0),           # one minute after the last row, same day
        (11, ts(D, 23), 1, "MB", 700.0),
        (12, ts(D + dt.timedelta(days=1), 1), 1, "MA", 900.0),
    ]
    write_events(more, CARD1 + future, {D, D + dt.timedelta(days=1)})
    a = compute_features(base, D, D + dt.timedelta(days=1)).set_index("tx_id")
    b = compute_features(more, D, D + dt.timedelta(days=2)).set_index("tx_id").loc[a.index]
    pd.testing.assert_frame_equal(a, b)


def test_static_features(tmp_path):
    events = tmp_path / "events"
    write_events(events, [
        (1, ts(D, 3, 59), 1, "MA", 99.0, "GB", "US", "fuel"),
        (2, ts(D, 23), 2, "MB", 0.0, "US", "US", "gambling"),
        (3, ts(D, 12), 3, "MC", 10.0, "US", "US", "pets"),  # not a known category
    ], {D})
    f = compute_features(events, D, D + dt.timedelta(days=1)).set_index("tx_id")
    assert f.loc[1, "hour"] == 3 and f.loc[2, "hour"] == 23
    assert f.loc[1, "cross_border"] == 1 and f.loc[2, "cross_border"] == 0
    assert f.loc[1, "category_code"] == CATEGORIES.index("fuel")
    assert f.loc[2, "category_code"] == CATEGORIES.index("gambling")
    assert math.isnan(f.loc[3, "category_code"])
    assert f.loc[1, "log_amount"] == pytest.approx(math.log(100.0))
    assert f.loc[2, "log_amount"] == 0.0
    assert f.loc[1, "day"] == pd.Timestamp(D)


def test_card_age_is_days_since_first_seen_and_capped(tmp_path):
    events = tmp_path / "events"
    write_events(events, [
        (1, ts(D - dt.timedelta(days=10), 12), 1, "MA", 5.0),
        (2, ts(D, 0), 1, "MA", 5.0),                            # 9.5 days after first seen
        (3, ts(D - dt.timedelta(days=45), 8), 2, "MA", 5.0),
        (4, ts(D, 8), 2, "MA", 5.0),                            # 45 days: capped
        (5, ts(D, 9), 3, "MA", 5.0),                            # first time seen
    ], {D})
    f = compute_features(events, D, D + dt.timedelta(days=1)).set_index("tx_id")
    assert f.loc[2, "card_age_days"] == pytest.approx(9.5)
    assert f.loc[4, "card_age_days"] == CARD_AGE_CAP_DAYS
    assert f.loc[5, "card_age_days"] == 0.0


def test_a_transaction_gets_the_same_features_in_a_live_day_and_in_a_long_training_window(tmp_path):
    # Card 1 was first seen 70 days before D: a one-day (live) query reads LOOKBACK_DAYS back and first sees
    # it at D-45, a 40-day training window reads back to D-100 and sees D-70. Capped, the age agrees.
    assert LOOKBACK_DAYS < 70
    events = tmp_path / "events"
    rows = [
        (1, ts(D - dt.timedelta(days=70), 12), 1, "MA", 5.0),
        (2, ts(D - dt.timedelta(days=45), 12), 1, "MA", 6.0),
        (3, ts(D - dt.timedelta(days=20), 12), 1, "MB", 7.0),
        (4, ts(D - dt.timedelta(days=1), 21), 1, "MA", 8.0),
        (5, ts(D, 9), 1, "MA", 90.0),
        (6, ts(D, 9, 30), 2, "MA", 3.0),
    ]
    write_events(events, rows, {D - dt.timedelta(days=20), D - dt.timedelta(days=1), D})
    live = compute_features(events, D, D + dt.timedelta(days=1)).set_index("tx_id")
    train = compute_features(events, D - dt.timedelta(days=40), D + dt.timedelta(days=1)).set_index("tx_id")
    assert sorted(train.index) == [3, 4, 5, 6] and sorted(live.index) == [5, 6]
    pd.testing.assert_frame_equal(live, train.loc[live.index])
    assert live.loc[5, "card_age_days"] == CARD_AGE_CAP_DAYS
    assert live.loc[5, "card_tx_30d"] == 2  # D-20 and yesterday 21:00; D-45 is older than 30 days


def test_no_transactions_in_the_window_is_a_clear_error(card1_events):
    later = D + dt.timedelta(days=5)
    with pytest.raises(FileNotFoundError, match=r"No transactions found in .* for days 2026-03-15 \.\. 2026-03-16"):
        compute_features(card1_events, later, later + dt.timedelta(days=2))


def write_decided(events, rows, disputes=()):
    """rows: (tx_id, ts, card_id, merchant_id, amount, action); every day gets its decisions.
    disputes: (tx_id, dispute_ts), partitioned by the dispute's day."""
    tx = pd.DataFrame(rows, columns=["tx_id", "ts", "card_id", "merchant_id", "amount", "action"])
    tx = tx.assign(ts=pd.to_datetime(tx["ts"], utc=True), card_country="US", merchant_country="US",
                   merchant_category="grocery")
    tx["day"] = tx["ts"].dt.date
    for day, g in tx.groupby("day"):
        write_partition(events / "transactions", day, g[["tx_id", "ts", "card_id", "card_country", "merchant_id",
                                                         "merchant_country", "merchant_category", "amount"]])
        write_partition(events / "decisions", day, pd.DataFrame({
            "tx_id": g["tx_id"].to_numpy(), "ts": g["ts"].to_numpy(), "policy": "test", "score": 0.1,
            "threshold": 0.7, "action": g["action"].to_numpy(), "explored": False, "propensity": 1.0}))
    dis = pd.DataFrame(list(disputes), columns=["tx_id", "dispute_ts"])
    dis["dispute_ts"] = pd.to_datetime(dis["dispute_ts"], utc=True)
    for day, g in dis.groupby(dis["dispute_ts"].dt.date):
        write_partition(events / "disputes", day, g)


def back(n: int, hh: int = 12) -> pd.Timestamp:
    return ts(D - dt.timedelta(days=n), hh)


# merchant MA's history, with the default 60-day maturity and a 90-day rate window: on day D the rate
# counts transactions of days D-150 .. D-61 whose disputes arrived before day D
RATE_HISTORY = [
    (101, back(100), 9, "MA", 10.0, "allow"),   # disputed at D-10: a known fraud
    (102, back(100), 9, "MA", 10.0, "allow"),   # disputed on day D itself: not known until D+1
    (103, back(90), 9, "MA", 10.0, "block"),    # blocked: never labelled, not counted
    (104, back(61), 9, "MA", 10.0, "allow"),    # matured, never disputed
    (105, back(60), 9, "MA", 10.0, "allow"),    # disputed at D-40 but matures only on D+1
    (106, back(151), 9, "MA", 10.0, "allow"),   # disputed at D-120, but older than the window
    (201, back(80), 8, "MB", 10.0, "allow"),    # another merchant's fraud: moves only the global rate
    (202, back(80), 8, "MB", 10.0, "allow"),
]
RATE_DISPUTES = [(101, back(10)), (102, ts(D, 8)), (105, back(40)), (106, back(120)), (201, back(50))]


def test_merchant_fraud_rate_counts_only_matured_labels_known_before_the_day(tmp_path):
    K = PipelineConfig().features.risk[0].prior_tx

    events = tmp_path / "events"
    write_decided(events, RATE_HISTORY + [
        (1, ts(D, 12), 1, "MA", 5.0, "allow"), (2, ts(D, 12), 2, "MB", 5.0, "allow"),
        (3, ts(D, 12), 3, "MC", 5.0, "allow"), (4, ts(D + dt.timedelta(days=1), 10), 4, "MA", 5.0, "allow"),
    ], RATE_DISPUTES)
    f = compute_features(events, D, D + dt.timedelta(days=2)).set_index("tx_id")
    # day D: MA has 3 matured allowed rows (101, 102, 104), 1 known fraud (101); all merchants: 5 and 2
    g = 2 / 5
    assert f.loc[1, "merchant_matured_tx"] == 3
    assert f.loc[1, "merchant_fraud_rate"] == pytest.approx((1 + K * g) / (3 + K))
    assert f.loc[2, "merchant_matured_tx"] == 2
    assert f.loc[2, "merchant_fraud_rate"] == pytest.approx((1 + K * g) / (2 + K))
    # a merchant with no matured history gets the all-merchant rate
    assert f.loc[3, "merchant_matured_tx"] == 0 and f.loc[3, "merchant_fraud_rate"] == pytest.approx(g)
    # day D+1: 102's dispute (day D) is now known and 105 has matured: MA 4 rows, 3 frauds; all 6 and 4
    assert f.loc[4, "merchant_matured_tx"] == 4
    assert f.loc[4, "merchant_fraud_rate"] == pytest.approx((3 + K * 4 / 6) / (4 + K))


def test_merchant_fraud_rate_follows_the_maturity_window(tmp_path):
    events = tmp_path / "events"
    write_decided(events, RATE_HISTORY + [(1, ts(D, 12), 1, "MA", 5.0, "allow")], RATE_DISPUTES)
    # with a 30-day maturity, day D counts days D-120 .. D-31: 101, 102, 104, 105 (106 is too old)
    f = compute_features(events, D, D + dt.timedelta(days=1), maturity_days=30).set_index("tx_id")
    assert f.loc[1, "merchant_matured_tx"] == 4


def test_a_risk_feature_with_its_own_delay_uses_the_disputes_known_so_far(tmp_path):
    """delay_days shorter than the label maturity: a fresher rate on labels still arriving. On day D, a
    30-day delay and a 90-day window count days D-120 .. D-31 (101, 102, 104, 105) with the disputes that
    arrived before D (101 and 105: 105 has not matured for labels, its dispute is known all the same),
    beside the default feature on 60 days (101, 102, 104; fraud 101)."""
    from release.core.pipeline import DEFAULT_RISK, Features, RiskFeature

    events = tmp_path / "events"
    write_decided(events, RATE_HISTORY + [(1, ts(D, 12), 1, "MA", 5.0, "allow")], RATE_DISPUTES)
    fresh = RiskFeature(rate="fresh_rate", count="fresh_tx", window_days=90, prior_tx=1.0, delay_days=30)
    f = compute_features(events, D, D + dt.timedelta(days=1), features=Features(risk=[DEFAULT_RISK, fresh]))
    f = f.set_index("tx_id")
    assert f.loc[1, "fresh_tx"] == 4 and f.loc[1, "merchant_matured_tx"] == 3
    # all merchants: MA's four and MB's two rows, frauds 101, 105 and 201: prior 3/6 with weight 1
    assert f.loc[1, "fresh_rate"] == pytest.approx((2 + 1 * 3 / 6) / (4 + 1))


def test_before_any_label_matures_the_fraud_rate_is_unknown_not_zero(card1_events):
    f = compute_features(card1_events, D, D + dt.timedelta(days=1))
    assert f["merchant_fraud_rate"].isna().all() and (f["merchant_matured_tx"] == 0).all()


def test_disputes_and_transactions_after_the_day_do_not_change_its_features(tmp_path):
    base, more = tmp_path / "base", tmp_path / "more"
    today = [(1, ts(D, 12), 1, "MA", 5.0, "allow"), (2, ts(D, 13), 9, "MB", 50.0, "allow")]
    write_decided(base, RATE_HISTORY + today, RATE_DISPUTES)
    later = [(7, ts(D, 12, 1), 1, "MA", 500.0, "allow"), (8, ts(D + dt.timedelta(days=1), 9), 9, "MA", 9.0, "block")]
    # more disputes: 104 disputed later on day D and on D+1; 202 disputed on D+3
    write_decided(more, RATE_HISTORY + today + later,
                  RATE_DISPUTES + [(104, ts(D, 23)), (202, ts(D + dt.timedelta(days=3), 1))])
    a = compute_features(base, D, D + dt.timedelta(days=1)).set_index("tx_id")
    b = compute_features(more, D, D + dt.timedelta(days=1)).set_index("tx_id").loc[a.index]
    pd.testing.assert_frame_equal(a, b)


def test_longer_windows_maxima_and_distinct_merchants(card1_events):
    f = compute_features(card1_events, D, D + dt.timedelta(days=1)).set_index("tx_id")
    # 11:20 knows 10:00 (MA, 10), 10:30 (MA, 20) and 10:30 (MB, 30)
    assert f.loc[4, ["card_tx_7d", "card_amount_7d", "card_merchants_24h"]].tolist() == [3, 60.0, 2]
    assert f.loc[4, "amount_vs_card_max_30d"] == pytest.approx(40 / 31)
    # the 10:30 pair knows only 10:00 at MA
    assert f.loc[3, "card_merchants_24h"] == 1 and f.loc[1, "card_merchants_24h"] == 0
    # merchant MA: 10:00, 10:30, 11:20 (MB's 10:30 is another merchant)
    assert f.loc[4, ["merchant_tx_1h", "merchant_tx_24h", "merchant_tx_7d", "merchant_amount_24h"]].tolist() == [
        1, 2, 2, 30.0]
    assert f.loc[4, "amount_vs_merchant_avg_7d"] == pytest.approx(40 / 16)


def _brute_force_windows(tx: pd.DataFrame, key: str, hours: int) -> pd.Series:
    """Count of the same key's transactions in [t - w, t), one row at a time: slow and obviously right."""
    out = {}
    w = pd.Timedelta(hours=hours)
    for _, g in tx.groupby(key):
        t = g["ts"].to_numpy()
        for tx_id, ti in zip(g["tx_id"], t):
            out[tx_id] = int(((t >= ti - w) & (t < ti)).sum())
    return pd.Series(out)


@pytest.mark.parametrize("style", ["unpadded", "hostile"])
def test_ids_as_real_logs_have_them(tmp_path, style):
    """Unpadded ids ("1", "10", "2": Polars' grouped rolling returns groups in an order of its own, unlike
    the sort), unicode, commas and quotes, and 12,000 merchants: every window count matches a brute force."""
    import numpy as np

    rng = np.random.default_rng(7)
    n = 30_000
    name = (lambda i: str(i)) if style == "unpadded" else (lambda i: f'tërm,"{i}\u00e9')
    cards = [name(i) for i in rng.integers(0, 3_000, n)]
    merchants = [name(i) for i in rng.integers(0, 12_000, n)]
    stamps = pd.Timestamp(D, tz="UTC") + pd.to_timedelta(np.sort(rng.integers(0, 3 * 86_400, n)), unit="s")
    rows = [(i, stamps[i], cards[i], merchants[i], float(rng.integers(1, 300))) for i in range(n)]
    events = tmp_path / "events"
    write_events(events, rows, {D, D + dt.timedelta(days=1), D + dt.timedelta(days=2)})
    f = compute_features(events, D, D + dt.timedelta(days=3)).set_index("tx_id").sort_index()
    assert len(f) == n and f["merchant_id"].nunique() > 10_000
    tx = pd.DataFrame({"tx_id": range(n), "ts": stamps, "card_id": cards, "merchant_id": merchants})
    assert (f["card_tx_24h"] == _brute_force_windows(tx, "card_id", 24).sort_index()).all()
    assert (f["merchant_tx_24h"] == _brute_force_windows(tx, "merchant_id", 24).sort_index()).all()
    assert f.loc[0, "card_id"] == cards[0] and f.loc[n - 1, "merchant_id"] == merchants[n - 1]


def test_a_declared_window_is_computed_as_declared(tmp_path):
    """A window the default spec does not have (a card's 2-hour amount sum, a merchant's 3-day count),
    against a brute force on the same rows."""
    import numpy as np

    from release.core.pipeline import Features, WindowFeature

    rng = np.random.default_rng(3)
    n = 3000
    stamps = pd.Timestamp(D, tz="UTC") + pd.to_timedelta(np.sort(rng.integers(0, 4 * 86_400, n)), unit="s")
    cards, merchants = rng.integers(0, 60, n).tolist(), [f"m{i}" for i in rng.integers(0, 15, n)]
    amounts = rng.integers(1, 100, n).astype(float)
    events = tmp_path / "events"
    write_events(events, [(i, stamps[i], cards[i], merchants[i], amounts[i]) for i in range(n)],
                 {D + dt.timedelta(days=k) for k in range(4)})
    spec = Features(windows=[WindowFeature(name="card_sum_2h", entity="card", window="2h", aggregation="sum"),
                             WindowFeature(name="m_tx_3d", entity="merchant", window="3d", aggregation="count")])
    f = compute_features(events, D, D + dt.timedelta(days=4), features=spec).set_index("tx_id").sort_index()
    t = stamps.to_numpy()
    card, merch = np.array(cards), np.array(merchants)
    for i in rng.choice(n, 200, replace=False):
        known2h = (card == card[i]) & (t >= t[i] - np.timedelta64(2, "h")) & (t < t[i])
        known3d = (merch == merch[i]) & (t >= t[i] - np.timedelta64(3, "D")) & (t < t[i])
        assert f.loc[i, "card_sum_2h"] == amounts[known2h].sum() and f.loc[i, "m_tx_3d"] == known3d.sum()
    assert "card_tx_24h" not in f.columns  # only what is declared


def test_a_risk_feature_on_the_exact_clock_slides_with_the_transaction(tmp_path):
    """clock: exact, a 2-day delay and a 1-day window: a transaction at t counts the merchant's allowed
    transactions of [t - 3d, t - 2d) and, among them, the disputes that arrived before t (not the day
    after); the all-merchant prior likewise at t. Known answers, worked by hand."""
    from release.core.pipeline import Features, RiskFeature

    d3, d2 = D - dt.timedelta(days=3), D - dt.timedelta(days=2)
    events = tmp_path / "events"
    write_decided(events, [
        (301, ts(d3, 13), 9, "MA", 10.0, "allow"),      # disputed on day D at 11:00
        (302, ts(d3, 14), 9, "MA", 10.0, "allow"),      # never disputed
        (303, ts(d3, 12, 30), 9, "MA", 10.0, "block"),  # blocked: never counted, even when disputed
        (304, ts(d2, 8), 9, "MA", 10.0, "allow"),       # disputed the day before D
        (401, ts(d3, 13), 8, "MB", 10.0, "allow"),      # another merchant's fraud: the prior only
        (1, ts(D, 9), 1, "MA", 5.0, "allow"), (2, ts(D, 12), 1, "MA", 5.0, "allow"),
        (3, ts(D, 13, 30), 1, "MA", 5.0, "allow"), (4, ts(D, 14), 1, "MA", 5.0, "allow"),
        (5, ts(D, 8), 1, "MA", 5.0, "allow"),
    ], [(301, ts(D, 11)), (303, ts(D - dt.timedelta(days=1), 9)), (304, ts(D - dt.timedelta(days=1), 12)),
        (401, ts(d2, 9))])
    exact = RiskFeature(rate="x_rate", count="x_tx", window_days=1, prior_tx=1.0, delay_days=2, clock="exact")
    daily = RiskFeature(rate="d_rate", count="d_tx", window_days=1, prior_tx=1.0, delay_days=2)
    f = compute_features(events, D, D + dt.timedelta(days=1), features=Features(risk=[exact, daily]))
    f = f.set_index("tx_id").sort_index()
    # (merchant's rows, its frauds known, all rows, all frauds known)
    worked = {5: (2, 0, 3, 1),   # 08:00: 304 (D-2 08:00) is not yet in [t-3d, t-2d): right end open
              1: (3, 1, 4, 2),   # 09:00: 301, 302, 304 in; 301's dispute (11:00) not yet known
              2: (3, 2, 4, 3),   # 12:00: 301's dispute arrived at 11:00: known
              3: (2, 1, 2, 1),   # 13:30: 301 and 401 (13:00 three days back) have left the window
              4: (2, 1, 2, 1)}   # 14:00: 302 (14:00 three days back) is still in: left end closed
    for tx, (n, k, g, gk) in worked.items():
        assert f.loc[tx, "x_tx"] == n, tx
        assert f.loc[tx, "x_rate"] == pytest.approx((k + gk / g) / (n + 1)), tx
    # the daily clock: one value for the whole day (day D-3's 301, 302 with no dispute known before D)
    assert f["d_tx"].nunique() == 1 and f.loc[1, "d_tx"] == 2 and f["d_rate"].nunique() == 1
