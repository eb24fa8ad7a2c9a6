"""Monitoring the deployed model between releases: what the daily monitoring DAG judges, as pure functions.

Three checks, each per slice (all traffic, and each country with enough rows), each a ``Finding`` whose status
is ``alert``, ``ok`` or ``insufficient`` (too few rows to judge: never an alert, never an "ok"):

- **score drift**: the production model's live scores against its scores on the offline judging rows of the
  release that shipped it (the rollout's score-shift reference, ``release.rollout.driver``);
- **feature drift**: each feature the model reads, live (recomputed from the event logs by the one feature
  definition, ``release.data.features``) against the last days of its training snapshot;
- **action rate**: each country's live block rate under the production policy against the rate the release
  judged for that policy, with the release contract's limit (``country_action_rate_shift``).

Drift is the population stability index over the reference's quantile bins (``guardrails.psi``: one
definition, the rollout's score-shift guardrail uses it too). A slice alerts when its PSI is above ``max_psi``
(0.2, the usual "shifted") *and* above what sampling noise alone reaches at the 99.9th percentile for its two
sample sizes (``guardrails.psi_noise``), so a small country's noisy day is not an alert. Two things make real
traffic noisier than independent rows, and both are handled: a merchant-level feature is compared over
merchant-days, not rows (one merchant can carry 40% of a country's traffic), and the noise floor is scaled by
the design effect the reference shows between its own two halves (``design_effect``). Without them, a quiet
simulated world alerted on every merchant feature (PSI up to 6); with them, on none. The action rate alerts
when the live rate's interval (Wilson, at ``confidence`` Bonferroni-split over the slices judged, so adding
countries never adds false alarms) lies wholly outside the limit band around the judged rate; an interval
reaching into the band is ``ok`` only when wholly inside it, else ``insufficient``. The false-alarm rate on
quiet days is measured over seeds in ``tests/release/rollout/test_monitoring.py``.

A fourth check, **performance as labels mature** (``matured_performance``), judges what the others cannot see:
the production model missing fraud while its scores and block rates look as ever. Per cohort week (the week of
the transaction, Monday to Sunday, UTC) of the decisions it took live:

- each decision's label is the one label definition (``release.data.training_set.matured_labels``: the
  training set's SQL) as known at the monitoring day: fraud iff a dispute arrived, counted only once older
  than the model's maturity window, none for a blocked transaction (censored);
- recall, FPR and precision of the production model's decisions (``production_block``) by inverse
  propensity weighting (explored rows, would-be blocks let through, stand for the blocked ones; weights
  clipped by ``analysis.weighting``'s one rule), with a paired bootstrap by card (``analysis.stats
  .slice_intervals``, the evaluation's engine), beside the cohort's counterfactual support
  (``analysis.evaluation.slice_counterfactual_support``) and label completeness
  (``release.data.label_completeness``);
- held against what the release that shipped the model promised: its policy's all-traffic IPW recall and 95%
  interval (``promised_performance``; the same estimator as the live figure: the gates' direct method is
  biased low on recall, so live IPW against promised DM would differ with nothing moved).

Verdicts, per cohort week: **insufficient** while any of its decisions is younger than the maturity window,
while its label completeness is below ``MIN_COMPLETENESS`` (0.9), or while it has fewer explored frauds or a
smaller effective sample size than ``analysis.weighting.CounterfactualConfig`` asks of any IPW figure (3
explored frauds, ESS 30 for frauds and for legitimate rows); and when nothing was promised. Otherwise
**alert** when the cohort's whole recall interval lies below the promise's *lower* bound by more than
``RECALL_MARGIN`` (5 points), the interval at ``PERFORMANCE_CONFIDENCE`` (95%, two-sided) Bonferroni-split
over the cohorts judged; else **ok**. Why these:

- the lower bound, not the point: the release's figure is itself an estimate, on a judging window that may be
  thinner than a live week. Held against its point, a release judged on a lucky window makes every week of its
  life alert once live weeks are large enough to have narrow intervals; against its lower bound the alert says
  "worse than anything the release's evidence allowed". The price is sensitivity where both are thin: in the
  planted world of the tests the point would have caught a decay of 66% -> 36% in 39 of 40 seeds against 32,
  for 1 quiet month in 240 alerting against none;
- the 5-point margin: what is worth waking someone for at any scale. At 10M decisions a day a week's interval
  is a point wide, and a point or two is what an ordinary week of a moving world can take from recall;
- completeness 0.9: with at most a tenth of a cohort's eventual disputes still to come, frauds disputed late
  would have to be caught at a recall 0.5 different from those disputed early to move the cohort's recall by
  the margin. A cohort whose completeness cannot be estimated (too little history, or a log without dispute
  times) is judged on maturity alone, and its sentence says so;
- Bonferroni over the cohorts judged: judging more weeks never adds false alarms.

The alert rate on a planted recall decay and the false-alarm rate on quiet months are measured over seeds in
``tests/release/rollout/test_matured_performance.py``.
"""
from __future__ import annotations

