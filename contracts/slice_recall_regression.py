"""slice_recall_regression: no slice's recall falls by more than a limit.

Recall is compared at the same point for both models: by default the operating point (the candidate at
one global threshold fitted on the fitting rows to the incumbent's FPR), or the policy that would go
live. Point and interval come from the same weighted counts: the candidate-minus-incumbent recall of the
counterfactual estimator with its paired bootstrap interval by card, on judging rows. The default
estimator is the direct method (``dm``): each labelled row counts as its label, each censored row with the
fraud probability of an outcome model (the logging policy's score calibrated on the fitting rows, explored
rows weighted by 1/propensity standing for the blocked region). One calibration serves the whole window,
so a country's figure does not rest on the two or three explored frauds that fall in it (inverse
propensity weighting per slice does, and its intervals span tens of points); its bias is the
calibration's, checked against the truth in benchmarks/bench_counterfactual.py. ``ipw`` and ``plain``
(labelled rows, biased by censoring) can be chosen.

Censoring: blocked transactions are never labelled; explored rows stand in for them. When a slice has too
few explored frauds (or too small an effective sample size) to carry the counterfactual figure, the
figure is "insufficient data", with the plain figure on labelled rows beside it, labelled as biased by
censoring. A fall seen on the labelled frauds alone is still a fall on real frauds: if the plain
interval lies wholly below the limit the slice fails.

Effect (contracts.base.Verdict): the recall change in points and the (widened) interval judged, against
-max_drop and above; a slice failed on the plain figure carries the plain figure's interval.

YAML::

    - name: country_recall_regression
      kind: slice_recall_regression
      slice: country              # any slice name: country, merchant, category, card_country,
                                  # merchant_size, amount_band, card_segment
      at: operating_point         # or policy (the per-merchant thresholds that would go live)
      max_drop: 0.05              # recall may not fall by more than 5 points in any slice ...
      min_support: 30             # slices with fewer matured frauds are pooled ("other countries")
      estimator: dm               # dm (default) | ipw | plain
      min_explored_frauds: 3      # explored frauds the counterfactual figure needs (dm: in the fitting rows,
      min_ess: 30                 # where its model is fitted; ipw: in the slice) and the ESS of their weights
      confidence: 0.95
      on_insufficient: stop
      limits: {US: 0.02}          # optional per-slice limits
      gate: true

Sentence on failure::

    GB: the candidate catches 41.0% of fraud vs 55.2% (-14.2 pts, 95% CI -21.0..-7.4), limit -5.0 pts,
    87 matured frauds (12 explored, ESS 41): the whole interval is below the limit.
"""
from __future__ import annotations

from typing import ClassVar, Literal

import pandas as pd
from pydantic import Field

from analysis.weighting import CounterfactualConfig
from contracts.base import (FAIL, MEMBER_CONFIDENCE, counterfactual_ok, dm_support, INSUFFICIENT, PASS, POINTS,
                            SliceContract, Verdict, data_to_decide, effect_fields, finite, level_pct, widened,
                            judge_at_least, pct, wide_metric)


def counterfactual_note(r) -> str:
    if "explored_frauds" not in r or pd.isna(r.get("explored_frauds")):
        return ""
    return f" ({int(r['explored_frauds']):,} explored, ESS {float(r.get('ess_frauds', float('nan'))):.0f})"

_CF = CounterfactualConfig()  # the counterfactual support minimums: one definition (analysis.weighting)


