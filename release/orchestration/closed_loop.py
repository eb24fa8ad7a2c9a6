"""`fraudcd simulate-cycles`: months of biweekly release cycles, the world and the real pipeline in one loop.

Each cycle, two weeks apart:

1. the world's next 14 days of transactions arrive (simulation.closed_loop: not decided yet);
2. the release of the cycle's day runs through Airflow as every release does (release.orchestration.demo.run_cycle:
   `airflow dags test training_set`, then `release`): training set, training, evaluation, contracts, suggested
   thresholds, a person's approval (the loop's analyst: approves; in the bad-edit cycle, edits first), re-judgement,
   backtest, then shadow and the ramp on those days replayed through a real scoring service (`fraudcd serve`), the
   rollout judged on its decision log, promoted by the plan's policy or rolled back;
3. the 14 days are decided by what is deployed when the release has ended: the scoring service's own code
   (release.serving.service.ScoringService, in this process, its decision log in a folder of its own), so the
   production model and its approved thresholds block, and the configured exploration lets some would-be blocks
   through with their propensity; before any model is production, the legacy rules decide. What is blocked is
   never disputed: the next training sets are censored by the model that the pipeline shipped.

The run records, per cycle, what the release did and why, and what the world saw (from the simulation's truth,
which the pipeline never reads): recall, FPR and action rate of the deployed decisions; the new fraud pattern's
share blocked; the fraud that exploration let through; and the pipeline's own estimates of its policies on the
release's judging rows beside the truth on the same rows. ``closed_loop/cycles.json`` holds the rows;
``reports/closed-loop.html`` shows them (linked from the report index) with plots.

Planted cases: in ``bad_candidate_cycle`` the release trains a deliberately worse candidate (a workflow that sees
only the hour of day); in ``bad_edit_cycle`` the analyst edits the largest merchants' thresholds down to almost
nothing before approving. Both must be stopped (a contract, the re-judgement or a guardrail) before production
changes; the rows say which stopped them.
"""
from __future__ import annotations

import datetime as dt
import json
import os
import shutil
import subprocess
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Callable, Iterator

import numpy as np
import pandas as pd
from pydantic import BaseModel, ConfigDict, Field
from rich.console import Console

from simulation.world import WorldConfig

CYCLE_DAYS = 14
NEW_PATTERN = "fresh_card_bust_out"  # simulation.world: the scenario that appears mid-run
FADING_PATTERN = "card_testing"
ANALYST = "loop analyst (simulate-cycles)"
BAD_WORKFLOW = "hour-only"
BAD_WORKFLOW_YAML = """\
name: hour-only
description: deliberately worse - sees only the hour of day (the closed loop's planted bad candidate)
features: [hour]
categorical_features: []
eval_days: 21
seed: 7
num_boost_round: 20
lightgbm: {objective: binary, learning_rate: 0.1, num_leaves: 4, min_data_in_leaf: 100}
"""
BAD_EDIT_MERCHANTS = 5  # the largest merchants (by support) whose thresholds the bad edit sets to BAD_EDIT_THRESHOLD
BAD_EDIT_THRESHOLD = 0.001


