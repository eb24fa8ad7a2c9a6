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
N_BINS = 2048  # score bins for the ranking metrics


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
    """Per row of ``rep`` (slices x replicates), the quantiles of its finite values with linear
    interpolation (numpy's default); NaN where fewer than ``min_finite`` replicates were defined (a
    ratio whose denominator was resampled to zero). Slices defined in every replicate are partitioned
    (linear time), the others sorted."""
    b = rep.shape[1]
    r = np.ascontiguousarray(rep)  # one slice per row: partitioning runs along contiguous memory
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


def score_bins(score: np.ndarray, n_bins: int = N_BINS) -> np.ndarray:
    """Each score's bin on a grid uniform in the score's fourth root: fine where legitimate transactions
    crowd near 0 and still under 0.004 wide near 1. Scores must be probabilities in [0, 1]."""
    s = np.asarray(score, dtype=np.float64)
    bad = ~np.isfinite(s) | (s < 0) | (s > 1)
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        raise ValueError(f"Scores must be probabilities in [0, 1]: row {i} has {s[i]!r} "
                         f"({int(bad.sum())} rows out of range).")
    return np.minimum((np.sqrt(np.sqrt(s)) * n_bins).astype(np.int32), n_bins - 1)


def _function_of(fine: np.ndarray, n_fine: int, coarse: np.ndarray, n_coarse: int) -> np.ndarray | None:
    """The coarse code of each fine code when the coarse labels are a function of the fine ones (every
    country of a merchant is that merchant's country), else None."""
    if n_coarse == 1:
        return np.zeros(n_fine, dtype=np.int64)
    m = np.zeros(n_fine, dtype=np.int64)
    m[fine] = coarse
    return m if np.array_equal(m[fine], coarse) else None


