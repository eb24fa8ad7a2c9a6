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
      gate: true

Sentence on failure (and, with "within", on pass)::

    BR: candidate blocks 1.92% vs 1.61% (+19%), limit ±25%, 48,210 transactions.
"""
from __future__ import annotations

from typing import Literal

import pandas as pd
from pydantic import BaseModel, ConfigDict, Field

from contracts.base import FAIL, INSUFFICIENT, PASS, Verdict, pct


class ActionRateShift(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str
    kind: Literal["action_rate_shift"]
    slice: Literal["all", "country", "merchant", "category", "card_country"] = "country"
    at: Literal["suggested", "operating_point"] = "suggested"
    max_relative_shift: float = Field(gt=0, le=1)
    min_absolute_shift: float = Field(0.0, ge=0, le=1)
    min_support: int = Field(1000, ge=1)
    limits: dict[str, float] = {}
    gate: bool = True

    def check(self, slices: pd.DataFrame) -> list[Verdict]:
        rows = slices[(slices["slice_type"] == self.slice) & (slices["at"] == self.at)]
        out = []
        for r in rows.itertuples(index=False):
            limit = self.limits.get(r.slice, self.max_relative_shift)
            inc, cand, n = float(r.incumbent_action_rate), float(r.candidate_action_rate), int(r.transactions)
            rel = (cand / inc - 1) if inc > 0 else (float("inf") if cand > 0 else 0.0)
            head = (f"{r.slice}: candidate blocks {pct(cand)} vs {pct(inc)} ({rel:+.0%}), limit ±{limit:.0%}, "
                    f"{n:,} transactions")
            if n < self.min_support:
                verdict, sentence = INSUFFICIENT, f"{head}; fewer than the {self.min_support:,} needed to judge."
            elif abs(rel) > limit and abs(cand - inc) >= self.min_absolute_shift:
                verdict, sentence = FAIL, f"{head}."
            else:
                verdict, sentence = PASS, f"{head}: within the limit."
            out.append(Verdict(self.name, self.kind, self.gate, self.slice, str(r.slice), verdict, cand, inc,
                               limit, n, sentence))
        return out
