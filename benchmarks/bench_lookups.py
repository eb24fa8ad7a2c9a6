"""Benchmark: the evaluation's per-row lookups (analysis.metrics.by_value) against pandas' own expressions.

A window of ``--rows`` transactions over ``--merchants`` heavy-tailed merchants (string ids, as pandas 3 holds them:
Arrow-backed), some ids missing, some unicode. Timed in this process, best of ``--repeat``, CPU seconds:

- each row's threshold (analysis.metrics.thresholds_for) against ``merchants.map(table).fillna(default)``;
- the segment columns (analysis.evaluation.add_segments) against the same columns written with ``Series.map``,
  ``Categorical.astype(str)`` and ``np.where`` (the code before by_value, kept here as the baseline).

Each pair must give the same values (checked: ``assert_frame_equal``, ``array_equal``); the figures are the ratios.

    .venv/bin/python benchmarks/bench_lookups.py [--rows 800000] [--merchants 2000]
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from analysis.evaluation import AMOUNT_BANDS, AMOUNT_LABELS, NEW_CARD_DAYS, add_segments  # noqa: E402
from analysis.metrics import thresholds_for  # noqa: E402


def plain_segments(scored: pd.DataFrame) -> pd.DataFrame:
    """add_segments as pandas' own expressions (the baseline)."""
    out = scored.copy()
    counts = out["merchant_id"].value_counts()
    share = counts.cumsum() / counts.sum()
    size = pd.Series(np.where(share.shift(fill_value=0) < 0.5, "large",
                              np.where(share.shift(fill_value=0) < 0.9, "medium", "small")), index=counts.index)
    out["merchant_size"] = out["merchant_id"].map(size)
    out["amount_band"] = pd.cut(out["amount"], AMOUNT_BANDS, labels=AMOUNT_LABELS, right=False).astype(str)
    out["card_segment"] = np.where(out["card_age_days"] < NEW_CARD_DAYS, "new card", "returning card")
    return out


def best(fn, repeat: int) -> tuple[float, object]:
    took, out = np.inf, None
    for _ in range(repeat):
        t = time.process_time()
        out = fn()
        took = min(took, time.process_time() - t)
    return took, out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--rows", type=int, default=800_000)
    ap.add_argument("--merchants", type=int, default=2000)
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args()
    rng = np.random.default_rng(0)
    ids = np.array([f"m{i}" for i in range(args.merchants - 2)] + ["商户-é", "0"], dtype=object)
    merchant = ids[rng.zipf(1.3, args.rows) % len(ids)]
    merchant[rng.random(args.rows) < 0.001] = None
    window = pd.DataFrame({
        "merchant_id": merchant,
        "amount": np.where(rng.random(args.rows) < 0.01, np.nan, rng.lognormal(3.6, 1.0, args.rows)),
        "card_age_days": rng.integers(0, 400, args.rows).astype(float)})
    table = pd.Series(rng.random(len(ids) * 3 // 4), index=ids[:len(ids) * 3 // 4])

    plain_t, a = best(lambda: window["merchant_id"].map(table).fillna(0.5).to_numpy(dtype=float), args.repeat)
    ours_t, b = best(lambda: thresholds_for(window["merchant_id"], table, 0.5), args.repeat)
    assert np.array_equal(a, b)
    plain_s, x = best(lambda: plain_segments(window), args.repeat)
    ours_s, y = best(lambda: add_segments(window), args.repeat)
    pd.testing.assert_frame_equal(x, y)
    print(json.dumps({
        "rows": args.rows, "merchants": args.merchants, "pandas": pd.__version__,
        "merchant_id_dtype": str(window["merchant_id"].dtype),
        "thresholds_for": {"plain_s": round(plain_t, 4), "by_value_s": round(ours_t, 4),
                           "speedup": round(plain_t / ours_t, 1)},
        "add_segments": {"plain_s": round(plain_s, 4), "by_value_s": round(ours_s, 4),
                         "speedup": round(plain_s / ours_s, 1)},
        "same_values": True}, indent=1))


if __name__ == "__main__":
    main()
