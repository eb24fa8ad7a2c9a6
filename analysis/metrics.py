"""Candidate-vs-incumbent metrics over all traffic and per slice.

Words as in DESIGN.md: an *action* is a block (score >= the merchant's threshold); *action rate* is
actioned / scored over all traffic in the window, labelled or not. Recall, FPR and precision use only
labelled rows (matured, not blocked by the policy of the day), each weighted by 1/propensity so the
exploration rows stand in for the censored blocks (inverse propensity weighting).
"""
from __future__ import annotations

import numpy as np
import pandas as pd
from sklearn.metrics import average_precision_score, roc_auc_score

MODELS = ("incumbent", "candidate")


def thresholds_for(merchants: pd.Series, per_merchant: pd.Series | dict | None, default: float) -> np.ndarray:
    """Each row's threshold: its merchant's if one is set, else ``default``."""
    if per_merchant is None or len(per_merchant) == 0:
        return np.full(len(merchants), float(default))
    m = pd.Series(per_merchant, dtype=float)
    return merchants.map(m).fillna(default).to_numpy(dtype=float)


def weighted_fpr(score: np.ndarray, label: np.ndarray, weight: np.ndarray, threshold: np.ndarray | float) -> float:
    neg = label == 0
    return float((weight * neg * (score >= threshold)).sum() / max((weight * neg).sum(), 1e-12))


def threshold_at_fpr(score: np.ndarray, label: np.ndarray, weight: np.ndarray, target_fpr: float) -> float:
    """The lowest global threshold whose weighted FPR is <= target_fpr (maximises recall at that FPR,
    never exceeds it)."""
    neg = label == 0
    s, w = score[neg], weight[neg]
    total = w.sum()
    if total <= 0:
        raise ValueError("threshold_at_fpr needs at least one labelled legitimate row; got none.")
    uniq, inv = np.unique(s, return_inverse=True)
    wsum = np.bincount(inv, weights=w)[::-1]  # by score, descending
    fpr_if_cut_at = np.cumsum(wsum) / total  # FPR when blocking scores >= uniq_desc[k]
    uniq_desc = uniq[::-1]
    ok = np.flatnonzero(fpr_if_cut_at <= target_fpr + 1e-12)
    if len(ok) == 0:
        return float(np.nextafter(uniq_desc[0], np.inf))
    k = ok[-1]
    if k + 1 < len(uniq_desc):
        return float(np.nextafter(uniq_desc[k + 1], np.inf))
    return float(uniq_desc[k])


def _rates(g: pd.DataFrame, prefix: str) -> dict:
    act = g[f"{prefix}_action"]
    lab = g["_lab"]
    w = g["_w"]
    pos = lab * w
    negw = (1 - lab) * w * g["_labelled"]
    tp = (pos * act).sum()
    fp = (negw * act).sum()
    return {
        f"{prefix}_action_rate": act.mean(),
        f"{prefix}_recall": tp / pos.sum() if pos.sum() > 0 else np.nan,
        f"{prefix}_fpr": fp / negw.sum() if negw.sum() > 0 else np.nan,
        f"{prefix}_precision": tp / (tp + fp) if (tp + fp) > 0 else np.nan,
        f"{prefix}_blocked_fraud_amount": (pos * act * g["amount"]).sum(),
        f"{prefix}_false_decline_amount": (negw * act * g["amount"]).sum(),
    }


def prepare(df: pd.DataFrame, inc_threshold: np.ndarray, cand_threshold: np.ndarray) -> pd.DataFrame:
    """Columns every slice metric needs: actions of both models and the weighted label columns."""
    out = df.copy()
    out["incumbent_action"] = (out["incumbent_score"].to_numpy() >= inc_threshold).astype(float)
    out["candidate_action"] = (out["candidate_score"].to_numpy() >= cand_threshold).astype(float)
    labelled = out["label"].notna().to_numpy()
    out["_labelled"] = labelled.astype(float)
    out["_lab"] = np.where(labelled, out["label"].fillna(0).astype(float), 0.0)
    out["_w"] = np.where(labelled, out["weight"].astype(float).fillna(0.0), 0.0)
    return out


