"""End to end: whole release cycles through real Airflow (`airflow dags test`) on a tiny simulated world,
the rollout on the traffic a real scoring service scores (`fraudcd serve`, fed by a replayer).

Cycle 1 (day 136) starts from nothing: it bootstraps an incumbent, trains the candidate from the default
workflow, the thresholds are approved through the CLI by a named approver; the DAG backtests the candidate,
deploys it into shadow in the running service and walks the ramp on the service's decision log. During the
ramp an on-call operator pauses it (the DAG must hold it) and resumes it; at 50% the service is killed
(nothing may advance without evidence) and started again; after the last step a person promotes it (the
plan's policy), answering the DAG's question from the terminal.
Cycle 1b (day 146; a named person waived its recall contract for the drill) walks shadow, then its first step
cannot gather the evidence its plan asks for: the DAG asks a person (Airflow's human-in-the-loop task), who
rolls it back through Airflow's response handler.
Cycle 2 (day 150) trains a deliberately worse candidate (it sees only the hour of day): the release
contracts must stop it before any traffic moves, and the report must say why.
Then on call rolls back from the terminal.
"""
from __future__ import annotations

import datetime as dt
import hashlib
import html
import json
import subprocess
import sys
from pathlib import Path

import pytest

from release.orchestration.closed_loop import BAD_WORKFLOW_YAML

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

APPROVER = "e2e approver (pytest)"


def _fraudcd(home: Path, *args: str) -> subprocess.CompletedProcess:
    from release.orchestration.demo import cycle_env

    return subprocess.run([str(Path(sys.executable).with_name("fraudcd")), *args], env=cycle_env(home),
                          capture_output=True, text=True, timeout=120)


# The limits are the demo's (release/orchestration/demo.py DEMO_RAMP, which says why a small world needs them); this test is
# about the rollout's mechanics on live traffic. What the guardrails catch is planted and measured in
# tests/release/rollout/test_guardrails.py and tests/release/rollout/test_rollout.py.
E2E_RAMP = """\
steps: [25, 50, 100]
shadow: {min_candidate_rows: 1200, min_event_seconds: 43200, max_wait_seconds: 300}
step: {min_candidate_rows: 1200, min_event_seconds: 21600, max_wait_seconds: 300}
promotion: person
poll_seconds: 1
guardrails:
  action_rate_shift: {max_relative_shift: 1.0, min_absolute_shift: 0.01, min_support: 1200}
  segment_action_rate_shift: {max_relative_shift: 1.0, min_absolute_shift: 0.01, min_support: 1200}
  score_shift: {max_psi: 0.2, min_rows: 500}
  error_rate: {max_rate: 0.01, min_requests: 400}
  latency: {max_p99_ms: 250, min_requests: 400}
backtest: {days: 14}
"""
# cycle 1b: its first step needs more of the candidate's decisions than the traffic can give in time
UNREACHABLE_RAMP = E2E_RAMP.replace("step: {min_candidate_rows: 1200, min_event_seconds: 21600, max_wait_seconds: 300}",
                                    "step: {min_candidate_rows: 1000000, min_event_seconds: 0, max_wait_seconds: 6}")
ONCALL = "on-call (e2e)"
HOLD_S = 6  # how long the operator holds the paused ramp (the DAG looks every second)


