"""What every contract kind shares: the verdict it returns, the slice names it understands, and how a
limit is judged by an interval.

A contract with a limit judges a figure by its interval, never by its point alone:

- the interval lies wholly inside the limit: **pass**;
- the interval lies wholly beyond it: **fail**;
- anything else (the interval reaches both sides, or there is no figure at all): **insufficient data**,
  with a sentence saying how much more data would decide it.

Each gating contract declares ``on_insufficient: stop | warn`` (stop by default): an unjudged gate stops
the release (or waits for a person's override); it never passes in silence.

Multiplicity. Each slice is judged on its own interval at the contract's confidence, unadjusted. A
slice's verdict never depends on how many other slices there are, so adding a slice can only add a
verdict that stops the release, never remove one: adding slices never makes a gate more lenient. (A
false-discovery adjustment such as Benjamini-Hochberg does the opposite for a gate: the more slices
tested, the more lenient each test gets, and a shift hidden among many quiet slices passes. The price of
the per-slice rule is more false stops as slices multiply, which pooling thin slices keeps in check.)

Slices below a contract's support are pooled into one "other ..." slice and judged together, never
dropped: a country that will never have enough traffic on its own is judged with its peers.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass, replace
from typing import ClassVar, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, field_validator

from release.core.distributions import norm_ppf

PASS, FAIL, INSUFFICIENT = "pass", "fail", "insufficient data"
STOP, WARN = "stop", "warn"
OnInsufficient = Literal["stop", "warn"]

# slice name in contracts and reports -> column in the scored data (segments are derived by
# analysis.evaluation.add_segments before slicing)
SLICE_COLUMNS = {
    "all": None,
    "country": "merchant_country",
    "merchant": "merchant_id",
    "category": "merchant_category",
    "card_country": "card_country",
    "merchant_size": "merchant_size",
    "amount_band": "amount_band",
    "card_segment": "card_segment",
}
SliceName = Literal["all", "country", "merchant", "category", "card_country", "merchant_size", "amount_band",
                    "card_segment"]
PLURALS = {"country": "countries", "merchant": "merchants", "category": "categories",
           "card_country": "card countries", "merchant_size": "merchant sizes", "amount_band": "amount bands",
           "card_segment": "card segments"}
# what a slice's support counts: its transactions, the incumbent's actions (blocks) among them (an
# action-rate change is decided by the blocks, not the traffic), or its matured frauds
SupportMeasure = Literal["transactions", "actions", "frauds"]


def pooled_type(slice_type: str, measure: str, min_support: int) -> str:
    """The name of a slice type whose slices below ``min_support`` (counted in ``measure``) are pooled:
    the evaluation computes it for each contract that asks, the contract reads it back."""
    if slice_type == "all":
        return "all"
    return f"{slice_type}|{measure}>={int(min_support)}"


# a pooled slice judged on its own is a second look over many thin slices: only overwhelming evidence
# (3.9 standard errors) stops the release there; the pool is their primary judgement
MEMBER_CONFIDENCE = 0.9999


def _z(confidence: float) -> float:
    return norm_ppf(0.5 + confidence / 2)


def other_name(slice_type: str) -> str:
    return f"other {PLURALS.get(slice_type, slice_type + 's')}"


# Verdict.effect_unit: how a verdict's effect, its interval and its allowed region read
RELATIVE = "relative"  # a fraction of the incumbent's figure, shown as %: 0.12 is +12%
POINTS = "points"  # a difference of two rates, shown in percentage points: 0.039 is +3.9 pts
RATE = "rate"  # a rate, shown as %: 0.004 is 0.40%
AUC = "auc"  # an area under a curve, or a difference of two, as a plain number
MS = "ms"  # milliseconds
PSI = "psi"  # a population stability index, as a plain number
EFFECT_UNITS = (RELATIVE, POINTS, RATE, AUC, MS, PSI)


@dataclass(frozen=True)
class Verdict:
    """One contract's judgement of one slice: the figures that decided it and a sentence a risk analyst
    reads without the code.

    ``candidate_value``, ``incumbent_value``: the two figures compared (the candidate's alone where there is
    no incumbent's); ``limit_value``: the limit as configured; ``support``: what the figure rests on (its
    unit is the sentence's); ``on_insufficient``: what an unjudged gate does (stop | warn).

    The effect, as a report draws it (an interval against the region that passes):

    - ``effect``: the quantity the contract judged, as the sentence prints it: a relative action-rate
      shift (0.12 for +12%), a recall or FPR change in points (0.039 for +3.9 pts), an AUC difference, the
      share of merchants that moved, an error rate, a p99 latency, a PSI;
    - ``effect_lo``, ``effect_hi``: the interval of ``effect`` the verdict was decided by, at the level the
      contract used (after any widening), as the sentence prints it. Both None where the contract judges a
      point (a PSI) or computed none; one of them None where the interval is unbounded on that side (a p99
      on too few requests to bound it from above);
    - ``allowed_lo``, ``allowed_hi``: the region of ``effect`` that passes; None is unbounded on that side.
      For an interval rule (contracts.base.judge_two_sided, judge_at_least, judge_at_most) the verdict is
      pass when the interval lies inside it, fail when wholly outside, insufficient data otherwise (each
      contract kind's docstring says where it departs from this: a support minimum, a second criterion);
    - ``effect_unit``: one of ``EFFECT_UNITS``: ``relative`` (a fraction shown as %), ``points`` (a
      difference of rates shown as percentage points), ``rate`` (a rate shown as %), ``auc``, ``ms``,
      ``psi``.

    All six are None where a verdict has no such figure (a data check; an insufficient verdict fills what
    it computed); rows stored before they existed read back as NULL."""

    contract: str
    kind: str
    gate: bool
    slice_type: str
    slice: str
    verdict: str
    candidate_value: float | None
    incumbent_value: float | None
    limit_value: float | None
    support: int | None
    sentence: str
    p_value: float | None = None
    on_insufficient: str = STOP
    effect: float | None = None
    effect_lo: float | None = None
    effect_hi: float | None = None
    allowed_lo: float | None = None
    allowed_hi: float | None = None
    effect_unit: str | None = None

    def as_dict(self) -> dict:
        return asdict(self)

    @property
    def stops(self) -> bool:
        """True when this verdict stops the release: a gating failure, or a gating contract that could not
        be judged and was told to stop then."""
        return stops(self)


def stops(v: dict | Verdict) -> bool:
    """``Verdict.stops`` for a verdict row read back from the state store."""
    get = v.get if isinstance(v, dict) else (lambda k, d=None: getattr(v, k, d))
    return bool(get("gate")) and (get("verdict") == FAIL or (get("verdict") == INSUFFICIENT
                                                             and (get("on_insufficient") or STOP) == STOP))


def counterfactual_ok(r, estimator: str, min_explored_frauds: float, min_ess: float) -> bool:
    """Whether a metrics row's counterfactual figure has its support: plain needs none; nothing censored
    means the labelled rows are the whole population; else enough explored frauds and effective sample
    size (analysis.weighting.CounterfactualConfig holds the default minimums)."""
    import pandas as pd

    if estimator == "plain" or r.get("censored", 1) == 0:
        return True
    ef, ess = r.get("explored_frauds"), r.get("ess_frauds")
    return not pd.isna(ef) and ef >= min_explored_frauds and not pd.isna(ess) and ess >= min_ess


def dm_support(r, windows: dict | None):
    """What carries a direct-method figure judged on row ``r``: the explored frauds and ESS of the rows its
    outcome model was fitted on (``windows["outcome_model"]``, written by analysis.evaluation.evaluate),
    with ``r``'s own censored count (a slice with nothing censored needs no model). An evaluation that does
    not say where its model was fitted (an older one) is judged on ``r`` itself."""
    om = (windows or {}).get("outcome_model")
    if not om:
        return r
    return {"censored": r.get("censored", 1), "explored_frauds": om.get("explored_frauds"),
            "ess_frauds": om.get("ess_frauds")}


def level_pct(confidence: float) -> str:
    """An interval's level as people write it: 0.9 -> "90%", 0.9999 -> "99.99%"."""
    return f"{100 * confidence:.2f}".rstrip("0").rstrip(".") + "%"


def pct(x: float, digits: int = 2) -> str:
    return f"{100 * x:.{digits}f}%"


def finite(*xs) -> bool:
    return all(x is not None and isinstance(x, (int, float, np.floating, np.integer)) and math.isfinite(float(x))
               for x in xs)


def effect_fields(unit: str, effect=None, lo=None, hi=None, allowed_lo=None, allowed_hi=None) -> dict:
    """A ``Verdict``'s effect fields as keyword arguments: each figure a float, or None where it is missing
    or not finite (an infinite end of an interval or a region is an unbounded one)."""
    if unit not in EFFECT_UNITS:
        raise ValueError(f"A verdict's effect_unit must be one of {', '.join(EFFECT_UNITS)}. Got {unit!r} instead.")

    def num(x) -> float | None:
        return float(x) if finite(x) else None

    return {"effect": num(effect), "effect_lo": num(lo), "effect_hi": num(hi), "allowed_lo": num(allowed_lo),
            "allowed_hi": num(allowed_hi), "effect_unit": unit}


def judge_two_sided(lo: float, hi: float, limit: float) -> str:
    """A difference that may move by at most ``limit`` either way: pass when its interval lies inside
    [-limit, limit], fail when it lies wholly outside, insufficient data otherwise (or with no interval)."""
    if not finite(lo, hi, limit):
        return INSUFFICIENT
    if lo >= -limit and hi <= limit:
        return PASS
    if lo > limit or hi < -limit:
        return FAIL
    return INSUFFICIENT


def judge_at_least(lo: float, hi: float, floor: float) -> str:
    """A difference that must be at least ``floor`` (a recall change of at least -5 points, a gain above
    zero): pass when the whole interval is at or above it, fail when the whole interval is below it."""
    if not finite(lo, hi, floor):
        return INSUFFICIENT
    if lo >= floor:
        return PASS
    if hi < floor:
        return FAIL
    return INSUFFICIENT


def judge_at_most(lo: float, hi: float, ceiling: float) -> str:
    """A difference that may be at most ``ceiling`` (an FPR no higher than a tolerance)."""
    if not finite(lo, hi, ceiling):
        return INSUFFICIENT
    if hi <= ceiling:
        return PASS
    if lo > ceiling:
        return FAIL
    return INSUFFICIENT


def widened(point: float, lo: float, hi: float, n: float, confidence: float = 0.95) -> tuple[float, float]:
    """An interval at least as wide as one more disagreement among ``n`` would move a paired difference
    (z / n either side). A bootstrap of two policies that agree on every row of a thin slice gives a
    zero-width interval, which would "pass" a slice of 21 transactions; one unseen disagreement is always
    possible (the rule of three's spirit), so no interval is narrower than that."""
    if not finite(point, lo, hi) or not n or n <= 0:
        return lo, hi
    h = norm_ppf(0.5 + confidence / 2) / float(n)
    return min(lo, point - h), max(hi, point + h)


def data_to_decide(point: float, lo: float, hi: float, boundaries: list[float], support: int, unit: str) -> str:
    """What data would decide an interval that reaches both sides of a limit: an interval's half-width
    shrinks as 1/sqrt(n), so it clears the nearest boundary once it is |point - boundary| wide. Returns a
    clause such as "about 3.4x the data (~12,000 transactions) would decide it"."""
    if not finite(point, lo, hi) or support is None or support <= 0:
        return f"no figure could be computed from {support or 0:,} {unit}"
    half = (hi - lo) / 2
    gap = min(abs(point - b) for b in boundaries) if boundaries else float("inf")
    if half <= 0:
        return f"{support:,} {unit} were not enough"
    if gap <= half * 1e-3:
        return "the estimate sits on the limit itself: no amount of data would decide it soon"
    factor = max((half / gap) ** 2, 1.0)
    return f"about {factor:.1f}x the data (~{int(round(factor * support)):,} {unit}) would decide it"


def shift_ci(candidate_only: int, incumbent_only: int, n: int, confidence: float = 0.95) -> tuple[float, float]:
    """Confidence interval of the candidate-minus-incumbent action rate on the same ``n`` transactions
    (paired: the variance comes from the disagreements only; normal approximation). Used online, where
    the decision log's counts are all there is; offline intervals come from the card bootstrap."""
    if n <= 0:
        return float("nan"), float("nan")
    d = (candidate_only - incumbent_only) / n
    var = max((candidate_only + incumbent_only) / n - d * d, 0.0) / n
    z = norm_ppf(0.5 + confidence / 2)
    return d - z * var ** 0.5, d + z * var ** 0.5


def limits_in_range(v: dict[str, float]) -> dict[str, float]:
    bad = {k: x for k, x in v.items() if not 0 <= x <= 1}
    if bad:
        raise ValueError(f"every per-slice limit must be a fraction in [0, 1]; got {bad}")
    return v


def _at_alias(v):
    """``at: suggested`` (before the policy existed as a word) means the policy."""
    return "policy" if v == "suggested" else v


class SliceContract(BaseModel):
    """What the per-slice contracts share: slice, point (the policy that would go live, or the candidate at
    one global threshold at the incumbent's FPR), per-slice limits, confidence, gate, what an unjudged
    slice does, and the report of a limit that names no slice in the window."""

    model_config = ConfigDict(extra="forbid")

    name: str
    slice: SliceName = "country"
    at: Literal["policy", "operating_point"] = "policy"
    confidence: float = Field(0.95, gt=0.5, lt=1)
    limits: dict[str, float] = {}
    gate: bool = True
    on_insufficient: OnInsufficient = STOP

    support_measure: ClassVar[str] = "transactions"

    @field_validator("at", mode="before")
    @classmethod
    def _at(cls, v):
        return _at_alias(v)

    @field_validator("limits")
    @classmethod
    def _limits_in_range(cls, v: dict[str, float]) -> dict[str, float]:
        return limits_in_range(v)

    def pool(self) -> tuple[str, str, int]:
        """(slice type, support measure, minimum support): the pooled slice type this contract reads."""
        return self.slice, self.support_measure, int(getattr(self, "min_support"))

    @property
    def slice_type(self) -> str:
        return pooled_type(*self.pool())

    @property
    def model(self) -> str:
        return "policy" if self.at == "policy" else "candidate"

    def verdict(self, slice_: str, verdict: str, cand, inc, limit, support, sentence: str, **effect) -> Verdict:
        """``effect``: the verdict's effect fields (``effect_fields``); none where there is no figure."""
        return Verdict(self.name, self.kind, self.gate, self.slice, str(slice_), verdict,
                       None if cand is None or not finite(cand) else float(cand),
                       None if inc is None or not finite(inc) else float(inc),
                       limit, None if support is None else int(support), sentence, None, self.on_insufficient,
                       **effect)

    def no_slices(self, what: str) -> list[Verdict]:
        """No slice of this contract's type was evaluated: insufficient data, never nothing."""
        return [self.verdict("all", INSUFFICIENT, None, None, None, 0,
                             f"No {self.slice} slice had {what} in the judging window: nothing to judge.")]

    def _unmatched_limits(self, known: set[str]) -> list[Verdict]:
        return unmatched_limits(self, known, self.kind)

    def pooled_members(self, metrics, pooled_rows, metric: str, estimator: str, models: list[str]):
        """The unpooled rows of the slices this contract pooled (judged together as "other ..."): a
        pooled slice whose own interval lies wholly beyond the limit still fails on its own, so a large
        shift in a thin slice is never diluted into a silent pass. Its own interval is widened to the
        ``MEMBER_CONFIDENCE`` level: the pool is the primary judgement of thin slices, and each of the many
        thin members is a second look that must not stop a good release on one unlucky week."""
        if self.slice_type == self.slice or len(pooled_rows) == 0:
            return pooled_rows.iloc[0:0]
        raw = wide_metric(metrics, self.slice, metric, estimator, models, confidence=MEMBER_CONFIDENCE)
        if not len(raw):
            return raw
        return raw.loc[[s for s in raw.index if s not in pooled_rows.index]].copy()

    def point_beyond(self, v: Verdict) -> bool:
        """Whether a verdict's point estimate lies beyond its limit (the contract kind knows how)."""
        return False

    def own_failures(self, verdicts: list[Verdict]) -> list[Verdict]:
        """A pooled slice's own verdicts that must not disappear into the pool: a failure (its whole
        interval beyond the limit) stops like any other; an undecided one whose own interval reaches
        beyond the limit is reported as insufficient data that warns (the pool judges it for the gate)."""
        pool = other_name(self.slice)
        out = []
        for v in verdicts:
            if v.verdict == FAIL:
                out.append(replace(v, sentence=f"{v.sentence} (Pooled into {pool} for support; judged on its own "
                                               f"because its whole interval is beyond the limit, at "
                                               f"{MEMBER_CONFIDENCE:.2%}.)"))
            elif v.verdict == INSUFFICIENT and v.candidate_value is not None and self.point_beyond(v):
                out.append(replace(v, on_insufficient=WARN,
                                   sentence=f"{v.sentence} (Pooled into {pool}, which the gate judges; on its own "
                                            f"too thin to decide.)"))
        return out


def unmatched_limits(contract, known: set[str], kind: str) -> list[Verdict]:
    """A per-slice limit that names no slice in the evaluation window: reported, never silently ignored."""
    return [Verdict(contract.name, kind, contract.gate, contract.slice, name, INSUFFICIENT, None, None,
                    contract.limits[name], 0,
                    f"{name}: a limit is set for this {contract.slice}, but no such {contract.slice} is in the "
                    f"judging window (or it was pooled with others below support); check its spelling.", None,
                    getattr(contract, "on_insufficient", STOP))
            for name in sorted(set(contract.limits) - known)]


def wide_metric(metrics, slice_type: str, metric: str, estimator: str, models: list[str],
                confidence: float | None = None):
    """From the tidy metrics table, one row per slice with ``<model>``, ``<model>_lo``, ``<model>_hi`` for
    each model and the slice's support columns (and counterfactual support when present).

    The table's intervals are at ``analysis.stats.INTERVAL_LEVEL``; with ``confidence`` (a contract's) each
    is rescaled about its estimate by the ratio of the two normal quantiles, each side on its own (a
    skewed bootstrap interval stays skewed). Without this a contract's ``confidence`` would be a label."""
    import pandas as pd

    from analysis.stats import INTERVAL_LEVEL

    m = metrics[(metrics["slice_type"] == slice_type) & (metrics["metric"] == metric)
                & (metrics["estimator"] == estimator) & (metrics["model"].isin(models))]
    if m.empty:
        return pd.DataFrame()
    # per slice and model, each value's first non-missing (pivot_table's aggfunc="first", the three in one pass)
    wide = m.groupby(["slice", "model"], sort=True, dropna=False)[["estimate", "lo", "hi"]].first().unstack("model")
    est, lo, hi = wide["estimate"], wide["lo"], wide["hi"]
    out = pd.DataFrame(index=est.index)
    scale = 1.0 if confidence is None else _z(confidence) / _z(INTERVAL_LEVEL)
    for mod in models:
        out[mod] = est[mod] if mod in est else np.nan
        out[f"{mod}_lo"] = out[mod] - scale * (out[mod] - lo[mod]) if mod in lo else np.nan
        out[f"{mod}_hi"] = out[mod] + scale * (hi[mod] - out[mod]) if mod in hi else np.nan
    extra = [c for c in ("transactions", "labelled", "frauds", "censored", "explored", "explored_frauds", "ess_frauds",
                         "ess_legit", "members") if c in m.columns]
    sup = m.groupby("slice")[extra].first()
    out = out.join(sup)
    out.index = out.index.astype(str)
    return out
