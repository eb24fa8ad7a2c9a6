"""Benchmark: per-merchant threshold suggestions for 100k merchants.

Times ``analysis.thresholds.suggest_thresholds`` (one sort, bincounts; every policy column, shrinkage,
Wilson intervals, paired changes, amounts, reasons) on a synthetic evaluation window with heavy-tailed
merchant sizes, against two per-merchant Python loops run on a random subset of merchants in the same
run and scaled to all merchants (by merchant count and by row count; the smaller, more conservative
figure is used):

- the core loop (each merchant's own keep-block-rate threshold, recall and FPR before): the same
  baseline as before shrinkage was rebuilt, so its ratio compares across versions;
- the shrinkage loop: what a straightforward implementation of the shrunk threshold does, one merchant
  at a time (the segment's prior by method of moments, the posterior block rate, then a bisection over
  its segment's distinct scores with two searchsorteds a step for the threshold at which the mixture
  w * F_merchant + (1 - w) * F_segment blocks that rate), and the expected block rate, recall and FPR
  after at it.

Machines here are noisy: the ratios are the figures to read, not the seconds. Both loops' numbers are
compared with the vectorised ones, merchant by merchant (thresholds exactly), before any figure counts.

    .venv/bin/python benchmarks/bench_thresholds.py                      # 100k merchants, 3M rows
    .venv/bin/python benchmarks/bench_thresholds.py --merchants 20000 --rows 500000
"""
from __future__ import annotations

import argparse
import resource
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from analysis.thresholds import ThresholdConfig, suggest_thresholds  # noqa: E402


def peak_gb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024 ** 2


def window(n_merchants: int, rows: int, seed: int = 0) -> tuple[pd.DataFrame, np.ndarray]:
    """A scored evaluation window: merchant sizes lognormal (a few large, a long thin tail), 70% of rows
    matured, ~1% fraud, incumbent thresholds varying by merchant."""
    rng = np.random.default_rng(seed)
    size = rng.lognormal(0.0, 1.5, n_merchants)
    merchant = rng.choice(n_merchants, size=rows, p=size / size.sum())
    merchant[:n_merchants] = np.arange(n_merchants)  # every merchant has at least one row
    fraud = rng.random(rows) < 0.01
    inc = np.clip(rng.beta(1, 12, rows) + 0.5 * fraud * rng.random(rows), 0, 1)
    cand = np.clip(rng.beta(1, 12, rows) + 0.6 * fraud * rng.random(rows), 0, 1)
    matured = rng.random(rows) < 0.7
    df = pd.DataFrame({"merchant_id": np.char.add("M", merchant.astype(str)), "incumbent_score": inc,
                       "candidate_score": cand, "label": np.where(matured, fraud.astype(float), np.nan),
                       "weight": 1.0, "amount": rng.gamma(2.0, 40.0, rows)})
    counts = df["merchant_id"].value_counts()
    share = (counts.cumsum() / counts.sum()).shift(fill_value=0)
    df["merchant_size"] = df["merchant_id"].map(
        pd.Series(np.where(share < 0.5, "large", np.where(share < 0.9, "medium", "small")), index=counts.index))
    per_merchant_t = 0.25 + 0.1 * rng.random(n_merchants)
    return df, per_merchant_t[merchant]


def loop_baseline(df: pd.DataFrame, inc_t: np.ndarray) -> pd.DataFrame:
    """The same core numbers, one merchant at a time (what a straightforward implementation does)."""
    out = []
    d = df.assign(_inc_t=inc_t)
    for m, g in d.groupby("merchant_id", sort=True):
        s = np.sort(g["candidate_score"].to_numpy())[::-1]
        inc_block = (g["incumbent_score"] >= g["_inc_t"]).to_numpy()
        k, n = int(inc_block.sum()), len(s)
        if k == 0:
            t = np.nextafter(s[0], np.inf)
        elif k >= n:
            t = s[-1]
        else:
            t = (s[k - 1] + s[k]) / 2 if s[k - 1] > s[k] else np.nextafter(s[k - 1], np.inf)
        after = (g["candidate_score"] >= t).to_numpy()
        lab = g["label"]
        fr, lg = (lab == 1).to_numpy(), (lab == 0).to_numpy()
        out.append({"merchant_id": m, "raw_threshold": t, "block_rate_after": after.mean(),
                    "recall_before": inc_block[fr].mean() if fr.any() else np.nan,
                    "recall_after": after[fr].mean() if fr.any() else np.nan,
                    "fpr_before": inc_block[lg].mean() if lg.any() else np.nan,
                    "fpr_after": after[lg].mean() if lg.any() else np.nan})
    return pd.DataFrame(out).set_index("merchant_id")