class Operator:
    """What people do during cycle 1's rollout, called from the harness's loop every half second: pause at
    the first step and watch that the DAG holds it; resume; at 50% kill the service, watch that nothing
    advances, start it again; promote when asked."""

    def __init__(self, home: Path, live):
        self.home, self.live, self.phase = home, live, "wait"
        self.seen: list[dict] = []  # (phase, state, pct, candidate rows at the time) while held
        self.t = 0.0

    def __call__(self) -> None:
        import time

        from release.rollout import ramp

        st = ramp.current()
        now = time.monotonic()
        if self.phase == "wait" and st["state"] == "ramping" and st["pct"] == 25:
            r = _fraudcd(self.home, "ramp", "pause", "--as", ONCALL, "--reason", "e2e: hold the first step")
            assert r.returncode == 0, r.stderr
            self.phase, self.t = "paused", time.monotonic()  # held from when the pause is in the store
        elif self.phase == "paused":
            self.seen.append({"phase": "paused", "state": st["state"], "pct": st["pct"], "t": now})
            if now - self.t > HOLD_S:
                r = _fraudcd(self.home, "ramp", "resume", "--as", ONCALL, "--reason", "e2e: go on")
                assert r.returncode == 0, r.stderr
                self.phase = "resumed"
        elif self.phase == "resumed" and st["state"] == "ramping" and st["pct"] == 50:
            self.live.kill_service()
            self.phase, self.t = "killed", now
        elif self.phase == "killed":
            self.seen.append({"phase": "killed", "state": st["state"], "pct": st["pct"], "t": now})
            if now - self.t > HOLD_S:
                self.live.start_service()
                self.phase = "restarted"
        elif self.phase == "restarted" and st["state"] == "ready_to_promote":
            r = _fraudcd(self.home, "ramp", "promote", "--as", APPROVER, "--reason", "e2e: every stage passed")
            assert r.returncode == 0, r.stderr
            self.promote_output = r.stdout
            self.phase = "promoted"


class ExtendsThenRollsBack:
    """Cycle 1b's person, answering the DAG's rollout questions in Airflow through its response handler (what
    the UI calls), in a process on the cycle's Airflow database: the first time "Extend the wait"; when the
    extended stage stays inconclusive and the DAG asks again, "Roll back"."""

    ANSWERS = [("Extend the wait", "e2e: give the first step more time"),
               ("Roll back", "e2e: too little traffic at 25%, even extended; not worth the wait")]

    def __init__(self, release_id: str, env: dict):
        self.release_id, self.env, self.answered = release_id, env, []

    def __call__(self) -> None:
        from release.orchestration.demo import respond_in
        from release.rollout.driver import needs_person

        if len(self.answered) < len(self.ANSWERS) and needs_person(self.release_id):
            option, reason = self.ANSWERS[len(self.answered)]
            out = respond_in(self.env, self.release_id, option, "risk lead (e2e)", reason)
            if out is not None:  # None: the question is not (yet, or again) open in Airflow
                self.answered.append(out)


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """A simulated world and three cycles run through Airflow. Returns (home, good, asked, worse, operator,
    asker)."""
    from release.orchestration.airflow_env import migrate_airflow_db
    from release.orchestration.cycle import release_id_for
    from release.orchestration.demo import LiveTraffic, cycle_env, demo_config, run_cycle
    from simulation.world import WorldConfig, simulate

    home = tmp_path_factory.mktemp("e2e") / "home"
    # a small world: at a few thousand transactions a day the default 5% exploration leaves about one
    # explored fraud in a judging window, too few for any counterfactual figure (the gates would rightly stop
    # every release as "insufficient data"); exploring 30% of would-be blocks gives what a window needs
    cfg = WorldConfig(days=150, tx_per_day=2500, n_merchants=150, n_cards=15000, exploration=0.3)
    simulate(cfg, home / "events")
    demo_config(home, E2E_RAMP)
    env = cycle_env(home)  # also points this process's FRAUDCD_HOME and FRAUDCD_CONFIG at the world
    migrate_airflow_db(env)
    day1 = cfg.start + dt.timedelta(days=136)
    # 125 s of traffic at most (days 136-145: cycle 1b starts on day 146); the stages need about 11,000 of the
    # 25,000 transactions. The replayer holds the days until the candidate is in shadow and while the service
    # is down (LiveTraffic), so neither the re-judgement and backtest nor the killed service's slow restart on
    # a busy machine use up the days the 50% and 100% steps need (a busy run's 50% step once got 765 of its
    # 1,200 rows and the rollout was rolled back, 2026-12-02)
    live = LiveTraffic(env, day1, 10, home / "serve-1.log", rate=200)
    operator = Operator(home, live)
    good = run_cycle(day1, env, home / "logs", APPROVER, live=live, watch=operator)
    demo_config(home, UNREACHABLE_RAMP)
    day1b = cfg.start + dt.timedelta(days=146)
    asker = ExtendsThenRollsBack(release_id_for(day1b), env)
    # its candidate (the default workflow again, ten days on) shows no recall gain over cycle 1's, so the
    # contracts would stop it offline; a named person waives that contract for this release only, on the record
    drill = [{"contract": "fixed_fpr_higher_recall", "by": "Head of risk (e2e drill)",
              "reason": "rollout drill: the candidate matches production's recall; let it reach shadow"}]
    asked = run_cycle(day1b, env, home / "logs", APPROVER, overrides=drill,
                      live=LiveTraffic(env, day1b, 4, home / "serve-1b.log", rate=150), watch=asker)
    worse_yaml = home / "hour_only.yaml"
    worse_yaml.write_text(BAD_WORKFLOW_YAML)  # the closed loop's planted worse candidate too
    worse = run_cycle(cfg.start + dt.timedelta(days=150), env, home / "logs", APPROVER, workflow=str(worse_yaml))
    return home, good, worse, asked, operator, asker


