"""Benchmark: the scoring service on this machine, over loopback.

Builds a simulated world (seeded), trains two models with the shipped default workflow (production and
candidate, real size: 300 rounds, 15 leaves, every feature), approves thresholds, starts
`fraudcd serve` in a subprocess, then replays one simulated day per phase through it with the
replayer (httpx, in this process: the load generator shares the two cores with the service):

1. baseline: ``booster.predict`` on one row, in this process (what scoring costs without a service);
2. shadow off: production only, at ``--rate`` requests/s (open loop);
3. shadow on: the candidate scores every request beside production, at the same rate;
4. throughput: shadow on, as fast as ``--concurrency`` requests in flight allow (closed loop);
5. rollback under load: half the cards on the candidate at ``--rate``; half-way through the day an
   operator runs `fraudcd ramp rollback` (a real subprocess). Measured: when the change committed
   (this process polls the store's version every 2 ms), when the service first decided on the new
   version, when it last let the candidate decide, and how many requests failed.

Authentication is on, as shipped (a bearer token with both roles, generated for the run and handed to
the service in its environment): the measured latency includes checking it.

Latency is client-side (send to answer, HTTP included) and server-side (the service's own measure of
the critical path, from the decision log). Machines here are shared and noisy: read the ratios
measured in the same run (shadow on vs off, service vs raw predict), not the absolute milliseconds.

    .venv/bin/python benchmarks/bench_service.py [--rate 300] [--home DIR] [--json]
"""
from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import json
import os
import secrets
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import pandas as pd

PROJECT_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(PROJECT_ROOT))
AT = "2026-03-01T00:00:00+00:00"
WHO = "bench (automated)"
TOKEN = secrets.token_urlsafe(32)  # this run's bearer token (scoring and operator)


def load() -> str:
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


def build(home: Path, days: int, tx_per_day: int) -> dict:
    """World, snapshot, two registered models with approved thresholds, production tagged."""
    from release import approvals, registry
    from release.pipeline import pipeline
    from release.settings import config_dir
    from release.training import load_workflow, train_model
    from release.training_set import build_training_set
    from simulation.world import WorldConfig, simulate

    cfg = WorldConfig(days=days, tx_per_day=tx_per_day, dispute_median_days=2.0, dispute_max_days=5)
    seed_day = cfg.start + dt.timedelta(days=days - 5)  # five days left to replay: a warm-up, then one per phase
    assert days - 4 >= pipeline().features.lookback_days, "the service seeds lookback_days of history"
    marker = home / "world.json"
    if marker.exists() and json.loads(marker.read_text())["cfg"] == json.loads(cfg.model_dump_json()):
        return json.loads(marker.read_text())
    if home.exists():
        shutil.rmtree(home)
    home.mkdir(parents=True)
    t = time.perf_counter()
    simulate(cfg, home / "events")
    print(f"  simulated {days} days x ~{tx_per_day:,} tx/day in {time.perf_counter() - t:.1f}s", file=sys.stderr)
    snap = build_training_set(home / "events", home / "snapshots", seed_day, maturity_days=5, history_days=40)
    wf = load_workflow(config_dir() / "workflows" / "default.yaml")
    ids = {}
    for role, seed in (("production", 7), ("candidate", 11)):
        w = wf.model_copy(update={"seed": seed, "lightgbm": {**wf.lightgbm, "num_threads": 1}})
        text, _ = train_model(snap.data, w)
        m = registry.register_model(text, workflow=w.model_dump(), features=w.features, snapshot_hash=snap.hash,
                                    code_version="bench", metrics={}, at=AT, actor=WHO)
        s = m.booster().predict(pd.read_parquet(snap.data)[m.features].astype(float), num_threads=1)
        approvals.create_set(m.id, None, pd.DataFrame(columns=["merchant_id", "suggested_threshold"]),
                             float(np.quantile(s, 0.985)), at=AT, actor=WHO, reason="bench thresholds",
                             status=approvals.APPROVED)
        ids[role] = m.id
    registry.move_tag("production", ids["production"], at=AT, actor=WHO, reason="bench production model")
    info = {"cfg": json.loads(cfg.model_dump_json()), "seed_day": seed_day.isoformat(), **ids}
    marker.write_text(json.dumps(info))
    return info