import datetime as dt
import math
from dataclasses import asdict, dataclass

import numpy as np
import pandas as pd

from release.core.distributions import norm_ppf
from release.rollout.guardrails import psi, psi_noise

ALERT, OK, INSUFFICIENT = "alert", "ok", "insufficient"
MAX_PSI = 0.2
NOISE_Q = 0.999
BINS = 10
MIN_ROWS = 500
MIN_ENTITY_DAYS = 200


@dataclass(frozen=True)
class Finding:
    check: str  # score_drift | feature_drift | action_rate | matured_performance
    feature: str  # the feature (feature drift), "score", "action_rate" or "recall"
    slice_type: str  # all | country | a merchant segment type (merchant_size) | cohort_week
    slice: str  # (a cohort week: its Monday)
    status: str  # alert | ok | insufficient
    value: float | None  # PSI, the live action rate, or the cohort's IPW recall
    limit: float | None  # max PSI, the judged rate (the band is limit x (1 +- max_relative_shift)), or the
    #                      recall alert line (the promised lower bound less the margin)
    lo: float | None  # the live rate's interval (action rate, recall)
    hi: float | None
    rows: int  # live rows judged
    reference_rows: int
    sentence: str

    def as_dict(self) -> dict:
        return asdict(self)


def _slices(live: pd.DataFrame, reference: pd.DataFrame, by: str | None) -> list[tuple[str, str, np.ndarray, np.ndarray]]:
    out = [("all", "all", np.ones(len(live), bool), np.ones(len(reference), bool))]
    if by is not None:
        a, r = live[by].astype(str).to_numpy(), reference[by].astype(str).to_numpy()
        for s in sorted(set(a)):
            out.append((by if by != "merchant_country" else "country", s, a == s, r == s))
    return out


def design_effect(reference: np.ndarray, period: np.ndarray | None, bins: int = BINS) -> float:
    """How much more the PSI of this feature wanders than independent rows would make it: the PSI between the
    reference's two halves (``period``: 0 for its earlier days, 1 for its later ones) over what sampling
    alone gives for their sizes, at least 1. Rows are not independent when a feature is one value per
    merchant (a merchant's fraud rate, its counts): a country with a few hundred merchants is a few hundred
    lumps, and its PSI moves with every lump's day-to-day wobble; this scales the noise floor by it."""
    if period is None:
        return 1.0
    a, b = reference[period == 0], reference[period == 1]
    if min(len(a), len(b)) < MIN_ROWS // 2:
        return 1.0
    value, k = psi(a, b, bins)
    return max(1.0, value / ((k - 1) * (1 / len(a) + 1 / len(b))))


