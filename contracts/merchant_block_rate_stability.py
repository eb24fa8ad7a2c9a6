"""merchant_block_rate_stability: under the policy that would go live, few merchants see their block rate move.

Judged on judging rows that did not fit the per-merchant thresholds: a threshold fitted to keep a
merchant's block rate reproduces it exactly on the rows it was fitted on, so only later rows can show a
move. A merchant "moves" when the 95% interval of its block-rate change (paired bootstrap by card) lies
wholly beyond ``max_change``; it "holds" when the interval lies inside; otherwise it is undecided.
Merchants with fewer than ``min_merchant_support`` judging transactions are pooled into one "other
merchants" slice, judged like any merchant. The share of merchants that moved fails the contract when it
exceeds ``max_share``; the contract passes when even counting every undecided merchant as moved the share
stays within it; otherwise it is "insufficient data". The verdict's effect (contracts.base.Verdict) is
that share, between those bounds (moved; moved or undecided), against ``max_share`` and below: the same
rule as an interval against a ceiling.

YAML::

    - name: merchant_block_rate_stability
      kind: merchant_block_rate_stability
      at: policy
      max_change: 0.005           # a move of more than 0.5 points of block rate ...
      max_share: 0.05             # ... may happen to at most 5% of merchants
      min_merchant_support: 200   # merchants with fewer judging transactions are pooled
      min_support: 20             # merchant slices needed to judge
      on_insufficient: warn
      gate: false                 # warn only

Sentence on failure::

    9 of 120 merchant slices (7.5%) moved their block rate by more than 0.50 points (the whole interval
    beyond it), 4 undecided; at most 5.0% may. Largest moves: m00042 1.20% -> 2.10%, m00007 3.00% -> 2.20%.
"""
from __future__ import annotations

from typing import Literal

import pandas as pd
from pydantic import BaseModel, ConfigDict, Field, field_validator

from contracts.base import (FAIL, INSUFFICIENT, PASS, RATE, STOP, OnInsufficient, Verdict, _at_alias, effect_fields,
                            pct, pooled_type, wide_metric)


class MerchantBlockRateStability(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str
    kind: Literal["merchant_block_rate_stability"]
    at: Literal["policy", "operating_point"] = "policy"
    max_change: float = Field(gt=0, le=1)
    max_share: float = Field(ge=0, le=1)
    min_merchant_support: int = Field(200, ge=1)
    min_support: int = Field(20, ge=1)
    on_insufficient: OnInsufficient = STOP
    gate: bool = False

    @field_validator("at", mode="before")
    @classmethod
    def _at(cls, v):
        return _at_alias(v)

    def pool(self) -> tuple[str, str, int]:
        return "merchant", "transactions", self.min_merchant_support

    def check(self, metrics: pd.DataFrame) -> list[Verdict]:
        model = "policy" if self.at == "policy" else "candidate"
        diff = f"{model}-incumbent"
        m = wide_metric(metrics, pooled_type(*self.pool()), "action_rate", "all", ["incumbent", model, diff])

        def v(verdict, share, worst, n, sentence):
            # the share that moved lies between the merchants whose whole interval moved and those plus every
            # undecided one: judged against max_share as any interval against a ceiling (judge_at_most)
            return Verdict(self.name, self.kind, self.gate, "merchant", "all", verdict, share, None, self.max_share,
                           n, sentence, None, self.on_insufficient,
                           **effect_fields(RATE, share, share, worst, allowed_hi=self.max_share))

        n = len(m)
        if n < self.min_support:
            return [v(INSUFFICIENT, None, None, n, f"Only {n} merchant slices in the judging window "
                                                   f"({self.min_merchant_support:,}+ transactions each, the rest "
                                                   f"pooled); {self.min_support} are needed to judge.")]
        lo, hi = m[f"{diff}_lo"], m[f"{diff}_hi"]
        defined = lo.notna() & hi.notna()
        moved = defined & ((lo > self.max_change) | (hi < -self.max_change))
        held = defined & (lo >= -self.max_change) & (hi <= self.max_change)
        undecided = ~moved & ~held
        share, worst = float(moved.sum() / n), float((moved | undecided).sum() / n)
        # the change on every slice first, then the moved ones: assigning a full-length column to an empty
        # selection gives it the column's rows (pandas 3), which named unmoved merchants as "largest moves"
        top = m.assign(change=(m[model] - m["incumbent"]).abs())[moved].sort_values("change", ascending=False)
        largest = ", ".join(f"{s} {pct(r.incumbent)} -> {pct(r[model])}" for s, r in top.head(3).iterrows())
        head = (f"{int(moved.sum())} of {n:,} merchant slices ({share:.1%}) moved their block rate by more than "
                f"{100 * self.max_change:.2f} points (the whole interval beyond it), {int(undecided.sum())} undecided; "
                f"at most {self.max_share:.1%} may")
        tail = f" Largest moves: {largest}." if largest else ""
        if share > self.max_share:
            return [v(FAIL, share, worst, n, f"{head}.{tail}")]
        if worst <= self.max_share:
            return [v(PASS, share, worst, n, f"{head}.{tail}")]
        return [v(INSUFFICIENT, share, worst, n, f"{head}: counting the undecided ones, up to {worst:.1%} may have "
                                                 f"moved, so it cannot be judged; a longer judging window would "
                                                 f"decide them.{tail}")]
