"""The drift budget (contracts/drift_budget.py) on planted windows with a known truth, over many seeds.

Each seed draws the planted world's 20-day window (tests/contracts/planted.py judge_drift: 12 countries,
2,000 merchants, censoring by the logging incumbent with 5% exploration) and judges the "better" candidate's
policy against a drift anchor that declined ``factor`` times fewer legitimate transactions than the
incumbent (1: no release shipped, the anchor is the incumbent). ``step``: the policy is scaled to decline
that many times the incumbent's legitimate transactions (one more step of a ratchet; 1: as suggested). The
truth is the policy's FPR over the anchor's, and over the incumbent's (its own change), on the judging
rows' true labels. Cases (factor x step): 1 x 1 no drift; 1.15 x 1 drifted, inside the budget; 1.2 x 1.12 a
ratchet step that takes production beyond it; 1.4 x 1 production already beyond, the release lowers FPR
(the way back). Targets, from the contract's promise (one-sided 95%): a release that raises FPR (own truth
> 0) to beyond the budget (truth > +25%) is stopped in >= 95% of seeds; with no drift the budget passes in
>= 95%.

    .venv/bin/python benchmarks/bench_drift_budget.py --seeds 100

Prints, per case: the seeds, the mean true and estimated drift, the estimate's mean error, the mean true own
change, and the shares passed, insufficient and failed, and stopped among the seeds the target is about.
"""
from __future__ import annotations

import argparse
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def _one(args):
    from tests.contracts.planted import judge_drift

    seed, factor, step, tx = args
    r = judge_drift(seed, factor, step, tx_per_day=tx)
    v = r["verdict"]
    return {"seed": seed, "case": f"{factor:g} x {step:g}", "truth": r["truth"], "own": r["own_truth"],
            "estimate": v.effect, "lo": v.effect_lo, "hi": v.effect_hi, "verdict": v.verdict}


def main() -> None:
    import pandas as pd

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seeds", type=int, default=100)
    ap.add_argument("--first-seed", type=int, default=100, help="seeds the test suite does not use (it uses 0-5)")
    ap.add_argument("--cases", nargs="*", default=["1x1", "1.15x1", "1.2x1.12", "1.4x1"],
                    help="anchor factor x policy step")
    ap.add_argument("--tx-per-day", type=int, default=15_000)
    ap.add_argument("--workers", type=int, default=2)
    a = ap.parse_args()
    cases = [tuple(float(x) for x in c.split("x")) for c in a.cases]
    jobs = [(s, f, st, a.tx_per_day) for f, st in cases for s in range(a.first_seed, a.first_seed + a.seeds)]
    t0 = time.perf_counter()
    with ProcessPoolExecutor(a.workers) as pool:
        rows = pd.DataFrame(list(pool.map(_one, jobs)))
    took = time.perf_counter() - t0
    rows["error"] = rows["estimate"] - rows["truth"]
    g = rows.groupby("case", sort=False)
    out = g.agg(seeds=("seed", "size"), truth=("truth", "mean"), estimate=("estimate", "mean"), error=("error", "mean"),
                own=("own", "mean"))
    for verdict in ("pass", "insufficient data", "fail"):
        out[verdict] = g["verdict"].apply(lambda v, x=verdict: (v == x).mean())
    harm = rows[(rows["truth"] > 0.25) & (rows["own"] > 0)]
    out["harmful seeds"] = harm.groupby("case", sort=False).size()
    out["harmful stopped"] = harm.groupby("case", sort=False)["verdict"].apply(lambda v: (v != "pass").mean())
    back = rows[rows["own"] < 0]
    out["lowering seeds"] = back.groupby("case", sort=False).size()
    out["lowering passed"] = back.groupby("case", sort=False)["verdict"].apply(lambda v: (v == "pass").mean())
    print(f"{len(rows)} judgements in {took:.0f} s ({a.workers} processes, {took / len(rows) * a.workers:.1f} s each), "
          f"seeds {a.first_seed}..{a.first_seed + a.seeds - 1}, {a.tx_per_day:,} transactions/day x 20 days")
    fmt = {c: "{:+.1%}".format for c in ("truth", "estimate", "error", "own")}
    fmt.update({c: "{:.0%}".format for c in ("pass", "insufficient data", "fail", "harmful stopped", "lowering passed")})
    print(out.to_string(formatters=fmt, na_rep=""))


if __name__ == "__main__":
    main()
