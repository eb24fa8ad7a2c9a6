"""A seeded synthetic card-payments world that writes day-partitioned Parquet event logs.

Tables written under ``<out>/``:

- ``transactions/day=YYYY-MM-DD/part-0.parquet``: tx_id, ts, card_id, card_country, merchant_id,
  merchant_country, merchant_category, amount
- ``decisions/day=.../``: tx_id, ts, policy, score, threshold, action (allow|block), explored, propensity
  (the probability of the action that was taken; exploration rows carry the exploration share)
- ``disputes/day=<dispute day>/``: tx_id, dispute_ts. A fraud dispute, whether the fraud was real or
  "friendly" (a cardholder disputing their own purchase): the pipeline cannot tell them apart. Blocked
  transactions are never disputed (censoring). Only disputes that arrived before the horizon are written.
- ``truth/day=.../`` (simulation only, never read by the pipeline): tx_id, is_fraud, scenario

The hard parts are built in: heavy-tailed merchant volume, several fraud scenarios (opportunistic,
card testing bursts, account takeover, a compromised merchant, a scenario that starts mid-history, and
optionally card testing fading out),
disputes that arrive weeks late, and a rule-based deployed policy whose blocks hide labels, except for a
logged exploration share.

A simulation lands whole: the world is written into a temp folder beside ``out`` and swapped in at the
end, so a killed ``fraudcd simulate`` leaves the previous world as it was (and its temp folder, which
the next simulation removes). A new world replaces the old one entirely: no day of an earlier world
survives beside it.
"""
from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Callable

import numpy as np
import pandas as pd
from pydantic import BaseModel, ConfigDict, Field

from release.core.io import (atomic_write_parquet, local_events, owned_temp_dir, remove_stale_temp_dirs, replace_dir,
                             write_partition)

COUNTRIES = ["US", "GB", "DE", "FR", "BR", "IN", "MX", "ES", "NL", "NG", "CA", "AU", "IT", "PL", "JP",
             "SE", "TR", "ZA", "AR", "SG"]
COUNTRY_WEIGHT = np.array([30, 12, 10, 9, 8, 7, 5, 5, 4, 3, 4, 3, 4, 3, 3, 2, 2, 2, 2, 2], dtype=float)
CATEGORIES = ["grocery", "fuel", "restaurants", "fashion", "electronics", "travel", "digital_goods",
              "gambling"]
CAT_MEDIAN_AMOUNT = np.array([35, 45, 30, 70, 250, 400, 15, 50], dtype=float)
CAT_FRAUD_LOGIT = np.array([-1.0, -0.8, -0.9, 0.0, 0.8, 0.6, 0.7, 0.9])
CAT_WEIGHT = np.array([25, 12, 18, 12, 8, 6, 12, 7], dtype=float)
LEGACY_RISKY = {"electronics", "travel", "gambling"}


class WorldConfig(BaseModel):
    """How big the world is and how it behaves. Field names are the YAML keys."""

    model_config = ConfigDict(extra="forbid")

    seed: int = 7
    start: dt.date = dt.date(2026, 1, 1)
    days: int = Field(150, ge=1, le=3650)
    tx_per_day: int = Field(3000, ge=10)
    n_countries: int = Field(10, ge=1, le=len(COUNTRIES))
    n_merchants: int = Field(2000, ge=1)
    n_cards: int = Field(30000, ge=10)
    fraud_logit_base: float = -7.0
    card_testing_per_1k: float = Field(0.4, ge=0)
    ato_per_1k: float = Field(1.2, ge=0)
    drift_start_fraction: float = Field(0.6, ge=0, le=1)
    drift_per_1k: float = Field(2.0, ge=0)
    # an old pattern fades: from this share of the days on, card testing falls linearly to nothing over
    # fade_days (None: it never fades)
    fade_start_fraction: float | None = Field(None, ge=0, le=1)
    fade_days: int = Field(28, ge=1)
    # share of would-be blocks let through and logged (censoring); 5%: the smallest tested rate at which a
    # 21-day window's IPW figures are unbiased with honest intervals (benchmarks/bench_counterfactual.py, README)
    exploration: float = Field(0.05, gt=0, lt=1)
    legacy_threshold: float = 0.70
    dispute_rate: float = Field(0.85, ge=0, le=1)
    friendly_rate: float = Field(0.0008, ge=0, le=1)
    dispute_median_days: float = Field(25.0, gt=0)
    dispute_sigma: float = Field(0.65, gt=0)
    dispute_max_days: int = Field(120, ge=1)

    @property
    def end(self) -> dt.date:
        return self.start + dt.timedelta(days=self.days)


