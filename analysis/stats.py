"""Slice metrics with confidence intervals: a paired Poisson bootstrap resampled by card, on aggregated counts.

Every metric here is a sum or a ratio of sums of per-row counts (transactions, actions, weighted frauds
caught, weighted legitimate transactions declined, money), so a bootstrap replicate never needs the rows:
only per-cluster count vectors. For each slice type:

- *Active* rows are the ones any model acts on, or matured frauds. A card with an active row is an active
  card. Its rows in a slice form one cluster (card and slice), and every cluster of a card gets the same
  Poisson(1) weight in a replicate: fraud clusters on cards, and the candidate and the incumbent are
  compared on the same resampled cards (a paired bootstrap).
- The other cards carry no action and no fraud: they add only to denominators (transactions, legitimate
  transactions). Their rows are grouped by identical count vector within a slice, and a group of k rows
  gets a Poisson(k) weight (the sum of k independent Poisson(1) weights, exactly). This treats those rows
  as independent rather than clustered by card: clustering moves a denominator of N rows by O(1/N)
  relative, which no interval here can see (the coverage test checks the intervals end to end).

Replicate sums are dense matrix products per slice (BLAS), with Poisson(1) weights drawn by a 16-bit
table lookup (mean 1, variance 1 - 3e-5). Memory is bounded by processing replicates in chunks.

Estimators: *ipw* weights each labelled row by its inverse propensity (exploration rows stand in for the
transactions the policy of the day blocked and so never labelled), with weights clipped at ``max_weight``;
*plain* counts labelled rows as they are (what a naive evaluation on censored data reports).
"""
from __future__ import annotations

import numpy as np
import pandas as pd
from scipy import sparse
from scipy.stats import poisson

SHARED = ["transactions", "labelled", "frauds_ipw", "legit_ipw", "frauds_plain", "legit_plain"]
PER_MODEL = ["actions", "tp_ipw", "fp_ipw", "tp_plain", "fp_plain", "blocked_fraud_amount_ipw",
             "false_decline_amount_ipw", "blocked_fraud_amount_plain", "false_decline_amount_plain"]
# metric -> (estimator, numerator, denominator or None for a sum); numerators are per model
METRICS = {
    ("action_rate", "all"): ("actions", "transactions"),
    ("recall", "ipw"): ("tp_ipw", "frauds_ipw"),
    ("recall", "plain"): ("tp_plain", "frauds_plain"),
    ("fpr", "ipw"): ("fp_ipw", "legit_ipw"),
    ("fpr", "plain"): ("fp_plain", "legit_plain"),
    ("precision", "ipw"): ("tp_ipw", "tp_ipw+fp_ipw"),
    ("precision", "plain"): ("tp_plain", "tp_plain+fp_plain"),
    ("blocked_fraud_amount", "ipw"): ("blocked_fraud_amount_ipw", None),
    ("blocked_fraud_amount", "plain"): ("blocked_fraud_amount_plain", None),
    ("false_decline_amount", "ipw"): ("false_decline_amount_ipw", None),
    ("false_decline_amount", "plain"): ("false_decline_amount_plain", None),
}
_TABLE_BITS = 16


def _poisson1_table() -> np.ndarray:
    cdf = poisson.cdf(np.arange(32), 1.0) * (1 << _TABLE_BITS)
    return np.searchsorted(cdf, np.arange(1 << _TABLE_BITS) + 0.5).astype(np.float32)


_POISSON1 = _poisson1_table()


def poisson1(rng: np.random.Generator, shape: tuple[int, int]) -> np.ndarray:
    """Poisson(1) draws as float32, by table lookup on random 16-bit integers."""
    n = int(np.prod(shape))
    idx = np.frombuffer(rng.bytes(2 * n), dtype=np.uint16)
    return _POISSON1[idx].reshape(shape)


def count_columns(models: list[str]) -> list[str]:
    return SHARED + [f"{m}:{c}" for m in models for c in PER_MODEL]


def _active_counts(lab: np.ndarray, labelled: np.ndarray, w: np.ndarray, amount: np.ndarray,
                   actions: dict[str, np.ndarray]) -> np.ndarray:
    """The count vector of each (active) row, columns as ``count_columns``."""
    fraud_w, legit_w = lab * w, (1 - lab) * w * labelled
    fraud_p, legit_p = lab, (1 - lab) * labelled
    cols = [np.ones(len(lab)), labelled, fraud_w, legit_w, fraud_p, legit_p]
    for a in actions.values():
        cols += [a, fraud_w * a, legit_w * a, fraud_p * a, legit_p * a, fraud_w * a * amount,
                 legit_w * a * amount, fraud_p * a * amount, legit_p * a * amount]
    return np.column_stack(cols).astype(np.float32)


def _metric(sums: dict[str, np.ndarray], model: str, num: str, den: str | None) -> np.ndarray:
    def get(name: str) -> np.ndarray:
        parts = [sums[n if n in SHARED else f"{model}:{n}"] for n in name.split("+")]
        return parts[0] if len(parts) == 1 else np.add(*parts)

    top = get(num)
    if den is None:
        return top
    bottom = get(den)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(bottom > 0, top / np.where(bottom > 0, bottom, 1), np.nan)


