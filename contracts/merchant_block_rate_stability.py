"""merchant_block_rate_stability: with the suggested thresholds, few merchants see their block rate move.

A merchant "moves" when its block rate under the candidate (at the suggested per-merchant thresholds)
differs from the incumbent's by more than ``max_change`` (absolute). Only merchants with at least
``min_merchant_support`` transactions in the evaluation window are counted; with fewer than
``min_support`` such merchants the verdict is "insufficient data".

YAML::

    - name: merchant_block_rate_stability
      kind: merchant_block_rate_stability
      at: suggested
      max_change: 0.005           # a move of more than 0.5 points of block rate ...
      max_share: 0.05             # ... may happen to at most 5% of merchants
      min_merchant_support: 200   # transactions a merchant needs to be counted
      min_support: 20             # merchants needed to judge
      gate: false                 # warn only

Sentence on failure::

    9 of 120 merchants (7.5%) would see their block rate move by more than 0.50 points; at most 5.0% may.
    Largest moves: m00042 1.20% -> 2.10%, m00007 3.00% -> 2.20%.
"""
from __future__ import annotations

from typing import Literal

import pandas as pd
from pydantic import BaseModel, ConfigDict, Field

from contracts.base import FAIL, INSUFFICIENT, PASS, Verdict, pct


class MerchantBlockRateStability(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str
    kind: Literal["merchant_block_rate_stability"]
    at: Literal["suggested", "operating_point"] = "suggested"
    max_change: float = Field(gt=0, le=1)
    max_share: float = Field(ge=0, le=1)
    min_merchant_support: int = Field(200, ge=1)
    min_support: int = Field(20, ge=1)
    gate: bool = False

    def check(self, slices: pd.DataFrame) -> list[Verdict]:
        m = slices[(slices["slice_type"] == "merchant") & (slices["at"] == self.at)
                   & (slices["transactions"] >= self.min_merchant_support)]
        n = len(m)
        m = m.assign(change=(m["candidate_action_rate"] - m["incumbent_action_rate"]).abs())
        moved = m[m["change"] > self.max_change].sort_values("change", ascending=False)
        share = len(moved) / n if n else 0.0
        head = (f"{len(moved)} of {n:,} merchants ({share:.1%}) would see their block rate move by more than "
                f"{100 * self.max_change:.2f} points; at most {self.max_share:.1%} may")
        largest = ", ".join(f"{r.slice} {pct(r.incumbent_action_rate)} -> {pct(r.candidate_action_rate)}"
                            for r in moved.head(3).itertuples())
        if n < self.min_support:
            verdict = INSUFFICIENT
            sentence = (f"Only {n} merchants have {self.min_merchant_support:,} transactions or more; "
                        f"{self.min_support} are needed to judge.")
        elif share > self.max_share:
            verdict, sentence = FAIL, f"{head}. Largest moves: {largest}."
        else:
            verdict, sentence = PASS, f"{head}." + (f" Largest moves: {largest}." if largest else "")
        return [Verdict(self.name, self.kind, self.gate, "merchant", "all", verdict, share, None, self.max_share,
                        n, sentence, None)]