def _world_entities(cfg: WorldConfig, rng: np.random.Generator) -> tuple[pd.DataFrame, pd.DataFrame]:
    countries = np.array(COUNTRIES[: cfg.n_countries])
    cw = COUNTRY_WEIGHT[: cfg.n_countries] / COUNTRY_WEIGHT[: cfg.n_countries].sum()
    m = cfg.n_merchants
    merchants = pd.DataFrame({
        "merchant_id": [f"M{i:06d}" for i in range(m)],
        "merchant_country": rng.choice(countries, size=m, p=cw),
        "merchant_category": rng.choice(CATEGORIES, size=m, p=CAT_WEIGHT / CAT_WEIGHT.sum()),
        # heavy tail: a few merchants carry most traffic, hundreds see a handful a week
        "volume": rng.pareto(1.1, size=m) + 0.02,
    })
    merchants["volume"] /= merchants["volume"].sum()
    n = cfg.n_cards
    cards = pd.DataFrame({
        "card_id": np.arange(n, dtype=np.int64),
        "card_country": rng.choice(countries, size=n, p=cw),
        # cards issued before and during the history: new cards keep appearing
        "issued_day": rng.integers(-400, cfg.days, size=n),
        "activity": rng.gamma(1.2, 1.0, size=n),
    })
    return merchants, cards


def _legacy_score(amount: np.ndarray, cross_border: np.ndarray, risky_cat: np.ndarray, night: np.ndarray,
                  rng: np.random.Generator) -> np.ndarray:
    """The rules the company ran before fraud-cd: a fixed, hand-weighted risk score."""
    return (0.33 * cross_border + 0.25 * np.minimum(amount / 800.0, 1.0) + 0.2 * risky_cat
            + 0.12 * night + rng.uniform(0, 0.15, size=amount.shape[0]))


