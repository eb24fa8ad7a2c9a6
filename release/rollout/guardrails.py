"""The guardrails of one rollout stage (the shadow period, or one ramp step) and their judgement on the
scoring service's decision log.

The evidence is the candidate's own rows, never the step's traffic as a whole:

- shadow (``pct == 0``): the candidate scores every transaction beside production; its rows are those it
  scored (or failed to score); the action rates are compared on the rows both models scored;
- a ramp step (``pct > 0``): the rows ``routed`` to the candidate (its card bucket sent them there); the
  action rates are compared on those of them production also scored (in shadow), the error rate is the
  share of them the candidate failed to score, the latency is that of the requests it served.

At 1% of a busy hour that is a few dozen rows, which can decide nothing: each guardrail has its own
minimum support, and the stage is

- ``breach`` when any verdict failed (an interval wholly beyond its limit: strong evidence is evidence,
  even on few rows, except for latency, whose first requests are warm-up and whose p99 on a few requests
  is their maximum);
- else ``inconclusive`` when any configured guardrail could not be judged (too little support, or an
  interval that still reaches both sides of its limit); ``details["missing"]`` says, per guardrail, how
  much more evidence it needs. An inconclusive stage never passes: the rollout waits, or a person decides;
- else ``pass``: every configured guardrail was judged and passed.

Guardrails (``Guardrails``, the ``guardrails:`` block of config/ramp.yaml):

- ``action_rate_shift``, per merchant country: the candidate's action rate against production's on the
  same rows, within ±max(max_relative_shift x production's rate, min_absolute_shift). As offline, the
  relative limit is judged by the interval of the ratio of the two rates (paired, from the disagreement
  counts: it carries the noise of production's rate too), the absolute floor by the interval of their
  difference. Countries below ``min_support`` rows are pooled into "other countries" (judged together; a
  pooled country whose own interval is wholly beyond the limit at 99.99% still fails on its own). A
  slice below ``min_support`` never passes. A pool still below ``min_support`` (a remainder that may never
  reach it: the merchants outside the approved set are a fraction of a percent of traffic, and a closed-loop
  rollout once stayed inconclusive for all 14 days on their 141 rows and was rolled back) is judged
  together with the thinnest slice that has the support ("other segments with small"); that slice is
  judged on its own as well.
- ``segment_action_rate_shift``, the same per merchant segment: a merchant's segment in the candidate's
  approved threshold set, and "not in the approved set" for every merchant without an approved threshold
  of its own. Those get the global threshold online, and that is where a shift hides: spread over every
  country, a 40% shift on a fifth of the traffic moves no country by more than 8%.
- ``error_rate``: the share of the candidate's requests that failed to score (the service answered with
  production instead); an exact (Clopper-Pearson) interval against ``max_rate``.
- ``latency``: the p99 server-side latency of the requests the candidate served; a distribution-free
  interval of the 99th percentile (order statistics) against ``max_p99_ms``. Not applicable in shadow,
  where the candidate serves nothing (the log holds production's latency only).
- ``score_shift``: the candidate's live scores against a reference sample of its own scores (its scores
  on the offline judging rows): the population stability index over the reference's quantile bins
  (deciles by default: a broad look at the whole distribution; a move confined to the top percent, where
  the blocks are, is the action-rate guardrails' to see).

Each verdict carries its effect (contracts.base.Verdict): an action-rate shift as offline, the error rate
with its exact interval, the p99 in ms with its order-statistic interval (an end it cannot bound: None),
the PSI as a point; each of the last three against its limit and below.

Everything here is pure: decision-log rows, the guardrails, the segment map and the reference scores in;
a ``StageJudgement`` out.
"""
from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
from pydantic import BaseModel, ConfigDict, Field

from contracts.action_rate_shift import ActionRateShift
from contracts.base import (FAIL, INSUFFICIENT, MEMBER_CONFIDENCE, MS, PASS, PSI, RATE, STOP, Verdict, effect_fields,
                            other_name, pct as fmt_pct, shift_ci, widened)
from release.core.distributions import beta_ppf, binom_ppf, chi2_ppf, norm_ppf

PASSED, BREACH, INCONCLUSIVE = "pass", "breach", "inconclusive"
NOT_IN_APPROVED_SET = "not in the approved set"
P99 = 0.99


# ---- configuration ------------------------------------------------------------------------------------

class ShiftGuardrail(BaseModel):
    """An action-rate shift per slice (country, or merchant segment): candidate vs production on the
    same rows, within ±max(max_relative_shift x production's rate, min_absolute_shift) by a paired
    interval at ``confidence``. Slices below ``min_support`` rows are pooled, and never pass on their own."""

    model_config = ConfigDict(extra="forbid")
    max_relative_shift: float = Field(gt=0, le=1)
    min_absolute_shift: float = Field(0.0, ge=0, le=1)
    min_support: int = Field(300, ge=1)
    confidence: float = Field(0.95, gt=0.5, lt=1)