def drift(check: str, live: pd.DataFrame, reference: pd.DataFrame, columns: list[str], *, by: str | None = None,
          max_psi: float = MAX_PSI, min_rows: int = MIN_ROWS, bins: int = BINS, noise_q: float = NOISE_Q,
          period: str | None = None, per_entity: dict[str, str] | None = None, min_entity_days: int = MIN_ENTITY_DAYS
          ) -> list[Finding]:
    """PSI of each of ``columns`` in ``live`` against ``reference``, overall and per value of ``by``.

    ``per_entity`` (column -> entity column, e.g. "merchant_id"): a feature that is one value per entity and
    day (a merchant's counts, its fraud rate) is compared over entity-days, not rows: one merchant carrying
    40% of a country's traffic is one value, not 40% of the mass (rows would make its day-to-day wobble across a
    bin edge look like a shift of 40% of the traffic). Both frames then need a ``day`` column. ``period`` (a
    column of the reference: 0 for its earlier half, 1 for its later) scales the noise floor by each slice's
    ``design_effect``."""
    found = []
    per_entity = per_entity or {}
    for slice_type, name, lm, rm in _slices(live, reference, by):
        for col in columns:
            entity = per_entity.get(col)
            a, _ = _values(live[lm], col, entity, None)
            r, half = _values(reference[rm], col, entity, period)
            deff = design_effect(r, half, bins)
            unit = "values" if entity is None else f"{entity.removesuffix('_id')}-days"
            where = "all traffic" if slice_type == "all" else f"{slice_type} {name}"
            need = min_rows if entity is None else min_entity_days
            if min(len(a), len(r)) < need:
                found.append(Finding(check, col, slice_type, name, INSUFFICIENT, None, max_psi, None, None, len(a),
                                     len(r), f"{col} in {where}: {len(a):,} live and {len(r):,} reference {unit}, "
                                             f"fewer than the {need:,} needed to judge drift."))
                continue
            value, k = psi(r, a, bins)
            noise = psi_noise(k, len(a), len(r), noise_q) * deff
            bar = max(max_psi, noise)
            moved = _moved(a, r)
            if value > bar:
                s = (f"{col} in {where} drifted: PSI {value:.3f} against a limit of {max_psi:g} (noise alone reaches "
                     f"{noise:.3f} on {len(a):,} live and {len(r):,} reference {unit}"
                     + (f", {deff:.1f}x for values that move together" if deff > 1 else "") + f"); {moved}.")
                status = ALERT
            else:
                s = f"{col} in {where}: PSI {value:.3f}, within {bar:.3f}; {moved}."
                status = OK
            found.append(Finding(check, col, slice_type, name, status, value, max_psi, None, None, len(a), len(r), s))
    return found


def _values(frame: pd.DataFrame, col: str, entity: str | None, period: str | None
            ) -> tuple[np.ndarray, np.ndarray | None]:
    """The finite values of ``col`` (one per row, or the median per entity and day) and their periods."""
    if entity is not None:
        g = frame.groupby([entity, "day"], sort=False, observed=True)
        v = g[col].median()
        frame = v.to_frame(col) if period is None else v.to_frame(col).join(g[period].first())
    v = frame[col].to_numpy(dtype=float, na_value=np.nan)
    ok = np.isfinite(v)
    return v[ok], (frame[period].to_numpy()[ok] if period is not None else None)


def _moved(live: np.ndarray, reference: np.ndarray) -> str:
    a, r = float(np.median(live)), float(np.median(reference))
    return f"median {r:.4g} in the reference, {a:.4g} live"


def wilson(k: int, n: int, confidence: float) -> tuple[float, float]:
    if n == 0:
        return 0.0, 1.0
    z = norm_ppf(1 - (1 - confidence) / 2)
    p = k / n
    d = 1 + z * z / n
    c = (p + z * z / (2 * n)) / d
    h = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / d
    return (0.0 if k == 0 else max(0.0, c - h)), (1.0 if k == n else min(1.0, c + h))


