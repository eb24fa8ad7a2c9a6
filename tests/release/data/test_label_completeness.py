"""Label completeness: the delay distribution of fully observed cohorts and the share of eventual disputes
a window has at its age, with known answers."""
from __future__ import annotations

import datetime as dt
import json
import shutil

import numpy as np
import pandas as pd
import pytest

from release.data import label_completeness as lc
from release.core.io import write_partition
from release.data.label_completeness import (
    dispute_delay_distribution,
    label_completeness,
    read_delay_distribution,
    window_completeness,
)

AS_OF = pd.Timestamp("2026-06-20", tz="UTC")
AS_OF_DAY = AS_OF.date()
DAY = pd.Timedelta(days=1)


def _matured(delays, n_days=40, first_age=130, hour=6):
    """One transaction a day, ``first_age`` .. ``first_age + n_days - 1`` days before AS_OF (all older than
    the 120-day horizon) at ``hour`` o'clock, with the delays cycling through ``delays``."""
    ages = np.arange(first_age, first_age + n_days)
    tx = AS_OF - pd.to_timedelta(ages, unit="D") + pd.Timedelta(hours=hour)
    delay = pd.to_timedelta(np.resize(np.asarray(delays, dtype=float), n_days), unit="D")
    return pd.Series(tx), pd.Series(tx + delay)


def _aged(age: int, days: int = 1) -> tuple[dt.date, dt.date]:
    """The window of ``days`` transaction days whose oldest day is ``age`` days before AS_OF."""
    start = AS_OF_DAY - dt.timedelta(days=age)
    return start, start + dt.timedelta(days=days)


def _completeness(dist, age, days=1, **kw):
    return label_completeness(dist, *_aged(age, days), AS_OF, **kw)


# ---------------------------------------------------------------- known answers

def test_all_delays_ten_days_a_window_aged_five_days_has_none_and_one_aged_fifteen_has_all():
    dist = dispute_delay_distribution(*_matured([10]), AS_OF, 120)
    assert dist.usable and dist.disputes_used == 40
    assert dist.median_days == 10 and dist.p90_days == 10
    assert dist.cdf[9] == 0 and dist.cdf[10] == 1 and dist.cdf[120] == 1
    assert list(dist.grid_days[:3]) == [0, 1, 2] and len(dist.cdf) == 121
    young, old = _completeness(dist, 5), _completeness(dist, 15)
    assert (young.completeness, young.missing_share) == (0.0, 1.0)
    assert (old.completeness, old.missing_share) == (1.0, 0.0)
    assert old.beyond_horizon_share == 0 and old.reason is None


def test_half_ten_half_thirty_days_a_window_aged_twenty_days_has_half():
    dist = dispute_delay_distribution(*_matured([10, 30]), AS_OF, 120)
    assert dist.median_days == 20  # halfway between the two delays
    assert _completeness(dist, 20).completeness == 0.5
    assert _completeness(dist, 5).completeness == 0.0
    assert _completeness(dist, 35).completeness == 1.0
    # a 16-day window, days aged 20..35: the first 5 days (aged 31..35) complete, the other 11 half
    assert _completeness(dist, 35, days=16).completeness == pytest.approx((5 + 11 * 0.5) / 16)


def test_a_day_is_averaged_over_its_hours():
    # judged at noon, the day aged 10 holds transactions 9.5 to 10.5 days old: half of them have their
    # 10-day dispute
    dist = dispute_delay_distribution(*_matured([10]), AS_OF, 120)
    noon = AS_OF + pd.Timedelta(hours=12)
    assert label_completeness(dist, *_aged(10), noon).completeness == pytest.approx(0.5)
    assert label_completeness(dist, *_aged(10), AS_OF).completeness == 0.0  # aged 9..10: not yet


def test_days_are_weighted_by_their_transaction_counts():
    dist = dispute_delay_distribution(*_matured([10]), AS_OF, 120)
    start, end = AS_OF_DAY - dt.timedelta(days=15), AS_OF_DAY - dt.timedelta(days=4)  # days aged 15..5
    # unweighted: days aged 15..11 complete (5), aged 10..5 not (6)
    assert label_completeness(dist, start, end, AS_OF).completeness == pytest.approx(5 / 11)
    counts = {start: 1, AS_OF_DAY - dt.timedelta(days=5): 3}  # other days: no transactions
    assert label_completeness(dist, start, end, AS_OF, day_counts=counts).completeness == pytest.approx(0.25)
    # timestamps as keys are days too
    ts_counts = pd.Series([1, 3], index=pd.to_datetime([start, AS_OF_DAY - dt.timedelta(days=5)]))
    assert label_completeness(dist, start, end, AS_OF, day_counts=ts_counts).completeness == pytest.approx(0.25)