def test_first_cycle_bootstraps_then_promotes_the_candidate(world):
    from release.state import registry
    from release.orchestration.cycle import get_release

    home, good, *_ = world
    rel = get_release(good)
    assert rel["status"] == "promoted"
    assert rel["incumbent_bootstrap"]
    prod, prev = registry.tagged("production"), registry.tagged("previous")
    assert prod.id == rel["candidate_model_id"]
    assert prev.id == rel["incumbent_model_id"] and prev.workflow == "bootstrap-baseline"
    # the registry's id is the content hash of the LightGBM text it points at
    text = prod.path.read_text()
    assert text.startswith("tree") and prod.id == "m-" + hashlib.sha256(text.encode()).hexdigest()[:16]
    assert prod.path.is_relative_to(home)
    assert prod.booster().num_feature() == len(prod.features)


def test_verdicts_for_every_stage_are_in_the_store(world):
    from release.state.releases import release_verdicts

    _, good, *_ = world
    vs = release_verdicts(good)
    # approved: the re-judgement; backtest: offline on recent history; shadow and ramp: on live traffic
    assert {v["stage"] for v in vs} == {"offline", "approved", "backtest", "shadow", "ramp"}
    offline = {v["contract"] for v in vs if v["stage"] == "offline"}
    from contracts.evaluator import load_contracts
    from release.core.settings import contracts_file

    assert offline == set(load_contracts(contracts_file()).names())  # every contract in force was judged
    from release.orchestration.cycle import release_dir

    # the evaluation kept the file in force with the release: the set that judged every stage, as the report says
    assert (release_dir(good) / "contracts.yaml").read_bytes() == contracts_file().read_bytes()
    from contracts.base import stops

    assert not [v for v in vs if v["stage"] in ("offline", "approved") and stops(v)]  # nothing stopped it
    assert not [v for v in vs if v["gate"] and v["verdict"] == "fail"]
    assert all(v["sentence"] for v in vs)


def test_evaluation_metrics_with_intervals_are_on_disk_and_summarised_in_the_store(world):
    import pandas as pd
    import sqlalchemy as sa

    from release.orchestration.cycle import release_dir
    from release.state.store import engine, evaluation_summary

    _, good, *_ = world
    metrics = pd.read_parquet(release_dir(good) / "metrics.parquet")
    assert {"country", "merchant", "merchant_size", "amount_band", "card_segment"} <= set(metrics.slice_type)
    with engine().connect() as conn:
        rows = conn.execute(sa.select(evaluation_summary).where(evaluation_summary.c.release_id == good)).all()
    summary = {(r.metric, r.estimator, r.model): r for r in rows}
    d = summary[("recall", "ipw", "candidate-incumbent")]
    assert d.lo <= d.estimate <= d.hi
    overall = metrics[metrics.slice_type == "all"]
    assert len(rows) == len(overall)  # the summary is the all-traffic part of the tidy table