def action_rates(blocked: pd.Series, country: pd.Series, judged: dict[str, float], *, max_relative_shift: float,
                 min_absolute_shift: float = 0.0, confidence: float = 0.99, min_rows: int = MIN_ROWS,
                 segments: dict[str, tuple[pd.Series, dict[str, float]]] | None = None) -> list[Finding]:
    """Each country's live block rate (``blocked``: the production policy's decision per live row) against the
    rate ``judged`` for it at release (country -> rate; "all" for all traffic); and, for each of ``segments``
    (segment type -> (each row's segment, segment -> rate judged at release), e.g. merchant size), each
    segment's. The band: the judged rate moved by ``max_relative_shift`` of itself or
    ``min_absolute_shift``, whichever is larger (the contract's limit). Slices the release did not judge are
    not judged here either (said as insufficient). Bonferroni over every slice judged."""
    b = blocked.to_numpy(dtype=bool)
    c = country.astype(str).to_numpy()
    groups = [("all", "all", "all traffic", np.ones(len(b), bool), judged.get("all"))]
    groups += [("country", s, f"country {s}", c == s, judged.get(s)) for s in sorted(set(c))]
    for seg_type, (labels, rates) in (segments or {}).items():
        lab = labels.astype(str).to_numpy()
        groups += [(seg_type, s, f"{seg_type.replace('_', ' ')} {s}", lab == s, rates.get(s)) for s in sorted(set(lab))]
    judged_here = [g for g in groups if g[4] is not None]
    level = 1 - (1 - confidence) / max(1, len(judged_here))  # Bonferroni over the slices judged
    found = []
    for slice_type, name, where, m, ref in groups:
        n, k = int(m.sum()), int(b[m].sum())
        if ref is None or not np.isfinite(ref):
            found.append(Finding("action_rate", "action_rate", slice_type, name, INSUFFICIENT, k / n if n else None,
                                 None, None, None, n, 0, f"{where}: no action rate was judged for it at release, so "
                                                         "there is nothing to hold its live rate against."))
            continue
        if n < min_rows:
            found.append(Finding("action_rate", "action_rate", slice_type, name, INSUFFICIENT, k / n if n else None,
                                 ref, None, None, n, 0, f"{where}: {n:,} live decisions, fewer than the {min_rows:,} "
                                                        "needed to judge its action rate."))
            continue
        lo, hi = wilson(k, n, level)
        half = max(max_relative_shift * ref, min_absolute_shift)
        band = (max(0.0, ref - half), ref + half)
        rate = k / n
        head = (f"{where}: live action rate {rate:.2%} ({k:,} of {n:,}; {level:.2%} interval {lo:.2%}..{hi:.2%}) "
                f"against {ref:.2%} judged at release ({rate / ref - 1:+.0%} relative)" if ref > 0 else
                f"{where}: live action rate {rate:.2%} ({k:,} of {n:,}) against {ref:.2%} judged at release")
        if lo > band[1] or hi < band[0]:
            status, tail = ALERT, (f"; beyond the limit band {band[0]:.2%}..{band[1]:.2%} "
                                   f"(±{max_relative_shift:.0%} of the judged rate)")
        elif band[0] <= lo and hi <= band[1]:
            status, tail = OK, f"; within the band {band[0]:.2%}..{band[1]:.2%}"
        else:
            status, tail = INSUFFICIENT, (f"; the interval reaches both sides of the band {band[0]:.2%}..{band[1]:.2%}"
                                          ": more traffic will decide it")
        found.append(Finding("action_rate", "action_rate", slice_type, name, status, rate, ref, lo, hi, n, 0,
                             head + tail + "."))
    return found


def findings_frame(found: list[Finding]) -> pd.DataFrame:
    cols = list(Finding.__dataclass_fields__)
    return pd.DataFrame([f.as_dict() for f in found], columns=cols)


# ---------------------------------------------------------------- performance as labels mature

PERFORMANCE = "matured_performance"
COHORT_WEEK = "cohort_week"
RECALL_MARGIN = 0.05  # points of recall below the promise's lower bound before a cohort alerts
PERFORMANCE_CONFIDENCE = 0.95  # two-sided, Bonferroni-split over the cohorts judged
MIN_COMPLETENESS = 0.9  # share of a cohort's eventual disputes arrived before its recall is judged
PERFORMANCE_WEEKS = 4  # matured cohort weeks the monitoring looks back over: a month
PERFORMANCE_BOOT = 2000  # bootstrap replicates: the corrected bound is a tail quantile (0.6% at four weeks)
RATES = ("recall", "fpr", "precision")


@dataclass(frozen=True)
class Promise:
    """What the release that shipped the model promised for its policy on all traffic: each of ``RATES`` as
    (estimate, lo, hi) at the release's 95% interval, by ``estimator``, on ``transactions`` judging rows."""

    release_id: str
    estimator: str
    rates: dict[str, tuple[float, float, float]]
    transactions: int