def test_cohorts_younger_than_the_horizon_are_left_out_because_they_would_bias_it():
    # a transaction every day for 301 days, delays alternating 10 and 30 days. At AS_OF the transactions
    # 10 to 30 days old have their 10-day disputes but not yet their 30-day ones.
    tx, dis = _matured([10, 30], n_days=301, first_age=0)
    dist = dispute_delay_distribution(tx, dis, AS_OF, 120)
    assert _completeness(dist, 20).completeness == 0.5  # the truth
    assert dist.disputes_used == 180  # transactions 121..300 days old
    # younger ones: 10-day disputes of even ages 12..120 (55), 30-day ones of odd ages 31..119 (45)
    assert dist.young_disputes_excluded == 100
    # every delay seen so far, young cohorts included: too many short delays, completeness overstated
    known = dis < AS_OF
    seen = ((dis - tx) / DAY)[known]
    naive = float((seen <= 19.5).mean())
    assert naive == pytest.approx((90 + 55) / 280) and naive > 0.51


def test_a_window_older_than_the_horizon_is_complete_given_the_horizon_and_says_so():
    tx, dis = _matured([10, 30, 150])  # a third of the disputes come after the 120-day horizon
    dist = dispute_delay_distribution(tx, dis, AS_OF, 120, min_disputes=1)
    # used: the 10- and 30-day ones; the 150-day ones of transactions older than 150 days are seen, not used
    assert dist.disputes_used == 27 and dist.disputes_beyond_horizon == 6
    c = _completeness(dist, 200, days=10)
    assert c.completeness == 1.0 and c.beyond_horizon_share == 1.0
    assert c.sentence("old window") == (
        "Label completeness of the old window (2025-12-02..2025-12-11) at 2026-06-20: every eventual dispute "
        "has arrived (the window is older than the 120-day horizon; later disputes are not counted), from 27 "
        "disputes of matured history.")
    partly = _completeness(dist, 125, days=10)  # days aged 125..116: 116..120 inside the horizon
    assert partly.beyond_horizon_share == pytest.approx(0.5) and partly.completeness == 1.0


def test_the_sentence_reads_like_the_report():
    dist = dispute_delay_distribution(*_matured([10, 10, 10, 30], n_days=1204), AS_OF, 120)
    c = _completeness(dist, 20)
    assert c.completeness == 0.75
    assert c.sentence("judging window") == (
        "Label completeness of the judging window (2026-05-31..2026-05-31) at 2026-06-20: 75% of eventual "
        "disputes have arrived (25% still to come), from 1,204 disputes of matured history.")
    assert c.to_dict("judging window")["sentence"] == c.sentence("judging window")
    # nearly complete is not rounded to 100%
    assert lc._pct(0.998) == "99.8%" and lc._pct(0.002) == "0.2%" and lc._pct(0.93) == "93%"


def test_the_standard_error_is_that_of_a_share_of_the_disputes():
    dist = dispute_delay_distribution(*_matured([10, 30], n_days=400), AS_OF, 120)
    c = _completeness(dist, 20)
    assert c.standard_error == pytest.approx(np.sqrt(0.5 * 0.5 / dist.disputes_used), rel=0.01)


# ---------------------------------------------------------------- no number without a reason

def test_an_empty_window_gives_none_with_a_reason():
    dist = dispute_delay_distribution(*_matured([10]), AS_OF, 120)
    c = label_completeness(dist, AS_OF_DAY - dt.timedelta(days=5), AS_OF_DAY - dt.timedelta(days=5), AS_OF)
    assert c.completeness is None and c.missing_share is None
    assert c.reason == "the window 2026-06-15..2026-06-15 is empty (no days)"
    counted = label_completeness(dist, *_aged(20, 3), AS_OF, day_counts={})
    assert counted.completeness is None and counted.reason == "no transactions in the window 2026-05-31..2026-06-02"
    assert counted.sentence("judging window") == (
        "Label completeness of the judging window (2026-05-31..2026-06-02) at 2026-06-20: not estimated: no "
        "transactions in the window 2026-05-31..2026-06-02.")


