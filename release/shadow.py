"""Shadow and ramp on replayed live traffic.

Shadow: the candidate scores every transaction beside production; only production's decision counts.
Decisions are diffed per country (how often they disagree, in money) and the online contracts are
checked on that traffic. Ramp: the candidate serves a growing, card-sticky share of traffic; at each
step the guardrails compare its action rate with production's on the same rows, and a breach rolls
back to 0% on its own.

The same functions judge the live scoring service's decision log (``live_traffic`` shapes it like
replayed traffic; ``online_step_check`` adds the live-only guardrails: error rate and latency).
"""
from __future__ import annotations

import numpy as np
import pandas as pd

from contracts.action_rate_shift import ActionRateShift
from contracts.base import FAIL, INSUFFICIENT, PASS, Verdict, other_name, shift_ci
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


def _as_rows(diffs: pd.DataFrame, min_support: int, confidence: float) -> pd.DataFrame:
    """Decision diffs as the rows ``ActionRateShift.judge`` reads: per country (countries below
    ``min_support`` transactions pooled into "other countries", their counts summed), both action rates,
    and the paired interval of the change from the disagreement counts (point and interval from the same
    counts)."""
    d = diffs[diffs["slice_type"] == "country"].copy()
    small = d["transactions"] < min_support
    if small.any():
        pooled = d[small].drop(columns=["slice_type", "slice"]).sum(numeric_only=True)
        members = sorted(d.loc[small, "slice"].astype(str))
        d = pd.concat([d[~small], pd.DataFrame([{**pooled.to_dict(), "slice_type": "country",
                                                 "slice": other_name("country"),
                                                 "members": f"{len(members)}: {', '.join(members[:6])}"}])],
                      ignore_index=True)
    n = d["transactions"].to_numpy(dtype=float)
    b = d["candidate_only_blocks"].to_numpy(dtype=float)
    c = d["production_only_blocks"].to_numpy(dtype=float)
    ci = [shift_ci(int(x), int(y), int(m), confidence) for x, y, m in zip(b, c, n)]
    out = pd.DataFrame({
        "incumbent": d["production_blocks"].to_numpy(dtype=float) / n,
        "policy": d["candidate_blocks"].to_numpy(dtype=float) / n,
        "policy-incumbent": (b - c) / n,
        "policy-incumbent_lo": [x[0] for x in ci], "policy-incumbent_hi": [x[1] for x in ci],
        "transactions": n.astype(int),
        "members": d["members"].to_numpy() if "members" in d else None,
    }, index=d["slice"].astype(str).to_numpy())
    return out


def online_action_rate_verdicts(diffs: pd.DataFrame, name: str, max_relative_shift: float,
                                min_absolute_shift: float, min_support: int, confidence: float = 0.95,
                                gate: bool = True) -> list[Verdict]:
    """The action-rate contract on live traffic: the candidate's policy (its approved thresholds) against
    production's on the same transactions, judged by interval as offline."""
    # online, an unjudged slice does not stop the rollout here: it is recorded as a warning (issue 15 makes
    # shadow and each ramp step wait on evidence instead)
    c = ActionRateShift(name=name, kind="action_rate_shift", slice="country", at="policy",
                        max_relative_shift=max_relative_shift, min_absolute_shift=min_absolute_shift,
                        min_support=min_support, confidence=confidence, gate=gate, on_insufficient="warn")
    rows = _as_rows(diffs, min_support, confidence)
    if rows.empty:
        return c.no_slices("any transactions")
    return c.judge(rows, "candidate", unit="transactions")


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
        "production_action": both["production_block"].astype(bool).to_numpy(),
        "candidate_action": both["candidate_block"].astype(bool).to_numpy(),
    })


def _limit_verdict(name: str, kind: str, value: float | None, limit: float, support: int, min_support: int,
                   what: str, unit: str) -> Verdict:
    fmt = (lambda v: f"{100 * v:.2f}%") if unit == "%" else (lambda v: f"{v:.1f} ms")
    if support < min_support or value is None:
        verdict, sentence = INSUFFICIENT, (f"{what}: {support:,} requests on the candidate, fewer than the "
                                           f"{min_support:,} needed to judge.")
    elif value > limit:
        verdict, sentence = FAIL, f"{what} was {fmt(value)} on {support:,} requests, above the limit of {fmt(limit)}."
    else:
        verdict, sentence = PASS, f"{what} was {fmt(value)} on {support:,} requests, within the limit of {fmt(limit)}."
    return Verdict(contract=name, kind=kind, gate=True, slice_type="all", slice="all", verdict=verdict,
                   candidate_value=value, incumbent_value=None, limit_value=limit, support=int(support),
                   sentence=sentence)


def online_step_check(log: pd.DataFrame, pct: float, plan: RampPlan) -> tuple[bool, dict, list[Verdict]]:
    """Guardrails on one ramp step of live traffic (decision-log rows of the step). On the requests
    routed to the candidate: its action rate against production's on the same requests, per country;
    the share that failed to score on the candidate (error rate); the candidate's p99 latency.
    Returns (breached, details, verdicts)."""
    routed = log[log["routed"].astype(bool)] if len(log) else log
    details = {"rows": int(len(log)), "candidate_rows": int(len(routed)), "pct": pct}
    verdicts: list[Verdict] = []
    g = plan.guardrails
    traffic = live_traffic(routed) if len(routed) else pd.DataFrame()
    details["compared_rows"] = int(len(traffic))
    if len(traffic):
        verdicts += online_action_rate_verdicts(decision_diffs(traffic), f"live_ramp_{pct:g}pct_action_rate_shift",
                                                g.action_rate_shift.max_relative_shift,
                                                g.action_rate_shift.min_absolute_shift,
                                                g.action_rate_shift.min_support, g.action_rate_shift.confidence)
    if g.error_rate is not None:
        n = int(len(routed))
        errors = int(routed["candidate_error"].notna().sum()) if n else 0
        verdicts.append(_limit_verdict(f"live_ramp_{pct:g}pct_error_rate", "error_rate", errors / n if n else None,
                                       g.error_rate.max_rate, n, g.error_rate.min_requests,
                                       f"Share of requests that failed on the candidate ({errors:,})", "%"))
    if g.latency is not None:
        served = routed[routed["served_by"] == "candidate"] if len(routed) else routed
        n = int(len(served))
        p99 = float(np.percentile(served["latency_ms"].astype(float), 99)) if n else None
        verdicts.append(_limit_verdict(f"live_ramp_{pct:g}pct_latency_p99", "latency", p99, g.latency.max_p99_ms, n,
                                       g.latency.min_requests, "The candidate's p99 latency", "ms"))
    breached = [v for v in verdicts if v.verdict == FAIL]
    details["breaches"] = [v.sentence for v in breached]
    return bool(breached), details, verdicts