def promised_performance(metrics: pd.DataFrame | None, release_id: str, estimator: str = "ipw") -> Promise | None:
    """The policy's all-traffic recall, FPR and precision (``estimator``: IPW, as the monitoring measures)
    from a release's tidy metrics table (``analysis.evaluation.Evaluation.metrics``: the approved policy's
    re-judgement when there is one); None when it holds no finite recall for the policy."""
    if metrics is None or metrics.empty:
        return None
    m = metrics[(metrics["slice_type"] == "all") & (metrics["model"] == "policy")
                & (metrics["estimator"] == estimator)].set_index("metric")
    if "recall" not in m.index or not np.isfinite(float(m.loc["recall", "estimate"])):
        return None
    rates = {k: tuple(float(m.loc[k, c]) for c in ("estimate", "lo", "hi")) for k in RATES if k in m.index}
    n = int(m.loc["recall", "transactions"]) if "transactions" in m.columns else 0
    return Promise(release_id, estimator, rates, n)


def cohort_week(ts: pd.Series) -> pd.Series:
    """The Monday (a date, UTC) of each transaction's week: its cohort week."""
    t = pd.to_datetime(ts, utc=True).dt.tz_localize(None).dt.normalize()
    return (t - pd.to_timedelta(t.dt.dayofweek, unit="D")).dt.date


def performance_window(day, maturity_days: int, weeks: int = PERFORMANCE_WEEKS) -> tuple[dt.date, dt.date]:
    """The transaction days [start, end) whose decisions the monitoring of ``day`` reads for performance: from
    the Monday of the ``weeks``-th cohort week whose labels can have matured by ``day`` to ``day`` itself (the
    weeks still maturing are reported as such)."""
    end = pd.Timestamp(day).date() + dt.timedelta(days=1)
    newest_matured = end - dt.timedelta(days=maturity_days + 7)
    first = newest_matured - dt.timedelta(days=7 * (weeks - 1))
    return first - dt.timedelta(days=first.weekday()), end


def _same_kind(a: pd.Series, b: pd.Series) -> tuple[pd.Series, pd.Series]:
    """Two id columns comparable in a join: both as strings when one of them is."""
    if pd.api.types.is_string_dtype(a) == pd.api.types.is_string_dtype(b):
        return a, b
    return a.astype(str), b.astype(str)


def _pct(x: float | None, digits: int = 1) -> str:
    return "n/a" if x is None or not np.isfinite(x) else f"{x:.{digits}%}"


def _interval(e: float, lo: float, hi: float) -> str:
    return f"{_pct(e)} ({_pct(lo)}..{_pct(hi)})"