def test_the_rollout_walked_every_stage_on_the_services_own_decisions(world):
    from release.rollout import ramp
    from release.state.releases import ramp_step_log
    from release.serving.decision_log import read_decision_log

    home, good, *_ = world
    steps = ramp_step_log(good)
    assert [(s["pct"], s["outcome"]) for s in steps] == [(0, "passed"), (25, "passed"), (50, "passed"),
                                                         (100, "passed")]
    for s in steps:  # each stage passed on at least its minimum of the candidate's own decisions
        need = 1200
        d = json.loads(s["details_json"])
        assert s["candidate_rows"] >= need and d["event_seconds"] >= (43200 if s["pct"] == 0 else 21600)
        assert d["status"] == "pass" and not d["missing"]
    shares = [s["candidate_rows"] / s["rows"] for s in steps[1:]]
    assert shares == sorted(shares) and shares[-1] == 1.0
    log = read_decision_log(home / "decision_log")
    mine = log[log["release_id"] == good]
    assert len(mine) >= sum(s["rows"] for s in steps)  # the evidence is the service's log, nothing replayed
    assert set(mine["ramp_pct"]) >= {0.0, 25.0, 50.0, 100.0}
    served = mine[mine["served_by"] == "candidate"]
    assert len(served) and set(served["ramp_pct"]) <= {25.0, 50.0, 100.0}  # never served in shadow
    # the replayed days began with the candidate's shadow (none spent while the release was re-judged)
    first = log.sort_values("served_at").iloc[0]
    assert (first["release_id"], first["ramp_state"]) == (good, "shadow")
    assert ramp.current()["state"] != "ramping"


def test_a_manual_pause_is_obeyed_by_the_dag_and_a_killed_service_stops_every_step(world):
    from release.state.releases import ramp_step_log
    from release.state.store import audit_log

    home, good, _, _, operator, _ = world
    assert operator.phase == "promoted", operator.phase
    # looked at every half second or so for HOLD_S seconds each (a loaded machine's harness loop comes round
    # less often, and a look can take a second): every look saw it held, and the looks spanned most of the hold
    held = [o for o in operator.seen if o["phase"] == "paused"]
    assert len(held) >= 4 and held[-1]["t"] - held[0]["t"] >= HOLD_S / 2
    assert all((o["state"], o["pct"]) == ("paused", 25) for o in held)
    down = [o for o in operator.seen if o["phase"] == "killed"]
    assert len(down) >= 4 and down[-1]["t"] - down[0]["t"] >= HOLD_S / 2
    assert all((o["state"], o["pct"]) == ("ramping", 50) for o in down)
    trail = [a for a in audit_log(entity_prefix="ramp") if json.loads(a["after_json"] or "{}").get("release_id") == good]
    acts = [(a["action"], a["actor"]) for a in trail]
    i_pause, i_resume = acts.index(("ramp_pause", ONCALL)), acts.index(("ramp_resume", ONCALL))
    assert i_pause < i_resume
    assert not [a for a in acts[i_pause + 1:i_resume] if a[0] == "ramp_set"]  # nothing moved while paused
    assert acts[-2:] == [("ramp_ready", "fraud-cd rollout"), ("promote", APPROVER)]
    assert [s["pct"] for s in ramp_step_log(good)].count(50) == 1  # the 50% step passed once, after the restart
    assert "answered Airflow task release.rollout" in operator.promote_output


def test_an_inconclusive_step_asks_a_person_in_airflow_and_never_passes(world):
    """The first step cannot gather its evidence: the DAG asks in Airflow; extended, it stays inconclusive
    and the DAG asks again, in Airflow; the second answer rolls back."""
    from release.state import registry
    from release.orchestration.cycle import get_release
    from release.state.releases import ramp_step_log
    from release.state.store import audit_log

    home, good, _, asked, _, asker = world
    assert [a["chosen_options"] for a in asker.answered] == [["Extend the wait"], ["Roll back"]]
    assert {a["task_id"] for a in asker.answered} == {"rollout"}
    rel = get_release(asked)
    assert rel["status"] == "rolled_back"
    steps = ramp_step_log(asked)
    assert [(s["pct"], s["outcome"]) for s in steps] == [(0, "passed"), (25, "inconclusive"), (25, "inconclusive")]
    assert "of 1,000,000 candidate decisions" in " ".join(json.loads(steps[1]["details_json"])["missing"])
    trail = [a for a in audit_log(entity_prefix="ramp") if json.loads(a["after_json"])["release_id"] == asked]
    acts = [a["action"] for a in trail]
    assert acts[-3:] == ["ramp_extend", "ramp_ask", "ramp_rollback"], acts
    for a in (trail[-3], trail[-1]):  # both answers came through Airflow, the Airflow user named
        assert a["actor"] == "risk lead (e2e) (via Airflow)"
        assert json.loads(a["context_json"])["airflow_user"] == "risk lead (e2e)"
    assert registry.tagged("production").id == get_release(good)["candidate_model_id"]  # nothing changed


