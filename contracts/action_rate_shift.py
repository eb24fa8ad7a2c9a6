"""action_rate_shift: no slice's action rate moves by more than a limit against the incumbent.

Judged on the policy that would go live (the per-merchant thresholds, with any approved edits, and the
global threshold for every merchant without one of its own), on judging rows that did not fit those
thresholds. The raw shift of the candidate at one global threshold is reported beside it, so a reader
sees what the per-merchant thresholds absorbed.

YAML::

    - name: country_action_rate_shift
      kind: action_rate_shift
      slice: country              # country | merchant | category | card_country | merchant_size | ...
      at: policy                  # the policy that would go live (default), or operating_point (the
                                  # candidate at one global threshold matching the incumbent's FPR)
      max_relative_shift: 0.25    # the policy's action rate may move by at most 25% of the incumbent's ...
      min_absolute_shift: 0.002   # ... or by 0.2 points, whichever is larger (a noise floor for tiny rates)
      min_support: 500            # slices where the incumbent blocked fewer judging transactions are pooled
                                  # ("other countries"): an action-rate change is decided by the blocks
      limits: {US: 0.10}          # optional tighter (or looser) relative limits for named slices
      confidence: 0.90            # the interval's level (see "Level" below)
      on_insufficient: stop       # an interval that reaches both sides of the limit stops the release
      gate: true

A slice passes when the interval of its action-rate change (a paired bootstrap by card on the judging
rows: point and interval from the same counts) lies inside ±limit, fails when it lies wholly beyond, and
is "insufficient data" otherwise. Each slice is judged on its own interval (see contracts/base.py: adding
slices never makes the gate more lenient).

Level. "Inside ±limit" is an equivalence claim, and a pass is two one-sided tests (TOST): the upper end
below +limit and the lower end above -limit. With a 90% interval each end is a one-sided 95% bound, so
a slice whose true shift sits exactly on the limit passes in at most 5% of judgements, fewer the further
beyond it is: the 95% stopping of harm the gates are held to. A 95% interval would make each end a 97.5%
bound, stricter than that promise, and it is paid for by good releases: on the planted battery (seeds
100-199, tests/contracts/planted.py) it stopped a strictly better candidate with equal action rates in 8
of 100 seeds, the 90% interval in 4, while a shift planted at one country's thin and new merchants was
still stopped in every seed whose true shift was beyond the limit (README, release gates).

Effect (contracts.base.Verdict, drawn by the report): the criterion the sentence leads with. With an
incumbent rate, the relative shift and the interval the sentence prints, against ±limit (judged by the
ratio's own interval) or ±max(limit, floor / rate) (judged by the difference alone); the absolute floor is
a second way to pass, so a slice it passes may have a relative interval reaching beyond ±limit. A slice
the incumbent never blocked: the change in points against ±min_absolute_shift.

Sentence on failure::

    BR: the policy blocks 2.25% vs 1.61% (+40%, 90% CI +32%..+48%), limit ±25%, 48,210 judging
    transactions: beyond the limit. At one global threshold the candidate would block 2.30% (+43%); the
    per-merchant thresholds absorb 3 pts of it.
"""
from __future__ import annotations

from typing import ClassVar, Literal

import pandas as pd
from pydantic import Field

from contracts.base import (FAIL, INSUFFICIENT, MEMBER_CONFIDENCE, PASS, POINTS, RELATIVE, SliceContract, Verdict,
                            data_to_decide, effect_fields, finite, judge_two_sided, level_pct, pct, wide_metric,
                            widened)


def relative(x: float, base: float) -> str:
    return f"{x / base:+.0%}" if base > 0 else ("+0%" if x == 0 else "none blocked before")


