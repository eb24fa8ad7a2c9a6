"""fixed_fpr_higher_recall: at the incumbent's false-positive rate the candidate catches more fraud, and
the policy that would go live never trades FPR for recall.

Two verdicts, both on judging rows that did not fit any threshold:

- **operating point**: the candidate's global threshold is fitted on the fitting rows so its FPR matches
  the incumbent's there; on the judging rows the candidate must catch more fraud (the interval of the
  recall gain wholly above ``min_recall_gain``), and fails if its FPR interval lies wholly above
  ``fpr_tolerance``. A gain whose interval includes ``min_recall_gain`` is "no gain shown" (insufficient
  data). The FPR here was fitted, not claimed, so an FPR interval that merely reaches above the tolerance
  does not stop the release on its own: the claim about FPR is judged on the policy.
- **policy**: at the per-merchant thresholds that would go live (and the global threshold elsewhere), the
  FPR may not rise beyond the tolerance: a policy whose FPR interval lies wholly above it fails, whatever
  its recall ("never trade FPR for recall").

Point, interval and test come from the same counterfactual counts (doubly robust by default: an outcome
model for the censored rows plus the inverse-propensity-weighted residual of the explored ones, one
clipping rule; paired bootstrap by card). Below the counterfactual support (explored frauds, ESS) the
verdict is "insufficient data" with the plain figure beside it, labelled as biased by censoring.

Effects (contracts.base.Verdict), both in points: the operating point's recall gain and its interval
against ``min_recall_gain`` and above (no interval without ``require_ci_above_zero``: the point decides;
a failure by the operating point's FPR is in the sentence only), and the policy's FPR change and its
interval against ``fpr_tolerance`` and below.

YAML::

    - name: fixed_fpr_higher_recall
      kind: fixed_fpr_higher_recall
      min_recall_gain: 0.0          # candidate recall - incumbent recall must be above this ...
      require_ci_above_zero: true   # ... with its whole 95% interval (false: the point alone, never a NaN)
      fpr_tolerance: 0.0002         # FPR may exceed the incumbent's by at most 0.02 points ...
      fpr_tolerance_relative: 0.05  # ... or 5% of the incumbent's FPR, whichever is larger
      min_support: 30               # matured frauds in the judging window
      estimator: dr                 # dr | ipw | plain
      min_explored_frauds: 3        # explored frauds in the judging window the counterfactual needs
      min_ess: 30
      on_insufficient: stop         # the operating point's verdict
      policy_on_insufficient: warn  # the policy's FPR: a clear trade stops; an undecided one warns
      gate: true

Sentences::

    At the incumbent's FPR (the candidate's threshold fitted on 2026-03-01..2026-03-10), on 1,250 matured
    frauds (31 explored, ESS 240) judged 2026-03-11..2026-03-21, where the incumbent's FPR is 0.41%: the
    candidate catches 44.0% vs 48.3% (-4.3 pts, 95% CI -7.9..-0.6) at FPR 0.41% (+0.00 pts, CI -0.02..+0.02).
    It must catch more: the whole interval is below +0.0 pts.
    The policy's FPR is 0.62% vs 0.41% (+0.21 pts, 95% CI +0.15..+0.27), tolerance +0.02 pts: it trades
    FPR for recall.
"""
from __future__ import annotations

from typing import Literal

import pandas as pd
from pydantic import BaseModel, ConfigDict, Field

from analysis.weighting import CounterfactualConfig
from contracts.base import (FAIL, counterfactual_ok, dm_support, INSUFFICIENT, PASS, POINTS, STOP, OnInsufficient,
                            Verdict, data_to_decide, effect_fields, finite, widened, judge_at_least, judge_at_most,
                            pct, wide_metric)

_CF = CounterfactualConfig()  # the counterfactual support minimums: one definition (analysis.weighting)