class ErrorRateGuardrail(BaseModel):
    """Share of the candidate's requests that failed to score (the service then falls back to production)."""

    model_config = ConfigDict(extra="forbid")
    max_rate: float = Field(ge=0, le=1)
    min_requests: int = Field(100, ge=1)
    confidence: float = Field(0.95, gt=0.5, lt=1)


class LatencyGuardrail(BaseModel):
    """Server-side p99 latency of the requests the candidate served."""

    model_config = ConfigDict(extra="forbid")
    max_p99_ms: float = Field(gt=0)
    min_requests: int = Field(100, ge=1)
    confidence: float = Field(0.95, gt=0.5, lt=1)


class ScoreShiftGuardrail(BaseModel):
    """The candidate's live score distribution against a reference sample of its scores (its scores on
    the offline judging rows): PSI over ``bins`` quantile bins of the reference.

    ``max_psi`` 0.2: the usual reading of a PSI is < 0.1 stable, 0.1-0.25 a moderate shift, > 0.25 a
    major one; 0.2 stops a shift well inside "moderate" (a normal location shift of about 0.45 standard
    deviations) while leaving room for the ordinary drift between the judging window and live traffic
    (the reference is weeks older than the traffic). Noise alone gives a PSI of about (bins - 1) x (1/n +
    1/m) (chi-square with bins - 1 degrees of freedom, scaled): at ``min_rows`` 500 live rows and 10 bins,
    about 0.02, and 0.04 at its 99th percentile against a large reference, far below 0.2; so a judged
    PSI above 0.2 is a shift, not sampling noise. A sample too small for that (the 99th percentile of the
    noise above ``max_psi``) is inconclusive, whatever ``min_rows`` says."""

    model_config = ConfigDict(extra="forbid")
    max_psi: float = Field(0.2, gt=0)
    min_rows: int = Field(500, ge=1)
    bins: int = Field(10, ge=2, le=100)


class Guardrails(BaseModel):
    """The guardrails of one rollout stage (config/ramp.yaml ``guardrails:``). None: not checked."""

    model_config = ConfigDict(extra="forbid")
    action_rate_shift: ShiftGuardrail  # per merchant country
    segment_action_rate_shift: ShiftGuardrail | None = None  # per merchant segment of the approved set
    error_rate: ErrorRateGuardrail | None = None  # live traffic only (the scoring service's decision log)
    latency: LatencyGuardrail | None = None  # live traffic only; ramp steps only
    score_shift: ScoreShiftGuardrail | None = None  # needs a reference sample of the candidate's scores


def as_guardrails(g) -> Guardrails:
    """``g`` as this module's ``Guardrails`` (a ``Guardrails`` of another module with the same fields,
    or a mapping)."""
    if isinstance(g, Guardrails):
        return g
    return Guardrails.model_validate(g.model_dump() if isinstance(g, BaseModel) else dict(g))


def approved_segments(items: pd.DataFrame) -> dict[str, str]:
    """merchant_id -> segment for the approved items of a threshold set (``release.state.approvals.set_items``:
    merchant_id, segment, outcome). Every other merchant is "not in the approved set" in ``judge_stage``."""
    from release.state.approvals import APPROVED, AUTO_APPROVED

    ok = items[items["outcome"].isin([APPROVED, AUTO_APPROVED])]
    return dict(zip(ok["merchant_id"].astype(str), ok["segment"].fillna("all").astype(str)))


# ---- the judgement ------------------------------------------------------------------------------------

@dataclass
class StageJudgement:
    """``status``: pass | breach | inconclusive. ``details`` is JSON-serialisable: rows, candidate_rows,
    compared_rows, span_seconds (event time of the candidate's rows), guardrails (per guardrail: status,
    support, needed, ...), breaches and missing (sentences), not_checked."""

    status: str
    verdicts: list[Verdict]
    details: dict = field(default_factory=dict)

    @property
    def breached(self) -> bool:
        return self.status == BREACH

    @property
    def passed(self) -> bool:
        return self.status == PASSED


def stage_prefix(pct: float) -> str:
    """Contract names say the stage: live_shadow_... or live_ramp_5pct_..."""
    return "live_shadow" if pct == 0 else f"live_ramp_{pct:g}pct"


def _col(log: pd.DataFrame, name: str, default=None) -> pd.Series:
    return log[name] if name in log else pd.Series(default, index=log.index, dtype=object)


def _flag(s: pd.Series) -> np.ndarray:
    return s.fillna(False).astype(bool).to_numpy()


