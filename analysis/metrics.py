"""Candidate-vs-incumbent metrics over all traffic and per slice.

Words as in DESIGN.md: an *action* is a block (score >= the merchant's threshold); *action rate* is
actioned / scored over all traffic in the window, labelled or not. Recall, FPR and precision use only
labelled rows (matured, not blocked by the policy of the day), each weighted by 1/propensity so the
exploration rows stand in for the censored blocks (inverse propensity weighting).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

MODELS = ("incumbent", "candidate")


def by_value(column: pd.Series, fn) -> pd.Series:
    """``fn(column)`` for an element-wise ``fn`` (``lambda c: c.map(table)``, ``lambda c: c.astype(str)``),
    computed on the column's distinct values (missing ones included) and spread back to its rows: the same
    values, dtype, index and name. A window's 800,000 merchant ids are 2,000 merchants; pandas' own map and
    astype of string columns (Arrow-backed in pandas 3) copy every row out to a Python object and back."""
    codes, distinct = pd.factorize(column, use_na_sentinel=False)
    out = fn(pd.Series(distinct, name=column.name)).take(codes)
    out.index = column.index
    return out


def thresholds_for(merchants: pd.Series, per_merchant: pd.Series | dict | None, default: float) -> np.ndarray:
    """Each row's threshold: its merchant's if one is set, else ``default``."""
    if per_merchant is None or len(per_merchant) == 0:
        return np.full(len(merchants), float(default))
    m = pd.Series(per_merchant, dtype=float)
    return by_value(merchants, lambda c: c.map(m)).fillna(default).to_numpy(dtype=float)


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


def prepare(df: pd.DataFrame, inc_threshold: np.ndarray, cand_threshold: np.ndarray) -> pd.DataFrame:
    """Columns every slice metric needs: actions of both models and the weighted label columns, added to a
    shallow copy of ``df`` (copy-on-write: ``df`` is untouched and its columns are not duplicated)."""
    out = df.copy(deep=False)
    out["incumbent_action"] = (out["incumbent_score"].to_numpy() >= inc_threshold).astype(float)
    labelled = out["label"].notna().to_numpy()
    out["_labelled"] = labelled.astype(float)
    out["_lab"] = np.where(labelled, out["label"].fillna(0).astype(float), 0.0)
    out["_w"] = np.where(labelled, out["weight"].astype(float).fillna(0.0), 0.0)
    return with_candidate_threshold(out, cand_threshold)


def with_candidate_threshold(p: pd.DataFrame, cand_threshold: np.ndarray | float) -> pd.DataFrame:
    """A ``prepare``d frame with the candidate acting at other thresholds: a shallow copy sharing every other
    column (another policy judged on the same rows costs one column, not five)."""
    out = p.copy(deep=False)
    out["candidate_action"] = (out["candidate_score"].to_numpy() >= cand_threshold).astype(float)
    return out


def slice_codes(labels: pd.Series) -> tuple[np.ndarray, np.ndarray]:
    """A slice column as (int32 codes, names): its values as strings, names sorted, every one present (the
    form analysis.stats.slice_intervals takes as a key), so a judgement hashes each column once."""
    codes, names = pd.factorize(labels.astype(str), sort=True)
    return codes.astype(np.int32), np.asarray(names, dtype=object)


def grouped_sum(values: pd.Series | pd.DataFrame, codes: np.ndarray, n_slices: int) -> pd.Series | pd.DataFrame:
    """pandas' grouped sum of ``values`` (compensated, in row order) per slice code 0..n_slices-1, one row per
    code in order, 0 for a slice without rows. The codes go to pandas as the codes of a categorical, so it
    groups by them as they are instead of hashing them again (a third of the time on 10M rows, the same
    sums)."""
    groups = pd.Categorical.from_codes(codes, categories=pd.RangeIndex(n_slices), validate=False)
    return values.groupby(groups, observed=False).sum()


@dataclass
class SliceCounts:
    """The per-row counts behind ``slice_table``, made once for a prepared frame and summed per slice of
    any slice type. Sums of 0/1 counts are exact in any order: they are counted over the rows where they
    are 1. Weighted sums use pandas' grouped sum (compensated, in row order: the figures these tables
    always had), the sparse ones (frauds, actions) over the rows where any is non-zero, the legitimate
    weight over every row."""

    ones: dict[str, np.ndarray]  # 0/1 count column -> the rows where it is 1
    rows: np.ndarray  # the rows where some sparse weighted column is non-zero
    sparse: pd.DataFrame  # those columns on those rows
    neg: pd.Series  # the legitimate rows' weight, every row


def slice_counts(p: pd.DataFrame) -> SliceCounts:
    """The counts of a ``prepare``d frame, for ``slice_table``."""
    lab, w, labelled, amount = (p[c].to_numpy(dtype=float) for c in ("_lab", "_w", "_labelled", "amount"))
    pos = lab * w
    negw = (1 - lab) * w * labelled
    acts = {m: p[f"{m}_action"].to_numpy(dtype=float) for m in MODELS}
    inc_a, cand_a = acts["incumbent"], acts["candidate"]
    index = np.int32 if len(p) < 2 ** 31 else np.int64  # row numbers: half the memory of numpy's int64

    def where(v: np.ndarray) -> np.ndarray:
        return np.flatnonzero(v).astype(index)

    fraud = lab > 0
    ones = {"labelled": where(labelled), "frauds": where(fraud), **{f"{m}_actions": where(a) for m, a in acts.items()},
            # the decisions the models disagree on: what a paired (McNemar) test needs; and the same paired view
            # of recall: who caught what the other missed (actions are 0/1)
            "candidate_only_actions": where(cand_a > inc_a), "incumbent_only_actions": where(inc_a > cand_a),
            "candidate_only_catches": where(fraud & (cand_a > inc_a)),
            "incumbent_only_catches": where(fraud & (inc_a > cand_a))}
    rows = np.flatnonzero((pos != 0) | ((negw != 0) & ((inc_a != 0) | (cand_a != 0))))
    sparse = {"_pos": pos[rows]}
    for m, a in acts.items():
        pa, na = pos[rows] * a[rows], negw[rows] * a[rows]
        sparse.update({f"_{m}_tp": pa, f"_{m}_fp": na, f"{m}_blocked_fraud_amount": pa * amount[rows],
                       f"{m}_false_decline_amount": na * amount[rows]})
    return SliceCounts(ones=ones, rows=rows.astype(index),
                       sparse=pd.DataFrame(sparse), neg=pd.Series(negw))


def slice_table(counts: SliceCounts, codes: np.ndarray, names: np.ndarray, slice_type: str) -> pd.DataFrame:
    """One row per slice (``codes`` into ``names``, as ``slice_codes`` makes them): support and both
    models' metrics side by side."""
    n_s = len(names)
    agg = pd.DataFrame({"transactions": np.bincount(codes, minlength=n_s).astype(float),
                        **{c: np.bincount(codes[r], minlength=n_s).astype(float) for c, r in counts.ones.items()}})
    agg["_neg"] = grouped_sum(counts.neg, codes, n_s).to_numpy()
    sums = grouped_sum(counts.sparse, codes[counts.rows], n_s)
    for c in sums.columns:
        agg[c] = sums[c].to_numpy()
    out = pd.DataFrame(index=pd.Index(names.astype(str), dtype=object))
    out["transactions"] = agg["transactions"].astype(int).to_numpy()
    out["labelled"] = agg["labelled"].astype(int).to_numpy()
    out["frauds"] = agg["frauds"].astype(int).to_numpy()
    agg.index = out.index
    for m in MODELS:
        out[f"{m}_action_rate"] = agg[f"{m}_actions"] / agg["transactions"]
        out[f"{m}_recall"] = agg[f"_{m}_tp"] / agg["_pos"].where(agg["_pos"] > 0)
        out[f"{m}_fpr"] = agg[f"_{m}_fp"] / agg["_neg"].where(agg["_neg"] > 0)
        denom = agg[f"_{m}_tp"] + agg[f"_{m}_fp"]
        out[f"{m}_precision"] = agg[f"_{m}_tp"] / denom.where(denom > 0)
        out[f"{m}_blocked_fraud_amount"] = agg[f"{m}_blocked_fraud_amount"]
        out[f"{m}_false_decline_amount"] = agg[f"{m}_false_decline_amount"]
    for c in ("candidate_only_actions", "incumbent_only_actions", "candidate_only_catches", "incumbent_only_catches"):
        out[c] = agg[c].astype(int)
    out.insert(0, "slice", out.index.astype(str))
    out.insert(0, "slice_type", slice_type)
    return out.reset_index(drop=True)