def test_no_disputes_gives_none_with_a_reason():
    tx, _ = _matured([10])
    dist = dispute_delay_distribution(tx, pd.Series(pd.NaT, index=tx.index), AS_OF, 120)
    assert not dist.usable and dist.disputes_used == 0 and dist.median_days is None
    assert dist.reason.startswith("no disputes in matured history (transactions 2026-01-02..2026-02-19")
    c = _completeness(dist, 20)
    assert c.completeness is None and c.reason == dist.reason


def test_too_few_disputes_or_too_short_a_history_give_none_with_a_reason():
    few = dispute_delay_distribution(*_matured([10], n_days=5), AS_OF, 120)
    assert few.reason.startswith("only 5 disputes in matured history") and "at least 30" in few.reason
    assert _completeness(few, 20).completeness is None
    young = dispute_delay_distribution(*_matured([10], first_age=20), AS_OF, 120)
    assert young.reason == ("no transactions at least 120 days old at 2026-06-20 (the horizon): the history is "
                            "too short to see whole dispute delays")


def test_disputes_after_as_of_and_before_their_transaction_are_not_used():
    tx, dis = _matured([10])
    dis = dis.copy()
    dis.iloc[0] = AS_OF + DAY  # not known at AS_OF
    dis.iloc[1] = tx.iloc[1] - DAY  # impossible: dropped and counted
    dist = dispute_delay_distribution(tx, dis, AS_OF, 120)
    assert dist.disputes_used == 38 and dist.invalid_disputes == 1


def test_naive_timestamps_are_utc():
    tx, dis = _matured([10, 30])
    aware = dispute_delay_distribution(tx, dis, AS_OF, 120)
    naive = dispute_delay_distribution(tx.dt.tz_localize(None), dis.dt.tz_localize(None), AS_OF.tz_localize(None), 120)
    np.testing.assert_array_equal(aware.delays_days, naive.delays_days)


@pytest.mark.parametrize("call, message", [
    (lambda d: dispute_delay_distribution(*_matured([10]), AS_OF, 0),
     "The 'horizon_days' parameter of dispute_delay_distribution must be an int in [1, 3650]. Got 0 instead."),
    (lambda d: dispute_delay_distribution(pd.Series([AS_OF]), pd.Series([AS_OF, AS_OF]), AS_OF, 120),
     "transactions_ts and dispute_ts of dispute_delay_distribution must be aligned (one dispute time or NaT per "
     "transaction). Got 1 and 2 values instead."),
    (lambda d: label_completeness(d, AS_OF_DAY - dt.timedelta(days=3), AS_OF_DAY + dt.timedelta(days=1), AS_OF),
     "The window of label_completeness must end by as_of (2026-06-20): its later days have no transactions yet. "
     "Got window_end=2026-06-21 instead."),
    (lambda d: label_completeness(d, AS_OF_DAY, AS_OF_DAY - dt.timedelta(days=3), AS_OF),
     "The window of label_completeness must have window_start <= window_end. Got 2026-06-20..2026-06-17 instead."),
    (lambda d: label_completeness(d, "2026-05-01 13:00", "2026-05-03", AS_OF),
     "The 'window_start' parameter of label_completeness must be a date (midnight). Got '2026-05-01 13:00' instead."),
])
def test_bad_arguments_are_refused_with_a_readable_message(call, message):
    dist = dispute_delay_distribution(*_matured([10]), AS_OF, 120)
    with pytest.raises(ValueError) as e:
        call(dist)
    assert str(e.value) == message


# ---------------------------------------------------------------- reading event logs

