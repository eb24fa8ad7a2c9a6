"""Tidy metrics rows built by hand, as analysis.evaluation writes them (analysis.stats.slice_intervals plus
counterfactual support), for contract tests with known answers."""
from __future__ import annotations

import pandas as pd


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
