"""Per-merchant threshold suggestions on the candidate's score.

Default policy: keep each merchant's block rate where it is under the incumbent (the merchant sees no
shift) - the candidate's threshold for a merchant is the score above which the same share of its
traffic falls. Merchants with little traffic are shrunk toward the global threshold at the operating
point (weight n / (n + prior_strength)) and flagged; merchants never seen get the global threshold.
Vectorised: one sort and one groupby over all merchants.
"""
from __future__ import annotations

import numpy as np
import pandas as pd

GLOBAL = "__global__"


def suggest_thresholds(scored: pd.DataFrame, inc_threshold: np.ndarray, global_threshold: float,
                       current: pd.Series | dict | None = None, min_support: int = 200,
                       prior_strength: float = 200.0) -> pd.DataFrame:
    """One row per merchant: current (incumbent) threshold, suggested candidate threshold, support, the
    incumbent's block rate it preserves, the candidate's expected block rate, shrunk flag and reason."""
    df = pd.DataFrame({"merchant_id": scored["merchant_id"].to_numpy(),
                       "cand": scored["candidate_score"].to_numpy(),
                       "inc_block": (scored["incumbent_score"].to_numpy() >= inc_threshold).astype(float)})
    g = df.groupby("merchant_id", sort=True)
    n = g.size()
    rate = g["inc_block"].mean()
    k = np.floor(rate * n + 0.5).astype(int)  # how many of the merchant's rows the incumbent blocked
    df = df.sort_values(["merchant_id", "cand"], ascending=[True, False], kind="stable")
    df["rank"] = df.groupby("merchant_id").cumcount()  # 0 = highest candidate score
    kk = df["merchant_id"].map(k)
    # threshold between the k-th and (k+1)-th highest scores: blocks exactly the top k
    kth = df[df["rank"] == kk - 1].set_index("merchant_id")["cand"]
    nxt = df[df["rank"] == kk].set_index("merchant_id")["cand"]
    raw = pd.Series(np.nan, index=n.index)
    both = kth.index.intersection(nxt.index)
    raw.loc[both] = (kth.loc[both] + nxt.loc[both]) / 2
    only_top = kth.index.difference(nxt.index)  # blocks all of its rows
    raw.loc[only_top] = kth.loc[only_top]
    none = k.index[k == 0]  # the incumbent blocked none: stay just above its highest score
    top = df[df["rank"] == 0].set_index("merchant_id")["cand"]
    raw.loc[none] = np.nextafter(top.loc[none].to_numpy(), np.inf)
    w = n / (n + prior_strength)
    shrunk = n < min_support
    suggested = np.where(shrunk, w * raw + (1 - w) * global_threshold, raw)
    out = pd.DataFrame({
        "merchant_id": n.index.astype(str),
        "current_threshold": (pd.Series(current, dtype=float).reindex(n.index).to_numpy()
                              if current is not None and len(current) else np.nan),
        "suggested_threshold": np.clip(suggested, 0.0, 1.0),
        "support": n.to_numpy(),
        "incumbent_block_rate": rate.to_numpy(),
        "shrunk": shrunk.to_numpy(),
    })
    # expected candidate block rate at the suggestion, per merchant (one merge, one groupby)
    m = df.merge(out[["merchant_id", "suggested_threshold"]], on="merchant_id")
    out["expected_block_rate"] = (m["cand"] >= m["suggested_threshold"]).groupby(m["merchant_id"]).mean().reindex(
        out["merchant_id"]).to_numpy()
    out["reason"] = np.where(
        out["shrunk"],
        "Thin merchant (" + out["support"].astype(str) + " transactions): keeps its block rate of "
        + (100 * out["incumbent_block_rate"]).round(2).astype(str) + "%, shrunk toward the global threshold.",
        "Keeps the merchant's block rate of " + (100 * out["incumbent_block_rate"]).round(2).astype(str)
        + "% under the new model.")
    return out