def _write_events(events, tx: pd.Series, dis: pd.Series) -> None:
    """Canonical transactions and disputes partitions (tx_id, ts; tx_id, dispute_ts) by day."""
    df = pd.DataFrame({"tx_id": np.arange(len(tx), dtype=np.int64), "ts": tx.reset_index(drop=True),
                       "dispute_ts": dis.reset_index(drop=True)})
    for day, g in df.groupby(df["ts"].dt.date):
        write_partition(events / "transactions", day, g[["tx_id", "ts"]].assign(amount=1.0))
    d = df.dropna(subset=["dispute_ts"])
    for day, g in d.groupby(d["dispute_ts"].dt.date):
        write_partition(events / "disputes", day, g[["tx_id", "dispute_ts"]])


@pytest.fixture(scope="module")
def mixed_events(tmp_path_factory):
    """300 days, a transaction a day (plus an undisputed one), delays alternating 10 and 30 days; disputes
    written only as far as AS_OF."""
    tx, dis = _matured([10, 30], n_days=300, first_age=0)
    dis = dis.where(dis < AS_OF)
    tx = pd.concat([tx, tx + pd.Timedelta(hours=3)], ignore_index=True)
    dis = pd.concat([dis, pd.Series(pd.NaT, index=dis.index, dtype=dis.dtype)], ignore_index=True)
    events = tmp_path_factory.mktemp("mixed") / "events"
    _write_events(events, tx, dis)
    return events


def test_the_reader_uses_the_cohorts_before_the_horizon(mixed_events):
    dist = read_delay_distribution(mixed_events, AS_OF_DAY)
    # transactions 210..121 days old (the one of the day 120 days back is younger than the cut at midnight)
    assert (dist.cohort_start, dist.cohort_end) == (AS_OF_DAY - dt.timedelta(days=210),
                                                    AS_OF_DAY - dt.timedelta(days=120))
    assert dist.disputes_used == 90 and dist.transactions_used == 180
    assert dist.median_days == 20
    assert dist.summary() == {
        "horizon_days": 120, "median_days": 20.0, "p90_days": 30.0, "disputes_used": 90, "transactions_used": 180,
        "cohort_start": "2025-11-22", "cohort_end": "2026-02-20", "disputes_beyond_horizon": 0,
        "invalid_disputes": 0, "reason": None}
    shorter = read_delay_distribution(mixed_events, AS_OF_DAY, horizon_days=60, cohort_days=30)
    assert shorter.disputes_used == 30 and shorter.cohort_start == AS_OF_DAY - dt.timedelta(days=90)


def test_window_completeness_for_the_evaluation(mixed_events):
    out = window_completeness(mixed_events, AS_OF_DAY, {
        "fitting window": _aged(60, 20),
        "judging window": _aged(20),
        "too_young": _aged(5),
    })
    assert out["fitting window"]["completeness"] == 1.0
    j = out["judging window"]
    assert (j["completeness"], j["missing_share"], j["disputes_used"]) == (0.5, 0.5, 90)
    assert j["sentence"] == ("Label completeness of the judging window (2026-05-31..2026-05-31) at 2026-06-20: 50% "
                             "of eventual disputes have arrived (50% still to come), from 90 disputes of matured "
                             "history.")
    assert out["too_young"]["sentence"].startswith("Label completeness of the too young (2026-06-15..2026-06-15)")
    assert out["too_young"]["completeness"] == 0.0
    assert set(j) == {"start", "end", "as_of", "completeness", "missing_share", "standard_error",
                      "beyond_horizon_share", "disputes_used", "horizon_days", "sentence", "reason"}


def test_window_completeness_without_history_says_why(tmp_path):
    out = window_completeness(tmp_path / "nothing", AS_OF_DAY, {"judging window": _aged(20, 7)})
    j = out["judging window"]
    assert j["completeness"] is None and j["disputes_used"] == 0
    assert "no transactions at least 120 days old at 2026-06-20" in j["reason"]
    assert j["sentence"].startswith("Label completeness of the judging window (2026-05-31..2026-06-06) at "
                                    "2026-06-20: not estimated: no transactions at least 120 days old")


# ---------------------------------------------------------------- a team's own log

SOURCE = """\
path: team/log.csv
columns:
  tx_id: ref
  ts: at
  card_id: card
  amount: amount
  {label}
{extra}"""


