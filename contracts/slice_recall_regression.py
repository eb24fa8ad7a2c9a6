"""slice_recall_regression: no slice's recall falls by more than a limit, with significance.

Recall is compared at the same point for both models (by default the incumbent's operating point, the
candidate at the threshold matching its FPR). The two models judge the same frauds, so the test is an
exact one-sided McNemar test on the frauds one model catches and the other misses, with p-values
adjusted over the contract's slices (Benjamini-Hochberg). Recall itself is inverse-propensity weighted.

YAML::

    - name: country_recall_regression
      kind: slice_recall_regression
      slice: country              # any slice name: country, merchant, category, card_country,
                                  # merchant_size, amount_band, card_segment
      at: operating_point         # or suggested (the per-merchant thresholds that would go live)
      max_drop: 0.05              # recall may not fall by more than 5 points in any slice ...
      min_support: 30             # ... judged only with this many matured frauds in the slice
      confidence: 0.95            # ... and only when the fall is significant at this level
      limits: {US: 0.02}          # optional per-slice limits
      gate: true

Sentence on failure::

    GB: the candidate catches 41.0% of fraud vs 55.2% (-14.2 pts, 95% CI -21.0..-7.4), limit -5.0 pts,
    87 matured frauds; significant (adjusted p=0.003).

The CI is that of the paired difference on the frauds (unweighted counts), beside the weighted recalls.
"""
from __future__ import annotations

from typing import Literal

import numpy as np
import pandas as pd
from pydantic import Field
from scipy.stats import binom

from contracts.base import FAIL, INSUFFICIENT, PASS, SliceContract, Verdict, pct, shift_ci


def recall_drop_pvalues(candidate_only: np.ndarray, incumbent_only: np.ndarray) -> np.ndarray:
    """One-sided exact McNemar: the chance of the incumbent catching at least this many of the frauds the
    two models disagree on if both were equally good."""
    b = np.asarray(candidate_only, dtype=float).round()
    c = np.asarray(incumbent_only, dtype=float).round()
    n = b + c
    return np.where(n > 0, binom.cdf(b, n, 0.5), 1.0)


class SliceRecallRegression(SliceContract):
    kind: Literal["slice_recall_regression"]
    at: Literal["suggested", "operating_point"] = "operating_point"
    max_drop: float = Field(ge=0, le=1)
    min_support: int = Field(30, ge=1)

    def check(self, slices: pd.DataFrame) -> list[Verdict]:
        rows = self._rows(slices)
        supported = (rows["frauds"] >= self.min_support).to_numpy()
        p = self._adjusted(recall_drop_pvalues(rows["candidate_only_catches"], rows["incumbent_only_catches"]), supported)
        alpha = 1 - self.confidence
        out = []
        for i, r in enumerate(rows.itertuples(index=False)):
            limit = self.limits.get(str(r.slice), self.max_drop)
            inc, cand, frauds = r.incumbent_recall, r.candidate_recall, int(r.frauds)
            if pd.isna(inc) or pd.isna(cand):
                out.append(Verdict(self.name, self.kind, self.gate, self.slice, str(r.slice), INSUFFICIENT, None,
                                   None, limit, frauds, f"{r.slice}: no matured frauds to measure recall on.", None))
                continue
            drop = float(inc) - float(cand)
            lo, hi = shift_ci(int(r.candidate_only_catches), int(r.incumbent_only_catches), frauds, self.confidence)
            head = (f"{r.slice}: the candidate catches {pct(cand, 1)} of fraud vs {pct(inc, 1)} "
                    f"({-100 * drop:+.1f} pts, {self.confidence:.0%} CI {100 * lo:+.1f}..{100 * hi:+.1f}), "
                    f"limit -{100 * limit:.1f} pts, {frauds:,} matured frauds")
            pv = float(p[i]) if supported[i] else None
            if not supported[i]:
                verdict, sentence = INSUFFICIENT, f"{head}; fewer than the {self.min_support:,} needed to judge."
            elif drop > limit and p[i] < alpha:
                verdict, sentence = FAIL, f"{head}; significant (adjusted p={p[i]:.2g})."
            elif drop > limit:
                verdict, sentence = INSUFFICIENT, (f"{head}: a fall beyond the limit but not significant (adjusted "
                                                   f"p={p[i]:.2g}): more matured frauds are needed to judge.")
            else:
                verdict, sentence = PASS, f"{head}: within the limit."
            out.append(Verdict(self.name, self.kind, self.gate, self.slice, str(r.slice), verdict, float(cand),
                               float(inc), limit, frauds, sentence, pv))
        out.extend(self._unmatched_limits(rows, "slice_recall_regression"))
        return out