def test_rerunning_any_task_of_a_finished_release_changes_nothing(world):
    """Clearing and rerunning one task of a release that is over: each task's body runs again and the
    live deployment, the tags, the release's status and the money-moving audit trail stay as they were."""
    from release.orchestration import cycle
    from release.rollout import ramp
    from release.state import registry
    from release.state.store import audit_log

    home, good, *_ = world
    rel = cycle.get_release(good)

    def state():
        tags = {t: (registry.tagged(t).id if registry.tagged(t) else None)
                for t in ("production", "previous", "candidate", "shadow")}
        moves = [a["id"] for a in audit_log() if a["action"] in ("move_tag", "ramp_shadow", "ramp_set", "promote",
                                                                 "ramp_rollback", "release_status", "thresholds_created",
                                                                 "thresholds_approved")]
        cur = ramp.current()
        return tags, moves, (cur["state"], cur["pct"], cur["version"]), cycle.get_release(good)["status"]

    before = state()
    snap = cycle.build_snapshot(rel["as_of"])
    assert snap == rel["snapshot_hash"]
    assert cycle.start_release(rel["as_of"], snap) == good
    cycle.ensure_incumbent(good)
    cycle.train_candidate(good)
    cycle.evaluate_release(good)
    cycle.check_contracts(good)
    cycle.request_threshold_approval(good)
    assert cycle.approval_decided(good)
    cycle.rejudge_approved_policy(good)
    cycle.run_backtest(good)
    cycle.deploy_candidate(good)
    assert cycle.rollout_done(good, or_needs_person=True) and cycle.rollout_done(good)
    cycle.finish(good)
    assert state() == before
    after = cycle.get_release(good)
    assert (after["incumbent_model_id"], after["candidate_model_id"]) == (rel["incumbent_model_id"],
                                                                        rel["candidate_model_id"])


def test_approval_and_every_money_move_are_audited(world):
    from release.state.store import audit_log

    _, good, *_ = world
    trail = audit_log()
    decided = [a for a in trail if a["action"].startswith("thresholds_") and a["action"] != "thresholds_created"
               and json.loads(a["after_json"] or "{}").get("release_id") == good]
    assert [(a["action"], a["actor"]) for a in decided] == [("thresholds_approved", APPROVER)]
    actions = [a["action"] for a in trail]
    for needed in ("register_model", "move_tag", "ramp_shadow", "ramp_set", "ramp_ready", "promote", "release_status"):
        assert needed in actions
    assert all(a["actor"] and a["reason"] and a["at"] for a in trail)
    # pipeline changes carry the wall clock as their time and the data interval's date as their own field
    pipeline_rows = [a for a in trail if a["actor"] == "fraud-cd pipeline"]
    assert {(a["logical_date"] or "")[:10] for a in pipeline_rows} <= {"2026-05-17", "2026-05-27", "2026-05-31"}
    rollout_rows = [a for a in trail if a["actor"] == "fraud-cd rollout"]  # the DAG's rollout, also dated
    assert rollout_rows and {(a["logical_date"] or "")[:10] for a in rollout_rows} <= {"2026-05-17", "2026-05-27"}
    assert all(a["at"][:10] >= dt.date.today().isoformat() for a in pipeline_rows)


def test_report_on_disk_says_ship(world):
    from release.orchestration.cycle import get_release

    home, good, *_ = world
    path = Path(get_release(good)["report_path"])
    assert path.is_file() and path.parent == home / "reports"
    page = html.unescape(path.read_text())
    assert "SHIP" in page and "bootstrap model" in page and APPROVER in page
    assert (home / "reports" / "index.html").read_text().count(good) >= 1
    from release.orchestration.cycle import release_dir

    kept = hashlib.sha256((release_dir(good) / "contracts.yaml").read_bytes()).hexdigest()[:12]
    assert f"sha256 {kept}" in " ".join(page.split())  # which contracts judged it


