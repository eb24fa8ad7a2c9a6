"""ranking_regression: the candidate ranks fraud above legitimate traffic no worse than the incumbent.

ROC-AUC and PR-AUC need no threshold, so they judge the scores themselves: a candidate can win at the
operating point while ranking the bulk of traffic worse, which the next threshold change will expose.
The figures and their 95% intervals come from the evaluation's tidy metrics (a paired bootstrap resampled
by card; analysis.stats). A slice fails when its whole interval of the candidate-minus-incumbent
difference lies below -max_drop; a fall beyond the limit whose interval crosses it is "insufficient
data". Each slice is judged at 95% on its own (no multiplicity adjustment: adding slices never makes the gate
more lenient; see contracts/base.py). A slice with fewer than ``min_support`` matured frauds is
insufficient data; it warns or stops as ``on_insufficient`` says. The verdict's effect
(contracts.base.Verdict) is the difference and its 95% interval, against -max_drop and above.

YAML::

    - name: ranking_no_regression
      kind: ranking_regression
      metric: pr_auc              # or roc_auc
      slice: all                  # or any slice name: country, merchant_size, ...
      estimator: ipw              # or plain
      max_drop: 0.01              # the candidate's figure may not fall by more than this ...
      min_support: 30             # ... judged only with this many matured frauds in the slice
      limits: {US: 0.005}         # optional per-slice limits
      gate: false

Sentence on failure::

    all: the candidate's ROC-AUC is 0.8638 vs 0.8790 (-0.0152, 95% CI -0.0293..-0.0036), limit -0.0010;
    1,105 matured frauds: the whole interval is below the limit.
"""
from __future__ import annotations

from typing import Literal

import pandas as pd
from pydantic import BaseModel, ConfigDict, Field, field_validator

from contracts.base import (AUC, FAIL, INSUFFICIENT, STOP, OnInsufficient, SliceName, Verdict, data_to_decide,
                            effect_fields, judge_at_least, limits_in_range, unmatched_limits)

LABELS = {"roc_auc": "ROC-AUC", "pr_auc": "PR-AUC"}


class RankingRegression(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str
    kind: Literal["ranking_regression"]
    metric: Literal["roc_auc", "pr_auc"]
    slice: SliceName = "all"
    estimator: Literal["ipw", "plain"] = "ipw"
    max_drop: float = Field(ge=0, le=1)
    min_support: int = Field(30, ge=1)
    limits: dict[str, float] = {}
    on_insufficient: OnInsufficient = STOP
    gate: bool = False

    @field_validator("limits")
    @classmethod
    def _limits_in_range(cls, v: dict[str, float]) -> dict[str, float]:
        return limits_in_range(v)

    def check(self, metrics: pd.DataFrame | None) -> list[Verdict]:
        label = LABELS[self.metric]
        if metrics is None:
            return [Verdict(self.name, self.kind, self.gate, self.slice, "all", INSUFFICIENT, None, None,
                            self.max_drop, None, f"No slice metrics were computed for this release; "
                            f"{label} cannot be judged.", None, self.on_insufficient,
                            **effect_fields(AUC, allowed_lo=-self.max_drop))]
        m = metrics[(metrics["slice_type"] == self.slice) & (metrics["metric"] == self.metric)
                    & (metrics["estimator"] == self.estimator)]
        wide = m.pivot_table(index="slice", columns="model", values=["estimate", "lo", "hi", "frauds"],
                             aggfunc="first", dropna=False)
        out = []
        if len(wide.index) == 0:
            return [Verdict(self.name, self.kind, self.gate, self.slice, "all", INSUFFICIENT, None, None, self.max_drop,
                            0, f"No {self.slice} slice has a {label} in the judging window: nothing to judge.", None,
                            self.on_insufficient, **effect_fields(AUC, allowed_lo=-self.max_drop))]
        for s in wide.index:
            limit = self.limits.get(str(s), self.max_drop)
            inc, cand = wide.loc[s, ("estimate", "incumbent")], wide.loc[s, ("estimate", "candidate")]
            d, lo, hi = (wide.loc[s, (k, "candidate-incumbent")] for k in ("estimate", "lo", "hi"))
            frauds = int(wide.loc[s, ("frauds", "incumbent")])
            effect = effect_fields(AUC, d, lo, hi, allowed_lo=-limit)
            if pd.isna(d) or pd.isna(lo):
                out.append(Verdict(self.name, self.kind, self.gate, self.slice, str(s), INSUFFICIENT, None, None, limit,
                                   frauds, f"{s}: no {label} to compare ({frauds:,} matured frauds; ranking "
                                   f"figures need at least 10 frauds and 10 legitimate transactions).", None,
                                   self.on_insufficient, **effect))
                continue
            head = (f"{s}: the candidate's {label} is {cand:.4f} vs {inc:.4f} ({d:+.4f}, 95% CI {lo:+.4f}..{hi:+.4f}), "
                    f"limit -{limit:.4f}; {frauds:,} matured frauds")
            if frauds < self.min_support:
                verdict, sentence = INSUFFICIENT, f"{head}; fewer than the {self.min_support:,} needed to judge."
            elif (verdict := judge_at_least(lo, hi, -limit)) == FAIL:
                sentence = f"{head}: the whole interval is below the limit."
            elif verdict == INSUFFICIENT:
                sentence = (f"{head}: the interval reaches both sides of the limit; "
                            f"{data_to_decide(d, lo, hi, [-limit], frauds, 'matured frauds')}.")
            else:
                sentence = f"{head}: within the limit."
            out.append(Verdict(self.name, self.kind, self.gate, self.slice, str(s), verdict, float(cand), float(inc),
                               limit, frauds, sentence, None, self.on_insufficient, **effect))
        # a limit naming no slice in the window is reported as the per-slice contracts report it
        out.extend(unmatched_limits(self, {str(x) for x in wide.index}, self.kind))
        return out
