"""Evaluate the candidate against the incumbent on the same matured, out-of-time window.

The operating point is the incumbent's global FPR at the thresholds in force; the candidate's global
threshold is chosen to match it (never to exceed it), and every slice is compared there.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from analysis.thresholds import suggest_thresholds
from analysis.metrics import (prepare, ranking_metrics, slice_metrics, threshold_at_fpr, thresholds_for,
                              weighted_fpr)
from analysis.stats import slice_intervals
from contracts.base import SLICE_COLUMNS
from release.io import atomic_write_parquet, atomic_write_text

REPORT_SLICES = ["country", "merchant", "category", "card_country", "merchant_size", "amount_band", "card_segment"]
AMOUNT_BANDS = [0.0, 20.0, 100.0, 500.0, float("inf")]
AMOUNT_LABELS = ["<20", "20-100", "100-500", "500+"]
NEW_CARD_DAYS = 30  # a card first seen fewer than this many days ago is "new"


def add_segments(scored: pd.DataFrame) -> pd.DataFrame:
    """The segment columns slices need: merchant size (large merchants carry the first half of the
    window's traffic, medium the next 40%, small the rest), amount band and new vs returning card."""
    out = scored.copy()
    counts = out["merchant_id"].value_counts()  # sorted by volume, largest first
    share = counts.cumsum() / counts.sum()
    size = pd.Series(np.where(share.shift(fill_value=0) < 0.5, "large",
                              np.where(share.shift(fill_value=0) < 0.9, "medium", "small")), index=counts.index)
    out["merchant_size"] = out["merchant_id"].map(size)
    out["amount_band"] = pd.cut(out["amount"], AMOUNT_BANDS, labels=AMOUNT_LABELS, right=False).astype(str)
    if "card_age_days" in out:
        out["card_segment"] = np.where(out["card_age_days"] < NEW_CARD_DAYS, "new card", "returning card")
    else:
        out["card_segment"] = "unknown"
    return out


@dataclass
class Evaluation:
    """``slices`` has one row per (at, slice_type, slice): ``at`` is "operating_point" (candidate at one
    global threshold matching the incumbent's FPR) or "suggested" (candidate at the suggested per-merchant
    thresholds, the ones that would go live). ``overall`` is at the operating point. ``metrics`` is the
    tidy table of every metric with its 95% interval (analysis.stats.slice_intervals): one row per
    (slice_type, slice, metric, estimator, model), model being incumbent (thresholds in force), candidate
    (at the operating point), suggested (the candidate at the suggested per-merchant thresholds) or a
    difference against the incumbent."""

    overall: dict
    slices: pd.DataFrame
    recall_diff: dict
    operating_fpr: float
    candidate_threshold: float
    suggestions: pd.DataFrame
    metrics: pd.DataFrame | None = None
    ranking_diff: dict | None = None  # metric -> candidate-minus-incumbent diff, lo, hi (all traffic, IPW)

    def save(self, folder: Path) -> None:
        atomic_write_parquet(self.slices, Path(folder) / "slices.parquet")
        atomic_write_parquet(self.suggestions, Path(folder) / "suggestions.parquet")
        if self.metrics is not None:
            atomic_write_parquet(self.metrics, Path(folder) / "metrics.parquet")
        atomic_write_text(json.dumps({"overall": self.overall, "recall_diff": self.recall_diff,
                                      "ranking_diff": self.ranking_diff,
                                      "operating_fpr": self.operating_fpr,
                                      "candidate_threshold": self.candidate_threshold}, indent=2, default=float),
                          Path(folder) / "evaluation.json")

    @classmethod
    def load(cls, folder: Path) -> "Evaluation":
        meta = json.loads((Path(folder) / "evaluation.json").read_text())
        metrics = Path(folder) / "metrics.parquet"
        return cls(metrics=pd.read_parquet(metrics) if metrics.exists() else None,
                   overall=meta["overall"], slices=pd.read_parquet(Path(folder) / "slices.parquet"),
                   suggestions=pd.read_parquet(Path(folder) / "suggestions.parquet"),
                   recall_diff=meta["recall_diff"], operating_fpr=meta["operating_fpr"],
                   candidate_threshold=meta["candidate_threshold"], ranking_diff=meta.get("ranking_diff"))


def all_slices(p: pd.DataFrame, slice_names: list[str]) -> pd.DataFrame:
    parts = [slice_metrics(p, None)]
    for s in slice_names:
        t = slice_metrics(p, SLICE_COLUMNS[s])
        t["slice_type"] = s
        parts.append(t)
    return pd.concat(parts, ignore_index=True)


def evaluate(scored: pd.DataFrame, inc_thresholds: pd.Series | dict, inc_default: float,
             slice_names: list[str] = REPORT_SLICES, n_boot: int = 1000, seed: int = 0,
             max_weight: float = 100.0) -> Evaluation:
    """``scored`` has incumbent_score, candidate_score, label, weight, amount, card_id and slice columns.
    Intervals come from a paired bootstrap resampled by card with ``n_boot`` replicates; inverse-propensity
    weights are clipped at ``max_weight``."""
    scored = add_segments(scored)
    inc_thr = thresholds_for(scored["merchant_id"], inc_thresholds, inc_default)
    labelled = scored["label"].notna().to_numpy()
    lab = scored.loc[labelled, "label"].astype(int).to_numpy()
    w = scored.loc[labelled, "weight"].astype(float).to_numpy()
    op_fpr = weighted_fpr(scored.loc[labelled, "incumbent_score"].to_numpy(), lab, w, inc_thr[labelled])
    cand_t = threshold_at_fpr(scored.loc[labelled, "candidate_score"].to_numpy(), lab, w, op_fpr)
    p = prepare(scored, inc_thr, np.full(len(scored), cand_t))
    op = all_slices(p, slice_names)
    suggestions = suggest_thresholds(scored, inc_thr, cand_t,
                                     current=pd.Series(inc_thresholds, dtype=float) if len(inc_thresholds) else None)
    sug_thr = thresholds_for(scored["merchant_id"], suggestions.set_index("merchant_id")["suggested_threshold"], cand_t)
    sug_p = prepare(scored, inc_thr, sug_thr)
    sug = all_slices(sug_p, slice_names)
    op.insert(0, "at", "operating_point")
    sug.insert(0, "at", "suggested")
    slices = pd.concat([op, sug], ignore_index=True)
    overall = op[op["slice_type"] == "all"].iloc[0].drop("at").to_dict()
    overall.update(ranking_metrics(p))
    overall = {k: (float(v) if isinstance(v, (int, float, np.floating, np.integer)) else v) for k, v in overall.items()}
    keys = {"all": np.full(len(scored), "all")}
    keys.update({name: scored[SLICE_COLUMNS[name]].astype(str).to_numpy() for name in slice_names})
    metrics = slice_intervals(
        scored["label"].astype(float), scored["weight"].astype(float), scored["amount"],
        {"incumbent": p["incumbent_action"], "candidate": p["candidate_action"], "suggested": sug_p["candidate_action"]},
        keys, scored["card_id"], baseline="incumbent", n_boot=n_boot, seed=seed, max_weight=max_weight,
        scores={"incumbent": scored["incumbent_score"].to_numpy(), "candidate": scored["candidate_score"].to_numpy()})

    def gain(metric: str) -> dict:
        d = metrics[(metrics.slice_type == "all") & (metrics.metric == metric) & (metrics.estimator == "ipw")
                    & (metrics.model == "candidate-incumbent")].iloc[0]
        return {"diff": float(d.estimate), "lo": float(d.lo), "hi": float(d.hi), "n_boot": n_boot}

    recall_diff = gain("recall")
    # ROC-AUC and PR-AUC: the bootstrapped difference on binned scores (the exact point estimates are in overall)
    ranking_diff = {m: {k: (v if np.isfinite(v) else None) for k, v in gain(m).items()} for m in ("roc_auc", "pr_auc")}
    return Evaluation(overall=overall, slices=slices, recall_diff=recall_diff, operating_fpr=op_fpr,
                      candidate_threshold=cand_t, suggestions=suggestions, metrics=metrics, ranking_diff=ranking_diff)