def cohort_performance(decisions: pd.DataFrame, disputes: pd.DataFrame, as_of, promised: Promise | None, *,
                       maturity_days: int, delays=None, margin: float = RECALL_MARGIN,
                       confidence: float = PERFORMANCE_CONFIDENCE, min_completeness: float = MIN_COMPLETENESS,
                       counterfactual=None, n_boot: int = PERFORMANCE_BOOT, seed: int = 0) -> pd.DataFrame:
    """One row per cohort week of the production model's live ``decisions``: its labelled outcomes as known at
    ``as_of`` (a tz-aware time, or a date taken as its UTC midnight), recall, FPR and precision of the model's
    decisions with their intervals, counterfactual support, label completeness, and the verdict with its
    sentence (the rules, and why, in the module docstring).

    ``decisions`` (decision-log rows the production model scored): tx_id, ts, card_id, action (what was
    served: allow | block), propensity (of the served action), production_block (what the production policy
    decided), amount (optional); a tx_id seen twice counts once, decisions at or after ``as_of`` not at all.
    ``disputes``: tx_id, dispute_ts (the event logs'). ``delays``: the dispute delay distribution
    (``release.data.label_completeness.read_delay_distribution``; None: completeness not estimated).
    ``counterfactual``: ``analysis.weighting.CounterfactualConfig`` (its minimums and clip; the defaults)."""
    from analysis.evaluation import slice_counterfactual_support
    from analysis.stats import slice_intervals
    from analysis.weighting import CounterfactualConfig, as_labels, ipw_weights
    from release.data.label_completeness import label_completeness
    from release.data.training_set import matured_labels

    if not 0 < confidence < 1:
        raise ValueError("The 'confidence' parameter of cohort_performance must be a float in (0, 1). "
                         f"Got {confidence!r} instead.")
    if not 0 <= min_completeness <= 1:
        raise ValueError("The 'min_completeness' parameter of cohort_performance must be a float in [0, 1]. "
                         f"Got {min_completeness!r} instead.")
    cf = counterfactual or CounterfactualConfig()
    at = pd.Timestamp(as_of)
    at = at.tz_localize("UTC") if at.tz is None else at.tz_convert("UTC")
    d = decisions.assign(ts=pd.to_datetime(decisions["ts"], utc=True))
    d = d[d["ts"] < at].drop_duplicates("tx_id").reset_index(drop=True)
    if d.empty:
        return pd.DataFrame(columns=PERFORMANCE_COLUMNS)
    ids, dispute_ids = _same_kind(d["tx_id"], disputes["tx_id"])  # the log's ids are strings, the events' may not be
    # the one label definition (the training set's SQL): fraud iff disputed before as_of, once matured and allowed
    lab = matured_labels(d[["ts", "action", "propensity"]].assign(tx_id=ids), disputes.assign(tx_id=dispute_ids),
                         at, maturity_days)
    label = as_labels(lab["label"])
    weight = ipw_weights(label, lab["weight"], max_weight=cf.max_weight)  # the one clipping rule
    day = d["ts"].dt.tz_localize(None).dt.normalize()
    d = d.assign(day=day, week=day - pd.to_timedelta(day.dt.dayofweek, unit="D"),
                 matured=lab["matured"].to_numpy(bool))
    g = d.groupby("week", sort=True)
    c = pd.DataFrame({"rows": g.size(), "matured_rows": g["matured"].sum(), "last": g["ts"].max()})
    # the monitoring day (labels as of its end) from which the cohort's last decision counts as matured
    c["matures_on"] = (c["last"] + pd.Timedelta(days=maturity_days)).dt.date
    mature = (c["matured_rows"] == c["rows"]).to_numpy()
    # label completeness of each cohort's days, weighted by its decisions per day
    per_day = d.groupby(["week", "day"]).size()
    known_until = at.normalize().tz_localize(None)  # whole days known at as_of
    comp, why = [], []
    for w in c.index:
        if delays is None:
            comp.append(None)
            why.append("no dispute delay distribution was given")
            continue
        end = max(w, min(w + pd.Timedelta(days=7), known_until))
        got = label_completeness(delays, w.date(), end.date(), at, day_counts=per_day.loc[w])
        comp.append(got.completeness)
        why.append(got.reason)
    c["completeness"] = pd.array(comp, dtype="Float64").astype(float)
    c["completeness_reason"] = why
    for col in FIGURE_COLUMNS:
        c[col] = np.nan
    # support and rates over the matured cohorts' rows (an immature row has no label yet)
    rows = d["week"].isin(c.index[mature]).to_numpy()
    if rows.any():
        weeks, codes = np.unique(d.loc[rows, "week"].to_numpy(), return_inverse=True)  # sorted, as slice_codes
        names = np.array([pd.Timestamp(w).date().isoformat() for w in weeks], dtype=object)
        keys = {COHORT_WEEK: (codes.astype(np.int32), names)}
        sup = slice_counterfactual_support(keys, label[rows], weight[rows]).set_index("slice")
        at_weeks = pd.DatetimeIndex(weeks)
        for col in ("censored", "explored", "explored_frauds", "ess_frauds", "ess_legit"):
            c.loc[at_weeks, col] = sup.loc[names, col].to_numpy(dtype=float)
    complete = np.isnan(c["completeness"].to_numpy()) | (c["completeness"].to_numpy() >= min_completeness)
    supported = ((c["explored_frauds"] >= cf.min_explored_frauds) & (c["ess_frauds"] >= cf.min_ess)
                 & (c["ess_legit"] >= cf.min_ess)).to_numpy()
    judged = mature & complete & supported & (promised is not None)
    k = int(judged.sum())
    level = 1 - (1 - confidence) / max(k, 1)  # Bonferroni over the cohorts judged
    if rows.any():
        amount = d.loc[rows, "amount"].to_numpy(dtype=float) if "amount" in d else np.ones(int(rows.sum()))
        card = d.loc[rows, "card_id"]
        if card.isna().any():  # a decision without a card is a cluster of its own
            card = card.astype(object).where(card.notna(), "tx:" + d.loc[rows, "tx_id"].astype(str))
        t = slice_intervals(label[rows], weight[rows], amount,
                            {"production": d.loc[rows, "production_block"].to_numpy(dtype=float)}, keys,
                            card.to_numpy(), baseline="production", n_boot=n_boot, level=level,
                            seed=seed, max_weight=np.inf, estimators=("ipw",), money=set())
        t = t[t["metric"].isin(RATES)].set_index(["slice", "metric"])
        for r in RATES:
            for col, name in (("estimate", r), ("lo", f"{r}_lo"), ("hi", f"{r}_hi")):
                c.loc[at_weeks, name] = t.loc[[(n, r) for n in names], col].to_numpy(dtype=float)
        support = t.xs("recall", level="metric")
        c.loc[at_weeks, "labelled"] = support.loc[names, "labelled"].to_numpy(dtype=float)
        c.loc[at_weeks, "frauds"] = support.loc[names, "frauds"].to_numpy(dtype=float)
    judged &= np.isfinite(c["recall_hi"].to_numpy())  # a bootstrap that gave no bound decides nothing
    c["level"], c["judged"] = level, judged
    e, lo, hi = promised.rates["recall"] if promised is not None else (np.nan,) * 3
    bar = lo - margin
    c["promised_recall"], c["promised_lo"], c["promised_hi"], c["alert_below"] = e, lo, hi, bar
    c["promised_rows"] = promised.transactions if promised is not None else 0
    c["status"] = np.where(judged & (c["recall_hi"].to_numpy() < bar), ALERT, np.where(judged, OK, INSUFFICIENT))
    c = c.drop(columns="last").reset_index(names="cohort_week")
    c["cohort_week"] = c["cohort_week"].dt.date
    c["since"] = _alert_runs(c)
    c["sentence"] = [_performance_sentence(r, promised, maturity_days=maturity_days, margin=margin,
                                           min_completeness=min_completeness, cf=cf, k=k)
                     for r in c.itertuples(index=False)]
    return c[PERFORMANCE_COLUMNS]


