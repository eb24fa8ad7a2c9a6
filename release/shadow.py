"""Shadow and ramp on replayed live traffic.

Shadow: the candidate scores every transaction beside production; only production's decision counts.
Decisions are diffed per country (how often they disagree, in money) and the online contracts are
checked on that traffic. Ramp: the candidate serves a growing, card-sticky share of traffic; at each
step the guardrails compare its action rate with production's on the same rows, and a breach rolls
back to 0% on its own.

The live scoring service's decision log is judged by ``release.guardrails.judge_stage`` on the candidate's
own rows (``online_step_check`` wraps it for the older callers); ``live_traffic`` shapes the log like
replayed traffic for ``decision_diffs``.
"""
from __future__ import annotations

import dataclasses
from collections.abc import Mapping

import numpy as np
import pandas as pd

from contracts.base import FAIL, WARN, Verdict
from release.guardrails import COUNT_COLUMNS, ShiftGuardrail, as_guardrails, judge_stage, shift_judgement
from release.ramp import RampPlan, routed_to_candidate


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
    ``release.guardrails.judge_stage`` is the stage judgement in which an unjudged guardrail never passes."""
    g = ShiftGuardrail(max_relative_shift=max_relative_shift, min_absolute_shift=min_absolute_shift,
                       min_support=min_support, confidence=confidence)
    d = diffs[diffs["slice_type"] == "country"]
    counts = pd.DataFrame({c: d[c].to_numpy(dtype=np.int64) for c in COUNT_COLUMNS}, index=d["slice"].astype(str))
    vs, _, _ = shift_judgement(counts, g, name=name, slice_type="country", judge_members=False, floor=False,
                               ratio=False, on_insufficient=WARN)
    return vs if gate else [dataclasses.replace(v, gate=False) for v in vs]


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


def online_step_check(log: pd.DataFrame, pct: float, plan: RampPlan, *, segments: Mapping[str, str] | None = None,
                      reference_scores: np.ndarray | None = None) -> tuple[bool, dict, list[Verdict]]:
    """Guardrails on one stage of live traffic (decision-log rows of the stage): ``judge_stage`` on the
    candidate's rows. Returns (breached, details, verdicts); ``details["status"]`` says pass | breach |
    inconclusive (an inconclusive stage must not be taken as passed: wait for ``details["missing"]``)."""
    j = judge_stage(log, pct, as_guardrails(plan.guardrails), segments=segments, reference_scores=reference_scores)
    return j.breached, j.details, j.verdicts