def slice_metrics(p: pd.DataFrame, by: str | None) -> pd.DataFrame:
    """One row per slice of column ``by`` (or one 'all' row) of a ``prepare``d frame: support and both
    models' metrics side by side."""
    codes, names = slice_codes(p[by]) if by else (np.zeros(len(p), dtype=np.int32), np.array(["all"], dtype=object))
    return slice_table(slice_counts(p), codes, names, by or "all")


def ranking_metrics(p: pd.DataFrame) -> dict:
    """Each model's ROC-AUC and average precision on the labelled rows, inverse-propensity weighted: the
    figures scikit-learn's ``roc_auc_score`` and ``average_precision_score`` give (tests hold them to it),
    by ``exact_ranking``: a plain sort of the legitimate scores instead of scikit-learn's argsorts and checks."""
    labelled = p["_labelled"].to_numpy() > 0
    lab = p["_lab"].to_numpy()[labelled]
    w = p["_w"].to_numpy()[labelled]
    both = len(np.unique(lab)) == 2
    out = {}
    for m in MODELS:
        roc, ap = exact_ranking(lab, p[f"{m}_score"].to_numpy()[labelled], w) if both else (np.nan, np.nan)
        out[f"{m}_roc_auc"], out[f"{m}_pr_auc"] = float(roc), float(ap)
    return out