@pytest.mark.parametrize("label, extra, expected", [
    ("fraud_flag: flagged", "label_delay_days: 30\n",
     "every one of the {n} disputes in matured history arrived exactly 30 days after its transaction: the log "
     "carries a fraud flag with an assumed delay (label_delay_days), not dispute times, so how late labels "
     "arrive cannot be measured from it"),
    ("", "", "no disputes in matured history"),
    ("dispute_ts: disputed_at", "", None),
], ids=["fraud flag with an assumed delay", "no labels", "dispute times (an estimate)"])
def test_a_source_without_dispute_times_gives_none_with_a_reason(tmp_path, label, extra, expected):
    from release.data.source import ingest_source

    rng = np.random.default_rng(3)
    n = 3000
    at = pd.Timestamp("2026-01-01") + pd.to_timedelta(np.sort(rng.integers(0, 150 * 86400, n)), unit="s")
    flagged = rng.random(n) < 0.2
    disputed_at = at + pd.to_timedelta(rng.lognormal(np.log(25), 0.65, n) * 86400, unit="s").round("s")
    log = pd.DataFrame({"ref": np.arange(n), "at": at.strftime("%Y-%m-%d %H:%M:%S"), "card": rng.integers(0, 90, n),
                        "amount": 10.0, "flagged": flagged.astype(int),
                        "disputed_at": np.where(flagged, disputed_at.strftime("%Y-%m-%d %H:%M:%S"), "")})
    (tmp_path / "team").mkdir()
    log.to_csv(tmp_path / "team" / "log.csv", index=False)
    (tmp_path / "source.yaml").write_text(SOURCE.format(label=label, extra=extra))
    events = tmp_path / "events"
    ingest_source(tmp_path / "source.yaml", events)
    as_of = dt.date(2026, 5, 31)  # 150 days of history: 30 days of cohorts older than the horizon
    dist = read_delay_distribution(events, as_of)
    j = window_completeness(events, as_of, {"judging window": (dt.date(2026, 4, 1), dt.date(2026, 4, 21))},
                            distribution=dist)["judging window"]
    if expected is None:  # real dispute times: an estimate
        assert dist.usable and dist.disputes_used > 60 and 0.6 < j["completeness"] < 1
        return
    assert j["completeness"] is None and j["missing_share"] is None
    assert j["reason"].startswith(expected.format(n=f"{dist.disputes_used:,}"))
    assert j["sentence"].endswith(j["reason"] + ".")


# ---------------------------------------------------------------- the simulator's lognormal delays

@pytest.mark.slow
def test_the_simulators_lognormal_delays_are_recovered(tmp_path):
    from scipy.stats import lognorm

    from simulation.world import WorldConfig, simulate

    # few transactions a day but plenty of opportunistic fraud (disputed at 85%): about 10 disputes a day;
    # 160 days leave 40 days of cohorts older than the 120-day horizon (the simulator's cap)
    cfg = WorldConfig(days=160, tx_per_day=60, n_merchants=20, n_cards=300, fraud_logit_base=-0.5,
                      card_testing_per_1k=0, ato_per_1k=0, drift_per_1k=0)
    simulate(cfg, tmp_path / "events")
    truth = lognorm(s=cfg.dispute_sigma, scale=cfg.dispute_median_days)
    dist = read_delay_distribution(tmp_path / "events", cfg.end)
    n = dist.disputes_used
    assert dist.usable and n > 300
    # the sample median's standard error (log scale): sqrt(pi/2) * sigma / sqrt(n); 4 of them
    assert abs(np.log(dist.median_days / cfg.dispute_median_days)) < 4 * 1.2533 * cfg.dispute_sigma / np.sqrt(n)
    # the CDF at 60 days is a share of n disputes: binomial standard error, 4 of them
    p60 = truth.cdf(60)
    assert abs(dist.cdf_at(60) - p60) < 4 * np.sqrt(p60 * (1 - p60) / n)
    # the day aged 60 holds transactions 59 to 60 days old: the true completeness is the CDF averaged there
    c = label_completeness(dist, *(lambda s: (s, s + dt.timedelta(days=1)))(cfg.end - dt.timedelta(days=60)),
                           cfg.end)
    true_c = float(np.mean(truth.cdf(np.linspace(59, 60, 201))))
    assert c.standard_error == pytest.approx(np.sqrt(true_c * (1 - true_c) / n), rel=0.2)
    assert abs(c.completeness - true_c) < 4 * c.standard_error


# ---------------------------------------------------------------- the snapshot manifest

