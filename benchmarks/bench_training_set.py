"""Benchmark: simulate a world, then build point-in-time features for the training set.

Prints simulation time, feature-build time (DuckDB window query, what the training-set DAG runs), rows
per second, peak RSS, and the ratio against pandas ``groupby(...).rolling(...)`` computing the same card
and merchant window aggregates on the same rows in the same run (machines here are noisy: the ratio is
the figure to read, not the seconds). The two results are compared value by value before timing counts.

    .venv/bin/python benchmarks/bench_training_set.py --days 60 --tx-per-day 20000
"""
from __future__ import annotations

import argparse
import datetime as dt
import resource
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd


def pandas_features(tx: pd.DataFrame) -> pd.DataFrame:
    """The baseline: the same window aggregates with pandas time-based rolling windows. closed="left"
    gives [t - w, t): the row itself and anything at the same instant are excluded, as in the SQL."""
    tx = tx.sort_values(["ts", "tx_id"]).reset_index(drop=True)
    out = pd.DataFrame({"tx_id": tx["tx_id"]})
    one = pd.Series(1.0, index=tx.index)
    for key, windows in (("card_id", (("card_tx_1h", "1h", "count"), ("card_tx_24h", "24h", "count"),
                                      ("card_amount_24h", "24h", "sum"), ("card_tx_30d", "30D", "count"))),
                         ("merchant_id", (("merchant_tx_24h", "24h", "count"),))):
        frame = pd.DataFrame({"key": tx[key], "ts": tx["ts"], "one": one, "amount": tx["amount"]})
        g = frame.set_index("ts").groupby("key", sort=False)
        positions = _group_order(frame["key"])  # where each emitted row came from
        for name, window, how in windows:
            col = "one" if how == "count" else "amount"
            r = g[col].rolling(window, closed="left").sum()
            out[name] = pd.Series(r.to_numpy(), index=positions).sort_index().fillna(0).to_numpy()
    return out


def _group_order(keys: pd.Series) -> pd.Index:
    """The original row positions in the order groupby(sort=False).rolling emits them."""
    codes, _ = pd.factorize(keys, sort=False)
    return pd.Index(np.argsort(codes, kind="stable"))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--days", type=int, default=60)
    ap.add_argument("--tx-per-day", type=int, default=20000)
    ap.add_argument("--seed", type=int, default=7)
    args = ap.parse_args()

    from release.features import compute_features
    from simulation.world import WorldConfig, simulate

    with tempfile.TemporaryDirectory(prefix="fraudcd-bench-") as tmp:
        events = Path(tmp) / "events"
        cfg = WorldConfig(days=args.days, tx_per_day=args.tx_per_day, seed=args.seed,
                          n_merchants=2000, n_cards=max(30000, args.days * args.tx_per_day // 20))
        t0 = time.perf_counter()
        totals = simulate(cfg, events)
        t_sim = time.perf_counter() - t0
        start, end = cfg.start, cfg.start + dt.timedelta(days=args.days)

        t0 = time.perf_counter()
        feats = compute_features(events, start, end)
        t_build = time.perf_counter() - t0
        n = len(feats)

        tx = feats[["tx_id", "ts", "card_id", "merchant_id", "amount"]].copy()
        t0 = time.perf_counter()
        base = pandas_features(tx)
        t_pandas = time.perf_counter() - t0

        cols = ["card_tx_1h", "card_tx_24h", "card_amount_24h", "card_tx_30d", "merchant_tx_24h"]
        a = feats.set_index("tx_id")[cols].sort_index()
        b = base.set_index("tx_id")[cols].sort_index()
        mismatch = {c: int((~np.isclose(a[c].to_numpy(float), b[c].to_numpy(float), atol=1e-6)).sum()) for c in cols}
        peak_gb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024 ** 2

    print(f"transactions simulated     {totals['transactions']:,} in {t_sim:.1f} s "
          f"({totals['transactions'] / t_sim:,.0f} tx/s)")
    print(f"features built (DuckDB)    {n:,} rows in {t_build:.1f} s ({n / t_build:,.0f} rows/s), 12 features")
    print(f"same 5 window aggregates   pandas groupby.rolling {t_pandas:.1f} s")
    print(f"ratio pandas / DuckDB      {t_pandas / t_build:.1f}x (DuckDB also computes 7 more features)")
    print(f"values that differ         {mismatch}")
    print(f"peak RSS                   {peak_gb:.2f} GB")
    return 0 if not any(mismatch.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