def candidate_rows(log: pd.DataFrame, pct: float) -> pd.DataFrame:
    """The candidate's rows of a stage: in shadow those it scored or failed to score; in a ramp step those
    routed to it."""
    if len(log) == 0:
        return log
    if pct == 0:
        keep = _col(log, "candidate_score").notna() | _col(log, "candidate_error").notna()
        return log[keep.to_numpy()]
    return log[_flag(_col(log, "routed", False))]


def judge_stage(log: pd.DataFrame, pct: float, guardrails: Guardrails, *, segments: Mapping[str, str] | None = None,
                reference_scores: np.ndarray | None = None) -> StageJudgement:
    """Judge one stage's decision-log rows (shadow: ``pct == 0``; a ramp step: ``pct > 0``) by the
    candidate's rows only. ``segments``: merchant_id -> segment in the candidate's approved threshold set
    (``approved_segments``; None: unknown, so the segment guardrail is inconclusive). ``reference_scores``:
    the candidate's scores on a reference sample (None: the score-shift guardrail is inconclusive)."""
    g = as_guardrails(guardrails)
    prefix = stage_prefix(pct)
    shadow = pct == 0
    cand = candidate_rows(log, pct)
    both = cand[(_col(cand, "production_score").notna() & _col(cand, "candidate_score").notna()).to_numpy()] \
        if len(cand) else cand
    details: dict = {"stage": "shadow" if shadow else "ramp", "pct": float(pct), "rows": int(len(log)),
                     "candidate_rows": int(len(cand)), "compared_rows": int(len(both)),
                     "span_seconds": _span_seconds(cand), "guardrails": {}, "not_checked": []}
    verdicts: list[Verdict] = []
    missing: list[str] = []

    def add(key: str, vs: list[Verdict], info: dict, miss: list[str]) -> None:
        verdicts.extend(vs)
        info["status"] = _status(vs)
        details["guardrails"][key] = info
        missing.extend(miss)

    prod_b = _flag(_col(both, "production_block", False))
    cand_b = _flag(_col(both, "candidate_block", False))
    countries = _col(both, "merchant_country", "unknown")
    add("country_action_rate", *shift_judgement(
        slice_counts(countries, prod_b, cand_b), g.action_rate_shift, name=f"{prefix}_country_action_rate_shift",
        slice_type="country"))

    if g.segment_action_rate_shift is None:
        details["not_checked"].append("segment action rate: not configured")
    elif segments is None:
        s = g.segment_action_rate_shift
        sentence = ("Merchant segments: the candidate's approved threshold set (each merchant's segment) was not "
                    "given, so no segment's action rate could be judged.")
        v = Verdict(f"{prefix}_segment_action_rate_shift", "action_rate_shift", True, "segment", "all", INSUFFICIENT,
                    None, None, s.max_relative_shift, 0, sentence, None, STOP)
        add("segment_action_rate", [v], {"support": int(len(both)), "needed": s.min_support},
            ["segment: the candidate's approved threshold set was not given"])
    else:
        seg = _col(both, "merchant_id", "").map(dict(segments)).astype("object").fillna(NOT_IN_APPROVED_SET)
        add("segment_action_rate", *shift_judgement(
            slice_counts(seg, prod_b, cand_b), g.segment_action_rate_shift,
            name=f"{prefix}_segment_action_rate_shift", slice_type="segment"))

    if g.error_rate is None:
        details["not_checked"].append("error rate: not configured")
    else:
        n = int(len(cand))
        errors = int(_col(cand, "candidate_error").notna().sum()) if n else 0
        add("error_rate", *error_rate_judgement(errors, n, g.error_rate, name=f"{prefix}_error_rate"))

    if g.latency is None:
        details["not_checked"].append("latency: not configured")
    elif shadow:
        details["not_checked"].append("latency: the candidate serves nothing in shadow (its latency is judged in "
                                      "the ramp steps)")
    else:
        served = cand[(_col(cand, "served_by") == "candidate").to_numpy()] if len(cand) else cand
        lat = pd.to_numeric(_col(served, "latency_ms"), errors="coerce").dropna().to_numpy(dtype=float)
        add("latency_p99", *latency_judgement(lat, g.latency, name=f"{prefix}_latency_p99"))

    if g.score_shift is None:
        details["not_checked"].append("score shift: not configured")
    else:
        live = pd.to_numeric(_col(cand, "candidate_score"), errors="coerce").dropna().to_numpy(dtype=float) \
            if len(cand) else np.array([])
        add("score_shift", *score_shift_judgement(live, reference_scores, g.score_shift,
                                                  name=f"{prefix}_score_shift"))

    status = _status(verdicts)
    details["status"] = status
    details["breaches"] = [v.sentence for v in verdicts if v.verdict == FAIL]
    details["missing"] = missing
    return StageJudgement(status, verdicts, details)


