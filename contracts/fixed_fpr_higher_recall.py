"""fixed_fpr_higher_recall: at the incumbent's false-positive rate the candidate catches more fraud.

The candidate's global threshold is chosen so its (inverse-propensity-weighted) FPR matches the
incumbent's on the evaluation window; recall is then compared at that operating point. FPR is never
traded for recall: a candidate whose FPR there exceeds the incumbent's by more than the tolerance fails
whatever its recall.

YAML::

    - name: fixed_fpr_higher_recall
      kind: fixed_fpr_higher_recall
      min_recall_gain: 0.0          # candidate recall - incumbent recall must be >= this
      require_ci_above_zero: true   # and the lower end of the paired-bootstrap 95% CI must be > 0
      fpr_tolerance: 0.0002
      min_support: 30               # matured frauds in the evaluation window
      gate: true

Sentence on failure::

    At the incumbent's FPR of 0.41%, the candidate catches 44.0% of fraud vs 48.3% (-4.3 pts,
    95% CI -7.9..-0.6) at FPR 0.41%; 1,250 matured frauds. It must catch more.
"""
from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from contracts.base import FAIL, INSUFFICIENT, PASS, Verdict, pct


class FixedFprHigherRecall(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str
    kind: Literal["fixed_fpr_higher_recall"]
    min_recall_gain: float = Field(0.0, ge=-1, le=1)
    require_ci_above_zero: bool = True
    fpr_tolerance: float = Field(0.0, ge=0, le=1)
    min_support: int = Field(30, ge=1)
    gate: bool = True

    def check(self, overall: dict, recall_diff: dict) -> list[Verdict]:
        inc_r, cand_r = overall["incumbent_recall"], overall["candidate_recall"]
        inc_f, cand_f = overall["incumbent_fpr"], overall["candidate_fpr"]
        frauds = int(overall["frauds"])
        d, lo, hi = recall_diff["diff"], recall_diff["lo"], recall_diff["hi"]
        head = (f"At the incumbent's FPR of {pct(inc_f)}, the candidate catches {pct(cand_r, 1)} of fraud vs "
                f"{pct(inc_r, 1)} ({100 * d:+.1f} pts, 95% CI {100 * lo:+.1f}..{100 * hi:+.1f}) at FPR "
                f"{pct(cand_f)}; {frauds:,} matured frauds")
        if frauds < self.min_support:
            verdict, sentence = INSUFFICIENT, f"{head}; fewer than the {self.min_support:,} needed to judge."
        elif cand_f > inc_f + self.fpr_tolerance:
            verdict, sentence = FAIL, f"{head}. Its FPR is higher than the incumbent's: FPR is never traded for recall."
        elif d < self.min_recall_gain or (self.require_ci_above_zero and not lo > 0):
            need = f"at least {100 * self.min_recall_gain:+.1f} pts" if self.min_recall_gain else "more"
            ci = " with the CI above zero" if self.require_ci_above_zero else ""
            verdict, sentence = FAIL, f"{head}. It must catch {need}{ci}."
        else:
            verdict, sentence = PASS, f"{head}."
        return [Verdict(self.name, self.kind, self.gate, "all", "all", verdict, cand_r, inc_r,
                        self.min_recall_gain, frauds, sentence)]