def test_how_each_release_ended_reached_people_once(world):
    """The DAG's last task announces the outcome (the state store's alerts, the log, the webhook when
    configured): a green run does not say whether the release shipped."""
    from release.state.alerts import read_alerts
    from release.orchestration.cycle import get_release

    home, good, worse, asked, *_ = world
    ends = [(a["details"]["release_id"], a["kind"]) for a in read_alerts()
            if a["kind"].startswith("release_") or a["kind"] == "approval_requested"]
    assert (good, "approval_requested") in ends and (asked, "approval_requested") in ends
    mine = {rid: [k for r, k in ends if r == rid and k != "approval_requested"] for rid in (good, worse, asked)}
    assert mine == {good: ["release_shipped"], worse: ["release_stopped"], asked: ["release_rolled_back"]}
    shipped = next(a for a in read_alerts() if a["kind"] == "release_shipped")
    assert shipped["details"]["report"] == get_release(good)["report_path"] in shipped["message"]
    assert shipped in read_alerts(release_id=good) and not (home / "alerts.jsonl").exists()  # the store, not a file


def test_each_release_runs_note_says_how_the_release_ended(world):
    """Airflow's run note (written by the plugin's listener as the run ends): shipped, rolled back, stopped,
    with the reason and the report's link; the training_set runs get none."""
    from release.orchestration.cycle import get_release
    from release.orchestration.demo import cycle_env, run_notes_in

    home, good, worse, asked, *_ = world
    notes = run_notes_in(cycle_env(home))
    assert len(notes) == 3 and all(notes.values()), notes

    def note_of(rid: str) -> str:
        (n,) = [n for n in notes.values() if n.startswith(f"**{rid} ")]
        return n

    assert note_of(good).startswith(f"**{good} shipped: the candidate is production.** [Release report](")
    assert note_of(asked).startswith(f"**{asked} rolled back: production is unchanged.** ")
    stopped = note_of(worse)
    assert stopped.startswith(f"**{worse} stopped before any traffic moved.** ")
    assert get_release(worse)["stop_reason"].strip() in stopped
    run_of = {n: r for r, n in notes.items()}
    assert f"(/fraudcd/reports/runs/{run_of[stopped]})" in stopped
    assert not [n for n in run_notes_in(cycle_env(home), "training_set").values() if n]


def test_a_worse_candidate_is_stopped_and_the_report_says_why(world):
    from release.rollout import ramp
    from release.state import registry
    from release.orchestration.cycle import get_release
    from release.state.releases import release_verdicts

    home, good, worse, *_ = world
    rel = get_release(worse)
    assert rel["status"] == "stopped"
    assert "Stopped by release contracts" in rel["stop_reason"]
    recall = [v for v in release_verdicts(worse) if v["contract"] == "fixed_fpr_higher_recall"
              and v["slice"] == "operating point"]
    assert recall[0]["verdict"] == "fail" and recall[0]["candidate_value"] < recall[0]["incumbent_value"]
    # nothing moved: production is still cycle 1's model, no candidate, no traffic for the worse one
    assert registry.tagged("production").id == get_release(good)["candidate_model_id"]
    assert registry.tagged("candidate") is None
    assert ramp.current()["release_id"] != worse
    page = html.unescape(Path(rel["report_path"]).read_text())
    assert "STOP" in page and recall[0]["sentence"] in page
    r = _fraudcd(home, "verdicts", worse)
    assert r.returncode == 1 and "fail" in r.stdout