def _one_day(cfg: WorldConfig, day: int, merchants: pd.DataFrame, cards: pd.DataFrame,
             rng: np.random.Generator) -> pd.DataFrame:
    date = cfg.start + dt.timedelta(days=day)
    day_start = pd.Timestamp(date, tz="UTC")
    n = int(rng.poisson(cfg.tx_per_day))
    live_cards = cards[cards["issued_day"] <= day]
    m_idx = rng.choice(len(merchants), size=n, p=merchants["volume"].to_numpy())
    mer = merchants.iloc[m_idx].reset_index(drop=True)
    # cards mostly shop at home: pick a card of the merchant's country 85% of the time
    act = live_cards["activity"].to_numpy()
    c_idx = rng.choice(len(live_cards), size=n, p=act / act.sum())
    crd = live_cards.iloc[c_idx].reset_index(drop=True)
    by_country = {c: g for c, g in live_cards.groupby("card_country")}
    domestic = rng.random(n) < 0.85
    for c, g in by_country.items():
        sel = np.flatnonzero(domestic & (mer["merchant_country"].to_numpy() == c))
        if len(sel):
            w = g["activity"].to_numpy()
            pick = rng.choice(len(g), size=len(sel), p=w / w.sum())
            crd.loc[sel, ["card_id", "card_country", "issued_day"]] = (
                g.iloc[pick][["card_id", "card_country", "issued_day"]].to_numpy())
    cat_i = pd.Categorical(mer["merchant_category"], categories=CATEGORIES).codes
    amount = np.round(CAT_MEDIAN_AMOUNT[cat_i] * rng.lognormal(0, 0.8, size=n), 2) + 0.5
    # more traffic by day than by night
    hour = rng.choice(24, size=n, p=_HOUR_P)
    seconds = hour * 3600 + rng.integers(0, 3600, size=n)
    night = (hour < 6).astype(float)
    cross = (crd["card_country"].to_numpy() != mer["merchant_country"].to_numpy()).astype(float)
    new_card = ((day - crd["issued_day"].to_numpy()) < 30).astype(float)
    logit = (cfg.fraud_logit_base + CAT_FRAUD_LOGIT[cat_i] + 1.3 * cross
             + 0.7 * np.log(amount / CAT_MEDIAN_AMOUNT[cat_i]) + 0.9 * night + 0.8 * new_card)
    is_fraud = rng.random(n) < 1 / (1 + np.exp(-logit))
    base = pd.DataFrame({
        "card_id": crd["card_id"].astype(np.int64).to_numpy(),
        "card_country": crd["card_country"].to_numpy(),
        "merchant_id": mer["merchant_id"].to_numpy(),
        "merchant_country": mer["merchant_country"].to_numpy(),
        "merchant_category": mer["merchant_category"].to_numpy(),
        "amount": amount,
        "seconds": seconds,
        "is_fraud": is_fraud,
        "scenario": np.where(is_fraud, "opportunistic", "legit"),
    })
    parts = [base]
    k = max(1, cfg.tx_per_day // 1000)
    # card testing: bursts of small amounts at digital merchants within minutes
    n_ct = rng.poisson(cfg.card_testing_per_1k * k * _fade(cfg, day))
    digital = merchants[merchants["merchant_category"].isin(["digital_goods", "gambling"])]
    if n_ct and len(digital):
        rows = []
        for _ in range(n_ct):
            c = live_cards.iloc[rng.integers(len(live_cards))]
            burst = int(rng.integers(4, 13))
            mm = digital.iloc[rng.integers(len(digital), size=burst)]
            t0 = int(rng.integers(0, 86400 - 3600))
            rows.append(pd.DataFrame({
                "card_id": np.int64(c["card_id"]), "card_country": c["card_country"],
                "merchant_id": mm["merchant_id"].to_numpy(),
                "merchant_country": mm["merchant_country"].to_numpy(),
                "merchant_category": mm["merchant_category"].to_numpy(),
                "amount": np.round(rng.uniform(0.5, 5.0, size=burst), 2),
                "seconds": np.sort(t0 + rng.integers(0, 1800, size=burst)),
                "is_fraud": True, "scenario": "card_testing",
            }))
        parts.append(pd.concat(rows, ignore_index=True))
    # account takeover: unusual amount and merchant for the card, often cross-border
    n_ato = rng.poisson(cfg.ato_per_1k * k)
    pricey = merchants[merchants["merchant_category"].isin(["electronics", "travel", "fashion"])]
    if n_ato and len(pricey):
        # the taker cashes out fast: 2-3 purchases within the hour on the same card
        reps = rng.integers(2, 4, size=n_ato)
        cc = live_cards.iloc[np.repeat(rng.integers(len(live_cards), size=n_ato), reps)]
        t0 = np.repeat(rng.integers(0, 86400 - 3600, size=n_ato), reps)
        n_rows = int(reps.sum())
        mm = pricey.iloc[rng.choice(len(pricey), size=n_rows, p=_norm(pricey["volume"]))]
        ci = pd.Categorical(mm["merchant_category"], categories=CATEGORIES).codes
        parts.append(pd.DataFrame({
            "card_id": cc["card_id"].to_numpy(), "card_country": cc["card_country"].to_numpy(),
            "merchant_id": mm["merchant_id"].to_numpy(), "merchant_country": mm["merchant_country"].to_numpy(),
            "merchant_category": mm["merchant_category"].to_numpy(),
            "amount": np.round(CAT_MEDIAN_AMOUNT[ci] * rng.uniform(1.5, 6.0, size=n_rows), 2),
            "seconds": t0 + rng.integers(0, 3600, size=n_rows),
            "is_fraud": True, "scenario": "account_takeover",
        }))
    # drift: from a day on, a new scenario the legacy rules do not see: domestic, modest amounts,
    # fresh cards at restaurants and grocery
    if day >= int(cfg.drift_start_fraction * cfg.days):
        n_dr = rng.poisson(cfg.drift_per_1k * k)
        fresh = live_cards[(day - live_cards["issued_day"]) < 30]
        everyday = merchants[merchants["merchant_category"].isin(["restaurants", "grocery"])]
        if n_dr and len(fresh) and len(everyday):
            cc = fresh.iloc[rng.integers(len(fresh), size=n_dr)]
            mm = everyday.iloc[rng.choice(len(everyday), size=n_dr, p=_norm(everyday["volume"]))]
            parts.append(pd.DataFrame({
                "card_id": cc["card_id"].to_numpy(), "card_country": cc["card_country"].to_numpy(),
                "merchant_id": mm["merchant_id"].to_numpy(),
                "merchant_country": mm["merchant_country"].to_numpy(),
                "merchant_category": mm["merchant_category"].to_numpy(),
                "amount": np.round(rng.uniform(60, 180, size=n_dr), 2),
                "seconds": rng.integers(0, 86400, size=n_dr),
                "is_fraud": True, "scenario": "fresh_card_bust_out",
            }))
    df = pd.concat(parts, ignore_index=True)
    # a compromised merchant: for one stretch, a share of one mid-size merchant's traffic is fraud
    victim = merchants["merchant_id"].iloc[int(np.argsort(-merchants["volume"].to_numpy())[min(5, len(merchants) - 1)])]
    if int(0.3 * cfg.days) <= day < int(0.45 * cfg.days):
        hit = (df["merchant_id"].to_numpy() == victim) & (rng.random(len(df)) < 0.06)
        df.loc[hit, "is_fraud"] = True
        df.loc[hit, "scenario"] = "compromised_merchant"
    df = df.sort_values(["seconds", "card_id"], kind="stable").reset_index(drop=True)
    df["ts"] = day_start + pd.to_timedelta(df["seconds"], unit="s")
    df["tx_id"] = np.int64(day) * 10_000_000 + np.arange(len(df), dtype=np.int64)
    return df


def _fade(cfg: WorldConfig, day: int) -> float:
    """How much of the card-testing pattern is left on ``day`` (1 until it starts fading, then down to 0)."""
    if cfg.fade_start_fraction is None:
        return 1.0
    start = int(cfg.fade_start_fraction * cfg.days)
    return float(min(1.0, max(0.0, 1.0 - (day - start) / cfg.fade_days)))


def _norm(w: pd.Series) -> np.ndarray:
    a = w.to_numpy(dtype=float)
    return a / a.sum()


_HOUR_P = np.array([1, 0.6, 0.4, 0.3, 0.3, 0.5, 1.5, 3, 4, 5, 5, 5.5, 6, 5.5, 5, 5, 5, 5.5, 6, 5.5, 4.5,
                    3.5, 2.5, 1.5])
_HOUR_P = _HOUR_P / _HOUR_P.sum()

TX_COLUMNS = ["tx_id", "ts", "card_id", "card_country", "merchant_id", "merchant_country",
              "merchant_category", "amount"]


def _decide(cfg: WorldConfig, df: pd.DataFrame, rng: np.random.Generator) -> pd.DataFrame:
    hour = (df["seconds"].to_numpy() // 3600)
    score = _legacy_score(df["amount"].to_numpy(),
                          (df["card_country"].to_numpy() != df["merchant_country"].to_numpy()).astype(float),
                          df["merchant_category"].isin(LEGACY_RISKY).to_numpy().astype(float),
                          (hour < 6).astype(float), rng)
    would_block = score >= cfg.legacy_threshold
    explored = would_block & (rng.random(len(df)) < cfg.exploration)
    action = np.where(would_block & ~explored, "block", "allow")
    propensity = np.where(explored, cfg.exploration, np.where(would_block, 1 - cfg.exploration, 1.0))
    return pd.DataFrame({
        "tx_id": df["tx_id"].to_numpy(), "ts": df["ts"].to_numpy(), "policy": "legacy-rules",
        "score": np.round(score, 6), "threshold": cfg.legacy_threshold, "action": action,
        "explored": explored, "propensity": propensity,
    })


def _disputes(cfg: WorldConfig, df: pd.DataFrame, dec: pd.DataFrame, rng: np.random.Generator) -> pd.DataFrame:
    allowed = dec["action"].to_numpy() == "allow"
    fraud = df["is_fraud"].to_numpy()
    u = rng.random(len(df))
    disputed_fraud = allowed & fraud & (u < cfg.dispute_rate)
    friendly = allowed & ~fraud & (u < cfg.friendly_rate)
    sel = disputed_fraud | friendly
    delay_days = np.clip(rng.lognormal(np.log(cfg.dispute_median_days), cfg.dispute_sigma, size=len(df)),
                         1.0, float(cfg.dispute_max_days))
    dispute_ts = df["ts"] + pd.to_timedelta(np.round(delay_days * 86400), unit="s")
    return pd.DataFrame({"tx_id": df["tx_id"][sel].to_numpy(),
                         "dispute_ts": dispute_ts[sel].reset_index(drop=True)})


def simulate(cfg: WorldConfig, out: str | Path,
             progress: Callable[[int, int], None] | None = None) -> dict:
    """Simulate ``cfg.days`` days and write the event logs under ``out``, replacing what was there in one
    step (see the module docstring). Deterministic for a seed.

    Returns counts: transactions, frauds, blocked, explored, disputes (written before the horizon).
    """
    out = local_events(out, "fraudcd simulate").absolute()  # a world lands whole by a rename: never at a URL
    prefix = f".{out.name}.tmp-"
    remove_stale_temp_dirs(out.parent, prefix)  # worlds of killed simulations
    with owned_temp_dir(out.parent, prefix) as tmp:
        totals = _simulate_into(cfg, tmp, progress)
        replace_dir(tmp, out)
    return totals


def _simulate_into(cfg: WorldConfig, out: Path, progress: Callable[[int, int], None] | None) -> dict:
    rng = np.random.default_rng(cfg.seed)
    merchants, cards = _world_entities(cfg, rng)
    horizon = pd.Timestamp(cfg.end, tz="UTC")
    pending: list[pd.DataFrame] = []
    totals = {"transactions": 0, "frauds": 0, "blocked": 0, "explored": 0, "disputes": 0}
    for day in range(cfg.days):
        day_rng = np.random.default_rng([cfg.seed, day])
        df = _one_day(cfg, day, merchants, cards, day_rng)
        dec = _decide(cfg, df, day_rng)
        dis = _disputes(cfg, df, dec, day_rng)
        date = cfg.start + dt.timedelta(days=day)
        write_partition(out / "transactions", date, df[TX_COLUMNS])
        write_partition(out / "decisions", date, dec)
        write_partition(out / "truth", date, df[["tx_id", "is_fraud", "scenario"]])
        pending.append(dis[dis["dispute_ts"] < horizon])
        totals["transactions"] += len(df)
        totals["frauds"] += int(df["is_fraud"].sum())
        totals["blocked"] += int((dec["action"] == "block").sum())
        totals["explored"] += int(dec["explored"].sum())
        if progress:
            progress(day + 1, cfg.days)
    disputes = pd.concat(pending, ignore_index=True)
    totals["disputes"] = len(disputes)
    disputes["day"] = disputes["dispute_ts"].dt.date
    for date, g in disputes.groupby("day"):
        write_partition(out / "disputes", date, g.drop(columns="day").sort_values("tx_id"))
    atomic_write_parquet(merchants.drop(columns="volume"), out / "reference" / "merchants.parquet")
    return totals
