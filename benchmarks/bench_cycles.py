"""Months of closed-loop cycles (issue 19): `fraudcd simulate-cycles` with exploration on and off, on the same world,
against the rules the company ran before fraud-cd on the same days.

For each exploration setting, a run of ``--cycles`` biweekly releases through Airflow
(release/orchestration/closed_loop.py: each cycle's release with its rollout on live traffic, then its production
model deciding the next 14 days). Beside them, in the same benchmark, an independent baseline that shares no code
with the pipeline: the world's legacy rules (simulation/world.py) deciding every one of the same days, judged on the
same truth. Reported per run: wall time per cycle (and its release and deciding parts), the releases' outcomes, the
planted cases, recall / FPR / action rate of the deployed decisions against the legacy rules', how far the
pipeline's estimates of its incumbent's recall drift from the truth of the same judging rows (IPW and plain), and
what exploration let through (frauds and their amount).

    .venv/bin/python benchmarks/bench_cycles.py [--cycles 26] [--exploration 0.25,0] [--tx-per-day 3000]
        [--history-days 100] [--merchants 1000] [--cards 20000] [--out results.json]

26 cycles are a year; each cycle takes about two minutes here (2 cores), so the default run takes about two hours.
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def legacy_baseline(loop, out: Path) -> list[dict]:
    """The legacy rules deciding every window of the same world, judged on the same truth (no pipeline)."""
    from release.orchestration.closed_loop import CYCLE_DAYS, legacy_decider, window_truth
    from simulation.closed_loop import ClosedLoopWorld

    cfg = loop.world()
    world = ClosedLoopWorld.start(cfg, out, loop.history_days)
    rows = []
    for k in range(loop.cycles):
        first, end = world.add_traffic(CYCLE_DAYS)
        world.decide(legacy_decider(cfg))
        rows.append({"cycle": k + 1, **window_truth(world, first, end)})
    return rows


def summarise(rows: list[dict], base: list[dict]) -> dict:
    from analysis.closed_loop_report import summary_figures

    def mean(key, rs):
        v = [r[key] for r in rs if r.get(key) is not None]
        return round(statistics.fmean(v), 4) if v else None

    cyc = [r["cycle_seconds"] for r in rows]
    return {
        "cycle_seconds": {"mean": round(statistics.fmean(cyc), 1), "median": round(statistics.median(cyc), 1),
                          "max": max(cyc), "release_mean": mean("release_seconds", rows),
                          "decide_mean": mean("decide_seconds", rows)},
        **summary_figures(rows),
        "deployed": {k: mean(f"true_{k}", rows) for k in ("recall", "fpr", "action_rate")},
        "legacy_rules_same_days": {k: mean(f"true_{k}", base) for k in ("recall", "fpr", "action_rate")},
        "new_pattern_blocked_last_3": mean("new_pattern_blocked", rows[-3:]),
        "legacy_new_pattern_blocked_last_3": mean("new_pattern_blocked", base[-3:]),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--cycles", type=int, default=26)
    ap.add_argument("--exploration", default="0.25,0", help="comma-separated shares; 0 is off")
    ap.add_argument("--tx-per-day", type=int, default=3000)
    ap.add_argument("--history-days", type=int, default=100)
    ap.add_argument("--merchants", type=int, default=1000)
    ap.add_argument("--cards", type=int, default=20000)
    ap.add_argument("--bad-candidate-cycle", type=int, default=2)
    ap.add_argument("--bad-edit-cycle", type=int, default=0)
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args()

    import os

    from release.orchestration.closed_loop import LoopConfig, run_loop

    results = {"args": {k: str(v) for k, v in vars(args).items()}, "runs": {}}
    with tempfile.TemporaryDirectory(prefix="fraudcd-bench-cycles-") as tmp:
        os.environ["FRAUDCD_HOME"] = str(Path(tmp) / "home")
        for share in (float(x) for x in args.exploration.split(",")):
            loop = LoopConfig(cycles=args.cycles, history_days=args.history_days, exploration=share,
                              tx_per_day=args.tx_per_day, n_merchants=args.merchants, n_cards=args.cards,
                              new_pattern_cycle=1, fading_cycle=1, bad_edit_cycle=args.bad_edit_cycle,
                              bad_candidate_cycle=args.bad_candidate_cycle, replay_rate=400, maturity_days=14,
                              training_history_days=70, dispute_median_days=4.0, dispute_max_days=14)
            t0 = time.monotonic()
            base = legacy_baseline(loop, Path(tmp) / f"legacy-{share}" / "events")
            t_base = time.monotonic() - t0
            t0 = time.monotonic()
            rows = run_loop(loop, Path(tmp) / f"loop-{share}")
            took = time.monotonic() - t0
            results["runs"][str(share)] = {"wall_seconds": round(took, 1),
                                           "baseline_world_seconds": round(t_base, 1),
                                           "pipeline_over_world_alone": round(took / t_base, 1),
                                           **summarise(rows, base),
                                           "cycles": [{k: r.get(k) for k in (
                                               "cycle", "status", "planted", "cycle_seconds", "true_recall",
                                               "true_fpr", "true_action_rate", "new_pattern_blocked",
                                               "est_incumbent_recall_ipw", "est_incumbent_recall_plain",
                                               "true_incumbent_recall", "explored_frauds")} for r in rows]}
            print(json.dumps({share: {k: v for k, v in results["runs"][str(share)].items() if k != "cycles"}},
                             indent=1), flush=True)
    text = json.dumps(results, indent=1)
    if args.out:
        args.out.write_text(text + "\n")
    print(text)


if __name__ == "__main__":
    main()
