"""Slice metrics with confidence intervals: a paired Poisson bootstrap resampled by card, on aggregated counts.

Every threshold metric here is a sum or a ratio of sums of per-row counts (transactions, actions, weighted
frauds caught, weighted legitimate transactions declined, money), so a bootstrap replicate never needs the
rows: only per-cluster count vectors. For each slice type:

- *Active* rows are the ones any model acts on, matured frauds, and rows with a fraud mass (``masses``:
  a censored row's fraud probability, a doubly robust term). A card's active rows in a slice form
  one cluster (card and slice), and a cluster gets one Poisson(1) weight per replicate, shared by all its
  count columns and so by every model: fraud clusters on cards, and the candidate and the incumbent are
  compared on the same resampled cards (a paired bootstrap). Each reported interval is about one slice,
  so clusters of different slices draw from one pool of weights without a per-card gather.
- The other rows carry no action and no fraud: they add only to denominators (transactions, legitimate
  transactions). They are grouped by identical count vector within a slice, and a group of k rows gets a
  Poisson(k) weight (the sum of k independent Poisson(1) weights, exactly). This treats those rows as
  independent rather than clustered by card: clustering moves a denominator of N rows by O(1/N)
  relative, which no interval here can see (the coverage tests check the intervals end to end).

Ranking metrics (ROC-AUC, PR-AUC) are computed on binned scores from per-slice histograms of the
legitimate rows and enter the same bootstrap as cluster columns (see ``_Ranking``).

Replicate sums are dense matrix products per slice, each on one BLAS thread, the slices shared among
a few Python threads (``_run_products``), with Poisson(1) weights drawn by a 16-bit table lookup (mean
1, variance 1 - 3e-5). Memory is bounded by processing replicates in chunks.

Estimators: *ipw* weights each labelled row by its inverse propensity (exploration rows stand in for the
transactions the policy of the day blocked and so never labelled), with weights clipped at ``max_weight``;
*plain* counts labelled rows as they are (what a naive evaluation on censored data reports).
"""
from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pandas as pd
from scipy import sparse
from threadpoolctl import ThreadpoolController

from release.core.distributions import poisson_cdf

SHARED = ["transactions", "labelled", "frauds_ipw", "legit_ipw", "frauds_plain", "legit_plain"]
PER_MODEL = ["actions", "tp_ipw", "fp_ipw", "tp_plain", "fp_plain", "blocked_fraud_amount_ipw",
             "false_decline_amount_ipw", "blocked_fraud_amount_plain", "false_decline_amount_plain"]


def estimator_metrics(estimator: str) -> dict:
    """The metrics of one fraud estimator, (metric, estimator) -> (numerator, denominator or None for a sum),
    numerators per model: IPW's and plain's over their weighted labels, a mass estimator's (``slice_intervals``'
    ``masses``: the direct method's label-or-probability, a doubly robust term) over its masses."""
    e = estimator
    return {("recall", e): (f"tp_{e}", f"frauds_{e}"), ("fpr", e): (f"fp_{e}", f"legit_{e}"),
            ("precision", e): (f"tp_{e}", f"tp_{e}+fp_{e}"),
            ("blocked_fraud_amount", e): (f"blocked_fraud_amount_{e}", None),
            ("false_decline_amount", e): (f"false_decline_amount_{e}", None)}


METRICS = {("action_rate", "all"): ("actions", "transactions"), **estimator_metrics("ipw"), **estimator_metrics("plain")}
_TABLE_BITS = 16
MAX_WORKERS = 4  # threads for the replicate products
RANKING_CELLS = 1 << 23  # score bins for the ranking metrics: (slices of the largest type) x bins at most this,
MIN_BINS, MAX_BINS = 2048, 1 << 16  # within these


# the level of the intervals in the tidy metrics table; a contract judged at another confidence rescales them
# (contracts.base.wide_metric)
INTERVAL_LEVEL = 0.95


def _poisson1_table() -> np.ndarray:
    cdf = poisson_cdf(np.arange(32), 1.0) * (1 << _TABLE_BITS)
    return np.searchsorted(cdf, np.arange(1 << _TABLE_BITS) + 0.5).astype(np.float32)


_POISSON1 = _poisson1_table()
_BLAS = ThreadpoolController()