def exact_ranking(label: np.ndarray, score: np.ndarray, weight: np.ndarray) -> tuple[float, float]:
    """Weighted ROC-AUC (tied scores count half) and average precision (sum over distinct thresholds,
    highest first, of the recall gained times the precision there) of 0/1 ``label`` by ``score``: the
    figures of scikit-learn's ``roc_auc_score`` and ``average_precision_score``. Needs both classes with
    positive weight.

    Without sorting every row with its weight: the legitimate rows' scores are sorted alone (a plain sort,
    several times faster than an argsort), those of weight other than 1 (explored rows: few) with their
    weights, and each fraud looks up the legitimate weight below its score. ROC-AUC is the mean over
    frauds of that weight (ties half); recall moves only at a fraud's score, so average precision needs
    the legitimate weight at or above each distinct fraud score only."""
    pos = label > 0
    sp, wp = score[pos], weight[pos]
    w_neg = weight[~pos]
    unit = w_neg == 1
    s_neg = score[~pos]
    s1 = np.sort(s_neg[unit])
    so = s_neg[~unit]
    order = np.argsort(so, kind="stable")
    so = so[order]
    cum_o = np.concatenate([[0.0], np.cumsum(w_neg[~unit][order])])
    del s_neg, w_neg, unit

    def legit_below(t: np.ndarray, side: str) -> np.ndarray:
        """The legitimate weight scored below ``t`` ('left') or at or below it ('right')."""
        return np.searchsorted(s1, t, side) + cum_o[np.searchsorted(so, t, side)]

    total_neg, total_pos = len(s1) + cum_o[-1], wp.sum()
    roc = float(np.sum(wp * (legit_below(sp, "left") + legit_below(sp, "right"))) / (2 * total_pos * total_neg))
    u, inv = np.unique(sp, return_inverse=True)
    gained = np.bincount(inv.ravel(), weights=wp)[::-1]  # the fraud weight at each distinct score, highest first
    tp = np.cumsum(gained)
    fp = total_neg - legit_below(u[::-1], "left")  # legitimate weight scored at or above it
    ap = float(np.sum(gained / total_pos * tp / (tp + fp)))
    return roc, ap
