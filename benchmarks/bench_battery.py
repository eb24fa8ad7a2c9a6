"""The release-gate battery over many seeds: planted candidates with a known truth (tests/contracts/planted.py)
judged by the gating contracts in force, and the share of seeds each is stopped by the contract named for
its harm. Targets: every harmful case >= 95%; the good candidate stopped in <= 5%.

    .venv/bin/python benchmarks/bench_battery.py --seeds 20

Prints the table, the country-shift case's judged vs true policy shift, and the seconds per judgement.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests" / "contracts"))

from planted import CASES, MID_COUNTRY, battery_table, gating_contracts, run_battery  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seeds", type=int, default=20)
    ap.add_argument("--first-seed", type=int, default=100, help="seeds the test suite does not use (it uses 0-9)")
    ap.add_argument("--cases", nargs="*", default=list(CASES))
    ap.add_argument("--tx-per-day", type=int, default=40_000)
    ap.add_argument("--workers", type=int, default=2)
    args = ap.parse_args()
    seeds = range(args.first_seed, args.first_seed + args.seeds)
    t0 = time.perf_counter()
    res = run_battery(list(seeds), args.cases, gating_contracts(), workers=args.workers, tx_per_day=args.tx_per_day)
    took = time.perf_counter() - t0
    t = battery_table(res)
    print(f"{len(res)} judgements in {took:.0f} s ({args.workers} processes), seeds {seeds.start}..{seeds.stop - 1}, "
          f"{args.tx_per_day:,} transactions/day x 20 days")
    print(t.to_string(index=False, na_rep="", formatters={
        c: (lambda x: "" if x != x else f"{x:.0%}") for c in ("stopped by it", "stopped at all", "harmful stopped by it")}
        | {"harmful seeds": lambda x: "" if x != x else f"{x:.0f}"}))
    for case in ("country_shift", "shift_thin_new"):
        shifts = [(s, r["truth"], next((v for v in r["offline"] if v.contract == "country_action_rate_shift"
                                        and v.slice == MID_COUNTRY), None))
                  for (c, s), r in res.items() if c == case]
        if shifts:
            print(f"\n{case} ({MID_COUNTRY}): verdict on the judging rows vs the true shift of the same policy on fresh draws")
            for seed, truth, v in shifts:
                said = f"{v.verdict:<18} {v.sentence[:150]}" if v else "(no verdict of its own: pooled)"
                print(f"  seed {seed}  true {truth:+.0%}  {said}")
    stops = {}
    for (c, _), r in res.items():
        for k in r["stopped_by"]:
            stops.setdefault(c, {}).setdefault(k, 0)
            stops[c][k] += 1
    print("\nwhich contracts stopped each case (seeds):")
    for c, d in stops.items():
        print(f"  {c:<20} " + ", ".join(f"{k} {n}" for k, n in sorted(d.items())))


if __name__ == "__main__":
    main()
