"""Benchmark: per-merchant threshold suggestions for 100k merchants.

Times ``analysis.thresholds.suggest_thresholds`` (one sort, bincounts; every policy column, shrinkage,
Wilson intervals, amounts, reasons) on a synthetic evaluation window with heavy-tailed merchant sizes,
and a per-merchant Python loop doing only the core of it (keep-block-rate threshold, expected block rate,
recall and FPR before/after) on a random subset of merchants in the same run, scaled to all merchants
(by merchant count and by row count; the smaller, more conservative figure is used). Machines here are
noisy: the ratio is the figure to read, not the seconds. The loop's thresholds are compared with the
vectorised ones, merchant by merchant, before any figure counts.

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
    t = time.perf_counter()
    base = loop_baseline(df[mask], inc_t[mask])
    loop_s = time.perf_counter() - t
    # scaled by merchants and by rows; the smaller of the two is the figure used (the conservative one)
    by_merchants, by_rows = loop_s * len(out) / len(base), loop_s * len(df) / mask.sum()
    loop_full = min(by_merchants, by_rows)
    print(f"per-merchant loop (core numbers only): {loop_s:.2f}s for {len(base):,} merchants / {mask.sum():,} rows "
          f"-> {by_merchants:.1f}s scaled by merchants, {by_rows:.1f}s by rows; using {loop_full:.1f}s")

    v = out.set_index("merchant_id").loc[base.index]
    assert np.allclose(v["raw_threshold"], base["raw_threshold"], rtol=0, atol=1e-12), "thresholds differ"
    not_thin = ~v["shrunk"].to_numpy()
    assert np.allclose(v["expected_block_rate"].to_numpy()[not_thin], base["block_rate_after"].to_numpy()[not_thin])
    for c in ("recall_before", "fpr_before"):
        assert np.allclose(v[c], base[c], equal_nan=True), f"{c} differs"
    for c in ("recall_after", "fpr_after"):
        assert np.allclose(v[c].to_numpy()[not_thin], base[c].to_numpy()[not_thin], equal_nan=True), f"{c} differs"
    print(f"checked: {len(base):,} merchants' thresholds, block rates, recall and FPR equal in both")
    print(f"ratio: the loop takes {loop_full / vec_s:.0f}x the vectorised time "
          f"({vec_s:.2f}s vs {loop_full:.1f}s for {len(out):,} merchants)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