def test_an_override_given_when_triggering_is_recorded_and_waives_only_its_contract(world):
    """The Airflow path of an override: the release rerun for the same date with an `overrides` param."""
    from release.orchestration.cycle import get_release
    from release.state.releases import release_verdicts
    from release.orchestration.demo import cycle_env, run_cycle
    from release.state.store import audit_log

    home, _, worse, *_ = world
    from contracts.base import stops

    failed = sorted({v["contract"] for v in release_verdicts(worse) if stops(v)})
    assert "fixed_fpr_higher_recall" in failed and len(failed) >= 2
    who, why = "Head of risk (pytest)", "drill: waive the recall contract for this release only"
    rel = get_release(worse)
    run_cycle(dt.date.fromisoformat(rel["as_of"]), cycle_env(home), home / "logs", APPROVER,
              workflow=rel["workflow"], overrides=[{"contract": "fixed_fpr_higher_recall", "by": who, "reason": why}],
              run="-override")
    rel = get_release(worse)
    assert rel["status"] == "stopped"  # the other failed contracts still stop it
    assert "fixed_fpr_higher_recall" not in rel["stop_reason"] and "Stopped by release contracts" in rel["stop_reason"]
    waived = [a for a in audit_log() if a["action"] == "contract_waived" and a["entity"] == f"release:{worse}"]
    assert [(a["actor"], a["reason"]) for a in waived] == [(who, why)]
    page = html.unescape(Path(rel["report_path"]).read_text())
    assert who in page and why in page


def test_the_monitoring_dag_watches_the_deployed_model_through_airflow(world):
    """`airflow dags test monitoring` the day after the second cycle's live days: the task takes its day from
    Airflow's interval and judges the model in production (cycle 1's candidate; cycle 2 rolled back) on the
    decision log and the event logs of the week before, against the release that shipped it. (Before the
    terminal's rollback drill below, which puts the bootstrap model back.)"""
    from release.orchestration.cycle import get_release
    from release.orchestration.demo import cycle_env, run_dag
    from release.orchestration.monitoring import findings_of
    from release.state import registry

    home, good, _, asked, *_ = world
    day = dt.date.fromisoformat(get_release(asked)["as_of"]) + dt.timedelta(days=1)  # cycle 2 replayed its first days
    run_dag("monitoring", (day + dt.timedelta(days=1)).isoformat(), cycle_env(home), home / "logs" / "monitoring.log",
            timeout_s=300)
    prod = registry.tagged("production")
    assert prod.id == get_release(good)["candidate_model_id"]
    f = findings_of(day)
    assert f is not None and set(f["model"]) == {prod.id}
    judged = f[f["status"] != "insufficient"]
    assert {"score_drift", "feature_drift"} <= set(judged["check"]), f.groupby(["check", "status"]).size()
    assert (f.loc[(f["check"] == "action_rate") & (f["slice"] == "all"), "rows"] > 500).all()
    # merchant segments beside countries: each live merchant's size as the release judged it
    segments = f[(f["check"] == "action_rate") & (f["slice_type"] == "merchant_size")]
    assert {"large", "medium", "small"} & set(segments["slice"]) and segments["rows"].sum() > 500, segments


def test_status_and_rollback_from_the_terminal(world):
    from release.state import registry
    from release.state.store import audit_log

    home, good, *_ = world
    before = json.loads(_fraudcd(home, "status", "--json").stdout)
    assert before["tags"]["production"] != before["tags"]["previous"] is not None
    # the last change rolled back cycle 1b's candidate: a plain second press is refused (it must not also undo
    # cycle 1's promotion nobody asked about) ...
    n = len(audit_log())
    again = _fraudcd(home, "rollback", "--reason", "twice", "--as", "on-call (pytest)")
    assert again.returncode == 1 and "Nothing to roll back" in again.stderr + again.stdout
    assert len(audit_log()) == n
    # ... rolling back the production model is said explicitly
    r = _fraudcd(home, "rollback", "--model", "--reason", "e2e: on-call drill", "--as", "on-call (pytest)")
    assert r.returncode == 0, r.stderr
    assert registry.tagged("production").id == before["tags"]["previous"]
    last = audit_log()[-1]
    assert last["actor"] == "on-call (pytest)" and last["reason"] == "e2e: on-call drill"
    assert last["action"] == "model_rollback" and json.loads(last["after_json"])["release_id"] == good
    from release.orchestration.cycle import get_release

    assert get_release(good)["status"] == "rolled_back"
    # now there is nothing left to roll back to: refused, exit 1, nothing written
    n = len(audit_log())
    again = _fraudcd(home, "rollback", "--model", "--reason", "twice", "--as", "on-call (pytest)")
    assert again.returncode == 1 and "Nothing to roll back" in again.stderr + again.stdout
    assert len(audit_log()) == n

