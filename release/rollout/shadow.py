"""Decisions of production and the candidate side by side: diffed per slice (how often they disagree, in
money) for the backtest (recent history replayed offline) and `fraudcd ramp diffs` (the live log).

The live scoring service's decision log is judged by ``release.rollout.guardrails.judge_stage`` on the candidate's
own rows (``release.rollout.driver.advance`` calls it); ``live_traffic`` shapes the log like
replayed traffic for ``decision_diffs``.
"""
from __future__ import annotations

import dataclasses

import numpy as np
import pandas as pd

from contracts.base import WARN, Verdict
from release.rollout.guardrails import COUNT_COLUMNS, ShiftGuardrail, shift_judgement


DIFF_SLICES = {"country": "merchant_country", "category": "merchant_category"}


def decision_diffs(traffic: pd.DataFrame, slices: tuple[str, ...] = ("country",)) -> pd.DataFrame:
    """Overall and per slice (country by default; ``DIFF_SLICES`` names the others): transactions, both
    action rates, disagreement rate and money."""
    prod, cand = traffic["production_action"].astype(bool), traffic["candidate_action"].astype(bool)
    amt = traffic["amount"].astype(float)
    cols = pd.DataFrame({
        "transactions": 1, "production_blocks": prod, "candidate_blocks": cand,
        "disagreements": prod != cand,
        "candidate_only_blocks": cand & ~prod, "production_only_blocks": prod & ~cand,
        "only_candidate_blocks_amount": amt * (cand & ~prod), "only_production_blocks_amount": amt * (prod & ~cand),
    })
    parts = []
    keys = [("all", pd.Series("all", index=traffic.index))] + [(n, traffic[DIFF_SLICES[n]]) for n in slices]
    for name, key in keys:
        g = cols.groupby(key.to_numpy()).sum()
        g.insert(0, "slice", g.index.astype(str))
        g.insert(0, "slice_type", name)
        parts.append(g.reset_index(drop=True))
    out = pd.concat(parts, ignore_index=True)
    out["production_action_rate"] = out["production_blocks"] / out["transactions"]
    out["candidate_action_rate"] = out["candidate_blocks"] / out["transactions"]
    out["disagreement_rate"] = out["disagreements"] / out["transactions"]
    return out


def online_action_rate_verdicts(diffs: pd.DataFrame, name: str, max_relative_shift: float,
                                min_absolute_shift: float, min_support: int, confidence: float = 0.95,
                                gate: bool = True) -> list[Verdict]:
    """The action-rate contract on live traffic: the candidate's policy (its approved thresholds) against
    production's on the same transactions, per country (countries below ``min_support`` transactions pooled
    into "other countries"), judged by interval as offline. An unjudged slice is recorded as a warning here;
    ``release.rollout.guardrails.judge_stage`` is the stage judgement in which an unjudged guardrail never passes."""
    g = ShiftGuardrail(max_relative_shift=max_relative_shift, min_absolute_shift=min_absolute_shift,
                       min_support=min_support, confidence=confidence)
    d = diffs[diffs["slice_type"] == "country"]
    counts = pd.DataFrame({c: d[c].to_numpy(dtype=np.int64) for c in COUNT_COLUMNS}, index=d["slice"].astype(str))
    vs, _, _ = shift_judgement(counts, g, name=name, slice_type="country", judge_members=False, floor=False,
                               ratio=False, on_insufficient=WARN)
    return vs if gate else [dataclasses.replace(v, gate=False) for v in vs]


def live_traffic(log: pd.DataFrame) -> pd.DataFrame:
    """Decision-log rows that both models scored, shaped like replayed traffic: what each model would
    have done (score >= its threshold, before exploration), for ``decision_diffs``."""
    both = log[log["production_score"].notna() & log["candidate_score"].notna()]
    return pd.DataFrame({
        "tx_id": both["tx_id"].to_numpy(), "ts": both["ts"].to_numpy(), "card_id": both["card_id"].to_numpy(),
        "merchant_id": both["merchant_id"].to_numpy(), "merchant_country": both["merchant_country"].to_numpy(),
        "merchant_category": both["merchant_category"].to_numpy(), "amount": both["amount"].astype(float).to_numpy(),
        "production_action": both["production_block"].fillna(False).astype(bool).to_numpy(),
        "candidate_action": both["candidate_block"].fillna(False).astype(bool).to_numpy(),
    })