def raw_predict_us(model_id: str, features: pd.DataFrame, n: int = 3000) -> np.ndarray:
    from release.registry import get_model

    m = get_model(model_id)
    b = m.booster()
    rows = features[m.features].astype(float).to_numpy()
    out = np.empty(n)
    for i in range(n):
        row = rows[i % len(rows)][None, :]
        t = time.perf_counter()
        b.predict(row, num_threads=1)
        out[i] = (time.perf_counter() - t) * 1e6
    return out


class Service:
    def __init__(self, home: Path, seed_day: str, port: int, durability: str = "write"):
        self.url = f"http://127.0.0.1:{port}"
        cfg = home / "service.yaml"
        cfg.write_text(f"maturity_days: 5\ndecision_log: {{durability: {durability}}}\nauth:\n  tokens: "
                       "[{name: bench, roles: [scoring, operator], env: FRAUDCD_BENCH_TOKEN}]\n")
        env = {**os.environ, "FRAUDCD_HOME": str(home), "FRAUDCD_BENCH_TOKEN": TOKEN}
        self.log = open(home / "serve.log", "w")
        self.proc = subprocess.Popen([sys.executable, "-m", "release.cli", "serve", "--port", str(port),
                                      "--seed-day", seed_day, "--config", str(cfg)], cwd=PROJECT_ROOT, env=env,
                                     stdout=self.log, stderr=subprocess.STDOUT)
        import httpx

        deadline = time.monotonic() + 120
        while True:
            try:
                if httpx.get(self.url + "/healthz", timeout=1).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"the service did not start; see {home / 'serve.log'}")
            time.sleep(0.1)

    def state(self) -> dict:
        import httpx

        return httpx.get(self.url + "/state", timeout=5, headers={"authorization": f"Bearer {TOKEN}"}).json()

    def wait_for(self, version: int) -> None:
        while self.state()["deployment"]["version"] < version:
            time.sleep(0.01)

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(timeout=60)
        self.log.close()


def pct(a, q) -> float | None:
    a = np.asarray(a, dtype=float)
    return float(np.percentile(a, q)) if len(a) else None