FIGURE_COLUMNS = ["labelled", "frauds", "censored", "explored", "explored_frauds", "ess_frauds", "ess_legit",
                  *(f"{r}{x}" for r in RATES for x in ("", "_lo", "_hi"))]
PERFORMANCE_COLUMNS = ["cohort_week", "status", "rows", "matured_rows", "matures_on", "labelled", "frauds",
                       "censored", "explored", "explored_frauds", "ess_frauds", "ess_legit", "completeness",
                       "completeness_reason", "recall", "recall_lo", "recall_hi", "fpr", "fpr_lo", "fpr_hi",
                       "precision", "precision_lo", "precision_hi", "level", "judged", "promised_recall",
                       "promised_lo", "promised_hi", "promised_rows", "alert_below", "since", "sentence"]


def _alert_runs(cohorts: pd.DataFrame) -> list:
    """For each alerting cohort week, the first week of the run of alerting weeks it ends (an insufficient
    week between two alerting ones does not break the run, an ok one does); None elsewhere."""
    out, first = [], None
    for w, s in zip(cohorts["cohort_week"], cohorts["status"]):
        if s == ALERT:
            first = first or w
            out.append(first)
        else:
            first = None if s == OK else first
            out.append(None)
    return out


PERFORMANCE_TODO = ("the model misses fraud it was judged to catch: look at what that week's disputes have in common "
                    "(merchants, categories, new cards: a new pattern), train on fresh labels now (`fraudcd release "
                    "--as-of DAY`), and if the previous model did better, return to it (`fraudcd rollback --model`)")