def poisson1(rng: np.random.Generator, shape: tuple[int, int]) -> np.ndarray:
    """Poisson(1) draws as float32, by table lookup on random 16-bit integers."""
    n = int(np.prod(shape))
    idx = rng.bit_generator.random_raw((n + 3) // 4).view(np.uint16)[:n]  # raw 64-bit words: 3x rng.bytes' speed
    return _POISSON1[idx].reshape(shape)


def _shared(name: str) -> bool:
    """Whether a count column is one per row whatever the model (support, and each estimator's frauds and
    legitimate mass), not one per model."""
    return name in SHARED or name.split("_")[0] in ("frauds", "legit")


def count_columns(models: list[str], masses: tuple[str, ...] = ()) -> list[str]:
    shared = SHARED + [f"{c}_{e}" for e in masses for c in ("frauds", "legit")]
    per = PER_MODEL + [f"{c}_{e}" for e in masses for c in ("tp", "fp", "blocked_fraud_amount", "false_decline_amount")]
    return shared + [f"{m}:{c}" for m in models for c in per]


MONEY = ("blocked_fraud_amount", "false_decline_amount")


def _columns_read(models: list[str], estimators: tuple[str, ...], masses: tuple[str, ...] = (),
                  money: bool = True) -> list[str]:
    """The count columns (``count_columns(models, masses)``, in that order) whose replicates the metrics of
    ``estimators`` and ``masses`` read: the only ones worth keeping replicate sums of."""
    read = set()
    for (_, estimator), (num, den) in _metrics_of(estimators, masses, money).items():
        for name in [num] + ([den] if den else []):
            for part in name.split("+"):
                read.update([part] if _shared(part) else [f"{m}:{part}" for m in models])
    return [c for c in count_columns(models, masses) if c in read]


def _metrics_of(estimators: tuple[str, ...], masses: tuple[str, ...], money: bool = True) -> dict:
    out = {k: v for k, v in METRICS.items() if k[1] in estimators}
    for e in masses:
        out.update(estimator_metrics(e))
    return out if money else {k: v for k, v in out.items() if k[0] not in MONEY}


def _same_slices(a: tuple[np.ndarray, np.ndarray], b: tuple[np.ndarray, np.ndarray]) -> bool:
    """Whether two (codes, names) pairs slice the rows the same way (a pooled type that pooled nothing)."""
    return a[0] is b[0] or (len(a[1]) == len(b[1]) and np.array_equal(a[1], b[1]) and np.array_equal(a[0], b[0]))


def _active_counts(lab: np.ndarray, labelled: np.ndarray, w: np.ndarray, amount: np.ndarray,
                   actions: dict[str, np.ndarray], masses: dict[str, np.ndarray] | None = None) -> np.ndarray:
    """The count vector of each (active) row, columns as ``count_columns(actions, masses)``. A mass
    estimator counts every row, its mass as fraud and one minus it as legitimate."""
    masses = masses or {}
    fraud_w, legit_w = lab * w, (1 - lab) * w * labelled
    fraud_p, legit_p = lab, (1 - lab) * labelled
    cols = [np.ones(len(lab)), labelled, fraud_w, legit_w, fraud_p, legit_p]
    for m in masses.values():
        cols += [m, 1 - m]
    for a in actions.values():
        cols += [a, fraud_w * a, legit_w * a, fraud_p * a, legit_p * a, fraud_w * a * amount,
                 legit_w * a * amount, fraud_p * a * amount, legit_p * a * amount]
        for m in masses.values():
            cols += [m * a, (1 - m) * a, m * a * amount, (1 - m) * a * amount]
    return np.column_stack(cols).astype(np.float32)


def _metric(sums: dict[str, np.ndarray], model: str, num: str, den: str | None) -> np.ndarray:
    def get(name: str) -> np.ndarray:
        parts = [sums[n if _shared(n) else f"{model}:{n}"] for n in name.split("+")]
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
    ratio whose denominator was resampled to zero). Rows are sorted (NaN sorts last; numpy's vectorised
    float32 sort beats partitioning here)."""
    r = np.sort(rep, axis=1)
    n = np.isfinite(r).sum(axis=1)
    m = np.maximum(n - 1, 0)
    out = []
    for q in qs:
        p_ = q * m
        i0 = np.floor(p_).astype(np.int64)
        i1 = np.minimum(i0 + 1, m)
        v0 = np.take_along_axis(r, i0[:, None], axis=1)[:, 0].astype(np.float64)
        v1 = np.take_along_axis(r, i1[:, None], axis=1)[:, 0].astype(np.float64)
        with np.errstate(invalid="ignore"):
            out.append(np.where(n >= min_finite, v0 + (p_ - i0) * (v1 - v0), np.nan))
    return out[0], out[1]


def ranking_bins(max_slices: int) -> int:
    """As many score bins as the histograms of the slice type with the most slices can afford: 65,536 for
    a few hundred slices, 2,048 for thousands. Ties within a bin count half in ROC-AUC and whole in
    average precision (scikit-learn's treatment of tied scores), so more bins mean estimates closer to
    the raw scores'."""
    return int(max(MIN_BINS, min(MAX_BINS, 1 << int(np.log2(max(RANKING_CELLS // max(max_slices, 1), 1))))))


def score_bins(score: np.ndarray, n_bins: int) -> np.ndarray:
    """Each score's bin on a grid uniform in the score's fourth root: fine where legitimate transactions
    crowd near 0 and still under 0.004 wide near 1. Probabilities in [0, 1] are binned as they are; a
    model whose scores leave [0, 1] (a margin, a shifted score) is binned on their logistic transform,
    which keeps their order. Scores must be finite."""
    s = np.asarray(score, dtype=np.float64)
    if not ((s >= 0) & (s <= 1)).all():  # NaN fails both
        bad = ~np.isfinite(s)
        if bad.any():
            i = int(np.flatnonzero(bad)[0])
            raise ValueError(f"Scores must be finite numbers: row {i} has {float(s[i])!r} "
                             f"({int(bad.sum())} rows are not finite).")
        s = 1 / (1 + np.exp(-s))
    return np.minimum((np.sqrt(np.sqrt(s)) * n_bins).astype(np.int32), n_bins - 1)


def _function_of(fine: np.ndarray, n_fine: int, coarse: np.ndarray, n_coarse: int) -> np.ndarray | None:
    """The coarse code of each fine code when the coarse labels are a function of the fine ones (every
    country of a merchant is that merchant's country), else None."""
    if n_coarse == 1:
        return np.zeros(n_fine, dtype=np.int64)
    m = np.zeros(n_fine, dtype=np.int64)
    head = slice(0, 100_000)  # most types that are not a function of the fine one show it in a sample
    m[fine[head]] = coarse[head]
    if not np.array_equal(m[fine[head]], coarse[head]):
        return None
    m[fine] = coarse
    return m if np.array_equal(m[fine], coarse) else None


class _Slicing:
    """Per-slice histograms for every slice type with as few passes over the rows as possible. The slice
    type with the most slices (merchant) is counted directly; a type that is a function of it (country of
    merchant, merchant size, all traffic) sums its histogram; the remaining types (amount band, card
    segment) are counted once on their joint codes and summed from that."""

    def __init__(self, codes: dict[str, tuple[np.ndarray, np.ndarray]], max_joint: int = 1 << 14):
        self.codes = {t: (c, len(names)) for t, (c, names) in codes.items()}
        self.fine = max(self.codes, key=lambda t: self.codes[t][1])
        f_codes, n_f = self.codes[self.fine]
        self.source = {}  # type -> (source "fine" or "joint", source code -> type code)
        rest = []
        for t, (c, n) in self.codes.items():
            m = None if t == self.fine else _function_of(f_codes, n_f, c, n)
            if m is not None:
                self.source[t] = ("fine", m)
            elif t != self.fine:
                rest.append(t)
        self.joint = None
        if len(rest) > 1 and np.prod([self.codes[t][1] for t in rest], dtype=float) <= max_joint:
            joint = np.zeros(len(f_codes), dtype=np.int64)
            radix = []
            for t in rest:
                c, n = self.codes[t]
                joint = joint * n + c
                radix.append(n)
            digits = np.indices(radix).reshape(len(rest), -1)  # joint code -> each member's code
            self.joint = (joint, int(np.prod(radix)))
            for i, t in enumerate(rest):
                self.source[t] = ("joint", digits[i])

    def histograms(self, count) -> dict:
        """``count(codes, n_slices)`` -> an array with one row per slice, or a tuple of them; returns the
        same for every slice type."""
        base = {"fine": count(*self.codes[self.fine])}
        if self.joint is not None:
            base["joint"] = count(*self.joint)
        out = {}
        for t, (c, n) in self.codes.items():
            if t == self.fine:
                out[t] = base["fine"]
            elif t in self.source:
                src, m = self.source[t]
                agg = sparse.csr_matrix((np.ones(len(m)), (m, np.arange(len(m)))), shape=(n, len(m)))
                h = base[src]
                out[t] = tuple(agg @ x for x in h) if isinstance(h, tuple) else agg @ h
            else:
                out[t] = count(c, n)
        return out


class _Ranking:
    """ROC-AUC and PR-AUC (average precision) per slice on binned scores (``score_bins``; ties within a
    bin as scikit-learn treats tied scores), as cluster columns for the bootstrap. Clusters are (card,
    slice) over the frauds and the legitimate rows a model acts on; the other legitimate rows are held at
    their full-sample histogram. In fraud, legitimate rows outnumber frauds by two orders of magnitude,
    so the rows held fixed carry an O(1/legit) share of the variance against O(1/frauds). a_i below is
    a row's inverse-propensity weight (clipped; 1 for the plain estimator).

    - ROC-AUC is a ratio of sums over frauds, sum(a_i F_i) / sum(a_i), with F_i the (weighted) share of
      the slice's legitimate rows scored below fraud i (ties count half): a replicate is exact in the
      frauds' weights. A single model's interval adds the legitimate rows' first-order term as a normal
      draw (rows independent); the paired difference leaves it out, as both models' terms sit on the
      same rows and mostly cancel.
    - Average precision depends on every fraud's precision, which the frauds and the top-scored
      legitimate rows move; a replicate is its first-order expansion in the cluster weights,
      AP + sum_c (w_c - 1) phi_c, clipped to [0, 1].

    Only slices with at least ``min_frauds`` frauds and as many legitimate rows get ranking metrics.
    Cluster columns: frauds_ipw, frauds_plain, then per model roc_ipw, ap_ipw, roc_plain, ap_plain."""

    def __init__(self, models: list[str], bins: dict[str, np.ndarray], n_bins: int, pos: np.ndarray,
                 act_legit: np.ndarray, neg_extra: np.ndarray, drop: np.ndarray, a: np.ndarray, min_frauds: int):
        self.models, self.bins, self.n_bins, self.min_frauds = models, bins, n_bins, min_frauds
        self.pos, self.act_legit, self.neg_extra, self.drop, self.a = pos, act_legit, neg_extra, drop, a
        self.legit = {}  # slice type -> model -> (plain, ipw, ipw squared) legitimate rows per (slice, bin)

    def legit_histograms(self, slicing: _Slicing) -> None:
        """Per slice type and model, labelled legitimate rows per (slice, bin): plain counts, and the
        (sparse) corrections that make them inverse-propensity sums and sums of squared weights. One pass
        over every row per model and counted type (the rows to leave out are subtracted: far fewer)."""
        b = self.n_bins
        self.legit = {t: {} for t in slicing.codes}
        for model in self.models:
            bins = self.bins[model]

            def count(codes: np.ndarray, n_s: int) -> tuple:
                key = codes.astype(np.int64) * b + bins
                plain = np.bincount(key, minlength=n_s * b)
                np.subtract.at(plain, key[self.drop], 1)  # far fewer rows than a second full count
                extra = key[self.neg_extra]
                a = self.a[self.neg_extra]

                def corr(w: np.ndarray) -> sparse.csr_matrix:
                    return sparse.csr_matrix((w, (extra // b, extra % b)), shape=(n_s, b))

                return plain.reshape(n_s, b).astype(np.float32), corr(a - 1), corr(a ** 2 - 1)

            for t, h in slicing.histograms(count).items():
                self.legit[t][model] = h

    def plan(self, slice_type: str, codes: np.ndarray, n_s: int, card: np.ndarray, n_cards: int,
             n_boot: int) -> dict:
        legit = self.legit[slice_type]
        b = self.n_bins
        frauds = np.bincount(codes[self.pos], minlength=n_s)
        n_legit = next(iter(legit.values()))[0].sum(axis=1)
        ok = (frauds >= self.min_frauds) & (n_legit >= self.min_frauds)
        eid = np.cumsum(ok) - 1  # slice code -> eligible index
        n_e = int(ok.sum())
        # the rows in clusters: frauds, and the legitimate rows a model acts on (the top of the score range,
        # where a legitimate row moves average precision most); the others are held fixed
        rows = np.concatenate([self.pos, self.act_legit])
        is_pos = np.arange(len(rows)) < len(self.pos)
        keep = ok[codes[rows]]
        rows, is_pos = rows[keep], is_pos[keep]
        e, ra = eid[codes[rows]], self.a[rows]
        cols = [np.where(is_pos, ra, 0.0), is_pos.astype(float)]
        point = {}
        for model in self.models:
            rb = self.bins[model][rows]
            plain = legit[model][0][ok].astype(np.float64)
            ipw = plain + legit[model][1][ok].toarray()
            ipw_sq = plain + legit[model][2][ok].toarray()
            for est, (wt, n_neg, hist_sq) in (("ipw", (ra, ipw, ipw_sq)), ("plain", (np.ones(len(ra)), plain, plain))):
                p = np.bincount(e[is_pos] * b + rb[is_pos], weights=wt[is_pos], minlength=n_e * b).reshape(n_e, b)
                nt, pt = n_neg.sum(axis=1, keepdims=True), p.sum(axis=1, keepdims=True)
                cn = np.cumsum(n_neg, axis=1)
                below = (cn - 0.5 * n_neg) / nt  # share of legitimate rows scored below, ties half
                ge_p = pt - np.cumsum(p, axis=1) + p  # frauds scored at or above the bin
                ge_n = nt - cn + n_neg
                tot = ge_p + ge_n
                with np.errstate(invalid="ignore", divide="ignore"):
                    prec = np.where(tot > 0, ge_p / np.where(tot > 0, tot, 1), 0.0)
                    sq = np.where(tot > 0, tot, 1) ** 2
                    h_pos = np.cumsum(np.where(tot > 0, p * ge_n / sq, 0.0), axis=1)
                    h_neg = np.cumsum(np.where(tot > 0, p * ge_p / sq, 0.0), axis=1)
                roc = (p * below).sum(axis=1) / pt[:, 0]
                ap = (p * prec).sum(axis=1) / pt[:, 0]
                roc_col = np.where(is_pos, wt * below[e, rb], 0.0)
                # d AP / d weight: a fraud adds its precision and raises the precision of the frauds scored
                # at or below it; a legitimate row lowers the precision of the frauds scored at or below it
                ap_col = np.where(is_pos, wt * (prec[e, rb] - ap[e] + h_pos[e, rb]), -wt * h_neg[e, rb]) / pt[e, 0]
                cols += [roc_col, ap_col]
                # the legitimate rows' first-order share of ROC-AUC's variance, rows independent: for each,
                # (share of frauds scored above it - AUC) / legit, squared and weighted
                with np.errstate(invalid="ignore", divide="ignore"):
                    above = (ge_p - 0.5 * p) / pt
                    roc_var_legit = (hist_sq * (above - roc[:, None]) ** 2).sum(axis=1) / nt[:, 0] ** 2
                point[(model, est)] = (roc, ap, ap - np.bincount(e, weights=ap_col, minlength=n_e), roc_var_legit)
        v_rows = np.column_stack(cols)
        uniq, inv = np.unique(e.astype(np.int64) * n_cards + card[rows], return_inverse=True)
        v = np.zeros((len(uniq), v_rows.shape[1]))
        _group_sum(v, inv.ravel(), v_rows)
        return {"ok": ok, "point": point, "v": v.astype(np.float32),
                "bounds": np.searchsorted(uniq // n_cards, np.arange(n_e + 1)),
                "reps": np.zeros((n_e, v.shape[1], n_boot), dtype=np.float32)}  # slices x columns x replicates

    def rows(self, plan: dict, baseline: str, names: np.ndarray, support: dict, qs: tuple[float, float],
             min_finite: int, rng: np.random.Generator) -> list[pd.DataFrame]:
        ok, reps, out = plan["ok"], plan["reps"], []
        with np.errstate(invalid="ignore", divide="ignore"):
            for j, est in enumerate(("ipw", "plain")):
                den = reps[:, j]
                values, single = {}, {}
                for i, model in enumerate(self.models):
                    base = 2 + 4 * i + 2 * j
                    roc, ap, offset, roc_var_legit = plan["point"][(model, est)]
                    defined = den > 0  # a replicate whose resampled frauds weigh nothing has no figure
                    values[model, "roc_auc"] = (roc, np.where(defined, reps[:, base] / np.where(defined, den, 1),
                                                              np.nan))
                    single[model] = np.sqrt(roc_var_legit)[:, None] * rng.standard_normal(den.shape)
                    values[model, "pr_auc"] = (ap, np.where(defined, np.clip(offset[:, None] + reps[:, base + 1], 0, 1),
                                                            np.nan))
                for metric in ("roc_auc", "pr_auc"):
                    # a single model's ROC-AUC adds its legitimate rows' term, drawn as a normal; the paired
                    # difference leaves it out: the two models' terms are on the same rows and mostly cancel
                    series = [(m, values[m, metric][0],
                               values[m, metric][1] + (single[m] if metric == "roc_auc" else 0)) for m in self.models]
                    series += [(f"{m}-{baseline}", values[m, metric][0] - values[baseline, metric][0],
                                values[m, metric][1] - values[baseline, metric][1])
                               for m in self.models if m != baseline]
                    for model, est_v, rep in series:
                        lo, hi = _quantiles(rep, qs, min_finite)
                        full = np.full(len(ok), np.nan)
                        e_lo, e_hi, e_est = full.copy(), full.copy(), full.copy()
                        e_est[ok], e_lo[ok], e_hi[ok] = est_v, lo, hi
                        out.append(pd.DataFrame({"slice": names, "metric": metric, "estimator": est, "model": model,
                                                 "estimate": e_est, "lo": e_lo, "hi": e_hi, **support}))
        return out


def slice_intervals(label: np.ndarray, weight: np.ndarray, amount: np.ndarray, actions: dict[str, np.ndarray],
                    keys: dict[str, np.ndarray | tuple[np.ndarray, np.ndarray]], card: np.ndarray, *,
                    baseline: str, n_boot: int = 1000,
                    level: float = INTERVAL_LEVEL, seed: int = 0, max_weight: float = 100.0, chunk: int = 125,
                    scores: dict[str, np.ndarray] | None = None, n_bins: int | None = None,
                    min_ranking_frauds: int = 10, estimators: tuple[str, ...] = ("all", "ipw", "plain"),
                    masses: dict[str, tuple[np.ndarray, set[str] | None]] | None = None,
                    estimators_by_type: dict[str, tuple[str, ...]] | None = None,
                    money: set[str] | None = None) -> pd.DataFrame:
    """Estimates and bootstrap intervals of every metric, per model and as each model minus ``baseline``,
    for every slice of every slice type in ``keys`` (slice type -> one label per row, or the labels already
    factorized as a (codes, names) pair: names sorted, codes 0..len(names)-1 with every name present, as
    ``_codes`` would make them; a caller slicing the same rows several times factorizes them once).

    ``label`` is 1/0 with NaN for unlabelled rows (blocked by the policy of the day), ``weight`` the
    inverse propensity (clipped at ``max_weight``), ``actions`` each model's 0/1 decisions. With
    ``scores`` (model -> probability per row; ``baseline`` among them) the table also has ROC-AUC and
    PR-AUC on scores binned by ``score_bins`` (``n_bins`` bins, by default ``ranking_bins``), for slices
    with at least ``min_ranking_frauds`` frauds and as many labelled legitimate rows (NaN elsewhere).
    Returns a tidy table: slice_type, slice, metric, estimator, model, estimate, lo, hi and the slice's
    support (transactions, labelled, frauds). ``estimators`` names the estimators reported ("all" is the
    action rate); ``estimators_by_type`` narrows them (mass estimators included) for some slice types (a
    type with thousands of slices whose only reader wants action rates). Each slice type's products carry only the count columns
    its metrics read (and the support columns), and only those get replicate sums. Ranking metrics come
    with the ipw or plain estimators. ``money`` names the slice types whose money metrics (blocked fraud
    and false-decline amounts) are reported (None: every type); money's columns are a third of the rest.

    ``masses`` adds estimators that count a fraud *mass* on every row (name -> (mass per row, the slice
    types it is reported for, None for all)): the direct method (a row's label, or its fraud probability
    when censored) and doubly robust terms. Their counts ride in the same products as the rest, so every
    estimator's interval comes from the same resampled clusters (one paired bootstrap, one pass).

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
    label = np.asarray(label, dtype=float)
    n = len(label)
    labelled_all = ~np.isnan(label)
    lab_all = np.where(labelled_all, label, 0.0)
    w_all = np.where(labelled_all, np.minimum(np.asarray(weight, dtype=float), max_weight), 0.0)
    acts = {m: np.asarray(a, dtype=float) for m, a in actions.items()}
    masses = {e: (np.asarray(m, dtype=float), None if types is None else set(types))
              for e, (m, types) in (masses or {}).items()}
    mass_names = tuple(masses)
    cols = count_columns(models, mass_names)
    active = lab_all != 0  # a fraud
    for a in acts.values():
        active |= a > 0
    acted = active.copy()  # the frauds and the rows a model acts on (the ranking's clusters)
    for m, _ in masses.values():
        active |= m != 0  # a censored row's fraud probability, a doubly robust term of either sign
    act_rows = np.flatnonzero(active)
    v_all = _active_counts(lab_all[act_rows], labelled_all[act_rows].astype(float), w_all[act_rows],
                           np.asarray(amount, dtype=float)[act_rows], {m: a[act_rows] for m, a in acts.items()},
                           {e: m[act_rows] for e, (m, _) in masses.items()})
    masses = {e: types for e, (_, types) in masses.items()}  # the masses are in the count vectors now
    # active rows: their card's dense index (clusters are formed over active rows only)
    act_card, _ = pd.factorize(np.asarray(card)[act_rows])
    n_cards = int(act_card.max()) + 1 if len(act_card) else 1
    card_code = np.full(n, -1, dtype=np.int64)
    card_code[act_rows] = act_card
    # quiet rows: one count vector per kind (unlabelled, or labelled legitimate with a given weight);
    # kind 0 = an active row (left out of the quiet groups)
    kind_code, kind_values = _factorize_few(np.where(labelled_all, w_all, -1.0)[~active], common=1.0)
    # in the shared columns' order: transactions, labelled, frauds_ipw, legit_ipw, frauds_plain, legit_plain,
    # then each mass estimator's frauds (0: a quiet row's mass is 0) and legitimate mass (1)
    kinds = np.array([[1.0, float(k >= 0), 0.0, max(float(k), 0.0), 0.0, float(k >= 0)] + [0.0, 1.0] * len(masses)
                      for k in kind_values], dtype=np.float64).reshape(-1, len(SHARED) + 2 * len(masses))
    quiet_kind = np.zeros(n, dtype=np.int64)
    quiet_kind[~active] = kind_code + 1
    del kind_code
    n_kinds = len(kinds) + 1
    shared_cols = [c for c in cols if _shared(c)]
    codes = {t: _codes(labels) for t, labels in keys.items()}
    ranking = None
    if scores is not None:
        n_bins = n_bins or ranking_bins(max(len(c[1]) for c in codes.values()))
        rank_models = [baseline] + [m for m in scores if m != baseline]
        legit = labelled_all & (lab_all == 0)
        ranking = _Ranking(rank_models, {m: score_bins(scores[m], n_bins) for m in rank_models}, n_bins,
                           pos=np.flatnonzero(lab_all > 0), act_legit=np.flatnonzero(acted & legit),
                           neg_extra=np.flatnonzero(legit & (w_all != 1)),  # legit rows whose weight is not 1
                           drop=np.flatnonzero(~labelled_all | (lab_all > 0)),  # rows that are not labelled legit
                           a=w_all, min_frauds=min_ranking_frauds)

    slicing = _Slicing(codes)
    quiet = slicing.histograms(lambda c, n_s: np.bincount(c.astype(np.int64) * n_kinds + quiet_kind,
                                                          minlength=n_s * n_kinds).reshape(n_s, n_kinds))
    if ranking is not None:
        ranking.legit_histograms(slicing)
    # ten million rows each: what the plans no longer read is let go before their arrays are made
    del slicing, lab_all, labelled_all, active, acted
    quiet_kind = None  # (read by the counting closure above)
    plans = []  # per slice type: its clusters, quiet groups, point estimates and replicate sums
    for slice_type in keys:
        slice_idx, slice_names = codes[slice_type]
        n_s = len(slice_names)
        # the estimators and mass estimators reported for this slice type, and so its count columns: the ones
        # their metrics read, and the support
        narrowed = (estimators_by_type or {}).get(slice_type)
        est_t = tuple(estimators if narrowed is None else narrowed)
        here = tuple(e for e, types in masses.items()
                     if (types is None or slice_type in types) and (narrowed is None or e in narrowed))
        money_t = money is None or slice_type in money
        read = set(_columns_read(models, est_t, here, money_t)) | {"transactions", "labelled", "frauds_plain"}
        cols_t = [c for c in cols if c in read]
        sel = None if len(cols_t) == len(cols) else [cols.index(c) for c in cols_t]
        kept = cols_t
        ranked = ranking is not None and bool({"ipw", "plain"} & set(est_t))
        twin = next((p for p in plans if p["twin"] is None
                     and (p["masses"], p["estimators"], p["money"]) == (here, est_t, money_t)
                     and (p["ranking"] is not None) == ranked
                     and _same_slices(codes[p["slice_type"]], codes[slice_type])), None)
        if twin is not None:
            # the same slices as a type planned before (a pooled type that pooled nothing): the same clusters
            # on the same pool rows, so the same products, copied from it; its quiet groups draw their own
            plans.append({**twin, "slice_type": slice_type, "twin": twin,
                          "reps": np.zeros_like(twin["reps"])})
            continue
        # clusters: (slice, card) over the active rows, sorted by slice
        uniq, inv = np.unique(slice_idx[act_rows].astype(np.int64) * n_cards + act_card, return_inverse=True)
        v = np.zeros((len(uniq), len(cols_t)), dtype=np.float32)
        _group_sum(v, inv.ravel(), v_all if sel is None else v_all[:, sel])
        c_slice = uniq // n_cards
        qk = np.rint(quiet[slice_type][:, 1:]).astype(np.int64)
        q_s, q_kind = np.nonzero(qk)
        q_k = qk[q_s, q_kind]
        point = np.zeros((n_s, len(cols_t)))
        _group_sum(point, c_slice, v.astype(np.float64))
        shared_j = [(j, c) for j, c in enumerate(shared_cols) if c in cols_t]  # kinds' column j, for column c
        for j, c in shared_j:
            point[:, cols_t.index(c)] += np.bincount(q_s, weights=kinds[q_kind, j] * q_k, minlength=n_s)
        plans.append({"slice_type": slice_type, "twin": None, "names": np.asarray(slice_names).astype(str), "v": v,
                      "bounds": np.searchsorted(c_slice, np.arange(n_s + 1)), "q_s": q_s,
                      "q_k": q_k, "point": point, "masses": here, "estimators": est_t, "money": money_t,
                      "cols": cols_t,
                      "kept_cols": kept,
                      "q_mats": [(kept.index(c), sparse.csr_matrix((kinds[q_kind, j].astype(np.float32),
                                                                   (np.arange(len(q_k)), q_s)), shape=(len(q_k), n_s)))
                                 for j, c in shared_j if c in kept and kinds[q_kind, j].any()],
                      "reps": np.zeros((n_s, len(kept), n_boot), dtype=np.float32),  # slices x kept cols x replicates
                      "ranking": None if not ranked else ranking.plan(slice_type, slice_idx, n_s, card_code,
                                                                           n_cards, n_boot)})
    del v_all, card_code, w_all
    if ranking is not None:
        ranking.legit = ranking.bins = ranking.a = None  # the histograms and clusters are in the plans now
    pool = max([len(p["v"]) for p in plans] + [len(p["ranking"]["v"]) for p in plans if p["ranking"]] + [1])
    products = [p for plan in plans if plan["twin"] is None for p in (plan, plan["ranking"]) if p is not None]
    groups = _product_groups(products, _workers())
    # the clusters' weights come from their own generator, drawn a chunk ahead on a thread of their own while
    # the products of the chunk before run; the quiet groups and the ranking's normal terms from another
    rng_clusters, rng = (np.random.default_rng(s) for s in np.random.SeedSequence(seed).spawn(2))
    with ThreadPoolExecutor(1) as drawing:
        ahead = drawing.submit(poisson1, rng_clusters, (pool, min(n_boot, chunk)))
        for b0 in range(0, n_boot, chunk):
            b1 = min(n_boot, b0 + chunk)
            weights = ahead.result()  # clusters x replicates
            if b1 < n_boot:
                ahead = drawing.submit(poisson1, rng_clusters, (pool, min(n_boot, b1 + chunk) - b1))
            _run_products(groups, weights, b0, b1)
            _add_quiet(plans, rng, b0, b1)
            del weights
    del groups  # (its views hold the clusters' count vectors)
    for plan in plans:  # the replicates are summed: the clusters' count vectors are not read again
        plan["v"] = None
        if plan["ranking"] is not None:
            plan["ranking"]["v"] = None
    a = (1 - level) / 2
    min_finite = max(10, n_boot // 2)
    out = []
    for plan in plans:
        point_d = {c: plan["point"][:, j] for j, c in enumerate(plan["cols"])}
        reps_d = {c: plan["reps"][:, j] for j, c in enumerate(plan["kept_cols"])}
        support = {"transactions": np.rint(point_d["transactions"]).astype(np.int64),
                   "labelled": np.rint(point_d["labelled"]).astype(np.int64),
                   "frauds": np.rint(point_d["frauds_plain"]).astype(np.int64)}
        names, n_s = plan["names"], len(plan["names"])
        cols_out = {"metric": [], "estimator": [], "model": [], "estimate": [], "lo": [], "hi": []}
        for (metric, estimator), (num, den) in _metrics_of(plan["estimators"], plan["masses"], plan["money"]).items():
            values = {m: (_metric(point_d, m, num, den), _metric(reps_d, m, num, den)) for m in models}
            rows = [(m, est, rep) for m, (est, rep) in values.items()]
            rows += [(f"{m}-{baseline}", values[m][0] - values[baseline][0], values[m][1] - values[baseline][1])
                     for m in models if m != baseline]
            if metric == "action_rate":  # the relative change: its interval carries the baseline's own noise
                with np.errstate(invalid="ignore", divide="ignore"):
                    rows += [(f"{m}/{baseline}", values[m][0] / values[baseline][0],
                              np.where(values[baseline][1] > 0, values[m][1] / values[baseline][1], np.nan))
                             for m in models if m != baseline]
            for model, est, rep in rows:
                lo, hi = _quantiles(rep, (a, 1 - a), min_finite=min_finite)
                for k, v in (("metric", metric), ("estimator", estimator), ("model", model)):
                    cols_out[k].append(np.full(n_s, v, dtype=object))
                for k, v in (("estimate", est), ("lo", lo), ("hi", hi)):
                    cols_out[k].append(np.asarray(v, dtype=np.float64))
        k = len(cols_out["metric"])  # one DataFrame per slice type, not one per metric and model
        parts = [pd.DataFrame({"slice": np.tile(np.asarray(names, dtype=object), k),
                               **{c: np.concatenate(v) for c, v in cols_out.items()},
                               **{c: np.tile(v, k) for c, v in support.items()}})] if k else []
        if plan["ranking"] is not None:
            parts += ranking.rows(plan["ranking"], baseline, plan["names"], support, (a, 1 - a), min_finite, rng)
        t = pd.concat(parts, ignore_index=True)
        t.insert(0, "slice_type", plan["slice_type"])
        out.append(t)
        plan["reps"] = plan["ranking"] = None
        del reps_d
    return pd.concat(out, ignore_index=True)


def _add_quiet(plans: list[dict], rng: np.random.Generator, b0: int, b1: int) -> None:
    """Replicates b0..b1 of each plan: a twin copies its twin's cluster sums, then every plan adds its quiet
    groups (a group of k rows: one Poisson(k) weight per replicate)."""
    for plan in plans:
        if plan["twin"] is not None:  # before the twin's quiet groups are added
            plan["reps"][:, :, b0:b1] = plan["twin"]["reps"][:, :, b0:b1]
    for plan in plans:
        if len(plan["q_k"]):
            pk = rng.poisson(plan["q_k"], size=(b1 - b0, len(plan["q_k"]))).astype(np.float32)
            for col, q in plan["q_mats"]:  # groups x slices, one per shared column kept
                plan["reps"][:, col, b0:b1] += q.T @ pk.T


def _workers() -> int:
    """Threads for the replicate products: the cores this process may use, at most ``MAX_WORKERS``."""
    return max(1, min(MAX_WORKERS, len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else 1))


def _product_groups(products: list[dict], workers: int) -> list[list[tuple[np.ndarray, np.ndarray, int]]]:
    """The slices of every product (a plan's or its ranking's clusters), as (count vectors, replicate sums,
    slice) tasks split into ``workers`` groups of about equal work (clusters x columns), largest first."""
    tasks = []
    for p in products:
        size = np.diff(p["bounds"])
        for i in np.flatnonzero(size > 0):
            tasks.append((int(size[i]) * p["v"].shape[1], p, int(i)))
    tasks.sort(key=lambda t: -t[0])
    load, groups = np.zeros(workers), [[] for _ in range(workers)]
    for cost, p, i in tasks:
        g = int(np.argmin(load))
        load[g] += cost
        groups[g].append((p["v"][p["bounds"][i]:p["bounds"][i + 1]], p["reps"], p["bounds"][i], i))
    return [g for g in groups if g]


def _run_products(groups: list[list], weights: np.ndarray, b0: int, b1: int) -> None:
    """Each slice's replicate sums of replicates b0..b1: its clusters' count vectors times their Poisson
    weights (rows of ``weights`` from the slice's first cluster on). One thread per group, each product on
    one BLAS thread: OpenBLAS's own threads spin on each other and stall (100x seen) when other work holds
    the cores, while independent products on independent threads just share them."""
    def run(group):
        for v, reps, start, i in group:
            reps[i, :, b0:b1] = v.T @ weights[start:start + len(v)]

    with _BLAS.limit(limits=1, user_api="blas"):
        if len(groups) == 1:
            run(groups[0])
        else:
            with ThreadPoolExecutor(len(groups)) as ex:
                list(ex.map(run, groups))


def _factorize_few(values: np.ndarray, common: float) -> tuple[np.ndarray, np.ndarray]:
    """``pd.factorize(values, sort=True)`` for an array that is mostly ``common``: only the other values
    are hashed (a tenth of the time on 10M weights that are nearly all 1)."""
    is_common = values == common
    other_code, other = pd.factorize(values[~is_common], sort=True)
    names = np.union1d(other, [common]) if is_common.any() else np.asarray(other, dtype=values.dtype)
    codes = np.empty(len(values), dtype=np.int64)
    codes[is_common] = np.searchsorted(names, common)
    codes[~is_common] = np.searchsorted(names, np.asarray(other))[other_code]
    return codes, names


def _codes(labels: np.ndarray | tuple[np.ndarray, np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """Dense int32 codes and sorted names of ``labels``: as given for a (codes, names) pair, by counting
    for small non-negative integers (fast on 10M rows), else by hashing."""
    if isinstance(labels, tuple):
        codes, names = labels
        return np.asarray(codes, dtype=np.int32), np.asarray(names)
    labels = np.asarray(labels)
    if labels.dtype.kind in "iub" and len(labels):
        lo, hi = labels.min(), labels.max()
        if lo >= 0 and hi < 10_000_000:
            present = np.bincount(labels, minlength=int(hi) + 1) > 0
            if present.all():  # already dense
                return labels.astype(np.int32), np.arange(len(present))
            code_of = (np.cumsum(present) - 1).astype(np.int32)
            return code_of[labels], np.flatnonzero(present)
    c, names = pd.factorize(labels, sort=True)
    return c.astype(np.int32), names


def _group_sum(target: np.ndarray, index: np.ndarray, values: np.ndarray) -> None:
    """target[index[i]] += values[i] for every row i (a sparse 0/1 matrix product: one pass in C)."""
    if len(index) == 0:
        return
    m = sparse.csr_matrix((np.ones(len(index), dtype=values.dtype), (index, np.arange(len(index)))),
                          shape=(target.shape[0], len(index)))
    target += m @ values
