"""The live ramp controller on real traffic: the scoring service (in this process, real models, real
state store) serves a replayed day, then one controller tick judges the decision log and acts."""
from __future__ import annotations

import datetime as dt
import json

import pytest

import deployment_world as dw
from release import ramp, registry
from release.alerts import read_alerts
from release.controller import CONTROLLER, tick
from release.cycle import ramp_step_log, release_verdicts
from release.ramp import RampPlan
from release.replay import day_requests
from release.service import ScoreRequest, ScoringService, ServiceConfig
from release.store import audit_log

CONFIG = ServiceConfig(maturity_days=5, reload_poll_ms=20, decision_log={"flush_every": 100, "flush_ms": 20})


def plan(**kw) -> RampPlan:
    base = {"steps": [1, 5, 25, 50, 100], "min_rows_per_step": 100, "min_seconds_per_step": 0,
            "guardrails": {"action_rate_shift": {"max_relative_shift": 0.3, "min_absolute_shift": 0.003,
                                                 "min_support": 300}},
            "shadow": {"min_rows": 100, "min_seconds": 0}}
    for k, v in kw.items():
        if k in ("action_rate_shift", "error_rate", "latency"):
            base["guardrails"][k] = {**base["guardrails"].get(k, {}), **v}
        else:
            base[k] = v
    return RampPlan(**base)


def ctl(fn, *args, reason="test"):
    return fn(*args, at=dt.datetime.now(dt.timezone.utc).isoformat(), actor="on-call (test)", reason=reason)


def serve_day(world, limit=None) -> list[dict]:
    """The replayed day through a ScoringService; stopped, so every decision is in the log."""
    svc = ScoringService(CONFIG, seed_day=world.day)
    svc.start()
    try:
        answers = [svc.score(ScoreRequest(**b)) for b in day_requests(world.home / "events", world.day, limit)]
    finally:
        svc.stop()
    return answers


@pytest.fixture
def world(home, tiny, tiny_events, tiny_snapshot):
    w = dw.make_world(home, tiny, tiny_events, tiny_snapshot)
    ctl(ramp.start_shadow, dw.RELEASE, w.candidate)
    return w


def test_after_the_shadow_period_the_first_step_begins(world):
    serve_day(world)
    out = tick(plan())
    assert out["action"] == "advanced" and out["to"] == 1
    st = ramp.current()
    assert (st["state"], st["pct"], st["updated_by"]) == ("ramping", 1.0, CONTROLLER)
    assert "shadow passed on" in st["reason"]
    assert {v["stage"] for v in release_verdicts(dw.RELEASE)} == {"shadow"}


def test_the_shadow_period_waits_for_enough_traffic(world):
    serve_day(world, limit=50)
    out = tick(plan())
    assert out["action"] == "waiting" and "50 of 100 transactions" in out["why"]
    assert ramp.current()["state"] == "shadow"


def test_a_passed_step_advances_to_the_next(world):
    ctl(ramp.set_pct, 25)
    serve_day(world)
    out = tick(plan())
    assert out["action"] == "advanced" and out["to"] == 50 and ramp.current()["pct"] == 50
    [row] = ramp_step_log(dw.RELEASE)
    assert (row["step"], row["pct"], row["outcome"]) == (3, 25, "passed") and row["candidate_rows"] > 0
    assert ramp.current()["updated_by"] == CONTROLLER and "step 25% passed its guardrails" in ramp.current()["reason"]
    assert tick(plan())["action"] == "waiting"  # the new step has seen no traffic yet


def test_the_last_step_passing_raises_a_ready_to_promote_alert_once(world):
    ctl(ramp.set_pct, 100)
    serve_day(world)
    assert tick(plan())["action"] == "ready_to_promote"
    assert tick(plan())["action"] == "waiting"  # recorded once
    assert [r["outcome"] for r in ramp_step_log(dw.RELEASE)] == ["passed"]
    assert [a["kind"] for a in read_alerts()] == ["ramp_ready_to_promote"]
    assert ramp.current()["state"] == "ramping"  # promotion stays a person's decision


def test_an_action_rate_breach_rolls_back_records_why_and_alerts(world):
    dw.approve(world.candidate, 0.0)  # a newer approved set: the candidate now blocks everything
    ctl(ramp.set_pct, 100)
    answers = serve_day(world)
    assert {a[1]["served_by"] for a in answers} == {"candidate"}
    out = tick(plan(action_rate_shift={"min_support": 20}))
    assert out["action"] == "rolled_back"
    st = ramp.current()
    assert (st["state"], st["pct"], st["updated_by"]) == ("rolled_back", 0.0, CONTROLLER)
    assert st["reason"].startswith("Guardrail breached at 100% (live traffic): ")
    assert registry.tagged("production").id == world.production and registry.tagged("shadow") is None
    [row] = ramp_step_log(dw.RELEASE)
    assert row["outcome"] == "breached" and json.loads(row["details_json"])["breaches"]
    failed = [v for v in release_verdicts(dw.RELEASE) if v["verdict"] == "fail"]
    assert failed and all(v["stage"] == "ramp" and v["kind"] == "action_rate_shift" for v in failed)
    assert failed[0]["sentence"] in st["reason"]
    [alert] = read_alerts()
    assert alert["kind"] == "ramp_guardrail_breach" and alert["message"] == st["reason"]
    last = audit_log(entity_prefix="ramp")[-1]
    assert (last["action"], last["actor"]) == ("ramp_rollback", CONTROLLER)
    assert tick(plan())["action"] == "none"  # nothing live any more


