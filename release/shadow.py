"""Shadow and ramp on replayed live traffic.

Shadow: the candidate scores every transaction beside production; only production's decision counts.
Decisions are diffed per country (how often they disagree, in money) and the online contracts are
checked on that traffic. Ramp: the candidate serves a growing, card-sticky share of traffic; at each
step the guardrails compare its action rate with production's on the same rows, and a breach rolls
back to 0% on its own.
"""
from __future__ import annotations

import numpy as np
import pandas as pd

from contracts.action_rate_shift import ActionRateShift
from contracts.base import FAIL, Verdict
from release.ramp import RampPlan, routed_to_candidate


def decision_diffs(traffic: pd.DataFrame) -> pd.DataFrame:
    """Per country and overall: transactions, both action rates, disagreement rate and money."""
    prod, cand = traffic["production_action"].astype(bool), traffic["candidate_action"].astype(bool)
    amt = traffic["amount"].astype(float)
    cols = pd.DataFrame({
        "transactions": 1, "production_blocks": prod, "candidate_blocks": cand,
        "disagreements": prod != cand,
        "candidate_only_blocks": cand & ~prod, "production_only_blocks": prod & ~cand,
        "only_candidate_blocks_amount": amt * (cand & ~prod), "only_production_blocks_amount": amt * (prod & ~cand),
    })
    parts = []
    for name, key in (("all", pd.Series("all", index=traffic.index)), ("country", traffic["merchant_country"])):
        g = cols.groupby(key.to_numpy()).sum()
        g.insert(0, "slice", g.index.astype(str))
        g.insert(0, "slice_type", name)
        parts.append(g.reset_index(drop=True))
    out = pd.concat(parts, ignore_index=True)
    out["production_action_rate"] = out["production_blocks"] / out["transactions"]
    out["candidate_action_rate"] = out["candidate_blocks"] / out["transactions"]
    out["disagreement_rate"] = out["disagreements"] / out["transactions"]
    return out


def _as_slices(diffs: pd.DataFrame) -> pd.DataFrame:
    """Shape decision diffs like evaluation slices so the same contract code judges them."""
    return pd.DataFrame({
        "at": "suggested", "slice_type": diffs["slice_type"], "slice": diffs["slice"],
        "transactions": diffs["transactions"], "incumbent_action_rate": diffs["production_action_rate"],
        "candidate_action_rate": diffs["candidate_action_rate"],
        "candidate_only_actions": diffs["candidate_only_blocks"], "incumbent_only_actions": diffs["production_only_blocks"],
    })


def online_action_rate_verdicts(diffs: pd.DataFrame, name: str, max_relative_shift: float,
                                min_absolute_shift: float, min_support: int, confidence: float = 0.95,
                                gate: bool = True) -> list[Verdict]:
    c = ActionRateShift(name=name, kind="action_rate_shift", slice="country", at="suggested",
                        max_relative_shift=max_relative_shift, min_absolute_shift=min_absolute_shift,
                        min_support=min_support, confidence=confidence, gate=gate)
    return c.check(_as_slices(diffs))


def ramp_steps(traffic: pd.DataFrame, plan: RampPlan) -> list[tuple[float, pd.DataFrame]]:
    """Split the replayed traffic in time order into one chunk per step."""
    traffic = traffic.sort_values(["ts", "tx_id"], kind="stable").reset_index(drop=True)
    chunks = np.array_split(np.arange(len(traffic)), len(plan.steps))
    return [(pct, traffic.iloc[idx]) for pct, idx in zip(plan.steps, chunks)]


def ramp_step_check(chunk: pd.DataFrame, pct: float, plan: RampPlan) -> tuple[bool, dict, list[Verdict]]:
    """Serve ``pct``% of cards with the candidate; compare its action rate to production's on the same
    rows. Returns (breached, details, verdicts)."""
    served = chunk[routed_to_candidate(chunk["card_id"], pct)]
    g = plan.guardrails.action_rate_shift
    details = {"rows": int(len(chunk)), "candidate_rows": int(len(served)), "pct": pct}
    if len(served) == 0:
        return False, {**details, "note": "no traffic routed to the candidate in this step"}, []
    verdicts = online_action_rate_verdicts(decision_diffs(served), f"ramp_{pct:g}pct_action_rate_shift",
                                           g.max_relative_shift, g.min_absolute_shift, g.min_support,
                                           g.confidence)
    breached = [v for v in verdicts if v.verdict == FAIL]
    details["breaches"] = [v.sentence for v in breached]
    return bool(breached), details, verdicts
