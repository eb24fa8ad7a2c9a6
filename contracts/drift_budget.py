"""drift_budget: the policy going live may not raise a rate by more than a budget over the production of a
window's start, judged on today's rows.

Every release is judged against its incumbent, and the per-release contracts allow each a small change: the
policy's FPR within a tolerance (``fixed_fpr_higher_recall``, which warns while undecided), each country's
action rate within ±25% (``action_rate_shift``). Nothing in them bounds many releases together. In the closed
loop's year (benchmarks/bench_cycles.py, 26 cycles, 2026-12-02) the deployed FPR rose from 0.75% to 1.05% in
a few months, every release within its own limits: a ratchet. This contract is the bound across releases.

YAML::

    - name: fpr_drift_budget
      kind: drift_budget
      metric: fpr                 # fpr (legitimate transactions declined) | action_rate
      estimator: dm               # dm | ipw | plain (fpr); action rates have one estimator
      window_days: 182            # the anchor: production as it was before the releases of the last half year
      max_relative_drift: 0.25    # the policy may raise the rate by at most 25% over the anchor's
      confidence: 0.90            # one-sided 95%: the interval's upper end must be inside the budget
      on_insufficient: stop
      gate: true

The anchor. The lineage of production, followed back from this release's incumbent
(release.orchestration.cycle.shipped_lineage): the promoted release whose candidate is the incumbent, then
the one whose candidate was that release's incumbent, and so on while their data dates are inside the
window. The anchor is the incumbent of the oldest of them, with the thresholds it served with: production as
it was before the window's releases. (A release rolled back after promotion is not in the lineage; with no
release shipped in the window the anchor is the incumbent itself, and the budget bounds this release's
change alone. The chain ends at a release whose incumbent was a bootstrap, a stand-in that never served the
world: drift counts from the first production that did.) Every drift budget of a configuration shares one
``window_days``: an evaluation scores one anchor. The pipeline scores the anchor on the same judging rows as the incumbent and the candidate
(analysis.evaluation.judge_policy: ``anchor`` and ``policy-anchor``, a paired bootstrap by card), so the
drift is measured on today's traffic, in one comparison: neither the world's own change between windows (a
fraud wave, a quiet month) nor the noise of compounding many releases' estimates is in it, and releases that
shipped because their estimate was lucky do not hide what they shipped.

Judgement: the policy's rate over the anchor's, by its interval, against ``1 + max_relative_drift``: pass when
the upper end is inside, fail when the lower end is beyond, insufficient data between. Only a rise is
bounded, and a release whose own change against its incumbent shows no rise (the interval's upper end at or
below zero) passes even while production has drifted beyond the budget: it is the way back, and stopping it
would keep the drifted production. Beyond the budget with an own change that cannot be told from zero (its
interval reaching both sides) is insufficient data, not a failure: the drift is production's, and whether
this release adds to it is not shown; it stops (``on_insufficient``) for a person to decide.

Sentence on failure::

    The approved policy's FPR is 1.31% against 1.00% for production before the 3 releases shipped since
    2026-06-01 (rel-2026-06-14, ...), on the same judging rows: +31% (90% CI +24%..+38%), beyond the drift
    budget of +25% in 182 days. Its own change against production: +9% ...
"""
from __future__ import annotations

from typing import Literal

import pandas as pd
from pydantic import BaseModel, ConfigDict, Field

from analysis.weighting import CounterfactualConfig
from contracts.base import (FAIL, INSUFFICIENT, PASS, RELATIVE, STOP, OnInsufficient, Verdict, counterfactual_ok,
                            data_to_decide, dm_support, effect_fields, finite, judge_at_most, level_pct, pct,
                            wide_metric)

_CF = CounterfactualConfig()
METRIC_WORDS = {"fpr": "FPR", "action_rate": "action rate"}