def test_a_candidate_that_fails_to_score_falls_back_and_trips_the_error_rate(world):
    # other bytes (so another model id), and a feature the service does not compute: scoring raises
    broken = dw.register(registry.get_model(world.candidate).text() + "\n", "broken", "ab" * 32,
                         features=["no_such_feature"])
    dw.approve(broken, 0.5)
    ctl(ramp.start_shadow, "rel-broken", broken)
    ctl(ramp.set_pct, 100)
    answers = serve_day(world, limit=150)
    assert {a[0] for a in answers} == {200}  # every request answered ...
    assert {a[1]["served_by"] for a in answers} == {"production"}  # ... by production, the fallback
    out = tick(plan(error_rate={"max_rate": 0.01, "min_requests": 100}))
    assert out["action"] == "rolled_back"
    assert "Share of requests that failed on the candidate (150) was 100.00% on 150 requests" in out["why"]


def test_a_slow_candidate_trips_the_latency_guardrail(world):
    ctl(ramp.set_pct, 100)
    serve_day(world, limit=150)
    out = tick(plan(latency={"max_p99_ms": 0.001, "min_requests": 100}))
    assert out["action"] == "rolled_back" and "The candidate's p99 latency was" in out["why"]


def test_too_little_traffic_is_insufficient_not_a_breach(world):
    ctl(ramp.set_pct, 100)
    serve_day(world, limit=150)
    out = tick(plan(latency={"max_p99_ms": 0.001, "min_requests": 1000}, min_rows_per_step=1000))
    assert out["action"] == "waiting" and ramp.current()["state"] == "ramping"


def test_a_paused_ramp_is_not_advanced(world):
    ctl(ramp.set_pct, 25)
    ctl(ramp.pause)
    serve_day(world)
    assert tick(plan()) == {"action": "waiting", "why": "paused: guarded, not advanced"}
    assert (ramp.current()["state"], ramp.current()["pct"]) == ("paused", 25)


def test_a_paused_ramp_is_still_guarded(world):
    dw.approve(world.candidate, 0.0)
    ctl(ramp.set_pct, 100)
    ctl(ramp.pause)
    serve_day(world)
    assert tick(plan(action_rate_shift={"min_support": 20}))["action"] == "rolled_back"
    assert ramp.current()["state"] == "rolled_back"


def test_no_production_model_means_503_with_the_reason(home, tiny, tiny_events):
    import shutil

    shutil.copytree(tiny_events, home / "events")
    svc = ScoringService(CONFIG, seed_day=tiny.cfg.start + dt.timedelta(days=19))
    code, out = svc.score(ScoreRequest(**day_requests(home / "events", svc.seed_day, 1)[0]))
    assert code == 503 and out["error"] == "Not serving: no production model is tagged in the registry"


def test_live_decision_diffs_per_slice_from_the_cli(world):
    from typer.testing import CliRunner

    from release.cli import app
    from release.decision_log import read_decision_log

    serve_day(world)
    r = CliRunner().invoke(app, ["ramp", "diffs", "--json"])
    assert r.exit_code == 0, r.output
    out = json.loads(r.output)
    log = read_decision_log()
    diffs = {(d["slice_type"], d["slice"]): d for d in out["diffs"]}
    overall = diffs[("all", "all")]
    assert overall["transactions"] == len(log) > 300
    assert overall["disagreements"] == (log["production_block"] != log["candidate_block"]).sum()
    assert overall["only_candidate_blocks_amount"] == pytest.approx(
        log.loc[log["candidate_block"] & ~log["production_block"], "amount"].sum())
    assert {t for t, _ in diffs} == {"all", "country", "category"}
    assert sum(d["transactions"] for (t, _), d in diffs.items() if t == "country") == len(log)
    assert {v["contract"] for v in out["verdicts"]} == {"live_country_action_rate_shift"}
    table = CliRunner().invoke(app, ["ramp", "diffs"])
    assert table.exit_code == 0 and "decisions of production vs candidate" in table.output


def test_watch_once_runs_one_check(world):
    from typer.testing import CliRunner

    from release.cli import app

    r = CliRunner().invoke(app, ["ramp", "watch", "--once", "--json"])
    assert r.exit_code == 0 and json.loads(r.output)["action"] == "waiting"