def _status(vs: list[Verdict]) -> str:
    if any(v.verdict == FAIL for v in vs):
        return BREACH
    if not vs or any(v.verdict != PASS for v in vs):
        return INCONCLUSIVE
    return PASSED


def _span_seconds(rows: pd.DataFrame) -> float | None:
    if not len(rows) or "ts" not in rows:
        return None
    ts = pd.to_datetime(rows["ts"], utc=True, errors="coerce").dropna()
    return float((ts.max() - ts.min()).total_seconds()) if len(ts) else None


# ---- action-rate shift per slice ----------------------------------------------------------------------

COUNT_COLUMNS = ["transactions", "production_blocks", "candidate_blocks", "candidate_only_blocks",
                 "production_only_blocks"]


def slice_counts(key, production_block, candidate_block) -> pd.DataFrame:
    """Per slice (indexed by ``key``, sorted): transactions, both models' blocks and the one-sided
    disagreements."""
    p = np.asarray(production_block, dtype=bool)
    c = np.asarray(candidate_block, dtype=bool)
    if not len(p):
        return pd.DataFrame(columns=COUNT_COLUMNS, dtype=np.int64)
    codes, uniques = pd.factorize(pd.Series(key).reset_index(drop=True).astype("object").fillna("unknown")
                                  if not isinstance(key, pd.Series) or key.hasnans else key.reset_index(drop=True),
                                  sort=True)
    k = len(uniques)

    def count(w):
        return np.bincount(codes, weights=w, minlength=k).astype(np.int64)

    return pd.DataFrame({"transactions": np.bincount(codes, minlength=k).astype(np.int64),
                         "production_blocks": count(p), "candidate_blocks": count(c),
                         "candidate_only_blocks": count(c & ~p), "production_only_blocks": count(p & ~c)},
                        index=pd.Index(np.asarray(uniques).astype(str))).sort_index()


def _judge_rows(counts: pd.DataFrame, confidence: float, ratio: bool = True) -> pd.DataFrame:
    """``ActionRateShift.judge``'s rows from per-slice counts: both action rates and the paired interval
    of the change (point and interval from the same counts). ``ratio``: also the interval of the ratio of
    the two action rates (candidate / production), which the relative limit is judged by (as offline): a
    limit taken as max_relative_shift x production's observed rate would ignore the noise of that rate.
    On the same rows, with b, c the one-sided disagreements and C, P the two models' blocks, the delta
    method gives Var(log C/P) = (b + c) / (C P)."""
    n = counts["transactions"].to_numpy(dtype=float)
    b = counts["candidate_only_blocks"].to_numpy(dtype=float)
    c = counts["production_only_blocks"].to_numpy(dtype=float)
    cand = counts["candidate_blocks"].to_numpy(dtype=float)
    prod = counts["production_blocks"].to_numpy(dtype=float)
    ci = [shift_ci(int(x), int(y), int(m), confidence) for x, y, m in zip(b, c, n)]
    out = pd.DataFrame({
        "incumbent": prod / n,
        "policy": cand / n,
        "policy-incumbent": (b - c) / n,
        "policy-incumbent_lo": [x[0] for x in ci], "policy-incumbent_hi": [x[1] for x in ci],
        "transactions": n.astype(int),
        "members": counts["members"].to_numpy() if "members" in counts else None,
    }, index=counts.index.astype(str))
    if ratio:
        z = norm_ppf(0.5 + confidence / 2)
        ok = (cand > 0) & (prod > 0)
        with np.errstate(divide="ignore", invalid="ignore"):
            log_r = np.where(ok, np.log(cand / prod), np.nan)
            se = np.where(ok, np.sqrt((b + c) / (cand * prod)), np.nan)
        out["policy/incumbent"] = np.exp(log_r)
        out["policy/incumbent_lo"] = np.exp(log_r - z * se)
        out["policy/incumbent_hi"] = np.exp(log_r + z * se)
    return out