def _performance_sentence(r, promised: Promise | None, *, maturity_days: int, margin: float,
                          min_completeness: float, cf, k: int) -> str:
    head = f"Cohort week {r.cohort_week}..{r.cohort_week + dt.timedelta(days=6)} ({int(r.rows):,} decisions)"
    known = np.isfinite(r.completeness)
    comp = (f"label completeness {r.completeness:.0%}" if known else
            "label completeness not estimated" + (f" ({r.completeness_reason})" if r.completeness_reason else ""))
    if r.matured_rows < r.rows:
        return (f"{head}: not judged yet, {int(r.rows - r.matured_rows):,} of its decisions are younger than the "
                f"{maturity_days}-day maturity window ({comp}); its recall is judged from the monitoring of "
                f"{r.matures_on}.")
    if known and r.completeness < min_completeness:
        return (f"{head}: not judged yet, {comp}, below the {min_completeness:.0%} needed (the disputes still to "
                "come could move its recall); it is judged once enough of them have arrived.")
    figures = {m: _interval(getattr(r, m), getattr(r, f"{m}_lo"), getattr(r, f"{m}_hi")) for m in RATES}
    support = (f"{int(r.explored_frauds)} explored frauds, ESS {r.ess_frauds:,.0f} (frauds) and {r.ess_legit:,.0f} "
               "(legitimate)") if np.isfinite(r.explored_frauds) else "no labelled decisions"
    if not (r.explored_frauds >= cf.min_explored_frauds and r.ess_frauds >= cf.min_ess
            and r.ess_legit >= cf.min_ess):
        return (f"{head}: recall {figures['recall']}, FPR {figures['fpr']}, precision {figures['precision']} (IPW, "
                f"{r.level:.2%} intervals), not judged: too little exploration behind them, {support} (at least "
                f"{cf.min_explored_frauds} explored frauds and an ESS of {cf.min_ess:g} needed); {comp}. More "
                "exploration or more traffic would decide it.")
    if promised is None:
        return (f"{head}: recall {figures['recall']}, FPR {figures['fpr']}, precision {figures['precision']} (IPW, "
                f"{r.level:.2%} intervals), not judged: the release that shipped the model promised no IPW recall to "
                f"hold it against (deployed by hand, or judged without one). From {support}; {comp}.")
    tail = f"From {support}; {comp}" + ("" if known else ", so judged on label maturity alone") + "."
    e, lo, hi = promised.rates["recall"]
    others = "; ".join(f"{name} {figures[m]}" + (f" against {_pct(promised.rates[m][0])} promised"
                                                 if m in promised.rates else "")
                       for m, name in (("fpr", "FPR"), ("precision", "precision")))
    if r.status == ALERT:
        since = ("since this cohort week" if r.since == r.cohort_week else f"since the cohort week of {r.since}")
        return (f"{head}: recall fell to {_pct(r.recall)} against the {_pct(e)} release {promised.release_id} "
                f"promised (95% interval {_pct(lo)}..{_pct(hi)}), {(e - r.recall) * 100:.0f} points down; its whole "
                f"{r.level:.2%} interval ({_pct(r.recall_lo)}..{_pct(r.recall_hi)}, corrected for {k} weeks judged) "
                f"lies under {_pct(r.alert_below)}, the promised lower bound less a {margin * 100:g}-point margin. "
                f"Below {since}. {others[0].upper() + others[1:]} (intervals at the same level). {tail} What to do: "
                f"{PERFORMANCE_TODO}.")
    return (f"{head}: recall {_pct(r.recall)} ({r.level:.2%} interval {_pct(r.recall_lo)}..{_pct(r.recall_hi)}, "
            f"corrected for {k} weeks judged) against the {_pct(e)} release {promised.release_id} promised (95% "
            f"interval {_pct(lo)}..{_pct(hi)}; it alerts only wholly under {_pct(r.alert_below)}); {others} "
            f"(intervals at the same level). {tail}")


def performance_findings(cohorts: pd.DataFrame) -> list[Finding]:
    """The monitoring findings of ``cohort_performance``'s table: one per cohort week, its recall against the
    alert line (the promised lower bound less the margin)."""
    def num(x) -> float | None:
        return None if x is None or not np.isfinite(x) else float(x)

    out = []
    for r in cohorts.itertuples(index=False):
        out.append(Finding(PERFORMANCE, "recall", COHORT_WEEK, r.cohort_week.isoformat(), r.status, num(r.recall),
                           num(r.alert_below), num(r.recall_lo), num(r.recall_hi), int(r.rows),
                           int(r.promised_rows), r.sentence))
    return out


def matured_performance(decisions: pd.DataFrame, disputes: pd.DataFrame, as_of, promised: Promise | None, *,
                        maturity_days: int, **kw) -> list[Finding]:
    """Performance as labels mature: one finding per cohort week of the production model's live decisions,
    alert | ok | insufficient (``cohort_performance`` takes the same arguments and keeps every figure)."""
    return performance_findings(cohort_performance(decisions, disputes, as_of, promised,
                                                   maturity_days=maturity_days, **kw))