class SliceRecallRegression(SliceContract):
    kind: Literal["slice_recall_regression"]
    at: Literal["policy", "operating_point"] = "operating_point"
    max_drop: float = Field(ge=0, le=1)
    min_support: int = Field(30, ge=1)
    min_explored_frauds: int = Field(_CF.min_explored_frauds, ge=0)
    min_ess: float = Field(_CF.min_ess, ge=0)
    estimator: Literal["dm", "ipw", "plain"] = "dm"

    support_measure: ClassVar[str] = "frauds"

    def counterfactual_ok(self, r, window=None, windows: dict | None = None) -> bool:
        """Enough explored frauds to carry the counterfactual figure: per slice for IPW; for the direct
        method, whose outcome model is one calibration fitted on the fitting rows, in those rows
        (``windows``, see contracts.base.dm_support; ``window``: the judged window's row, used when the
        evaluation does not say)."""
        src = r if self.estimator != "dm" else dm_support(window if window is not None else r, windows)
        return counterfactual_ok(src, self.estimator, self.min_explored_frauds, self.min_ess)

    def point_beyond(self, v: Verdict) -> bool:
        return v.incumbent_value is not None and v.incumbent_value - v.candidate_value > (v.limit_value or 0.0)

    def check(self, metrics: pd.DataFrame, windows: dict | None = None) -> list[Verdict]:
        """``windows``: the evaluation's fitting/judging windows (where the direct method's model was fitted)."""
        models = ["incumbent", self.model, f"{self.model}-incumbent"]
        rows = wide_metric(metrics, self.slice_type, "recall", self.estimator, models, confidence=self.confidence)
        if rows.empty:
            return self.no_slices("matured frauds")
        members = self.pooled_members(metrics, rows, "recall", self.estimator, models)
        # a pooled country is judged alone on recall only with half the pool's support: the direct method's
        # intervals hold its outcome model fixed, so on a few dozen frauds they are narrower than the truth
        members = members[members["frauds"] >= self.min_support / 2] if len(members) else members
        own = (self.own_failures(self.judge(metrics, members, models, windows, level=MEMBER_CONFIDENCE))
               if len(members) else [])
        return self.judge(metrics, rows, models, windows) + own + self._unmatched_limits(set(rows.index) | set(members.index))

    def judge(self, metrics: pd.DataFrame, rows: pd.DataFrame, models: list[str],
              windows: dict | None = None, level: float | None = None) -> list[Verdict]:
        """``rows``' intervals are at ``level`` (the contract's confidence unless said: a pooled member's
        are at contracts.base.MEMBER_CONFIDENCE)."""
        level = level or self.confidence
        plain = wide_metric(metrics, self.slice_type, "recall", "plain", models, confidence=level)
        whole = wide_metric(metrics, "all", "recall", self.estimator, models)
        window = whole.iloc[0] if len(whole) else None
        diff = f"{self.model}-incumbent"
        who = "the candidate" if self.model == "candidate" else "the policy"
        out = []
        for s, r in rows.iterrows():
            limit = self.limits.get(str(s), self.max_drop)
            frauds = int(r["frauds"])
            members = r.get("members")
            label = f"{s} ({members})" if isinstance(members, str) and members else str(s)
            inc, cand = r["incumbent"], r[self.model]
            d, lo, hi = r[diff], r[f"{diff}_lo"], r[f"{diff}_hi"]
            lo, hi = widened(d, lo, hi, frauds, level)
            effect = effect_fields(POINTS, d, lo, hi, allowed_lo=-limit)
            note = counterfactual_note(r)
            if not finite(inc, cand, d, lo, hi):
                out.append(self.verdict(s, INSUFFICIENT, None, None, limit, frauds,
                                        f"{label}: no recall could be measured ({frauds:,} matured frauds{note}).",
                                        **effect)); continue
            head = (f"{label}: {who} catches {pct(cand, 1)} of fraud vs {pct(inc, 1)} ({100 * d:+.1f} pts, "
                    f"{level_pct(level)} CI {100 * lo:+.1f}..{100 * hi:+.1f}), limit -{100 * limit:.1f} pts, "
                    f"{frauds:,} matured frauds{note}")
            verdict = judge_at_least(lo, hi, -limit)
            if not self.counterfactual_ok(r, window, windows):
                p = plain.loc[s] if s in plain.index else None
                pv = judge_at_least(p[f"{diff}_lo"], p[f"{diff}_hi"], -limit) if p is not None else INSUFFICIENT
                biased = (f"on labelled rows alone (biased by censoring: blocked transactions are never labelled) "
                          f"{who} catches {pct(p[self.model], 1)} vs {pct(p['incumbent'], 1)} "
                          f"({100 * p[diff]:+.1f} pts, CI {100 * p[f'{diff}_lo']:+.1f}.."
                          f"{100 * p[f'{diff}_hi']:+.1f})") if p is not None and finite(p[diff]) else \
                    "no plain figure either"
                if pv == FAIL:  # decided by the plain figure: its interval is the effect
                    out.append(self.verdict(s, FAIL, cand, inc, limit, frauds,
                                            f"{head}: too few explored frauds for the counterfactual figure, but "
                                            f"{biased}: a fall beyond the limit on real frauds.",
                                            **effect_fields(POINTS, p[diff], p[f"{diff}_lo"], p[f"{diff}_hi"],
                                                            allowed_lo=-limit)))
                else:
                    out.append(self.verdict(s, INSUFFICIENT, cand, inc, limit, frauds,
                                            f"{head}: too few explored frauds to stand in for the blocked ones "
                                            f"(at least {self.min_explored_frauds} and an ESS of {self.min_ess:.0f} "
                                            f"needed); {biased}.", **effect))
                continue
            if verdict == PASS:
                sentence = f"{head}: within the limit."
            elif verdict == FAIL:
                sentence = f"{head}: the whole interval is below the limit."
            else:
                sentence = (f"{head}: the interval reaches both sides of the limit; "
                            f"{data_to_decide(d, lo, hi, [-limit], frauds, 'matured frauds')}.")
            out.append(self.verdict(s, verdict, cand, inc, limit, frauds, sentence, **effect))
        return out