class LoopConfig(BaseModel):
    """One closed-loop run. The world's ``days`` are set from the history and the cycles."""

    model_config = ConfigDict(extra="forbid")
    cycles: int = Field(6, ge=1, le=60)
    history_days: int = Field(150, ge=30)
    exploration: float = Field(0.25, ge=0, lt=1)  # the service's share of would-be blocks let through; 0: off
    # the legacy rules' share in the history before fraud-cd: the same in runs with exploration on and off, so the
    # two differ only in what the loop itself does
    legacy_exploration: float = Field(0.25, gt=0, lt=1)
    tx_per_day: int = Field(3000, ge=100)
    n_merchants: int = Field(2000, ge=10)
    n_cards: int = Field(30000, ge=100)
    seed: int = 7
    new_pattern_cycle: int = Field(2, ge=0)  # the cycle from whose days on the new fraud pattern appears
    fading_cycle: int | None = Field(1, ge=0)  # card testing starts fading in this cycle's days (None: never)
    bad_candidate_cycle: int | None = Field(None, ge=0)
    bad_edit_cycle: int | None = Field(None, ge=0)
    replay_rate: float = Field(400.0, gt=0)  # requests a second the rollout's live traffic is replayed at
    maturity_days: int | None = Field(None, ge=1)  # the pipeline's label maturity (None: config/pipeline.yaml's)
    training_history_days: int | None = Field(None, ge=2)  # a snapshot's history (None: the pipeline's)
    dispute_median_days: float = Field(25.0, gt=0)
    dispute_max_days: int = Field(120, ge=1)
    ramp_yaml: str | None = None  # the rollout plan (None: the demo's, sized for a small world)

    def world(self) -> WorldConfig:
        days = self.history_days + self.cycles * CYCLE_DAYS
        return WorldConfig(seed=self.seed, days=days, tx_per_day=self.tx_per_day, n_merchants=self.n_merchants,
                           n_cards=self.n_cards, drift_start_fraction=(self.history_days + self.new_pattern_cycle
                                                                       * CYCLE_DAYS) / days,
                           fade_start_fraction=None if self.fading_cycle is None else
                           (self.history_days + self.fading_cycle * CYCLE_DAYS) / days,
                           exploration=self.legacy_exploration,
                           dispute_median_days=self.dispute_median_days, dispute_max_days=self.dispute_max_days)


# ---- who decides the world's days ------------------------------------------------------------------------

def legacy_decider(cfg: WorldConfig) -> Callable[[dt.date, pd.DataFrame], pd.DataFrame]:
    """The rules before fraud-cd (simulation.world), for days when no model is production yet."""
    from simulation.world import _decide  # the world's own rules

    def decide(day: dt.date, tx: pd.DataFrame) -> pd.DataFrame:
        df = tx.copy()
        df["seconds"] = (pd.to_datetime(df["ts"], utc=True) - pd.Timestamp(day, tz="UTC")).dt.total_seconds()
        rng = np.random.default_rng([cfg.seed, (day - cfg.start).days, 2])
        return _decide(cfg, df, rng)

    return decide


@contextmanager
def service_decider(seed_day: dt.date, folder: Path) -> Iterator[Callable[[dt.date, pd.DataFrame], pd.DataFrame]]:
    """The deployed policy deciding transactions: the scoring service's code in this process (its deployment from the
    state store, its features from the event logs before ``seed_day`` and the transactions it scores, its
    exploration), its decision log in ``folder`` (removed afterwards), on an event clock."""
    from release.serving.service import RequestTimeConfig, ScoreRequest, ScoringService, load_service_config

    cfg = load_service_config()
    cfg = cfg.model_copy(update={"request_time": RequestTimeConfig(clock="event", max_ahead_seconds=86_400,
                                                                   max_behind_seconds=86_400)})
    if folder.exists():
        shutil.rmtree(folder)
    svc = ScoringService(cfg, seed_day=seed_day, log_folder=folder)

    def decide(day: dt.date, tx: pd.DataFrame) -> pd.DataFrame:
        from release.serving.replay import day_requests
        from release.core.settings import paths

        rows = []
        for body in day_requests(paths().events, day):
            req = ScoreRequest.model_validate(body)
            for _ in range(600):
                code, ans = svc.score(req, client="closed-loop world")
                if code != 503 or "retry_after_s" not in ans:
                    break
                time.sleep(0.05)  # the day's risk tables are being prepared
            if code != 200:
                raise RuntimeError(f"the scoring service answered {code} for tx {body['tx_id']} of {day}: {ans}")
            rows.append({"tx_id": int(body["tx_id"]), "policy": ans["model_id"], "score": ans["score"],
                         "threshold": ans["threshold"], "action": ans["decision"], "explored": ans["exploration"],
                         "propensity": ans["propensity"]})
        return pd.DataFrame(rows)

    try:
        yield decide
    finally:
        svc.stop()
        shutil.rmtree(folder, ignore_errors=True)


# ---- what happened, against the truth ----------------------------------------------------------------------

def _rates(block: np.ndarray, fraud: np.ndarray) -> dict:
    n_f, n_l = int(fraud.sum()), int((~fraud).sum())
    return {"recall": float((block & fraud).sum() / n_f) if n_f else None,
            "fpr": float((block & ~fraud).sum() / n_l) if n_l else None,
            "action_rate": float(block.mean()) if len(block) else None}