def _quantiles(rep: np.ndarray, qs: tuple[float, float], min_finite: int) -> tuple[np.ndarray, np.ndarray]:
    """Per column of ``rep`` (replicates x slices), the quantiles of its finite values with linear
    interpolation (numpy's default); NaN where fewer than ``min_finite`` replicates were defined (a
    ratio whose denominator was resampled to zero). Slices defined in every replicate are partitioned
    (linear time), the others sorted."""
    b = rep.shape[0]
    r = np.ascontiguousarray(rep.T)  # one slice per row: partitioning runs along contiguous memory
    finite = np.isfinite(r)
    n = finite.sum(axis=1)
    full = n == b
    pos = {q: q * (b - 1) for q in qs}
    kth = sorted({int(np.floor(p)) for p in pos.values()} | {min(int(np.floor(p)) + 1, b - 1) for p in pos.values()})
    part = np.partition(r[full], kth, axis=1) if full.any() else None
    rest = np.sort(np.where(finite[~full], r[~full], np.inf), axis=1) if (~full).any() else None
    out = []
    for q in qs:
        v = np.full(r.shape[0], np.nan)
        if part is not None:
            i0 = int(np.floor(pos[q]))
            i1 = min(i0 + 1, b - 1)
            v[full] = part[:, i0] + (pos[q] - i0) * (part[:, i1] - part[:, i0])
        if rest is not None:
            m = np.maximum(n[~full] - 1, 0)
            p_ = q * m
            i0 = np.floor(p_).astype(np.int64)
            i1 = np.minimum(i0 + 1, m)
            v0 = np.take_along_axis(rest, i0[:, None], axis=1)[:, 0]
            v1 = np.take_along_axis(rest, i1[:, None], axis=1)[:, 0]
            with np.errstate(invalid="ignore"):
                v[~full] = v0 + (p_ - i0) * (v1 - v0)
        out.append(np.where(n >= min_finite, v, np.nan))
    return out[0], out[1]