class FixedFprHigherRecall(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str
    kind: Literal["fixed_fpr_higher_recall"]
    min_recall_gain: float = Field(0.0, ge=-1, le=1)
    require_ci_above_zero: bool = True
    fpr_tolerance: float = Field(0.0, ge=0, le=1)
    fpr_tolerance_relative: float = Field(0.0, ge=0, le=1)
    min_support: int = Field(30, ge=1)
    min_explored_frauds: int = Field(_CF.min_explored_frauds, ge=0)
    min_ess: float = Field(_CF.min_ess, ge=0)
    estimator: Literal["dm", "dr", "ipw", "plain"] = "dm"
    on_insufficient: OnInsufficient = STOP
    # the policy's FPR: a clear trade always stops; an undecided one warns by default, because the operating
    # point has already shown the recall gain at equal FPR and the action-rate contract holds the policy's
    # block rates, and with keep-block-rate thresholds the policy's FPR barely moves, so its interval
    # would straddle a tight tolerance on all but the largest windows
    policy_on_insufficient: OnInsufficient = "warn"
    gate: bool = True

    def _v(self, slice_: str, verdict: str, cand, inc, limit, support, sentence: str, effect: dict) -> Verdict:
        on = self.policy_on_insufficient if slice_ == "policy" else self.on_insufficient
        return Verdict(self.name, self.kind, self.gate, "all", slice_, verdict,
                       float(cand) if finite(cand) else None, float(inc) if finite(inc) else None,
                       limit, support, sentence, None, on, **effect)

    def gain_effect(self, d=None, lo=None, hi=None) -> dict:
        """The operating point's effect: the recall gain in points against ``min_recall_gain``, by its
        interval, or by the point alone (no interval) without ``require_ci_above_zero``. The sentence leads
        with recall; a failure by the operating point's FPR is said in its tail, not in these fields."""
        if not self.require_ci_above_zero:
            lo = hi = None
        return effect_fields(POINTS, d, lo, hi, allowed_lo=self.min_recall_gain)

    def tolerance(self, incumbent_fpr) -> float:
        """How far the FPR may rise: ``fpr_tolerance`` points, or ``fpr_tolerance_relative`` of the
        incumbent's FPR, whichever is larger."""
        rel = self.fpr_tolerance_relative * float(incumbent_fpr) if finite(incumbent_fpr) else 0.0
        return max(self.fpr_tolerance, rel)

    def check(self, metrics: pd.DataFrame | None, windows: dict | None = None) -> list[Verdict]:
        if metrics is None or metrics.empty:
            return [self._v("operating point", INSUFFICIENT, None, None, self.min_recall_gain, 0,
                            "No metrics were computed for this release: recall at the incumbent's FPR cannot be judged.",
                            self.gain_effect())]
        models = ["incumbent", "candidate", "policy", "candidate-incumbent", "policy-incumbent"]
        rec = wide_metric(metrics, "all", "recall", self.estimator, models)
        fpr = wide_metric(metrics, "all", "fpr", self.estimator, models)
        plain_rec = wide_metric(metrics, "all", "recall", "plain", models)
        if rec.empty or fpr.empty:
            return [self._v("operating point", INSUFFICIENT, None, None, self.min_recall_gain, 0,
                            "No all-traffic recall or FPR in the metrics: nothing to judge.", self.gain_effect())]
        r, f = rec.iloc[0], fpr.iloc[0]
        frauds = int(r["frauds"])
        w = windows or {}
        fitted = f" fitted on {w['fitting']}" if w.get("fitting") else " fitted on the fitting rows"
        judged = f" judged {w['judging']}" if w.get("judging") else ""
        cf = ""
        if self.estimator != "plain" and "explored_frauds" in r:
            cf = f" ({int(r['explored_frauds']):,} explored, ESS {float(r['ess_frauds']):.0f}"
            om = w.get("outcome_model") if self.estimator == "dm" else None
            cf += f"; the outcome model fitted on {int(om['explored_frauds']):,} explored frauds)" if om else ")"
        # the direct method rests on the rows its outcome model was fitted on (contracts.base.dm_support)
        enough_cf = counterfactual_ok(dm_support(r, windows) if self.estimator == "dm" else r, self.estimator,
                                      self.min_explored_frauds, self.min_ess)
        out = []
        # ---- the operating point: model quality at the incumbent's FPR
        d, lo, hi = r["candidate-incumbent"], r["candidate-incumbent_lo"], r["candidate-incumbent_hi"]
        lo, hi = widened(d, lo, hi, frauds)
        effect = self.gain_effect(d, lo, hi)
        fd, flo, fhi = f["candidate-incumbent"], f["candidate-incumbent_lo"], f["candidate-incumbent_hi"]
        head = (f"At the incumbent's FPR (the candidate's threshold{fitted}), on "
                f"{frauds:,} matured frauds{cf}{judged}, where the incumbent's FPR is {pct(f['incumbent'])}: "
                f"the candidate catches {pct(r['candidate'], 1)} vs {pct(r['incumbent'], 1)} "
                f"({100 * d:+.1f} pts, {95}% CI {100 * lo:+.1f}..{100 * hi:+.1f}) at FPR {pct(f['candidate'])} "
                f"({100 * fd:+.2f} pts, CI {100 * flo:+.2f}..{100 * fhi:+.2f})") if finite(d, lo, hi, fd, flo, fhi) \
            else None
        gain = self.min_recall_gain
        if head is None:
            out.append(self._v("operating point", INSUFFICIENT, r.get("candidate"), r.get("incumbent"), gain, frauds,
                               f"Recall or FPR at the incumbent's FPR could not be computed ({frauds:,} matured "
                               f"frauds): nothing to judge, never a pass.", effect))
        elif frauds < self.min_support:
            out.append(self._v("operating point", INSUFFICIENT, r["candidate"], r["incumbent"], gain, frauds,
                               f"{head}; fewer than the {self.min_support:,} matured frauds needed to judge.",
                               effect))
        elif not enough_cf:
            p = plain_rec.iloc[0] if not plain_rec.empty else None
            plain = (f"; on labelled rows alone (biased by censoring) {pct(p['candidate'], 1)} vs "
                     f"{pct(p['incumbent'], 1)} ({100 * p['candidate-incumbent']:+.1f} pts)") if p is not None else ""
            out.append(self._v("operating point", INSUFFICIENT, r["candidate"], r["incumbent"], gain, frauds,
                               f"{head}: too few explored frauds to stand in for the blocked ones (at least "
                               f"{self.min_explored_frauds} and an ESS of {self.min_ess:.0f} needed){plain}.",
                               effect))
        else:
            tol = self.tolerance(f["incumbent"])
            fv = judge_at_most(flo, fhi, tol)
            rv = judge_at_least(lo, hi, gain) if self.require_ci_above_zero else (PASS if d > gain else FAIL)
            need = f"{100 * gain:+.1f} pts"
            if fv == FAIL:
                verdict, tail = FAIL, (f". Its FPR is higher than the incumbent's beyond the tolerance of "
                                       f"{100 * tol:.2f} pts: FPR is never traded for recall.")
            elif rv == FAIL:
                verdict, tail = FAIL, (f". It must catch more: the whole interval is below {need}."
                                       if self.require_ci_above_zero else f". It must catch more than {need}.")
            elif rv == INSUFFICIENT:
                verdict, tail = INSUFFICIENT, (f". No gain shown: the interval of the gain includes {need}; "
                                               f"{data_to_decide(d, lo, hi, [gain], frauds, 'matured frauds')}.")
            elif fv == INSUFFICIENT:  # the threshold was fitted to the incumbent's FPR: what is claimed here is
                verdict, tail = PASS, (". It catches more; its FPR was fitted to the incumbent's on the fitting "
                                       "rows and is not clearly above it here (the policy's FPR is judged below).")
            else:
                verdict, tail = PASS, "."
            out.append(self._v("operating point", verdict, r["candidate"], r["incumbent"], gain, frauds, head + tail,
                               effect))
        # ---- the policy that would go live: never a higher FPR
        if "policy" in f and finite(f["policy-incumbent"], f["policy-incumbent_lo"], f["policy-incumbent_hi"]):
            pd_, plo, phi = f["policy-incumbent"], f["policy-incumbent_lo"], f["policy-incumbent_hi"]
            rr = (f", catching {pct(r['policy'], 1)} vs {pct(r['incumbent'], 1)} of fraud"
                  if finite(r.get("policy"), r.get("incumbent")) else "")
            tol = self.tolerance(f["incumbent"])
            head = (f"The policy's FPR is {pct(f['policy'])} vs {pct(f['incumbent'])} ({100 * pd_:+.2f} pts, 95% CI "
                    f"{100 * plo:+.2f}..{100 * phi:+.2f}), tolerance +{100 * tol:.2f} pts{rr}")
            v = judge_at_most(plo, phi, tol)
            if not enough_cf and v != FAIL:
                v, tail = INSUFFICIENT, ": too few explored rows for the counterfactual FPR."
            elif v == FAIL:
                tail = ": it trades FPR for recall."
            elif v == PASS:
                tail = ": no higher than the incumbent's."
            else:
                tail = (f": the interval reaches above the tolerance; "
                        f"{data_to_decide(pd_, plo, phi, [tol], int(f['labelled']), 'labelled transactions')}.")
            out.append(self._v("policy", v, f["policy"], f["incumbent"], tol, int(f["labelled"]), head + tail,
                               effect_fields(POINTS, pd_, plo, phi, allowed_hi=tol)))
        return out
