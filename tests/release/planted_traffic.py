"""Planted live traffic for the monitoring of performance as labels mature: the production model's decisions
(as the decision log has them), the disputes they get, the release's promise and the dispute delay
distribution, with a known truth. Shared by tests/release/rollout/test_matured_performance.py (the check) and
tests/release/orchestration/test_monitoring_run.py (the daily run).

The world: ``per_week`` decisions a week, 4% fraud; the production model scores a fraud Beta(4, 3) and a
legitimate transaction Beta(2, 12) and blocks at 0.5 (recall 66%, FPR 0.2%); a share ``exploration`` of the
would-be blocks is let through and logged with its propensity; 85% of the allowed frauds and 0.1% of the allowed
legitimate transactions are disputed, lognormally ``delay_median`` days (sigma 0.6) after the transaction. From
``new_from`` on, a share ``new_share`` of the fraud is a new pattern the model scores like legitimate traffic."""
from __future__ import annotations

import datetime as dt

import numpy as np
import pandas as pd

from analysis.stats import slice_intervals
from release.data.label_completeness import dispute_delay_distribution
from release.rollout.monitoring import Promise, promised_performance

PER_WEEK = 25_000
THRESHOLD = 0.5
EXPLORATION = 0.05


def traffic(rng: np.random.Generator, start: dt.date, days: int, *, per_week: int = PER_WEEK,
            fraud_rate: float = 0.04, exploration: float = EXPLORATION, new_from: dt.date | None = None,
            new_share: float = 0.6, delay_median: float = 10.0, id0: int = 0) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Decisions of the production model for ``days`` days from ``start`` (tx_id, ts, card_id, amount, action,
    propensity, explored, production_score, production_block) and the disputes they get (tx_id, dispute_ts, at
    any later time: a check reads only those known at its as-of)."""
    n = int(per_week * days / 7)
    sec = np.sort(rng.uniform(0, days * 86400, n))
    ts = pd.Timestamp(start, tz="UTC") + pd.to_timedelta(np.round(sec * 1e6), unit="us")  # the log's precision
    fraud = rng.random(n) < fraud_rate
    new = np.zeros(n, bool)
    if new_from is not None:
        new = fraud & (sec >= (new_from - start).days * 86400) & (rng.random(n) < new_share)
    score = np.where(fraud & ~new, rng.beta(4, 3, n), rng.beta(2, 12, n))
    block = score >= THRESHOLD
    explored = block & (rng.random(n) < exploration)
    action = np.where(block & ~explored, "block", "allow")
    propensity = np.where(explored, exploration, np.where(block, 1 - exploration, 1.0))
    disputed = (action == "allow") & np.where(fraud, rng.random(n) < 0.85, rng.random(n) < 0.001)
    delay = np.clip(rng.lognormal(np.log(delay_median), 0.6, n), 1, 120) * 86400
    tx = np.arange(id0, id0 + n)
    decisions = pd.DataFrame({"tx_id": tx, "ts": ts, "card_id": rng.integers(0, 60_000, n),
                              "amount": np.round(rng.lognormal(3.5, 1.0, n), 2), "action": action,
                              "propensity": propensity, "explored": explored, "production_score": score,
                              "production_block": block})
    disputes = pd.DataFrame({"tx_id": tx[disputed],
                             "dispute_ts": ts[disputed] + pd.to_timedelta(np.round(delay[disputed]), unit="s")})
    return decisions, disputes


def promise_metrics(rng: np.random.Generator, start: dt.date, **kw) -> pd.DataFrame:
    """A release's judgement of the policy on 10 days of the world from ``start``: IPW recall, FPR and precision
    with 95% intervals on all traffic, as analysis.evaluation's tidy metrics table has them (model "policy")."""
    dec, dis = traffic(rng, start, 10, id0=10 ** 9, **kw)
    label = np.where(dec["action"] == "allow", dec["tx_id"].isin(dis["tx_id"]).astype(float), np.nan)
    return slice_intervals(label, 1 / dec["propensity"].to_numpy(), dec["amount"],
                           {"policy": dec["production_block"].to_numpy(float)}, {"all": np.array(["all"] * len(dec))},
                           dec["card_id"].to_numpy(), baseline="policy", n_boot=1000, estimators=("ipw",), money=set())


def promise(rng: np.random.Generator, start: dt.date, release_id: str = "rel-test", **kw) -> Promise:
    return promised_performance(promise_metrics(rng, start, **kw), release_id)


def delays(rng: np.random.Generator, as_of: dt.date, median: float = 10.0):
    """The dispute delay distribution of fully observed cohorts (transactions 121-210 days old at ``as_of``)."""
    at = pd.Timestamp(as_of, tz="UTC")
    tx = at - pd.to_timedelta(rng.uniform(121, 210, 3000), unit="D")
    delay = np.clip(rng.lognormal(np.log(median), 0.6, 3000), 1, 120)
    return dispute_delay_distribution(tx, tx + pd.to_timedelta(delay, unit="D"), at)