def pool_thin(counts: pd.DataFrame, min_support: int, slice_type: str) -> tuple[pd.DataFrame, list[str]]:
    """Slices below ``min_support`` transactions summed into one "other ..." slice (with ``members``).
    Returns (pooled counts, the pooled slices' names)."""
    small = counts["transactions"] < min_support
    if not small.any():
        return counts, []
    members = sorted(counts.index[small].astype(str))
    pooled = counts.loc[small, COUNT_COLUMNS].sum()
    name, label = other_name(slice_type), f"{len(members)}: {', '.join(members[:6])}{', ...' if len(members) > 6 else ''}"
    big = counts.loc[~small]
    if int(pooled["transactions"]) < min_support and len(big):
        # a remainder that stays below the support alone (the merchants outside the approved set: a fraction
        # of a percent of traffic) would hold every stage inconclusive to its bound and roll good releases
        # back; it is judged with the thinnest slice that has the support, which is also judged on its own
        host = str(big["transactions"].astype(int).idxmin())
        pooled = pooled + big.loc[host, COUNT_COLUMNS]
        name, label = f"{name} with {host}", f"{label}; with {host} for support"
    row = pd.DataFrame([{**{k: int(pooled[k]) for k in COUNT_COLUMNS}, "members": label}], index=[name])
    return pd.concat([big, row]), members


def _contract(name: str, g: ShiftGuardrail, confidence: float | None = None) -> ActionRateShift:
    return ActionRateShift(name=name, kind="action_rate_shift", slice="country", at="policy",
                           max_relative_shift=g.max_relative_shift, min_absolute_shift=g.min_absolute_shift,
                           min_support=g.min_support, confidence=confidence or g.confidence, gate=True,
                           on_insufficient=STOP)


def _rows_to_decide(point: float, lo: float, hi: float, limit: float, n: int) -> int | None:
    """Rows at which an interval that reaches both sides of ±limit would clear the nearer boundary (its
    half-width shrinks as 1/sqrt(n)); None when the point sits on the limit."""
    half = (hi - lo) / 2
    gap = min(abs(point - limit), abs(point + limit))
    if not all(map(math.isfinite, (half, gap))) or gap <= max(half * 1e-3, 1e-12):
        return None
    return int(math.ceil(max((half / gap) ** 2, 1.0) * n))


def shift_judgement(counts: pd.DataFrame, g: ShiftGuardrail, *, name: str, slice_type: str,
                    judge_members: bool = True, floor: bool = True, ratio: bool = True,
                    on_insufficient: str = STOP, unit: str = "transactions") -> tuple[list[Verdict], dict, list[str]]:
    """Action-rate verdicts per slice of ``counts`` (``slice_counts``), thin slices pooled. ``floor``: a
    slice below ``min_support`` never passes (it can still fail). ``judge_members``: a pooled slice whose
    own interval is wholly beyond the limit at 99.99% fails on its own. Returns (verdicts, info for
    ``details``, sentences of what is missing)."""
    c = _contract(name, g).model_copy(update={"on_insufficient": on_insufficient})
    total = int(counts["transactions"].sum()) if len(counts) else 0
    what = "country" if slice_type == "country" else "segment"
    info: dict = {"support": total, "needed": int(g.min_support), "slices": {}}
    if total == 0:
        v = c.verdict("all", INSUFFICIENT, None, None, None, 0,
                      f"No {what} had any transactions scored by both models: nothing to judge.")
        return [dataclasses.replace(v, slice_type=slice_type)], info, [
            f"{what}: 0 of {g.min_support:,} candidate rows scored by both models"]
    pooled, members = pool_thin(counts, g.min_support, slice_type)
    rows = _judge_rows(pooled, g.confidence, ratio)
    out, missing = [], []
    for v in c.judge(rows, "candidate", unit=unit):
        r = rows.loc[v.slice]
        n = int(r["transactions"])
        pooled_slice = isinstance(r.get("members"), str)
        label = f"{v.slice} ({r['members']})" if pooled_slice else f"{what} {v.slice}"
        if floor and v.verdict == PASS and n < g.min_support:
            v = dataclasses.replace(v, verdict=INSUFFICIENT, sentence=v.sentence.replace(
                ": within the limit.", f": within the limit so far, but {n:,} {unit} are fewer than the "
                                       f"{g.min_support:,} needed to pass.", 1))
        if v.verdict == INSUFFICIENT:
            if n < g.min_support:
                missing.append(f"{label}: {n:,} of {g.min_support:,} candidate rows")
            else:
                d, lo, hi = (float(r["policy-incumbent"]), float(r["policy-incumbent_lo"]),
                             float(r["policy-incumbent_hi"]))
                lo, hi = widened(d, lo, hi, n, g.confidence)
                _, lim = c.limit_for(v.slice, float(r["incumbent"]))
                need = _rows_to_decide(d, lo, hi, lim, n)
                missing.append(f"{label}: {n:,} candidate rows, and its interval still reaches both sides of "
                               f"the limit; " + (f"about {need:,} would decide it" if need else
                                                 "its estimate sits on the limit, so no amount of data would "
                                                 "decide it soon"))
        info["slices"][v.slice] = {"support": n, "verdict": v.verdict}
        out.append(dataclasses.replace(v, slice_type=slice_type,
                                       sentence=v.sentence if what == "country" else f"Segment {v.sentence}"))
    if judge_members and len(members) > 1:  # a pool of one is that slice, already judged
        pool = other_name(slice_type)
        mc = _contract(name, g, MEMBER_CONFIDENCE)
        for v in mc.judge(_judge_rows(counts.loc[members], MEMBER_CONFIDENCE, ratio), "candidate", unit=unit):
            if v.verdict == FAIL:
                head = v.sentence if what == "country" else f"Segment {v.sentence}"
                out.append(dataclasses.replace(
                    v, slice_type=slice_type, on_insufficient=on_insufficient,
                    sentence=f"{head} (Pooled into {pool} for support; judged on its own because its whole "
                             f"interval is beyond the limit, at {MEMBER_CONFIDENCE:.2%}.)"))
    return out, info, missing