class _Ranking:
    """ROC-AUC and PR-AUC (average precision) per slice on binned scores, as cluster columns for the
    bootstrap. Replicates resample the fraud clusters (card and slice) and hold each slice's legitimate
    score distribution at its full-sample value: in fraud, legitimate rows outnumber frauds by two orders
    of magnitude, so their share of a ranking metric's variance is O(1/legit) against O(1/frauds) (the
    coverage tests measure the intervals end to end).

    - ROC-AUC is a ratio of sums over frauds, sum(a_i F_i) / sum(a_i), with F_i the (weighted) share of
      the slice's legitimate rows scored below fraud i (ties count half), so a replicate is exact.
    - Average precision, sum(a_i precision_i) / sum(a_i), depends on the other frauds through each
      precision; a replicate is its first-order expansion in the cluster weights: AP + sum_c (w_c - 1) phi_c.

    Cluster columns: frauds_ipw, frauds_plain, then per model roc_ipw, ap_ipw, roc_plain, ap_plain."""

    def __init__(self, models: list[str], bins: dict[str, np.ndarray], n_bins: int, pos: np.ndarray,
                 neg_extra: np.ndarray, drop: np.ndarray, a: np.ndarray, min_frauds: int):
        self.models, self.bins, self.n_bins, self.min_frauds = models, bins, n_bins, min_frauds
        self.pos, self.neg_extra, self.drop, self.a = pos, neg_extra, drop, a  # row indices, and weights
        self.fine = None  # (codes, n_slices, {model: (legit plain, legit ipw)}) of the first slice type

    def legit_histograms(self, codes: np.ndarray, n_s: int) -> dict[str, tuple[np.ndarray, np.ndarray]]:
        """Per model, labelled legitimate rows per (slice, bin): plain counts and inverse-propensity sums.
        One pass over every row per model (the rows to leave out are subtracted: far fewer); a slice type
        that is a function of the first one (country of merchant) sums the first one's instead."""
        b = self.n_bins
        if self.fine is not None:
            f_codes, n_f, f_hist = self.fine
            m = _function_of(f_codes, n_f, codes, n_s)
            if m is not None:
                agg = sparse.csr_matrix((np.ones(n_f), (m, np.arange(n_f))), shape=(n_s, n_f))
                return {k: (agg @ h[0], agg @ h[1]) for k, h in f_hist.items()}
        out = {}
        for model in self.models:
            bins = self.bins[model]
            key = codes.astype(np.int64) * b + bins
            plain = np.bincount(key, minlength=n_s * b).astype(np.float64)
            plain -= np.bincount(key[self.drop], minlength=n_s * b)
            ipw = plain + np.bincount(key[self.neg_extra], weights=self.a[self.neg_extra] - 1, minlength=n_s * b)
            out[model] = (plain.reshape(n_s, b), ipw.reshape(n_s, b))
        if self.fine is None:
            self.fine = (codes, n_s, out)
        return out

    def plan(self, codes: np.ndarray, n_s: int, card: np.ndarray, n_cards: int, n_boot: int) -> dict:
        legit = self.legit_histograms(codes, n_s)
        b = self.n_bins
        pc, pa = codes[self.pos], self.a[self.pos]
        frauds = np.bincount(pc, minlength=n_s)
        n_legit = next(iter(legit.values()))[0].sum(axis=1)
        ok = (frauds >= self.min_frauds) & (n_legit >= self.min_frauds)
        keep = ok[pc]
        eid = np.cumsum(ok) - 1  # slice code -> eligible index
        e, ea = eid[pc[keep]], pa[keep]
        n_e = int(ok.sum())
        cols = [ea, np.ones(len(ea))]
        point = {}
        for model in self.models:
            pb = self.bins[model][self.pos[keep]]
            for est, (wt, hist) in (("ipw", (ea, legit[model][1])), ("plain", (np.ones(len(ea)), legit[model][0]))):
                n_neg = hist[ok]
                p = np.bincount(e * b + pb, weights=wt, minlength=n_e * b).reshape(n_e, b)
                nt, pt = n_neg.sum(axis=1, keepdims=True), p.sum(axis=1, keepdims=True)
                cn = np.cumsum(n_neg, axis=1)
                below = (cn - 0.5 * n_neg) / nt  # share of legitimate rows scored below, ties half
                ge_p = pt - np.cumsum(p, axis=1) + p  # frauds scored at or above the bin
                ge_n = nt - cn + n_neg
                tot = ge_p + ge_n
                with np.errstate(invalid="ignore", divide="ignore"):
                    prec = np.where(tot > 0, ge_p / np.where(tot > 0, tot, 1), 0.0)
                    h = np.cumsum(np.where(tot > 0, p * ge_n / np.where(tot > 0, tot, 1) ** 2, 0.0), axis=1)
                roc = (p * below).sum(axis=1) / pt[:, 0]
                ap = (p * prec).sum(axis=1) / pt[:, 0]
                roc_col = wt * below[e, pb]
                ap_col = wt * (prec[e, pb] - ap[e] + h[e, pb]) / pt[e, 0]
                cols += [roc_col, ap_col]
                point[(model, est)] = (roc, ap, ap - np.bincount(e, weights=ap_col, minlength=n_e))
        v_rows = np.column_stack(cols)
        uniq, inv = np.unique(e.astype(np.int64) * n_cards + card[self.pos[keep]], return_inverse=True)
        v = np.zeros((len(uniq), v_rows.shape[1]))
        _group_sum(v, inv.ravel(), v_rows)
        return {"ok": ok, "point": point, "v": v.astype(np.float32),
                "bounds": np.searchsorted(uniq // n_cards, np.arange(n_e + 1)),
                "reps": np.zeros((v.shape[1], n_e, n_boot), dtype=np.float32)}

    def rows(self, plan: dict, baseline: str, names: np.ndarray, support: dict, qs: tuple[float, float],
             min_finite: int) -> list[pd.DataFrame]:
        ok, reps, out = plan["ok"], plan["reps"], []
        with np.errstate(invalid="ignore", divide="ignore"):
            for j, est in enumerate(("ipw", "plain")):
                den = reps[j]
                values = {}
                for i, model in enumerate(self.models):
                    base = 2 + 4 * i + 2 * j
                    roc, ap, offset = plan["point"][(model, est)]
                    values[model, "roc_auc"] = (roc, np.where(den > 0, reps[base] / np.where(den > 0, den, 1), np.nan))
                    values[model, "pr_auc"] = (ap, np.where(den > 0, np.clip(offset[:, None] + reps[base + 1], 0, 1),
                                                            np.nan))
                for metric in ("roc_auc", "pr_auc"):
                    series = [(m, *values[m, metric]) for m in self.models]
                    series += [(f"{m}-{baseline}", values[m, metric][0] - values[baseline, metric][0],
                                values[m, metric][1] - values[baseline, metric][1]) for m in self.models if m != baseline]
                    for model, est_v, rep in series:
                        lo, hi = _quantiles(rep, qs, min_finite)
                        full = np.full(len(ok), np.nan)
                        e_lo, e_hi, e_est = full.copy(), full.copy(), full.copy()
                        e_est[ok], e_lo[ok], e_hi[ok] = est_v, lo, hi
                        out.append(pd.DataFrame({"slice": names, "metric": metric, "estimator": est, "model": model,
                                                 "estimate": e_est, "lo": e_lo, "hi": e_hi, **support}))
        return out


def slice_intervals(label: np.ndarray, weight: np.ndarray, amount: np.ndarray, actions: dict[str, np.ndarray],
                    keys: dict[str, np.ndarray], card: np.ndarray, *, baseline: str, n_boot: int = 1000,
                    level: float = 0.95, seed: int = 0, max_weight: float = 100.0, chunk: int = 125,
                    scores: dict[str, np.ndarray] | None = None, n_bins: int = N_BINS,
                    min_ranking_frauds: int = 10) -> pd.DataFrame:
    """Estimates and bootstrap intervals of every metric, per model and as each model minus ``baseline``,
    for every slice of every slice type in ``keys`` (slice type -> one label per row).

    ``label`` is 1/0 with NaN for unlabelled rows (blocked by the policy of the day), ``weight`` the
    inverse propensity (clipped at ``max_weight``), ``actions`` each model's 0/1 decisions. With
    ``scores`` (model -> probability per row; ``baseline`` among them) the table also has ROC-AUC and
    PR-AUC on scores binned by ``score_bins``, for slices with at least ``min_ranking_frauds`` frauds and
    as many labelled legitimate rows (NaN elsewhere). Returns a tidy table: slice_type, slice, metric,
    estimator, model, estimate, lo, hi and the slice's support (transactions, labelled, frauds).

    Every cluster (a card's active rows in one slice) gets one Poisson(1) weight per replicate, shared by
    all its count columns and so by every model (a paired bootstrap). Weights come from one pool drawn
    per chunk of replicates: the clusters of a slice type take consecutive rows of it, in slice order,
    so a replicate's sums are matrix products over contiguous memory. Clusters of different slices or
    slice types may share a pool row; each reported interval is about one slice, so that is harmless."""
    models = list(actions)
    if baseline not in models:
        raise ValueError(f"The 'baseline' parameter of slice_intervals must be one of {models}. Got {baseline!r}.")
    if scores is not None and baseline not in scores:
        raise ValueError(f"The 'scores' of slice_intervals must include the baseline {baseline!r}. "
                         f"Got {list(scores)}.")
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
    card_code, _ = pd.factorize(np.asarray(card))
    n_cards = int(card_code.max()) + 1 if n else 1
    act_card = card_code[act_rows]
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
    ranking = None
    if scores is not None:
        rank_models = [baseline] + [m for m in scores if m != baseline]
        ranking = _Ranking(rank_models, {m: score_bins(scores[m], n_bins) for m in rank_models}, n_bins,
                           pos=np.flatnonzero(lab_all > 0), neg_extra=np.flatnonzero(labelled_all & (lab_all == 0)
                                                                                     & (w_all != 1)),
                           drop=np.flatnonzero(~labelled_all | (lab_all > 0)), a=w_all, min_frauds=min_ranking_frauds)

    codes = {t: _codes(np.asarray(labels)) for t, labels in keys.items()}
    plans = []  # per slice type: its clusters, quiet groups, point estimates and replicate sums
    # the slice type with the most slices first: the ranking metrics sum its histograms for coarser types
    for slice_type in sorted(keys, key=lambda t: -len(codes[t][1])):
        slice_idx, slice_names = codes[slice_type]
        n_s = len(slice_names)
        # clusters: (slice, card) over the active rows, sorted by slice
        uniq, inv = np.unique(slice_idx[act_rows].astype(np.int64) * n_cards + act_card, return_inverse=True)
        v = np.zeros((len(uniq), len(cols)), dtype=np.float32)
        _group_sum(v, inv.ravel(), v_all)
        c_slice = uniq // n_cards
        qk = np.bincount(slice_idx * n_kinds + quiet_kind, minlength=n_s * n_kinds).reshape(n_s, n_kinds)[:, 1:]
        q_s, q_kind = np.nonzero(qk)
        q_k = qk[q_s, q_kind]
        point = np.zeros((n_s, len(cols)))
        _group_sum(point, c_slice, v.astype(np.float64))
        for j, col in enumerate(shared_pos):
            point[:, col] += np.bincount(q_s, weights=kinds[q_kind, j] * q_k, minlength=n_s)
        plans.append({"slice_type": slice_type, "names": np.asarray(slice_names).astype(str), "v": v,
                      "bounds": np.searchsorted(c_slice, np.arange(n_s + 1)), "q_s": q_s,
                      "q_k": q_k, "point": point,
                      "q_mats": [(col, sparse.csr_matrix((kinds[q_kind, j].astype(np.float32),
                                                          (np.arange(len(q_k)), q_s)), shape=(len(q_k), n_s)))
                                 for j, col in enumerate(shared_pos) if kinds[q_kind, j].any()],
                      "reps": np.zeros((len(cols), n_s, n_boot), dtype=np.float32),
                      "ranking": None if ranking is None else ranking.plan(slice_idx, n_s, card_code, n_cards,
                                                                           n_boot)})
    plans.sort(key=lambda p: list(keys).index(p["slice_type"]))
    pool = max([len(p["v"]) for p in plans] + [len(p["ranking"]["v"]) for p in plans if p["ranking"]] + [1])
    rng = np.random.default_rng(seed)
    for b0 in range(0, n_boot, chunk):
        b1 = min(n_boot, b0 + chunk)
        weights = poisson1(rng, (pool, b1 - b0))  # clusters x replicates
        for plan in plans:
            for p in (plan, plan["ranking"]):
                if p is None:
                    continue
                bounds, v, reps = p["bounds"], p["v"], p["reps"]
                for i in np.flatnonzero(np.diff(bounds)):
                    reps[:, i, b0:b1] = v[bounds[i]:bounds[i + 1]].T @ weights[bounds[i]:bounds[i + 1]]
            if len(plan["q_k"]):
                pk = rng.poisson(plan["q_k"], size=(b1 - b0, len(plan["q_k"]))).astype(np.float32)
                for col, q in plan["q_mats"]:  # groups x slices, one per shared column
                    plan["reps"][col, :, b0:b1] += q.T @ pk.T
        del weights
    a = (1 - level) / 2
    min_finite = max(10, n_boot // 2)
    out = []
    for plan in plans:
        point_d = {c: plan["point"][:, j] for j, c in enumerate(cols)}
        reps_d = {c: plan["reps"][j] for j, c in enumerate(cols)}
        support = {"transactions": np.rint(point_d["transactions"]).astype(np.int64),
                   "labelled": np.rint(point_d["labelled"]).astype(np.int64),
                   "frauds": np.rint(point_d["frauds_plain"]).astype(np.int64)}
        parts = []
        for (metric, estimator), (num, den) in METRICS.items():
            values = {m: (_metric(point_d, m, num, den), _metric(reps_d, m, num, den)) for m in models}
            rows = [(m, est, rep) for m, (est, rep) in values.items()]
            rows += [(f"{m}-{baseline}", values[m][0] - values[baseline][0], values[m][1] - values[baseline][1])
                     for m in models if m != baseline]
            for model, est, rep in rows:
                lo, hi = _quantiles(rep, (a, 1 - a), min_finite=min_finite)
                parts.append(pd.DataFrame({"slice": plan["names"], "metric": metric, "estimator": estimator,
                                           "model": model, "estimate": est, "lo": lo, "hi": hi, **support}))
        if plan["ranking"] is not None:
            parts += ranking.rows(plan["ranking"], baseline, plan["names"], support, (a, 1 - a), min_finite)
        t = pd.concat(parts, ignore_index=True)
        t.insert(0, "slice_type", plan["slice_type"])
        out.append(t)
        plan["reps"] = plan["ranking"] = None
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
