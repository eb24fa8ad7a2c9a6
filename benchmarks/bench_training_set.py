"""Benchmark: simulate a world, then build the training set from it.

Prints simulation time, training-set build time (``build_training_set``: what the daily DAG runs:
features, matured labels, the Great Expectations data contract, the Parquet snapshot), rows per second,
peak RSS after each stage, and the ratio against pandas ``groupby(...).rolling(...)`` computing the same
card and merchant window aggregates on the same rows in the same run. Machines here are noisy: the
ratios are the figures to read, not the seconds. The pandas values are compared with the snapshot's,
value by value, before any figure counts.

    .venv/bin/python benchmarks/bench_training_set.py --days 300 --tx-per-day 33334   # ~10M rows
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

# the window aggregates both sides compute: name -> (key, window, how); pandas rolling closed="left"
# gives [t - w, t), as the pipeline does (the row itself and anything at the same instant excluded)
WINDOWS = {
    "card_tx_1h": ("card_id", "1h", "count"), "card_tx_24h": ("card_id", "24h", "count"),
    "card_amount_24h": ("card_id", "24h", "sum"), "card_tx_7d": ("card_id", "7D", "count"),
    "card_amount_7d": ("card_id", "7D", "sum"), "card_tx_30d": ("card_id", "30D", "count"),
    "card_avg_30d": ("card_id", "30D", "mean"), "card_max_30d": ("card_id", "30D", "max"),
    "merchant_tx_1h": ("merchant_id", "1h", "count"), "merchant_tx_24h": ("merchant_id", "24h", "count"),
    "merchant_amount_24h": ("merchant_id", "24h", "sum"), "merchant_tx_7d": ("merchant_id", "7D", "count"),
    "merchant_avg_7d": ("merchant_id", "7D", "mean"),
}


def peak_gb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024 ** 2


def pandas_windows(tx: pd.DataFrame) -> pd.DataFrame:
    """The baseline: the same window aggregates with pandas time-based rolling windows."""
    tx = tx.sort_values(["ts", "tx_id"]).reset_index(drop=True)
    out = pd.DataFrame({"tx_id": tx["tx_id"]})
    for key in ("card_id", "merchant_id"):
        frame = pd.DataFrame({"key": tx[key], "ts": tx["ts"], "amount": tx["amount"]})
        g = frame.set_index("ts").groupby("key", sort=False)["amount"]
        codes, _ = pd.factorize(frame["key"], sort=False)
        positions = pd.Index(np.argsort(codes, kind="stable"))  # where each emitted row came from
        for name, (k, window, how) in WINDOWS.items():
            if k != key:
                continue
            r = getattr(g.rolling(window, closed="left"), how)()
            values = pd.Series(r.to_numpy(), index=positions).sort_index()
            out[name] = values.fillna(0).to_numpy() if how in ("count", "sum") else values.to_numpy()
    return out


def snapshot_windows(snap: pd.DataFrame) -> pd.DataFrame:
    """The same aggregates as the snapshot holds them (means and maxima recovered from the ratios)."""
    out = snap[["tx_id"] + [c for c in WINDOWS if c in snap.columns]].copy()
    # amount / (avg + 1) with avg defaulting to the amount itself when the window is empty
    for name, ratio in (("card_avg_30d", "amount_vs_card_avg_30d"), ("card_max_30d", "amount_vs_card_max_30d"),
                        ("merchant_avg_7d", "amount_vs_merchant_avg_7d")):
        count = snap["card_tx_30d"] if name.startswith("card") else snap["merchant_tx_7d"]
        out[name] = np.where(count > 0, snap["amount"] / snap[ratio] - 1, np.nan)
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--days", type=int, default=300)
    ap.add_argument("--tx-per-day", type=int, default=33334)
    ap.add_argument("--merchants", type=int, default=2000)
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--events", type=Path, help="reuse event logs simulated before (skips the simulation)")
    args = ap.parse_args()

    from release.data.training_set import build_training_set
    from simulation.world import WorldConfig, simulate

    with tempfile.TemporaryDirectory(prefix="fraudcd-bench-") as tmp:
        cfg = WorldConfig(days=args.days, tx_per_day=args.tx_per_day, seed=args.seed, n_merchants=args.merchants,
                          n_cards=max(30000, args.days * args.tx_per_day // 20))
        events = args.events or Path(tmp) / "events"
        t_sim = None
        if args.events is None:
            t0 = time.perf_counter()
            totals = simulate(cfg, events)
            t_sim = time.perf_counter() - t0
        rss_sim = peak_gb()
        as_of = cfg.start + dt.timedelta(days=args.days + 60)  # every simulated day inside the window
        t0 = time.perf_counter()
        snap = build_training_set(events, Path(tmp) / "snapshots", as_of, history_days=args.days + 60)
        t_build = time.perf_counter() - t0
        rss_build = peak_gb()
        n = snap.manifest["rows"]

        t0 = time.perf_counter()
        from release.data.features import window_features
        import polars as pl
        from release.core.io import list_partitions

        files = [str(f) for f in list_partitions(events / "transactions")]
        tx_pl = pl.read_parquet(files, columns=["tx_id", "ts", "card_id", "merchant_id", "amount"])
        t_read = time.perf_counter() - t0
        t0 = time.perf_counter()
        window_features(tx_pl)
        t_windows = time.perf_counter() - t0
        tx = tx_pl.to_pandas()
        del tx_pl

        t0 = time.perf_counter()
        base = pandas_windows(tx)
        t_pandas = time.perf_counter() - t0
        rss_all = peak_gb()

        cols = ["amount", "card_tx_30d", "merchant_tx_7d", "amount_vs_card_avg_30d", "amount_vs_card_max_30d",
                "amount_vs_merchant_avg_7d"] + [c for c in WINDOWS if not c.endswith(("avg_30d", "max_30d", "avg_7d"))]
        mine = snapshot_windows(pd.read_parquet(snap.data, columns=["tx_id"] + list(dict.fromkeys(cols))))
        a = mine.set_index("tx_id").sort_index()
        b = base.set_index("tx_id").sort_index().loc[a.index]
        mismatch = {c: int((~np.isclose(a[c].to_numpy(float), b[c].to_numpy(float), rtol=1e-6, atol=1e-6,
                                        equal_nan=True)).sum()) for c in WINDOWS}

    if t_sim is not None:
        print(f"transactions simulated     {totals['transactions']:,} in {t_sim:.1f} s "
              f"({totals['transactions'] / t_sim:,.0f} tx/s), peak RSS {rss_sim:.2f} GB")
    print(f"training set built         {n:,} rows in {t_build:.1f} s ({n / t_build:,.0f} rows/s), "
          f"peak RSS {rss_build:.2f} GB (features, labels, GE contract, Parquet)")
    print(f"same {len(WINDOWS)} window aggregates  Polars {t_windows:.1f} s (+{t_read:.1f} s read); "
          f"pandas groupby.rolling {t_pandas:.1f} s")
    print(f"ratio pandas / Polars      {t_pandas / t_windows:.1f}x on the same aggregates")
    print(f"ratio pandas / whole build {t_pandas / t_build:.1f}x (the build also computes 9 more features, "
          "labels, the contract and writes the snapshot)")
    print(f"values that differ         {mismatch}")
    print(f"peak RSS incl. baseline    {rss_all:.2f} GB")
    return 0 if not any(mismatch.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