# ---- error rate, latency ------------------------------------------------------------------------------

def clopper_pearson(k: int, n: int, confidence: float) -> tuple[float, float]:
    """The exact binomial interval of k successes in n trials."""
    a = (1 - confidence) / 2
    lo = 0.0 if k == 0 else beta_ppf(a, k, n - k + 1)
    hi = 1.0 if k == n else beta_ppf(1 - a, k + 1, n - k)
    return lo, hi


def _limit_verdict(name: str, kind: str, verdict: str, value, limit: float, support: int, sentence: str, unit: str,
                   lo=None, hi=None) -> Verdict:
    """A guardrail held below ``limit``: ``value`` (in ``unit``) is the effect, [``lo``, ``hi``] the interval it
    was judged by (None: judged by the point; an infinite end: unbounded)."""
    return Verdict(contract=name, kind=kind, gate=True, slice_type="all", slice="all", verdict=verdict,
                   candidate_value=None if value is None else float(value), incumbent_value=None,
                   limit_value=float(limit), support=int(support), sentence=sentence, on_insufficient=STOP,
                   **effect_fields(unit, value, lo, hi, allowed_hi=limit))


def error_rate_judgement(errors: int, n: int, g: ErrorRateGuardrail, *, name: str
                         ) -> tuple[list[Verdict], dict, list[str]]:
    """Fails when the exact interval of the error rate lies wholly above ``max_rate`` (on any number of
    requests); passes when it lies wholly at or below it on at least ``min_requests``; else inconclusive."""
    what = f"Share of requests that failed on the candidate ({errors:,})"
    lim = f"{100 * g.max_rate:.2f}%"
    info = {"support": int(n), "needed": int(g.min_requests), "errors": int(errors)}
    if n == 0:
        return ([_limit_verdict(name, "error_rate", INSUFFICIENT, None, g.max_rate, 0,
                                f"{what}: no request reached the candidate, so its error rate cannot be judged.",
                                RATE)],
                info, [f"error rate: 0 of {g.min_requests:,} candidate requests"])
    rate = errors / n
    lo, hi = clopper_pearson(errors, n, g.confidence)
    info.update(value=rate, lo=lo, hi=hi)
    head = f"{what} was {fmt_pct(rate)} on {n:,} requests ({g.confidence:.0%} CI {fmt_pct(lo)}..{fmt_pct(hi)})"
    if lo > g.max_rate:
        return [_limit_verdict(name, "error_rate", FAIL, rate, g.max_rate, n,
                               f"{head}, above the limit of {lim}.", RATE, lo, hi)], info, []
    ok = (errors == 0) if g.max_rate == 0 else hi <= g.max_rate
    if ok and n >= g.min_requests:
        return [_limit_verdict(name, "error_rate", PASS, rate, g.max_rate, n,
                               f"{head}, within the limit of {lim}.", RATE, lo, hi)], info, []
    if n < g.min_requests:
        sentence = f"{head}: fewer than the {g.min_requests:,} requests needed to judge it."
        miss = f"error rate: {n:,} of {g.min_requests:,} candidate requests"
    else:
        need = _requests_to_decide(rate, n, g)
        info["needed"] = need or int(g.min_requests)
        sentence = f"{head}: the interval reaches both sides of the limit of {lim}, so it cannot be judged yet."
        miss = (f"error rate: {n:,} candidate requests at {fmt_pct(rate)} against a limit of {lim}; "
                + (f"about {need:,} would decide it" if need else "the rate sits on the limit, so no amount of data "
                                                                  "would decide it soon"))
    return [_limit_verdict(name, "error_rate", INSUFFICIENT, rate, g.max_rate, n, sentence, RATE, lo, hi)], info, [miss]