def segment_priors(df: pd.DataFrame, inc_t: np.ndarray, segment_by: str = "merchant_size") -> pd.DataFrame:
    """Per segment: the pooled incumbent block rate mu and the beta-binomial prior strength m by the
    method of moments (written out here, independently of analysis.thresholds)."""
    g = df.assign(_b=(df["incumbent_score"].to_numpy() >= inc_t).astype(float)).groupby(
        ["merchant_id"]).agg(n=("_b", "size"), k=("_b", "sum"), seg=(segment_by, "last"))
    rows = []
    for seg, s in g.groupby("seg"):
        n, k = s["n"].to_numpy(float), s["k"].to_numpy(float)
        mu = k.sum() / n.sum()
        tau2 = (n * (k / n - mu) ** 2).sum() / n.sum() - mu * (1 - mu) * len(n) / n.sum()
        m = mu * (1 - mu) / tau2 - 1 if tau2 > 0 and len(n) > 1 else np.inf
        rows.append({"segment": seg, "mu": mu, "m": float(np.clip(m, 1.0, 1e6)) if np.isfinite(m) else 1e6})
    return pd.DataFrame(rows).set_index("segment")


def loop_shrunk(df: pd.DataFrame, inc_t: np.ndarray, subset, priors: pd.DataFrame, min_support: int,
                segment_by: str = "merchant_size") -> pd.DataFrame:
    """The shrunk keep-block-rate threshold, one merchant at a time: its posterior block rate
    (k + mu m) / (n + m), then bisection over its segment's distinct scores for the lowest threshold at
    which the mixture of its n rows and min(m, min_support) pseudo-rows of its segment's scores blocks no
    more than that (or the next one down when it lands strictly closer)."""
    cand = df["candidate_score"].to_numpy()
    seg_sorted = {s: np.sort(cand[(df[segment_by] == s).to_numpy()]) for s in priors.index}  # ascending
    seg_unique = {s: np.unique(v)[::-1] for s, v in seg_sorted.items()}
    d = df[df["merchant_id"].isin(subset)].assign(_inc_t=inc_t[df["merchant_id"].isin(subset).to_numpy()])
    out = []
    for mid, g in d.groupby("merchant_id", sort=True):
        seg = g[segment_by].iloc[-1]
        mu, m = priors.loc[seg, "mu"], priors.loc[seg, "m"]
        x = np.sort(g["candidate_score"].to_numpy())
        S, U = seg_sorted[seg], seg_unique[seg]
        n, N = len(x), len(S)
        k = int((g["incumbent_score"] >= g["_inc_t"]).sum())
        m_d = min(m, float(min_support))  # the segment's scores never weigh more than min_support rows
        room = (n + m_d) * (k + mu * m) / (n + m)

        def lhs(i):  # block every score >= U[i]; in units of (n + m_d) times the mixture's block rate
            return (n - np.searchsorted(x, U[i])) + m_d / N * (N - np.searchsorted(S, U[i]))

        lo, hi = -1, len(U) - 1  # lhs(lo) <= room (lo = -1: block nothing); find the last such index
        if lhs(hi) <= room * (1 + 1e-12) + 1e-12:
            lo = hi
        while hi - lo > 1:
            mid_i = (lo + hi) // 2
            if lhs(mid_i) <= room * (1 + 1e-12) + 1e-12:
                lo = mid_i
            else:
                hi = mid_i
        got = lhs(lo) if lo >= 0 else 0.0
        if lo + 1 < len(U) and lhs(lo + 1) - room < (room - got) * (1 - 1e-9):
            lo += 1
        t = np.nextafter(U[0], np.inf) if lo < 0 else (U[lo] if lo == len(U) - 1 else (U[lo] + U[lo + 1]) / 2)
        after = (g["candidate_score"] >= t).to_numpy()
        lab = g["label"]
        fr, lg = (lab == 1).to_numpy(), (lab == 0).to_numpy()
        out.append({"merchant_id": mid, "suggested_threshold": t, "block_rate_after": after.mean(),
                    "recall_after": after[fr].mean() if fr.any() else np.nan,
                    "fpr_after": after[lg].mean() if lg.any() else np.nan})
    return pd.DataFrame(out).set_index("merchant_id")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--merchants", type=int, default=100_000)
    ap.add_argument("--rows", type=int, default=3_000_000)
    ap.add_argument("--loop-merchants", type=int, default=2_000, help="merchants the loop baseline runs on")
    ap.add_argument("--repeat", type=int, default=3, help="vectorised runs; the best is reported")
    args = ap.parse_args()

    t0 = time.perf_counter()
    df, inc_t = window(args.merchants, args.rows)
    print(f"window: {len(df):,} rows, {df['merchant_id'].nunique():,} merchants "
          f"({time.perf_counter() - t0:.1f}s to generate); peak RSS {peak_gb():.2f} GB")

    cfg = ThresholdConfig()
    times = []
    for _ in range(args.repeat):
        t = time.perf_counter()
        out = suggest_thresholds(df, inc_t, 0.4, config=cfg)
        times.append(time.perf_counter() - t)
    vec_s = min(times)
    print(f"suggest_thresholds (vectorised): {vec_s:.2f}s for {len(out):,} merchants "
          f"(best of {args.repeat}: {', '.join(f'{x:.2f}' for x in times)}); {out['shrunk'].sum():,} thin, "
          f"peak RSS {peak_gb():.2f} GB")

    rng = np.random.default_rng(1)
    subset = rng.choice(out["merchant_id"].to_numpy(), size=min(args.loop_merchants, len(out)), replace=False)
    mask = df["merchant_id"].isin(subset).to_numpy()

    def scaled(seconds: float, merchants: int) -> tuple[float, float, float]:
        # scaled by merchants and by rows; the smaller of the two is the figure used (the conservative one)
        by_merchants, by_rows = seconds * len(out) / merchants, seconds * len(df) / mask.sum()
        return by_merchants, by_rows, min(by_merchants, by_rows)

    t = time.perf_counter()
    base = loop_baseline(df[mask], inc_t[mask])
    loop_s = time.perf_counter() - t
    by_merchants, by_rows, loop_full = scaled(loop_s, len(base))
    print(f"per-merchant loop (core numbers only): {loop_s:.2f}s for {len(base):,} merchants / {mask.sum():,} rows "
          f"-> {by_merchants:.1f}s scaled by merchants, {by_rows:.1f}s by rows; using {loop_full:.1f}s")

    t = time.perf_counter()
    priors = segment_priors(df, inc_t)  # once per segment, over all rows: not scaled
    prep_s = time.perf_counter() - t
    t = time.perf_counter()
    shrunk = loop_shrunk(df, inc_t, subset, priors, cfg.shrinkage.min_support)
    shrunk_s = time.perf_counter() - t
    sb_merchants, sb_rows, shrunk_scaled = scaled(shrunk_s, len(shrunk))
    shrunk_full = prep_s + shrunk_scaled + loop_full  # the core numbers, plus the shrunk threshold and its evidence
    print(f"per-merchant loop (shrunk threshold and its evidence): {prep_s:.2f}s for the segments' priors, then "
          f"{shrunk_s:.2f}s for {len(shrunk):,} merchants -> {sb_merchants:.1f}s scaled by merchants, "
          f"{sb_rows:.1f}s by rows; with the core loop, using {shrunk_full:.1f}s")

    v = out.set_index("merchant_id").loc[base.index]
    assert np.allclose(v["raw_threshold"], base["raw_threshold"], rtol=0, atol=1e-12), "raw thresholds differ"
    for c in ("recall_before", "fpr_before"):
        assert np.allclose(v[c], base[c], equal_nan=True), f"{c} differs"
    pri = priors.loc[v["segment"]]
    assert np.allclose(v["prior_strength"], pri["m"].to_numpy(), rtol=1e-9), "prior strengths differ"
    assert np.allclose(v["segment_block_rate"], pri["mu"].to_numpy(), rtol=1e-12), "segment block rates differ"
    same = v["suggested_threshold"].to_numpy() == shrunk.loc[v.index, "suggested_threshold"].to_numpy()
    assert same.all(), f"suggested thresholds differ for {(~same).sum()} merchants"
    assert np.allclose(v["expected_block_rate"], shrunk.loc[v.index, "block_rate_after"]), "block rates differ"
    for c in ("recall_after", "fpr_after"):
        assert np.allclose(v[c], shrunk.loc[v.index, c], equal_nan=True), f"{c} differs"
    print(f"checked: {len(base):,} merchants' own and suggested thresholds (exactly), priors, block rates, recall "
          f"and FPR equal in the loops and the vectorised run")
    exact = (v["expected_block_rate"] == v["incumbent_block_rate"]).mean()
    print(f"shrinkage: median weight w = n / (n + m) {v['shrink_weight'].median():.3f}; "
          f"{exact:.1%} of the checked merchants keep exactly their incumbent block count")
    print(f"ratio: the core loop takes {loop_full / vec_s:.0f}x the vectorised time "
          f"({vec_s:.2f}s vs {loop_full:.1f}s for {len(out):,} merchants)")
    print(f"ratio: the loop with the shrunk threshold takes {shrunk_full / vec_s:.0f}x the vectorised time "
          f"({vec_s:.2f}s vs {shrunk_full:.1f}s)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