class ActionRateShift(SliceContract):
    kind: Literal["action_rate_shift"]
    max_relative_shift: float = Field(gt=0, le=1)
    min_absolute_shift: float = Field(0.0, ge=0, le=1)
    min_support: int = Field(500, ge=1)

    support_measure: ClassVar[str] = "actions"

    def limit_for(self, slice_: str, incumbent_rate: float) -> tuple[float, float]:
        """(relative limit, absolute limit in action-rate points) for a slice."""
        rel = self.limits.get(str(slice_), self.max_relative_shift)
        return rel, max(rel * max(incumbent_rate, 0.0), self.min_absolute_shift)

    def point_beyond(self, v: Verdict) -> bool:
        _, lim = self.limit_for(v.slice, v.incumbent_value or 0.0)
        return abs(v.candidate_value - (v.incumbent_value or 0.0)) > lim

    def check(self, metrics: pd.DataFrame, what: str = "policy") -> list[Verdict]:
        """``metrics``: the evaluation's tidy table (analysis.stats.slice_intervals on the judging rows)."""
        models = ["incumbent", self.model, f"{self.model}-incumbent", f"{self.model}/incumbent", "candidate",
                  "candidate-incumbent"]
        rows = wide_metric(metrics, self.slice_type, "action_rate", "all", models, confidence=self.confidence)
        if rows.empty:
            return self.no_slices("any transactions")
        if self.model == "candidate":
            what = "candidate"
        members = self.pooled_members(metrics, rows, "action_rate", "all", models)
        own = self.own_failures(self.judge(members, what, level=MEMBER_CONFIDENCE)) if len(members) else []
        return self.judge(rows, what) + own + self._unmatched_limits(set(rows.index) | set(members.index))

    def judge(self, rows: pd.DataFrame, what: str = "policy", unit: str = "judging transactions",
              level: float | None = None) -> list[Verdict]:
        """``rows`` indexed by slice: incumbent, <model>, <model>-incumbent with _lo/_hi at ``level`` (the
        contract's confidence unless said), transactions, optionally candidate (the raw shift at one global
        threshold) and members (a pooled slice's)."""
        level = level or self.confidence
        out = []
        diff = f"{self.model}-incumbent"
        for s, r in rows.iterrows():
            inc, pol, n = float(r["incumbent"]), float(r[self.model]), int(r["transactions"])
            d, lo, hi = float(r[diff]), float(r[f"{diff}_lo"]), float(r[f"{diff}_hi"])
            lo, hi = widened(d, lo, hi, n, level)
            rel, lim = self.limit_for(s, inc)
            verdict = judge_two_sided(lo, hi, lim)
            ratio = f"{self.model}/incumbent"
            if ratio in r and finite(r[ratio], r[f"{ratio}_lo"], r[f"{ratio}_hi"]) and inc > 0:
                # the relative change judged by its own bootstrap interval, which carries the noise of the
                # incumbent's rate as well (a limit taken as rel x the incumbent's judged rate would not);
                # the absolute floor on the difference still lets tiny rates pass
                rlo, rhi = widened(float(r[ratio]) - 1, float(r[f"{ratio}_lo"]) - 1, float(r[f"{ratio}_hi"]) - 1,
                                   inc * n, level)  # one more disagreement among the incumbent's blocks
                by_ratio = judge_two_sided(rlo, rhi, rel)
                by_floor = judge_two_sided(lo, hi, self.min_absolute_shift) if self.min_absolute_shift > 0 else FAIL
                if PASS in (by_ratio, by_floor):
                    verdict = PASS
                elif by_ratio == FAIL and by_floor == FAIL:
                    verdict = FAIL
                else:
                    verdict = INSUFFICIENT
                allowed = rel
            else:
                rlo, rhi = (lo / inc, hi / inc) if inc > 0 else (float("nan"), float("nan"))
                allowed = lim / inc if inc > 0 else float("nan")
            # the effect is the criterion the sentence leads with: with an incumbent rate, the relative shift
            # and the relative interval it prints, against ±rel when judged by the ratio's own interval (the
            # absolute floor on the difference, printed beside it in points, can also pass a slice whose
            # relative interval reaches beyond) or ±lim / inc when judged by the difference alone (the very
            # rule); with nothing blocked before, the difference in points against ±lim
            effect = (effect_fields(RELATIVE, d / inc, rlo, rhi, -allowed, allowed) if inc > 0
                      else effect_fields(POINTS, d, lo, hi, -lim, lim))
            name = str(s)
            members = r.get("members")
            label = f"{name} ({members})" if isinstance(members, str) and members else name
            if not finite(d, lo, hi):
                out.append(self.verdict(name, INSUFFICIENT, None, inc, rel, n,
                                        f"{label}: no action-rate change could be computed ({n:,} {unit}).",
                                        **effect)); continue
            ci = (f"{level_pct(level)} CI {rlo:+.0%}..{rhi:+.0%}" if inc > 0
                  else f"{level_pct(level)} CI {100 * lo:+.2f}..{100 * hi:+.2f} pts")
            floor = f" (±{100 * lim:.2f} pts)" if lim > rel * inc else ""
            head = (f"{label}: the {what} blocks {pct(pol)} vs {pct(inc)} ({relative(d, inc)}, {ci}), limit "
                    f"±{rel:.0%}{floor}, {n:,} {unit}")
            raw = ""
            if self.model != "candidate" and "candidate" in r and finite(r["candidate"]) and inc > 0:
                c = float(r["candidate"])
                absorbed = (abs(c - inc) - abs(pol - inc)) / inc
                raw = (f" At one global threshold the candidate would block {pct(c)} ({relative(c - inc, inc)}); "
                       + (f"the per-merchant thresholds absorb {100 * absorbed:.0f} pts of it." if absorbed > 0
                          else "the per-merchant thresholds absorb none of it."))
            if verdict == PASS:
                sentence = f"{head}: within the limit.{raw}"
            elif verdict == FAIL:
                sentence = f"{head}: beyond the limit.{raw}"
            else:
                sentence = (f"{head}: the interval reaches both sides of the limit, so it cannot be judged; "
                            f"{data_to_decide(d, lo, hi, [lim, -lim], n, unit)}.{raw}")
            out.append(self.verdict(name, verdict, pol, inc, rel, n, sentence, **effect))
        return out