def phase_figures(res, log: pd.DataFrame) -> dict:
    s = res.summary()
    mine = log[log["tx_id"].isin({a.tx_id for a in res.answers})]
    return {"requests": s["sent"], "failed": s["failed"], "throughput_rps": s["throughput_rps"],
            "client_p50_ms": s["p50_ms"], "client_p99_ms": s["p99_ms"],
            "server_p50_ms": pct(mine["latency_ms"], 50), "server_p99_ms": pct(mine["latency_ms"], 99),
            "shadow": mine["shadow"].value_counts().to_dict(), "max_schedule_slip_ms": s["max_schedule_slip_ms"]}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--rate", type=float, default=300.0, help="requests per second in the open-loop phases")
    ap.add_argument("--concurrency", type=int, default=16, help="in flight at most (throughput phase)")
    ap.add_argument("--days", type=int, default=66)
    ap.add_argument("--warm-up", type=int, default=1000, help="requests sent (and not counted) before the phases")
    ap.add_argument("--tx-per-day", type=int, default=3000)
    ap.add_argument("--home", type=Path, default=None, help="reuse a world here (default: a temp folder)")
    ap.add_argument("--port", type=int, default=8765)
    ap.add_argument("--json", action="store_true")
    ap.add_argument("--durability", choices=["write", "fsync"], default="write",
                    help="what an answer waits for: its decision-log journal line written, or fsynced")
    args = ap.parse_args()

    home = (args.home or Path(tempfile.mkdtemp(prefix="fraudcd-bench-service-")) / "home").resolve()
    os.environ["FRAUDCD_HOME"] = str(home)
    from release import ramp
    from release.decision_log import read_decision_log
    from release.features import compute_features
    from release.replay import day_requests, replay

    print(f"load average before: {load()}", file=sys.stderr)
    info = build(home, args.days, args.tx_per_day)
    day0 = dt.date.fromisoformat(info["seed_day"])
    warm_day, *days = [day0 + dt.timedelta(days=i) for i in range(5)]
    # a clean deployment state for every run on a reused world
    shutil.rmtree(home / "decision_log", ignore_errors=True)
    st = ramp.current()
    if st["state"] in (ramp.SHADOW, ramp.RAMPING, ramp.PAUSED):
        ramp.rollback(at=AT, actor=WHO, reason="bench: start from production only")

    feats = compute_features(home / "events", warm_day, warm_day + dt.timedelta(days=1), maturity_days=5)
    raw = raw_predict_us(info["production"], feats)
    out = {"machine": {"cpus": os.cpu_count(), "load_before": load()}, "rate": args.rate,
           "raw_predict_us": {"p50": pct(raw, 50), "p99": pct(raw, 99)}}

    svc = Service(home, info["seed_day"], args.port, args.durability)
    try:
        rollover_ms = []

        def run(day, rate, concurrency=32, on_tick=None):
            """The day's first transaction alone (it triggers the once-a-day merchant fraud-rate table,
            timed apart), then the rest of the day at ``rate``."""
            bodies = day_requests(home / "events", day)
            first = asyncio.run(replay(svc.url, bodies[:1], rate=0, concurrency=1, token=TOKEN))
            rollover_ms.append(first.answers[0].latency_ms)
            return asyncio.run(replay(svc.url, bodies[1:], rate=rate, concurrency=concurrency, on_tick=on_tick,
                                      token=TOKEN))

        print("  warm-up", file=sys.stderr)  # first requests, first day's rate table, caches: not counted
        asyncio.run(replay(svc.url, day_requests(home / "events", warm_day, args.warm_up), rate=args.rate,
                           token=TOKEN))
        print("  phase: shadow off", file=sys.stderr)
        off = run(days[0], args.rate)
        v = ramp.start_shadow("rel-bench", info["candidate"], at=AT, actor=WHO, reason="bench: shadow on")["version"]
        svc.wait_for(v)
        print("  phase: shadow on", file=sys.stderr)
        on = run(days[1], args.rate)
        print("  phase: throughput", file=sys.stderr)
        thr = run(days[2], 0, concurrency=args.concurrency)
        svc.wait_for(ramp.set_pct(50, at=AT, actor=WHO, reason="bench: half the cards")["version"])

        print("  phase: rollback under load", file=sys.stderr)
        marks = {}
        bodies_n = len(day_requests(home / "events", days[3])) - 1

        def operator():
            before = ramp.current()["version"]
            marks["cli_start"] = time.time()
            proc = subprocess.Popen([str(Path(sys.executable).with_name("fraudcd")), "ramp", "rollback", "--as", WHO,
                                     "--reason", "bench: rollback under load"], env=os.environ.copy(),
                                    stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            while ramp.current()["version"] == before:  # when the change is committed, to ~2 ms
                time.sleep(0.002)
            marks["committed"] = time.time()
            marks["version"] = ramp.current()["version"]
            proc.wait()
            marks["cli_end"] = time.time()

        op = threading.Thread(target=operator)

        async def on_tick(i, elapsed):
            if i == bodies_n // 2:
                op.start()

        rb = run(days[3], args.rate, on_tick=on_tick)
        op.join()
        final = svc.state()
    finally:
        svc.stop()  # graceful: every decision is in the log after this
    log = read_decision_log(home / "decision_log")
    out["shadow_off"], out["shadow_on"] = phase_figures(off, log), phase_figures(on, log)
    out["throughput_shadow_on"] = phase_figures(thr, log)
    rbl = log[log["tx_id"].isin({a.tx_id for a in rb.answers})]
    served = (rbl["served_at"] - pd.Timestamp(0, tz="UTC")).dt.total_seconds()
    committed = marks["committed"]
    new = served[rbl["deployment_version"] >= marks["version"]]
    cand = served[rbl["served_by"] == "candidate"]
    out["rollback_under_load"] = {
        **phase_figures(rb, log),
        "cli_command_s": marks["cli_end"] - marks["cli_start"],
        "commit_after_cli_start_s": committed - marks["cli_start"],
        "first_decision_on_new_version_after_commit_s": float(new.min() - committed) if len(new) else None,
        "last_candidate_decision_after_commit_s": float(cand.max() - committed) if len(cand) else None,
        "candidate_decisions_after_commit": int((cand > committed).sum()),
        "lost_log_records": len({a.tx_id for a in rb.answers} - set(rbl["tx_id"])),
        "state_after": final["deployment"]["state"],
    }
    out["decision_log"] = {"records": len(log), "all_requests": sum(len(r.answers) for r in (off, on, thr, rb))
                           + len(rollover_ms) + min(args.warm_up, len(day_requests(home / "events", warm_day)))}
    out["first_request_of_a_day_ms"] = rollover_ms
    o, n = out["shadow_off"], out["shadow_on"]
    out["ratios"] = {
        "shadow_on_vs_off_client_p50": n["client_p50_ms"] / o["client_p50_ms"],
        "shadow_on_vs_off_client_p99": n["client_p99_ms"] / o["client_p99_ms"],
        "shadow_added_client_p50_ms": n["client_p50_ms"] - o["client_p50_ms"],
        "shadow_added_server_p50_ms": n["server_p50_ms"] - o["server_p50_ms"],
        "service_server_p50_vs_raw_predict_p50": o["server_p50_ms"] * 1000 / out["raw_predict_us"]["p50"],
        "service_client_p50_vs_raw_predict_p50": o["client_p50_ms"] * 1000 / out["raw_predict_us"]["p50"],
    }
    out["machine"]["load_after"] = load()
    if args.json:
        print(json.dumps(out, indent=2, default=str))
        return 0
    print(f"\nscoring service on {os.cpu_count()} cores, loopback; load average {out['machine']['load_before']} "
          f"-> {out['machine']['load_after']}")
    print(f"raw booster.predict, one row: p50 {out['raw_predict_us']['p50']:.0f} us, "
          f"p99 {out['raw_predict_us']['p99']:.0f} us (baseline)")
    print(f"{'phase':<26}{'req':>6}{'fail':>5}{'req/s':>8}{'client p50':>11}{'p99':>8}{'server p50':>11}{'p99':>8}"
          f"  shadow")
    for name, key in (("shadow off", "shadow_off"), ("shadow on", "shadow_on"),
                      ("throughput (shadow on)", "throughput_shadow_on"),
                      ("rollback under load", "rollback_under_load")):
        f = out[key]
        print(f"{name:<26}{f['requests']:>6}{f['failed']:>5}{f['throughput_rps']:>8.0f}{f['client_p50_ms']:>9.2f}ms"
              f"{f['client_p99_ms']:>6.1f}ms{f['server_p50_ms']:>9.2f}ms{f['server_p99_ms']:>6.2f}ms  {f['shadow']}")
    r, q = out["ratios"], out["rollback_under_load"]
    print(f"shadow on / off: client p50 x{r['shadow_on_vs_off_client_p50']:.2f} "
          f"(+{r['shadow_added_client_p50_ms']:.2f} ms), p99 x{r['shadow_on_vs_off_client_p99']:.2f}; "
          f"server p50 +{r['shadow_added_server_p50_ms']:.3f} ms")
    print(f"service / raw predict (p50): server-side x{r['service_server_p50_vs_raw_predict_p50']:.1f}, "
          f"client-side x{r['service_client_p50_vs_raw_predict_p50']:.1f}")
    print(f"rollback under load: `fraudcd ramp rollback` took {q['cli_command_s']:.2f}s (committed "
          f"{q['commit_after_cli_start_s']:.2f}s after it started); after the commit the service decided on the new "
          f"version in {q['first_decision_on_new_version_after_commit_s']:.3f}s, the candidate's last decision was "
          f"{q['last_candidate_decision_after_commit_s']:+.3f}s ({q['candidate_decisions_after_commit']} decisions "
          f"after the commit); {q['failed']} failed requests, {q['lost_log_records']} lost log records")
    print("first request of each day (finishes the day's merchant fraud-rate table from the event logs): "
          + ", ".join(f"{x:.0f}" for x in rollover_ms) + " ms")
    print(f"decision log: {out['decision_log']['records']:,} records for {out['decision_log']['all_requests']:,} "
          "requests")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