def slice_intervals(label: np.ndarray, weight: np.ndarray, amount: np.ndarray, actions: dict[str, np.ndarray],
                    keys: dict[str, np.ndarray], card: np.ndarray, *, baseline: str, n_boot: int = 1000,
                    level: float = 0.95, seed: int = 0, max_weight: float = 100.0, chunk: int = 125) -> pd.DataFrame:
    """Estimates and bootstrap intervals of every metric, per model and as each model minus ``baseline``,
    for every slice of every slice type in ``keys`` (slice type -> one label per row).

    ``label`` is 1/0 with NaN for unlabelled rows (blocked by the policy of the day), ``weight`` the
    inverse propensity (clipped at ``max_weight``), ``actions`` each model's 0/1 decisions. Returns a tidy
    table: slice_type, slice, metric, estimator, model, estimate, lo, hi and the slice's support
    (transactions, labelled, frauds)."""
    models = list(actions)
    if baseline not in models:
        raise ValueError(f"The 'baseline' parameter of slice_intervals must be one of {models}. Got {baseline!r}.")
    cols = count_columns(models)
    label = np.asarray(label, dtype=float)
    n = len(label)
    labelled_all = ~np.isnan(label)
    lab_all = np.where(labelled_all, label, 0.0)
    w_all = np.where(labelled_all, np.minimum(np.asarray(weight, dtype=float), max_weight), 0.0)
    acts = {m: np.asarray(a, dtype=float) for m, a in actions.items()}
    active = lab_all > 0
    for a in acts.values():
        active |= a > 0
    act_rows = np.flatnonzero(active)
    v_all = _active_counts(lab_all[act_rows], labelled_all[act_rows].astype(float), w_all[act_rows],
                           np.asarray(amount, dtype=float)[act_rows], {m: a[act_rows] for m, a in acts.items()})
    # active rows: their card's dense index; every cluster of a card shares its weight in a replicate
    act_card, _ = pd.factorize(np.asarray(card)[act_rows])
    n_cards = int(act_card.max()) + 1 if len(act_card) else 1
    # quiet rows: one count vector per kind (unlabelled, or labelled legitimate with a given weight);
    # kind 0 = an active row (left out of the quiet groups)
    kind_code, kind_values = pd.factorize(np.where(labelled_all, w_all, -1.0)[~active], sort=True)
    # in SHARED order: transactions, labelled, frauds_ipw, legit_ipw, frauds_plain, legit_plain
    kinds = np.array([[1.0, float(k >= 0), 0.0, max(float(k), 0.0), 0.0, float(k >= 0)] for k in kind_values],
                     dtype=np.float64).reshape(-1, len(SHARED))
    quiet_kind = np.zeros(n, dtype=np.int64)
    quiet_kind[~active] = kind_code + 1
    n_kinds = len(kinds) + 1
    shared_pos = [cols.index(c) for c in SHARED]

    plans = []  # per slice type: its clusters, quiet groups, point estimates and replicate sums
    for slice_type, labels in keys.items():
        slice_idx, slice_names = _codes(np.asarray(labels))
        n_s = len(slice_names)
        # clusters: (slice, card) over the active rows, sorted by slice
        uniq, inv = np.unique(slice_idx[act_rows].astype(np.int64) * n_cards + act_card, return_inverse=True)
        v = np.zeros((len(uniq), len(cols)), dtype=np.float32)
        _group_sum(v, inv.ravel(), v_all)
        c_slice, c_card = uniq // n_cards, uniq % n_cards
        qk = np.bincount(slice_idx * n_kinds + quiet_kind, minlength=n_s * n_kinds).reshape(n_s, n_kinds)[:, 1:]
        q_s, q_kind = np.nonzero(qk)
        q_k = qk[q_s, q_kind]
        point = np.zeros((n_s, len(cols)))
        _group_sum(point, c_slice, v.astype(np.float64))
        for j, col in enumerate(shared_pos):
            point[:, col] += np.bincount(q_s, weights=kinds[q_kind, j] * q_k, minlength=n_s)
        plans.append({"slice_type": slice_type, "names": np.asarray(slice_names).astype(str), "v": v,
                      "c_card": c_card, "identity": bool(len(c_card) == n_cards and (c_card == np.arange(n_cards)).all()),
                      "bounds": np.searchsorted(c_slice, np.arange(n_s + 1)), "q_s": q_s,
                      "q_k": q_k, "point": point,
                      "q_mats": [(col, sparse.csr_matrix((kinds[q_kind, j].astype(np.float32),
                                                          (np.arange(len(q_k)), q_s)), shape=(len(q_k), n_s)))
                                 for j, col in enumerate(shared_pos) if kinds[q_kind, j].any()],
                      "reps": np.zeros((n_boot, n_s, len(cols)), dtype=np.float32)})
    rng = np.random.default_rng(seed)
    for b0 in range(0, n_boot, chunk):
        b1 = min(n_boot, b0 + chunk)
        # one draw per card and replicate, shared by every slice type; cards x replicates, so that
        # gathering each cluster's card is a contiguous row copy
        weights = poisson1(rng, (n_cards, b1 - b0))
        for plan in plans:
            # each cluster's card weights, clusters x replicates (no copy when clusters are the cards)
            wg = weights if plan["identity"] else weights[plan["c_card"]]
            bounds, v, reps = plan["bounds"], plan["v"], plan["reps"]
            for i in np.flatnonzero(np.diff(bounds)):
                reps[b0:b1, i, :] = wg[bounds[i]:bounds[i + 1]].T @ v[bounds[i]:bounds[i + 1]]
            del wg
            if len(plan["q_k"]):
                pk = rng.poisson(plan["q_k"], size=(b1 - b0, len(plan["q_k"]))).astype(np.float32)
                for col, q in plan["q_mats"]:  # groups x slices, one per shared column
                    reps[b0:b1, :, col] += (q.T @ pk.T).T
        del weights
    a = (1 - level) / 2
    out = []
    for plan in plans:
        point_d = {c: plan["point"][:, j] for j, c in enumerate(cols)}
        reps_d = {c: plan["reps"][:, :, j] for j, c in enumerate(cols)}
        for (metric, estimator), (num, den) in METRICS.items():
            values = {m: (_metric(point_d, m, num, den), _metric(reps_d, m, num, den)) for m in models}
            rows = [(m, est, rep) for m, (est, rep) in values.items()]
            rows += [(f"{m}-{baseline}", values[m][0] - values[baseline][0], values[m][1] - values[baseline][1])
                     for m in models if m != baseline]
            for model, est, rep in rows:
                lo, hi = _quantiles(rep, (a, 1 - a), min_finite=max(10, n_boot // 2))
                out.append(pd.DataFrame({
                    "slice_type": plan["slice_type"], "slice": plan["names"], "metric": metric,
                    "estimator": estimator, "model": model, "estimate": est, "lo": lo, "hi": hi,
                    "transactions": np.rint(point_d["transactions"]).astype(np.int64),
                    "labelled": np.rint(point_d["labelled"]).astype(np.int64),
                    "frauds": np.rint(point_d["frauds_plain"]).astype(np.int64)}))
        plan["reps"] = None
        del reps_d
    return pd.concat(out, ignore_index=True)


def _codes(labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Dense codes and sorted names of ``labels``: by counting for small non-negative integers (fast on
    10M rows), else by hashing."""
    if labels.dtype.kind in "iub" and len(labels) and labels.min() >= 0 and labels.max() < 10_000_000:
        present = np.bincount(labels.astype(np.int64)) > 0
        code_of = np.cumsum(present) - 1
        return code_of[labels], np.flatnonzero(present)
    return pd.factorize(labels, sort=True)


def _group_sum(target: np.ndarray, index: np.ndarray, values: np.ndarray) -> None:
    """target[index[i]] += values[i] for every row i (a sparse 0/1 matrix product: one pass in C)."""
    if len(index) == 0:
        return
    m = sparse.csr_matrix((np.ones(len(index), dtype=values.dtype), (index, np.arange(len(index)))),
                          shape=(target.shape[0], len(index)))
    target += m @ values