def window_truth(world, first: dt.date, end: dt.date) -> dict:
    """What the deployed decisions did on [first, end), from the simulation's truth."""
    t = world.truth_of(first, end)
    block = t["action"].to_numpy() == "block"
    fraud = t["is_fraud"].to_numpy(dtype=bool)
    new = t["scenario"].to_numpy() == NEW_PATTERN
    explored_fraud = t["explored"].to_numpy(dtype=bool) & fraud
    return {"transactions": int(len(t)), "frauds": int(fraud.sum()), **{f"true_{k}": v for k, v in
                                                                        _rates(block, fraud).items()},
            "new_pattern_frauds": int(new.sum()),
            "new_pattern_blocked": float((block & new).sum() / new.sum()) if new.sum() else None,
            "fading_pattern_frauds": int((t["scenario"].to_numpy() == FADING_PATTERN).sum()),
            "explored": int(t["explored"].sum()), "explored_frauds": int(explored_fraud.sum()),
            "explored_fraud_amount": float(t.loc[explored_fraud, "amount"].sum()),
            "policies": sorted(set(t["policy"]))}


def estimates_vs_truth(release_id: str, world) -> dict:
    """The release's own estimates of the incumbent's and the suggested policy's recall and FPR on its judging
    rows (IPW and plain, from its evaluation), and the truth of the same rows: every row's true label, the
    blocked ones included, which the pipeline never sees."""
    from release.orchestration.cycle import release_dir
    from release.state.store import engine, evaluation_summary
    import sqlalchemy as sa

    folder = release_dir(release_id)
    out: dict = {}
    with engine().connect() as conn:
        for r in conn.execute(sa.select(evaluation_summary).where(evaluation_summary.c.release_id == release_id)):
            if r.metric in ("recall", "fpr", "action_rate") and r.estimator in ("ipw", "plain", "all"):
                out[f"est_{r.model}_{r.metric}_{r.estimator}"] = r.estimate
    judging = folder / "judging.parquet"
    if not judging.exists() or not (folder / "evaluation.json").exists():
        return out
    j = pd.read_parquet(judging)
    if "tx_id" not in j:
        return out
    ev = json.loads((folder / "evaluation.json").read_text())
    days = pd.to_datetime(j["day"]).dt.date
    truth = world.truth_of(min(days), max(days) + dt.timedelta(days=1))[["tx_id", "is_fraud"]]
    j = j.merge(truth, on="tx_id", how="left", validate="one_to_one")
    fraud = j["is_fraud"].fillna(False).to_numpy(dtype=bool)
    inc = j["incumbent_score"].to_numpy() >= j["incumbent_threshold"].to_numpy()
    out.update({f"true_incumbent_{k}": v for k, v in _rates(inc, fraud).items()})
    sugg = folder / "suggestions.parquet"
    if sugg.exists() and ev.get("policy_global_threshold") is not None:
        from analysis.metrics import thresholds_for

        s = pd.read_parquet(sugg)
        col = "suggested_threshold" if "suggested_threshold" in s else None
        per = s.set_index("merchant_id")[col] if col else pd.Series(dtype=float)
        thr = thresholds_for(j["merchant_id"], per, float(ev["policy_global_threshold"]))
        pol = j["candidate_score"].to_numpy() >= thr
        out.update({f"true_policy_{k}": v for k, v in _rates(pol, fraud).items()})
    out["judging_rows"] = int(len(j))
    out["judging_labelled"] = int(j["label"].notna().sum())
    return out


# ---- the loop ---------------------------------------------------------------------------------------------