def test_the_tiny_snapshot_manifest_says_its_history_is_too_short(tiny_snapshot):
    entry = tiny_snapshot.manifest["label_completeness"]
    assert entry["delay_distribution"]["horizon_days"] == 120 and entry["evaluation_days"] == 21
    assert "no transactions at least 120 days old" in entry["delay_distribution"]["reason"]
    for name in ("matured_window", "evaluation_window"):
        w = entry["windows"][name]
        assert w["completeness"] is None and w["reason"] == entry["delay_distribution"]["reason"]
        assert w["sentence"].startswith(f"Label completeness of the {name.replace('_', ' ')} (")


def test_the_manifest_records_completeness_of_the_matured_and_evaluation_windows(tiny, tiny_events, tmp_path,
                                                                                monkeypatch):
    from release.data.training_set import build_training_set

    # the tiny world's disputes come within 5 days: a 6-day horizon sees them whole; with a 3-day
    # maturity window the youngest matured days still wait for some
    monkeypatch.setattr(lc, "HORIZON_DAYS", 6)
    snaps = tmp_path / "snaps"
    kw = dict(maturity_days=3, history_days=tiny.history_days)
    snap = build_training_set(tiny_events, snaps, tiny.as_of, **kw)
    entry = snap.manifest["label_completeness"]
    d = entry["delay_distribution"]
    assert d["reason"] is None and d["horizon_days"] == 6 and d["disputes_used"] >= 30
    assert 1 <= d["median_days"] <= d["p90_days"] <= 5
    start, end = tiny.as_of - dt.timedelta(days=tiny.history_days), tiny.as_of - dt.timedelta(days=3)
    matured, ev = entry["windows"]["matured_window"], entry["windows"]["evaluation_window"]
    assert (matured["start"], matured["end"]) == (start.isoformat(), end.isoformat())
    assert (ev["start"], ev["end"]) == (start.isoformat(), end.isoformat())  # 21 days reach past the window's start
    # the same figure from the module's own functions, weighted by the snapshot's labelled rows per day
    df = pd.read_parquet(snap.data, columns=["day", "label"])
    counts = df.groupby("day")["label"].count()
    expected = label_completeness(read_delay_distribution(tiny_events, tiny.as_of, horizon_days=6), start, end,
                                  tiny.as_of, day_counts=counts)
    assert ev["completeness"] == round(expected.completeness, 6) and entry["weighted_by"] == "labelled rows per day"
    assert 0.8 < ev["completeness"] < 1  # the days aged 4 and 5 still wait for some disputes
    assert ev["sentence"].startswith(f"Label completeness of the evaluation window ({start}..")
    # a rerun finds the same snapshot, manifest untouched
    before = (snap.path / "manifest.json").read_text()
    again = build_training_set(tiny_events, snaps, tiny.as_of, **kw)
    assert again == snap and (again.path / "manifest.json").read_text() == before
    assert json.loads(before)["label_completeness"] == entry


def test_the_completeness_cohorts_are_in_the_hash(tiny, tiny_events, tmp_path, monkeypatch):
    from release.data.training_set import build_training_set

    monkeypatch.setattr(lc, "HORIZON_DAYS", 6)
    monkeypatch.setattr(lc, "COHORT_DAYS", 200)
    events = tmp_path / "events"
    shutil.copytree(tiny_events, events)
    kw = dict(maturity_days=tiny.maturity_days, history_days=tiny.history_days)
    first = build_training_set(events, tmp_path / "snaps", tiny.as_of, **kw)
    # a transaction partition only the completeness cohorts reach (older than the features look back)
    old_day = tiny.as_of - dt.timedelta(days=150)
    assert old_day < tiny.as_of - dt.timedelta(days=tiny.history_days + max(60, tiny.maturity_days + 91))
    write_partition(events / "transactions", old_day, pd.DataFrame({
        "tx_id": [1], "ts": [pd.Timestamp(old_day, tz="UTC")], "amount": [1.0]}))
    second = build_training_set(events, tmp_path / "snaps", tiny.as_of, **kw)
    assert second.hash != first.hash
    assert second.manifest["label_completeness"]["delay_distribution"]["transactions_used"] == \
        first.manifest["label_completeness"]["delay_distribution"]["transactions_used"] + 1
