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
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import numpy as np
import pandas as pd

from release.rollout.guardrails import psi, psi_noise

ALERT, OK, INSUFFICIENT = "alert", "ok", "insufficient"
MAX_PSI = 0.2
NOISE_Q = 0.999
BINS = 10
MIN_ROWS = 500
MIN_ENTITY_DAYS = 200


@dataclass(frozen=True)
class Finding:
    check: str  # score_drift | feature_drift | action_rate
    feature: str  # the feature (feature drift), "score" or "action_rate"
    slice_type: str  # all | country | a merchant segment type (merchant_size)
    slice: str
    status: str  # alert | ok | insufficient
    value: float | None  # PSI, or the live action rate
    limit: float | None  # max PSI, or the judged rate (the band is limit x (1 +- max_relative_shift))
    lo: float | None  # the live rate's interval (action rate)
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
    from scipy.stats import norm

    if n == 0:
        return 0.0, 1.0
    z = float(norm.ppf(1 - (1 - confidence) / 2))
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