class LoopAnalyst:
    """The analyst of the loop: approves each release's suggested thresholds through the CLI; in the bad-edit cycle
    first sets the largest merchants' thresholds to almost nothing (a planted bad edit: the re-judgement must stop
    it). run_cycle starts the live traffic once the release is approved, whoever approved it."""

    def __init__(self, env: dict, bad_edit: bool, console: Console | None, t0: float):
        self.env, self.bad_edit, self.console, self.t0 = env, bad_edit, console, t0
        self.edited: list[str] = []

    def __call__(self, release_id: str) -> bool:
        from release.orchestration.demo import _fraudcd, _stage, _try_approve
        from release.state import approvals

        if self.bad_edit and not self.edited:
            s = approvals.latest_set(release_id)
            items = approvals.set_items(s["id"]) if s else pd.DataFrame({"merchant_id": [], "support": []})
            top = items.sort_values("support", ascending=False).head(BAD_EDIT_MERCHANTS)["merchant_id"].tolist()
            cmd = [_fraudcd(), "thresholds", "edit", "--release", release_id, "--as", ANALYST, "--reason",
                   "closed loop: a planted bad edit (the largest merchants blocked almost entirely)"]
            for m in top:
                cmd += ["--merchant", str(m), "--threshold", str(BAD_EDIT_THRESHOLD)]
            r = subprocess.run(cmd, env=self.env, capture_output=True, text=True, timeout=120)
            if r.returncode != 0:
                raise RuntimeError(f"the planted edit failed: {r.stderr[-2000:]}")
            self.edited = top
            if self.console:
                _stage(self.console, f"the analyst set {len(top)} merchants' thresholds to {BAD_EDIT_THRESHOLD} "
                                     "(planted bad edit)", self.t0)
        return _try_approve(release_id, ANALYST, self.env, self.console)


def _setup(home: Path, loop: LoopConfig) -> dict:
    """The run's data folder: the demo's configuration (its rollout plan, the service on an event clock) with the
    loop's exploration, the planted bad workflow, and a pipeline file with the loop's time settings."""
    from release.core.settings import EMBEDDED_CONFIG
    from release.orchestration.demo import DEMO_RAMP, cycle_env, demo_config

    if home.exists():
        shutil.rmtree(home)
    home.mkdir(parents=True)
    folder = demo_config(home, loop.ramp_yaml or DEMO_RAMP)
    svc = (folder / "service.yaml").read_text()
    if "\nexploration: 0.05 " not in "\n" + svc:
        raise RuntimeError("config/service.yaml no longer says `exploration: 0.05`; update "
                           "release/orchestration/closed_loop.py")
    (folder / "service.yaml").write_text(("\n" + svc).replace("\nexploration: 0.05 ", f"\nexploration: {loop.exploration} ",
                                                               1)[1:])
    (folder / "workflows" / f"{BAD_WORKFLOW}.yaml").write_text(BAD_WORKFLOW_YAML)
    import yaml

    pipeline = yaml.safe_load((EMBEDDED_CONFIG / "pipeline.yaml").read_text())
    if loop.maturity_days is not None:
        pipeline["labels"]["maturity_days"] = loop.maturity_days
    if loop.training_history_days is not None:
        pipeline["training_set"]["history_days"] = loop.training_history_days
    (folder / "pipeline.yaml").write_text(yaml.safe_dump(pipeline, sort_keys=False))
    os.environ["FRAUDCD_PIPELINE"] = str(folder / "pipeline.yaml")
    env = cycle_env(home)
    env["FRAUDCD_PIPELINE"] = str(folder / "pipeline.yaml")
    return env