def shipped_ratio(metrics: pd.DataFrame, metric: str, estimator: str, model: str = "policy") -> float | None:
    """The all-traffic ``model``-over-incumbent ratio of ``metric`` in an evaluation's tidy metrics (None: not
    computed, or the incumbent's rate is zero): what a shipped release changed, said in the sentence."""
    est = "all" if metric == "action_rate" else estimator
    rows = wide_metric(metrics, "all", metric, est, ["incumbent", model])
    if rows.empty:
        return None
    r = rows.iloc[0]
    inc, pol = float(r["incumbent"]), float(r[model])
    return pol / inc if finite(inc, pol) and inc > 0 else None


def _ratio(r, model: str, base: str) -> tuple[float, float, float] | None:
    """(ratio, lo, hi) of ``model`` over ``base`` from a wide row: the engine's ratio interval where it has one,
    else the difference's interval over the base's rate (the paired bootstrap's noise is in the difference)."""
    col = f"{model}/{base}"
    if col in r and finite(r[col], r[f"{col}_lo"], r[f"{col}_hi"]):
        return float(r[col]), float(r[f"{col}_lo"]), float(r[f"{col}_hi"])
    b, dcol = float(r[base]), f"{model}-{base}"
    if not finite(b, r.get(dcol), r.get(f"{dcol}_lo"), r.get(f"{dcol}_hi")) or b <= 0:
        return None
    return 1 + float(r[dcol]) / b, 1 + float(r[f"{dcol}_lo"]) / b, 1 + float(r[f"{dcol}_hi"]) / b


