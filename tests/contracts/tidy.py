"""Tidy metrics rows built by hand, as analysis.evaluation writes them (analysis.stats.slice_intervals plus
counterfactual support), for contract tests with known answers, and the interval rule a verdict's stored
effect is checked against."""
from __future__ import annotations

import math

import pandas as pd

from contracts.base import FAIL, INSUFFICIENT, PASS


def slice_rows(slice_type: str, slice_: str, metric: str, estimator: str, models: dict, *, transactions=10_000,
               labelled=9_800, frauds=100, explored=40, explored_frauds=20, ess_frauds=60.0, censored=200,
               members=None) -> list[dict]:
    """``models``: model name -> (estimate, lo, hi) or a single estimate (its interval then the point)."""
    base = {"slice_type": slice_type, "slice": slice_, "metric": metric, "estimator": estimator,
            "transactions": transactions, "labelled": labelled, "frauds": frauds, "explored": explored,
            "explored_frauds": explored_frauds, "ess_frauds": ess_frauds, "ess_legit": 5000.0,
            "censored": censored, "members": members}
    out = []
    for model, v in models.items():
        est, lo, hi = v if isinstance(v, tuple) else (v, v, v)
        out.append({**base, "model": model, "estimate": est, "lo": lo, "hi": hi})
    return out


def table(*groups) -> pd.DataFrame:
    return pd.DataFrame([r for g in groups for r in g])


def shift(slice_type, slice_, inc, pol, lo, hi, *, model="policy", raw=None, **kw):
    """Action-rate rows of one slice: incumbent ``inc``, the policy ``pol`` and the interval of pol - inc."""
    models = {"incumbent": inc, model: pol, f"{model}-incumbent": (pol - inc, lo, hi)}
    if raw is not None:
        models.update({"candidate": raw, "candidate-incumbent": raw - inc})
    return slice_rows(slice_type, slice_, "action_rate", "all", models, **kw)



def interval_rule(v) -> str:
    """The verdict the interval rule gives a verdict's stored effect, worked out here on its own: pass when
    [effect_lo, effect_hi] lies inside [allowed_lo, allowed_hi] (None: unbounded), fail when it lies wholly
    outside, insufficient data otherwise."""
    lo = -math.inf if v.allowed_lo is None else v.allowed_lo
    hi = math.inf if v.allowed_hi is None else v.allowed_hi
    if lo <= v.effect_lo and v.effect_hi <= hi:
        return PASS
    if v.effect_hi < lo or v.effect_lo > hi:
        return FAIL
    return INSUFFICIENT