def run_loop(loop: LoopConfig, home: Path, console: Console | None = None,
             on_cycle: Callable[[dict], None] | None = None, compare: dict[str, list[dict]] | None = None) -> list[dict]:
    """Run the closed loop in ``home`` (made anew) and return one row per cycle (also in
    ``home/closed_loop/cycles.json`` as each cycle ends, and ``home/reports/closed-loop.html``, beside the rows of
    other runs in ``compare``, {label: rows}, e.g. the same world with exploration off)."""
    from release.orchestration.airflow_env import migrate_airflow_db
    from release.orchestration.cycle import get_release, outcome_reason, release_id_for
    from release.orchestration.demo import DemoPerson, LiveTraffic, _stage, run_cycle
    from release.state import approvals, registry
    from simulation.closed_loop import ClosedLoopWorld

    t0 = time.monotonic()
    cfg = loop.world()
    env = _setup(home, loop)
    if console:
        _stage(console, f"closed loop: {loop.history_days} days of history, then {loop.cycles} cycles of "
                        f"{CYCLE_DAYS} days; ~{loop.tx_per_day:,} transactions/day; exploration "
                        f"{loop.exploration:g}", t0)
    world = ClosedLoopWorld.start(cfg, home / "events", loop.history_days)
    migrate_airflow_db(env)
    rows: list[dict] = []
    out = home / "closed_loop"
    out.mkdir(parents=True, exist_ok=True)
    for k in range(loop.cycles):
        c0 = time.monotonic()
        first, end = world.add_traffic(CYCLE_DAYS)
        rid = release_id_for(first)
        live = LiveTraffic(env, first, CYCLE_DAYS, home / "logs" / f"serve-{k}.log", rate=loop.replay_rate)
        (home / "logs").mkdir(exist_ok=True)
        analyst = LoopAnalyst(env, k == loop.bad_edit_cycle, console, t0)
        person = DemoPerson(rid, ANALYST, env, console, t0)
        workflow = (str(home / "config" / "workflows" / f"{BAD_WORKFLOW}.yaml") if k == loop.bad_candidate_cycle
                    else None)
        if console:
            _stage(console, f"cycle {k + 1}/{loop.cycles}: release {rid}" + (" (planted: a worse candidate)"
                                                                           if workflow else "")
                   + (" (planted: a bad threshold edit)" if k == loop.bad_edit_cycle else ""), t0)
        error = None
        try:
            run_cycle(first, env, home / "logs", ANALYST, workflow=workflow, console=console, t0=t0, run=f"-{k}",
                      live=live, watch=person, approve=analyst)
        except Exception as e:  # noqa: BLE001 - recorded on the cycle's row; the world goes on
            error = f"{type(e).__name__}: {e}"[:2000]
        c1 = time.monotonic()
        try:
            rel = get_release(rid)
        except KeyError:
            rel = {"status": "missing", "stop_reason": error}
        prod = registry.tagged("production")
        decider = service_decider(first, home / "world-decider") if prod is not None else None
        if decider is not None:
            with decider as decide:
                counts = world.decide(decide)
        else:
            counts = world.decide(legacy_decider(cfg))
        row = {"cycle": k + 1, "as_of": first.isoformat(), "release_id": rid, "status": str(rel["status"]),
               "reason": outcome_reason(rel) if rel.get("status") in ("promoted", "rolled_back", "stopped")
               else (rel.get("stop_reason") or ""), "error": error,
               "planted": "bad candidate" if workflow else "bad edit" if k == loop.bad_edit_cycle else None,
               "edited_merchants": analyst.edited, "production_model": prod.id if prod else None,
               "candidate_model": rel.get("candidate_model_id"), "release_seconds": round(c1 - c0, 1),
               "decide_seconds": round(time.monotonic() - c1, 1), "live_requests": live.sent,
               "live_failed": live.failed, **counts, **window_truth(world, first, end)}
        row.update(estimates_vs_truth(rid, world) if rel.get("status") != "missing" else {})
        ready = approvals.readiness()
        row["readiness"] = ready.to_dict(orient="records") if ready is not None and len(ready) else []
        row["cycle_seconds"] = round(time.monotonic() - c0, 1)
        rows.append(row)
        from release.core.io import atomic_write_text

        atomic_write_text(json.dumps({"config": json.loads(loop.model_dump_json()), "cycles": rows}, indent=2,
                                     default=str) + "\n", out / "cycles.json")
        if console:
            _stage(console, f"cycle {k + 1}: {row['status']} in {row['release_seconds']:.0f}s; the world's next "
                            f"{CYCLE_DAYS} days decided by {', '.join(row['policies'])}: recall "
                            f"{_pct(row['true_recall'])}, FPR {_pct(row['true_fpr'], 2)}, action rate "
                            f"{_pct(row['true_action_rate'], 2)}", t0)
        if on_cycle:
            on_cycle(row)
    from analysis.closed_loop_report import write_summary

    write_summary(rows, loop, home / "reports", compare=compare)
    return rows


def earlier_run(folder: Path) -> tuple[str, list[dict]]:
    """(a label, the rows) of an earlier run's ``closed_loop/cycles.json`` in ``folder``; ValueError saying what is
    missing."""
    f = Path(folder) / "closed_loop" / "cycles.json"
    try:
        data = json.loads(f.read_text())
        return f"exploration {float(data['config']['exploration']):g} ({Path(folder).name})", list(data["cycles"])
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise ValueError(f"{f}: not the rows of a closed-loop run ({type(e).__name__}: {e}); give the --home of an "
                         "earlier `fraudcd simulate-cycles`") from None


def _pct(x, digits: int = 1) -> str:
    return "-" if x is None else f"{100 * x:.{digits}f}%"