class DriftBudget(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str
    kind: Literal["drift_budget"]
    metric: Literal["fpr", "action_rate"] = "fpr"
    estimator: Literal["dm", "ipw", "plain"] = "dm"
    window_days: int = Field(182, ge=1, le=3660)
    max_relative_drift: float = Field(gt=0, le=10)
    confidence: float = Field(0.90, gt=0.5, lt=1)
    min_explored_frauds: int = Field(_CF.min_explored_frauds, ge=0)
    min_ess: float = Field(_CF.min_ess, ge=0)
    on_insufficient: OnInsufficient = STOP
    gate: bool = True

    def _v(self, verdict: str, cand, base, support, sentence: str, effect: dict) -> Verdict:
        return Verdict(self.name, self.kind, self.gate, "all", "all", verdict,
                       float(cand) if finite(cand) else None, float(base) if finite(base) else None,
                       self.max_relative_drift, support, sentence, None, self.on_insufficient, **effect)

    def check(self, metrics: pd.DataFrame | None, windows: dict | None = None, what: str = "policy") -> list[Verdict]:
        """``windows["drift_anchor"]`` (release.orchestration.cycle): the anchor's model, the window's
        releases and since when; without it the anchor is the incumbent, and the sentence says so."""
        word = METRIC_WORDS[self.metric]
        budget = self.max_relative_drift
        none = effect_fields(RELATIVE, allowed_hi=budget)
        if metrics is None or metrics.empty:
            return [self._v(INSUFFICIENT, None, None, 0, f"No metrics were computed for this release: its {word} "
                            "drift cannot be judged, never a pass.", none)]
        est = "all" if self.metric == "action_rate" else self.estimator
        models = ["incumbent", "policy", "policy-incumbent", "policy/incumbent", "anchor", "policy-anchor",
                  "policy/anchor"]
        rows = wide_metric(metrics, "all", self.metric, est, models, confidence=self.confidence)
        if rows.empty or not finite(rows.iloc[0].get("anchor")):
            return [self._v(INSUFFICIENT, None, None, 0, f"No all-traffic {word} of the policy against the drift "
                            "anchor in the metrics (the evaluation did not score the anchor): nothing to judge, "
                            "never a pass.", none)]
        a = (windows or {}).get("drift_anchor") or {}
        if a.get("error"):  # the anchor could not be scored: the rows' "anchor" is not it
            return [self._v(INSUFFICIENT, None, None, 0, f"The drift since production before this window's releases "
                            f"cannot be judged: {a['error']}; never a pass.", none)]
        r = rows.iloc[0]
        pol, anc, inc = float(r["policy"]), float(r["anchor"]), float(r["incumbent"])
        n = int(r["labelled"] if self.metric == "fpr" else r["transactions"])
        unit = "labelled transactions" if self.metric == "fpr" else "judging transactions"
        who = "approved policy" if what == "approved policy" else "policy"
        shipped = list(a.get("releases") or [])
        if not a:
            anchor = "production (the incumbent: no release history was looked up)"
        elif not shipped and a.get("over_bootstrap"):
            anchor = (f"production (shipped by {a['over_bootstrap']} over a bootstrap stand-in; drift counts from "
                      "it)")
        elif not shipped:
            anchor = f"production (no release shipped in the {self.window_days} days before this one)"
        else:
            changes = a.get("changes") or {}
            each = [f"{rid} {float(changes[rid]) - 1:+.0%}" if finite(changes.get(rid)) else rid for rid in shipped]
            anchor = (f"production before the {len(shipped)} release{'s' if len(shipped) > 1 else ''} shipped since "
                      f"{a.get('since')} ({', '.join(each)})")
        drift = _ratio(r, "policy", "anchor")
        if drift is None:
            return [self._v(INSUFFICIENT, pol, anc, n, f"The anchor's {word} on the judging rows is "
                            f"{pct(anc) if finite(anc) else 'not computed'}: a relative drift cannot be computed "
                            f"({n:,} {unit}); never a pass.", none)]
        x, lo, hi = (v - 1 for v in drift)
        effect = effect_fields(RELATIVE, x, lo, hi, allowed_hi=budget)
        lvl = level_pct(self.confidence)
        head = (f"The {who}'s {word} is {pct(pol)} against {pct(anc)} for {anchor}, on the same judging rows: "
                f"{x:+.0%} ({lvl} CI {lo:+.0%}..{hi:+.0%}, {n:,} {unit}), drift budget {budget:+.0%} in "
                f"{self.window_days} days")
        own = _ratio(r, "policy", "incumbent")
        own_s = (f". Its own change against production ({pct(inc)}): {own[0] - 1:+.0%} ({lvl} CI "
                 f"{own[1] - 1:+.0%}..{own[2] - 1:+.0%})") if own is not None else ""
        if self.metric == "fpr" and est != "plain":
            src = dm_support(r, windows) if est == "dm" else r
            if not counterfactual_ok(src, est, self.min_explored_frauds, self.min_ess):
                return [self._v(INSUFFICIENT, pol, anc, n, f"{head}{own_s}: too few explored rows for the "
                                "counterfactual FPR (the blocked transactions' outcomes stand on them); never a "
                                "pass.", effect)]
        verdict = judge_at_most(lo, hi, budget)
        if verdict != PASS and own is not None and own[2] <= 1.0:
            verdict, tail = PASS, (f": beyond the budget through what shipped before, but this release does not "
                                   f"raise the {word}: it moves back toward the budget.")
        elif verdict == PASS:
            tail = ": inside the budget."
        elif verdict == FAIL and own is not None and own[1] <= 1.0:  # beyond, but this one may not raise it
            verdict, tail = INSUFFICIENT, (f": beyond the budget, and this release's own change cannot be told from "
                                           f"zero: whether it adds to the drift or takes it back is not shown, so a "
                                           f"person decides (a waiver on the record, `fraudcd override`), or a "
                                           f"release that lowers the {word} clearly goes through.")
        elif verdict == FAIL:
            tail = (": beyond the budget. Each release may stay within its own limits; together they may not. A "
                    f"release that lowers the {word} is the way back inside it.")
        else:
            tail = (f": the interval reaches beyond the budget, so it cannot be judged; "
                    f"{data_to_decide(x, lo, hi, [budget], n, unit)}.")
        return [self._v(verdict, pol, anc, n, head + own_s + tail, effect)]