def slice_metrics(p: pd.DataFrame, by: str | None) -> pd.DataFrame:
    """One row per slice of ``by`` (or one 'all' row): support and both models' metrics side by side."""
    key = p[by] if by else pd.Series("all", index=p.index)
    w = p["_w"]
    pos = p["_lab"] * w
    negw = (1 - p["_lab"]) * w * p["_labelled"]
    cols = {
        "transactions": p["_labelled"] * 0 + 1,
        "labelled": p["_labelled"],
        "frauds": p["_lab"],
        "_pos": pos, "_neg": negw,
    }
    for m in MODELS:
        a = p[f"{m}_action"]
        cols[f"{m}_actions"] = a
        cols[f"_{m}_tp"] = pos * a
        cols[f"_{m}_fp"] = negw * a
        cols[f"{m}_blocked_fraud_amount"] = pos * a * p["amount"]
        cols[f"{m}_false_decline_amount"] = negw * a * p["amount"]
    inc_a, cand_a = p["incumbent_action"], p["candidate_action"]
    cols["candidate_only_actions"] = cand_a * (1 - inc_a)  # the decisions the models disagree on:
    cols["incumbent_only_actions"] = inc_a * (1 - cand_a)  # what a paired (McNemar) test needs
    fraud = p["_lab"]  # labelled frauds; the same paired view of recall: who caught what the other missed
    cols["candidate_only_catches"] = fraud * cand_a * (1 - inc_a)
    cols["incumbent_only_catches"] = fraud * inc_a * (1 - cand_a)
    agg = pd.DataFrame(cols).groupby(key.to_numpy()).sum()
    out = pd.DataFrame(index=agg.index)
    out["transactions"] = agg["transactions"].astype(int)
    out["labelled"] = agg["labelled"].astype(int)
    out["frauds"] = agg["frauds"].astype(int)
    for m in MODELS:
        out[f"{m}_action_rate"] = agg[f"{m}_actions"] / agg["transactions"]
        out[f"{m}_recall"] = agg[f"_{m}_tp"] / agg["_pos"].where(agg["_pos"] > 0)
        out[f"{m}_fpr"] = agg[f"_{m}_fp"] / agg["_neg"].where(agg["_neg"] > 0)
        denom = agg[f"_{m}_tp"] + agg[f"_{m}_fp"]
        out[f"{m}_precision"] = agg[f"_{m}_tp"] / denom.where(denom > 0)
        out[f"{m}_blocked_fraud_amount"] = agg[f"{m}_blocked_fraud_amount"]
        out[f"{m}_false_decline_amount"] = agg[f"{m}_false_decline_amount"]
    out["candidate_only_actions"] = agg["candidate_only_actions"].astype(int)
    out["incumbent_only_actions"] = agg["incumbent_only_actions"].astype(int)
    out["candidate_only_catches"] = agg["candidate_only_catches"].astype(int)
    out["incumbent_only_catches"] = agg["incumbent_only_catches"].astype(int)
    out.insert(0, "slice", out.index.astype(str))
    out.insert(0, "slice_type", by or "all")
    return out.reset_index(drop=True)


def ranking_metrics(p: pd.DataFrame) -> dict:
    lab = p[p["_labelled"] > 0]
    out = {}
    for m in MODELS:
        if lab["_lab"].nunique() == 2:
            out[f"{m}_roc_auc"] = float(roc_auc_score(lab["_lab"], lab[f"{m}_score"], sample_weight=lab["_w"]))
            out[f"{m}_pr_auc"] = float(average_precision_score(lab["_lab"], lab[f"{m}_score"], sample_weight=lab["_w"]))
        else:
            out[f"{m}_roc_auc"] = out[f"{m}_pr_auc"] = float("nan")
    return out
