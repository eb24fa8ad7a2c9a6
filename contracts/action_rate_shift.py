"""action_rate_shift: no slice's action rate moves by more than a limit against the incumbent.

YAML::

    - name: country_action_rate_shift
      kind: action_rate_shift
      slice: country              # country | merchant | category | card_country
      at: suggested               # candidate at the suggested per-merchant thresholds (what would go
                                  # live) or at operating_point (one global threshold at the incumbent's FPR)
      max_relative_shift: 0.25    # |candidate / incumbent - 1| may not exceed this ...
      min_absolute_shift: 0.002   # ... unless the move is smaller than this many points of action rate
      min_support: 1000           # fewer transactions in a slice -> "insufficient data", never a silent pass
      limits: {US: 0.10}          # optional tighter (or looser) limits for named slices
      confidence: 0.95            # a shift fails only when it is significant at this level
      gate: true

A slice fails when its shift is beyond the limit *and* significant: the two models decide on the same
transactions, so the test is an exact McNemar test on the decisions they disagree on, with p-values
adjusted over the contract's slices (Benjamini-Hochberg). A shift beyond the limit that the data cannot
distinguish from noise is "insufficient data", never a silent pass.

Sentence on failure::

    BR: candidate blocks 1.92% vs 1.61% (+19%, 95% CI +14%..+25%), limit ±25%, 48,210 transactions;
    significant (adjusted p=0.0004).

On pass the sentence ends "within the limit."; on a shift beyond the limit that is not significant,
"beyond the limit but not significant (adjusted p=0.31): more traffic is needed to judge."
"""
from __future__ import annotations

from typing import Literal

import pandas as pd
from pydantic import Field

from contracts.base import FAIL, INSUFFICIENT, PASS, SliceContract, Verdict, paired_shift_pvalues, pct, shift_ci


class ActionRateShift(SliceContract):
    kind: Literal["action_rate_shift"]
    max_relative_shift: float = Field(gt=0, le=1)
    min_absolute_shift: float = Field(0.0, ge=0, le=1)
    min_support: int = Field(1000, ge=1)

    def check(self, slices: pd.DataFrame) -> list[Verdict]:
        """``slices``: one row per slice with transactions, both action rates and the disagreement counts
        candidate_only_actions / incumbent_only_actions."""
        rows = self._rows(slices)
        supported = (rows["transactions"] >= self.min_support).to_numpy()
        p = self._adjusted(paired_shift_pvalues(rows["candidate_only_actions"], rows["incumbent_only_actions"]), supported)
        alpha = 1 - self.confidence
        out = []
        for i, r in enumerate(rows.itertuples(index=False)):
            limit = self.limits.get(r.slice, self.max_relative_shift)
            inc, cand, n = float(r.incumbent_action_rate), float(r.candidate_action_rate), int(r.transactions)
            rel = (cand / inc - 1) if inc > 0 else (float("inf") if cand > 0 else 0.0)
            lo, hi = shift_ci(int(r.candidate_only_actions), int(r.incumbent_only_actions), n, self.confidence)
            if inc > 0:
                move = f"{rel:+.0%}, {self.confidence:.0%} CI {lo / inc:+.0%}..{hi / inc:+.0%}"
            else:
                move = "none blocked before" if cand > 0 else "+0%"
            head = (f"{r.slice}: candidate blocks {pct(cand)} vs {pct(inc)} ({move}), limit ±{limit:.0%}, "
                    f"{n:,} transactions")
            beyond = abs(rel) > limit and abs(cand - inc) >= self.min_absolute_shift
            pv = float(p[i]) if supported[i] else None
            if not supported[i]:
                verdict, sentence = INSUFFICIENT, f"{head}; fewer than the {self.min_support:,} needed to judge."
            elif beyond and p[i] < alpha:
                verdict, sentence = FAIL, f"{head}; significant (adjusted p={p[i]:.2g})."
            elif beyond:
                verdict, sentence = INSUFFICIENT, (f"{head}: beyond the limit but not significant (adjusted "
                                                   f"p={p[i]:.2g}): more traffic is needed to judge.")
            else:
                verdict, sentence = PASS, f"{head}: within the limit."
            out.append(Verdict(self.name, self.kind, self.gate, self.slice, str(r.slice), verdict, cand, inc,
                               limit, n, sentence, pv))
        out.extend(self._unmatched_limits(rows, "action_rate_shift"))
        return out