def _requests_to_decide(rate: float, n: int, g: ErrorRateGuardrail) -> int | None:
    """The number of requests at which the same error rate's interval would clear ``max_rate``."""
    def decided(m: int) -> bool:
        lo, hi = clopper_pearson(int(round(rate * m)), m, g.confidence)
        return lo > g.max_rate or hi <= g.max_rate

    m = n
    while m < 10 ** 9:
        m *= 2
        if decided(m):
            lo_m, hi_m = m // 2, m
            while hi_m - lo_m > max(1, lo_m // 100):  # to within 1%
                mid = (lo_m + hi_m) // 2
                lo_m, hi_m = (lo_m, mid) if decided(mid) else (mid, hi_m)
            return hi_m
    return None


def quantile_ci(x: np.ndarray, q: float, confidence: float) -> tuple[float, float]:
    """A distribution-free interval of the ``q`` quantile from order statistics: the number of
    observations below the quantile is Binomial(n, q). -inf / inf where the sample is too small to bound
    it on that side."""
    n = len(x)
    s = np.sort(x)
    a = (1 - confidence) / 2
    lo_k = int(binom_ppf(a, n, q))  # 1-based order statistic: P(X_(k) > quantile) <= a
    hi_k = int(binom_ppf(1 - a, n, q)) + 1  # P(X_(k) < quantile) <= a
    lo = float(s[lo_k - 1]) if lo_k >= 1 else -math.inf
    hi = float(s[hi_k - 1]) if hi_k <= n else math.inf
    return lo, hi


def requests_to_bound_p99(confidence: float) -> int:
    """The fewest requests whose largest one bounds the p99 from above at ``confidence``."""
    return int(math.ceil(math.log((1 - confidence) / 2) / math.log(P99)))


def latency_judgement(latency_ms: np.ndarray, g: LatencyGuardrail, *, name: str
                      ) -> tuple[list[Verdict], dict, list[str]]:
    """Below ``min_requests`` served requests: inconclusive, whatever the latencies (the first requests
    are warm-up, and a p99 of a few requests is their maximum). Then the p99's order-statistic interval:
    wholly above ``max_p99_ms`` fails, wholly at or below passes, else inconclusive."""
    n = int(len(latency_ms))
    bound = requests_to_bound_p99(g.confidence)
    info: dict = {"support": n, "needed": int(max(g.min_requests, bound))}
    what = "The candidate's p99 latency"
    lim = f"{g.max_p99_ms:.1f} ms"
    if n == 0:
        return ([_limit_verdict(name, "latency", INSUFFICIENT, None, g.max_p99_ms, 0,
                                f"{what}: the candidate served no request, so its latency cannot be judged.", MS)],
                info, [f"latency p99: 0 of {info['needed']:,} requests served by the candidate"])
    p99 = float(np.percentile(latency_ms, 99))
    lo, hi = quantile_ci(latency_ms, P99, g.confidence)
    info.update(value=p99, lo=None if math.isinf(lo) else lo, hi=None if math.isinf(hi) else hi)
    lo_s, hi_s = ("-" if math.isinf(lo) else f"{lo:.1f}"), ("inf" if math.isinf(hi) else f"{hi:.1f}")
    ci = f"{g.confidence:.0%} CI {lo_s}..{hi_s} ms"
    head = f"{what} was {p99:.1f} ms on {n:,} requests ({ci})"
    if n < g.min_requests:
        return ([_limit_verdict(name, "latency", INSUFFICIENT, p99, g.max_p99_ms, n,
                                f"{head}: fewer than the {g.min_requests:,} requests needed to judge it.",
                                MS, lo, hi)],
                info, [f"latency p99: {n:,} of {info['needed']:,} requests served by the candidate"])
    if lo > g.max_p99_ms:
        return [_limit_verdict(name, "latency", FAIL, p99, g.max_p99_ms, n,
                               f"{head}, above the limit of {lim}.", MS, lo, hi)], info, []
    if hi <= g.max_p99_ms:
        return [_limit_verdict(name, "latency", PASS, p99, g.max_p99_ms, n,
                               f"{head}, within the limit of {lim}.", MS, lo, hi)], info, []
    if math.isinf(hi):
        miss = (f"latency p99: {n:,} of {bound:,} requests served by the candidate (a p99 is bounded from above "
                f"only from {bound:,} requests at {g.confidence:.0%})")
    else:
        need = _rows_to_decide(p99 - g.max_p99_ms, lo - g.max_p99_ms, hi - g.max_p99_ms, 0.0, n)
        info["needed"] = need or info["needed"]
        miss = (f"latency p99: {n:,} requests served by the candidate at {p99:.1f} ms against a limit of {lim}; "
                + (f"about {need:,} would decide it" if need else "the p99 sits on the limit, so no amount of data "
                                                                  "would decide it soon"))
    return ([_limit_verdict(name, "latency", INSUFFICIENT, p99, g.max_p99_ms, n,
                            f"{head}: the interval reaches both sides of the limit of {lim}, so it cannot be "
                            f"judged yet.", MS, lo, hi)], info, [miss])


# ---- score distribution shift -------------------------------------------------------------------------

def psi(reference: np.ndarray, live: np.ndarray, bins: int = 10) -> tuple[float, int]:
    """Population stability index of ``live`` against ``reference`` over the reference's quantile bins
    (ties merge bins). Each bin's share is smoothed by half a count, so an empty bin is finite. Returns
    (PSI, the number of bins used)."""
    ref = np.asarray(reference, dtype=float)
    ref = ref[np.isfinite(ref)]
    live = np.asarray(live, dtype=float)
    live = live[np.isfinite(live)]
    edges = np.unique(np.quantile(ref, np.linspace(0, 1, bins + 1)[1:-1]))
    k = len(edges) + 1
    r = np.bincount(np.searchsorted(edges, ref, side="right"), minlength=k)
    a = np.bincount(np.searchsorted(edges, live, side="right"), minlength=k)
    e = (r + 0.5) / (r.sum() + 0.5 * k)
    o = (a + 0.5) / (a.sum() + 0.5 * k)
    return float(np.sum((o - e) * np.log(o / e))), int(k)


def psi_noise(bins: int, n: int, m: int, q: float = 0.99) -> float:
    """The ``q`` quantile of the PSI of two samples (n live, m reference) of one distribution:
    chi-square with bins - 1 degrees of freedom, times 1/n + 1/m."""
    return float(chi2_ppf(q, max(bins - 1, 1)) * (1 / n + 1 / m))


def score_shift_judgement(live: np.ndarray, reference: np.ndarray | None, g: ScoreShiftGuardrail, *, name: str
                          ) -> tuple[list[Verdict], dict, list[str]]:
    """PSI of the candidate's live scores against its reference scores: above ``max_psi`` fails, at or
    below passes, once both samples have ``min_rows`` and noise alone could not reach ``max_psi``."""
    n = int(len(live))
    m = 0 if reference is None else int(np.isfinite(np.asarray(reference, dtype=float)).sum())
    info: dict = {"support": n, "needed": int(g.min_rows), "reference_rows": m}
    if m < g.min_rows:
        sentence = ("Score shift: no reference sample of the candidate's scores was given, so its live score "
                    "distribution cannot be compared." if reference is None else
                    f"Score shift: the reference sample has {m:,} scores, fewer than the {g.min_rows:,} needed.")
        miss = ("score shift: no reference sample of the candidate's scores was given" if reference is None else
                f"score shift: {m:,} of {g.min_rows:,} reference scores")
        return [_limit_verdict(name, "score_shift", INSUFFICIENT, None, g.max_psi, n, sentence, PSI)], info, [miss]
    if n < g.min_rows:
        value = psi(reference, live, g.bins)[0] if n else None
        shown = f" (PSI {value:.3f} so far)" if value is not None else ""
        return ([_limit_verdict(name, "score_shift", INSUFFICIENT, value, g.max_psi, n,
                                f"Score shift: {n:,} live scores of the candidate{shown}, fewer than the "
                                f"{g.min_rows:,} needed to judge it.", PSI)],
                info, [f"score shift: {n:,} of {g.min_rows:,} candidate scores"])
    value, k = psi(reference, live, g.bins)
    noise = psi_noise(k, n, m)
    info.update(value=value, bins=k, noise_99=noise)
    head = (f"Score shift: the PSI of the candidate's {n:,} live scores against its {m:,} reference scores "
            f"({k} bins) is {value:.3f}")
    if noise >= g.max_psi:
        c = chi2_ppf(0.99, max(k - 1, 1))
        need = int(math.ceil(1 / (g.max_psi / c - 1 / m))) if g.max_psi / c > 1 / m else None
        info["needed"] = need or int(g.min_rows)
        return ([_limit_verdict(name, "score_shift", INSUFFICIENT, value, g.max_psi, n,
                                f"{head}; noise alone reaches {noise:.3f} at these sample sizes, above the limit of "
                                f"{g.max_psi:g}, so it cannot be judged yet.", PSI)],
                info, [f"score shift: {n:,} of {need:,} candidate scores" if need else
                       f"score shift: the reference sample ({m:,} scores) is too small for a limit of {g.max_psi:g}"])
    if value > g.max_psi:
        return ([_limit_verdict(name, "score_shift", FAIL, value, g.max_psi, n,
                                f"{head}, above the limit of {g.max_psi:g} (noise alone: up to {noise:.3f}).", PSI)],
                info, [])
    return [_limit_verdict(name, "score_shift", PASS, value, g.max_psi, n,
                           f"{head}, within the limit of {g.max_psi:g}.", PSI)], info, []
