"""The live rollout on real traffic: the scoring service (real models, real state store, its own decision
log) serves a replayed day, then one ``advance`` (what the release DAG's rollout sensor calls) judges the
current stage on the candidate's own decisions and acts through the state machine."""
from __future__ import annotations

import datetime as dt
import json

import pytest

import deployment_world as dw
from release.rollout import ramp
from release.state import registry
from release.state.alerts import read_alerts
from release.state.releases import ramp_step_log, release_verdicts
from release.rollout.ramp import RampPlan
from release.serving.replay import day_requests
from release.rollout.driver import ROLLOUT, advance, apply_decision, needs_person
from release.serving.service import ScoreRequest, ScoringService, ServiceConfig
from release.state.store import audit_log

CONFIG = ServiceConfig(maturity_days=5, reload_poll_ms=20, decision_log={"flush_every": 100, "flush_ms": 20})
LENIENT = {"max_relative_shift": 1.0, "min_absolute_shift": 0.2, "min_support": 60}  # the tiny world's models differ


def plan(**kw) -> RampPlan:
    """A plan the tiny world (300 transactions a day) can decide: small minimums, lenient limits."""
    base = {"steps": [1, 5, 25, 50, 100], "guardrails": {"action_rate_shift": dict(LENIENT)},
            "shadow": {"min_candidate_rows": 100, "max_wait_seconds": 3600},
            "step": {"min_candidate_rows": 50, "max_wait_seconds": 3600}, "promotion": "person"}
    for k, v in kw.items():
        if k in ("action_rate_shift", "error_rate", "latency", "score_shift", "segment_action_rate_shift"):
            base["guardrails"][k] = {**base["guardrails"].get(k, {}), **v}
        elif k in ("shadow", "step"):
            base[k] = {**base[k], **v}
        else:
            base[k] = v
    return RampPlan(**base)


def ctl(fn, *args, reason="test", **kw):
    return fn(*args, at=dt.datetime.now(dt.timezone.utc).isoformat(), actor="on-call (test)", reason=reason, **kw)


def serve_day(world, limit=None) -> list[tuple[int, dict]]:
    """The replayed day through a ScoringService; stopped, so every decision is in the log."""
    svc = ScoringService(CONFIG, seed_day=world.day)
    svc.start()
    try:
        return [svc.score(ScoreRequest(**b)) for b in day_requests(world.home / "events", world.day, limit)]
    finally:
        svc.stop()


@pytest.fixture
def world(home, tiny, tiny_events, tiny_snapshot):
    w = dw.make_world(home, tiny, tiny_events, tiny_snapshot)
    ctl(ramp.start_shadow, dw.RELEASE, w.candidate)
    return w


def test_after_the_shadow_period_the_first_step_begins(world):
    serve_day(world)
    out = advance(plan=plan())
    assert out["action"] == "advanced" and out["to"] == 1, out
    st = ramp.current()
    assert (st["state"], st["pct"], st["updated_by"]) == ("ramping", 1.0, ROLLOUT)
    assert "shadow passed its guardrails on" in st["reason"]
    assert {v["stage"] for v in release_verdicts(dw.RELEASE)} == {"shadow"}
    [row] = ramp_step_log(dw.RELEASE)
    assert (row["step"], row["outcome"]) == (0, "passed") and row["candidate_rows"] >= 100


def test_the_shadow_period_waits_for_enough_of_the_candidates_decisions(world):
    serve_day(world, limit=50)
    out = advance(plan=plan())
    assert out["action"] == "waiting" and "50 of 100 candidate decisions" in out["why"], out
    assert ramp.current()["state"] == "shadow" and ramp_step_log(dw.RELEASE) == []


def test_a_step_counts_only_the_rows_routed_to_the_candidate(world):
    """At 1% a whole day (~300 transactions) puts a handful on the candidate: the step cannot pass, however
    many transactions it saw."""
    ctl(ramp.set_pct, 1)
    answers = serve_day(world)
    routed = sum(a[1]["served_by"] == "candidate" for a in answers)
    assert len(answers) > 250 and routed < 50
    out = advance(plan=plan())
    assert out["action"] == "waiting" and f"{routed} of 50 candidate decisions" in out["why"], out
    assert out["details"]["rows"] == len(answers) and out["details"]["candidate_rows"] == routed


def test_a_passed_step_advances_to_the_next(world):
    ctl(ramp.set_pct, 25)
    serve_day(world)
    out = advance(plan=plan())
    assert out["action"] == "advanced" and out["to"] == 50 and ramp.current()["pct"] == 50, out
    [row] = ramp_step_log(dw.RELEASE)
    assert (row["step"], row["pct"], row["outcome"]) == (3, 25, "passed") and row["candidate_rows"] >= 50
    assert "step 25% passed its guardrails" in ramp.current()["reason"]
    assert advance(plan=plan())["action"] == "waiting"  # the new step has seen no traffic yet


def test_after_the_last_step_a_person_promotes_or_the_policy_does(world):
    ctl(ramp.set_pct, 100)
    serve_day(world)
    assert advance(plan=plan())["action"] == "ready_to_promote"
    assert ramp.current()["state"] == "ready_to_promote" and needs_person(dw.RELEASE)
    assert advance(plan=plan())["action"] == "waiting"  # recorded once, then it waits for the person
    assert [a["kind"] for a in read_alerts()] == ["ramp_ready_to_promote"]
    assert registry.tagged("production").id == world.production
    apply_decision(dw.RELEASE, "Promote", actor="risk lead (test)", reason="every step passed")
    assert registry.tagged("production").id == world.candidate and ramp.current()["state"] == "promoted"


def test_automatic_promotion_is_recorded_as_the_policy(world):
    ctl(ramp.set_pct, 100)
    serve_day(world)
    assert advance(plan=plan(promotion="automatic"))["action"] == "promoted"
    assert registry.tagged("production").id == world.candidate
    last = audit_log(entity_prefix="ramp")[-1]
    assert (last["action"], last["actor"]) == ("promote", ROLLOUT) and "promotion: automatic" in last["reason"]


def test_an_action_rate_breach_rolls_back_records_why_and_alerts(world):
    dw.approve(world.candidate, 0.0)  # a newer approved set: the candidate now blocks everything
    ctl(ramp.set_pct, 100)
    answers = serve_day(world)
    assert {a[1]["served_by"] for a in answers} == {"candidate"}
    out = advance(plan=plan(action_rate_shift={"max_relative_shift": 0.3, "min_absolute_shift": 0.003}))
    assert out["action"] == "rolled_back", out
    st = ramp.current()
    assert (st["state"], st["pct"], st["updated_by"]) == ("rolled_back", 0.0, ROLLOUT)
    assert "guardrail breached in step 100% (live traffic)" in st["reason"]
    assert registry.tagged("production").id == world.production and registry.tagged("shadow") is None
    [row] = ramp_step_log(dw.RELEASE)
    assert row["outcome"] == "breached" and json.loads(row["details_json"])["breaches"]
    failed = [v for v in release_verdicts(dw.RELEASE) if v["verdict"] == "fail"]
    assert failed and all(v["stage"] == "ramp" and v["kind"] == "action_rate_shift" for v in failed)
    [alert] = read_alerts()
    assert alert["kind"] == "ramp_guardrail_breach" and alert["message"] == st["reason"]
    last = audit_log(entity_prefix="ramp")[-1]
    assert (last["action"], last["actor"]) == ("ramp_rollback", ROLLOUT)
    assert advance(plan=plan())["action"] == "none"  # nothing live any more


def test_a_harmful_candidate_is_rolled_back_in_shadow(world):
    """In shadow it serves nothing, but its decisions are logged beside production's: a candidate that
    would block everything is stopped before it serves a single card."""
    dw.approve(world.candidate, 0.0)
    answers = serve_day(world)
    assert {a[1]["served_by"] for a in answers} == {"production"}
    out = advance(plan=plan(action_rate_shift={"max_relative_shift": 0.3, "min_absolute_shift": 0.003}))
    assert out["action"] == "rolled_back" and "in shadow" in out["why"], out
    assert ramp.current()["state"] == "rolled_back"
    assert {v["stage"] for v in release_verdicts(dw.RELEASE) if v["verdict"] == "fail"} == {"shadow"}


def test_a_candidate_that_fails_to_score_falls_back_and_trips_the_error_rate(world):
    # other bytes (so another model id), and a feature the service does not compute: scoring raises
    broken = dw.register(registry.get_model(world.candidate).text() + "\n", "broken", "ab" * 32,
                         features=["no_such_feature"])
    dw.approve(broken, 0.5)
    ctl(ramp.rollback)
    ctl(ramp.start_shadow, "rel-broken", broken)
    ctl(ramp.set_pct, 100)
    answers = serve_day(world, limit=150)
    assert {a[0] for a in answers} == {200}  # every request answered ...
    assert {a[1]["served_by"] for a in answers} == {"production"}  # ... by production, the fallback
    out = advance(plan=plan(error_rate={"max_rate": 0.01, "min_requests": 100}))
    assert out["action"] == "rolled_back" and "Share of requests that failed on the candidate (150)" in out["why"], out


def test_a_slow_candidate_trips_the_latency_guardrail(world):
    ctl(ramp.set_pct, 100)
    serve_day(world, limit=150)
    out = advance(plan=plan(latency={"max_p99_ms": 0.001, "min_requests": 100}))
    assert out["action"] == "rolled_back" and "latency" in out["why"].lower(), out


def test_inconclusive_evidence_never_passes_it_waits_then_asks_a_person(world):
    ctl(ramp.set_pct, 100)
    serve_day(world, limit=150)
    strict = plan(latency={"max_p99_ms": 1000, "min_requests": 1000}, step={"max_wait_seconds": 60})
    out = advance(plan=strict)
    assert out["action"] == "waiting" and ramp.current()["state"] == "ramping", out
    assert any("latency" in m.lower() for m in out["details"]["missing"])
    later = dt.datetime.now(dt.timezone.utc) + dt.timedelta(seconds=61)
    out = advance(plan=strict, now=later)
    assert out["action"] == "asked" and ramp.current()["state"] == "awaiting_decision", out
    assert needs_person(dw.RELEASE) and read_alerts()[-1]["kind"] == "ramp_inconclusive"
    [row] = ramp_step_log(dw.RELEASE)
    assert row["outcome"] == "inconclusive"
    assert advance(plan=strict, now=later)["action"] == "waiting"  # a person decides; nothing passes meanwhile
    apply_decision(dw.RELEASE, "Extend the wait", actor="risk lead (test)", reason="tomorrow's traffic")
    assert ramp.current()["state"] == "ramping"
    assert advance(plan=strict)["action"] == "waiting"  # the wait's bound starts again from the extension


def test_a_paused_ramp_is_not_advanced(world):
    ctl(ramp.set_pct, 25)
    ctl(ramp.pause)
    serve_day(world)
    out = advance(plan=plan())
    assert out["action"] == "waiting" and (ramp.current()["state"], ramp.current()["pct"]) == ("paused", 25)
    ctl(ramp.resume)
    assert advance(plan=plan())["action"] == "advanced"  # the same evidence, once a person lets it go on


def test_a_paused_ramp_is_still_guarded(world):
    dw.approve(world.candidate, 0.0)
    ctl(ramp.set_pct, 25)
    ctl(ramp.pause)
    serve_day(world)
    out = advance(plan=plan(action_rate_shift={"max_relative_shift": 0.3, "min_absolute_shift": 0.003}))
    assert out["action"] == "rolled_back" and ramp.current()["state"] == "rolled_back"


def test_a_decision_taken_on_a_stale_state_is_dropped(world, monkeypatch):
    """An operator's command that lands between reading the state and acting wins; the rollout's stale
    step is refused by the version check, not applied."""
    ctl(ramp.set_pct, 25)
    serve_day(world)
    real = ramp.set_pct

    def operator_first(*a, **kw):
        ctl(ramp.pause, reason="on-call holds it")
        return real(*a, **kw)

    monkeypatch.setattr(ramp, "set_pct", operator_first)
    out = advance(plan=plan())
    assert out["action"] == "conflict" and ramp.current()["state"] == "paused" and ramp.current()["pct"] == 25


def test_no_production_model_means_503_with_the_reason(home, tiny, tiny_events):
    import shutil

    shutil.copytree(tiny_events, home / "events")
    svc = ScoringService(CONFIG, seed_day=tiny.cfg.start + dt.timedelta(days=19))
    code, out = svc.score(ScoreRequest(**day_requests(home / "events", svc.seed_day, 1)[0]))
    assert code == 503 and out["error"] == "Not serving: no production model is tagged in the registry"


def test_live_decision_diffs_per_slice_from_the_cli(world):
    from typer.testing import CliRunner

    from release.cli.main import app
    from release.serving.decision_log import read_decision_log

    serve_day(world)
    r = CliRunner().invoke(app, ["ramp", "diffs", "--json"])
    assert r.exit_code == 0, r.output
    out = json.loads(r.output)
    log = read_decision_log()
    diffs = {(d["slice_type"], d["slice"]): d for d in out["diffs"]}
    overall = diffs[("all", "all")]
    assert overall["transactions"] == len(log) > 250
    assert overall["disagreements"] == (log["production_block"] != log["candidate_block"]).sum()
    assert overall["only_candidate_blocks_amount"] == pytest.approx(
        log.loc[log["candidate_block"] & ~log["production_block"], "amount"].sum())
    assert {t for t, _ in diffs} == {"all", "country", "category"}
    assert sum(d["transactions"] for (t, _), d in diffs.items() if t == "country") == len(log)
    assert {v["contract"] for v in out["verdicts"]} == {"live_country_action_rate_shift"}


def test_watch_once_runs_one_check(world):
    from typer.testing import CliRunner

    from release.cli.main import app

    r = CliRunner().invoke(app, ["ramp", "watch", "--once", "--json"])
    assert r.exit_code == 0 and json.loads(r.output)["action"] == "waiting"


@pytest.mark.parametrize("answered_from_a_terminal", [False, True])
def test_nobody_answering_the_rollout_question_rolls_back_unless_a_person_decided(world, answered_from_a_terminal):
    """The DAG's rollout task, when its question's response timeout passes (the branch Airflow's timeout
    takes, release.orchestration.rollout_task.RolloutOperator.on_timeout): a rollout still waiting for a person
    is rolled back, on the record; one a person decided from a terminal meanwhile keeps that decision."""
    from release.orchestration.rollout_task import RolloutOperator

    ctl(ramp.set_pct, 100)
    serve_day(world, limit=150)
    strict = plan(latency={"max_p99_ms": 1000, "min_requests": 1000}, step={"max_wait_seconds": 60})
    later = dt.datetime.now(dt.timezone.utc) + dt.timedelta(seconds=61)
    advance(plan=strict)
    assert advance(plan=strict, now=later)["action"] == "asked" and needs_person(dw.RELEASE)
    if answered_from_a_terminal:
        apply_decision(dw.RELEASE, "Extend the wait", actor="risk lead (test)", reason="tomorrow's traffic")
    before = len(audit_log(entity_prefix="ramp"))
    op = RolloutOperator(task_id="rollout", release_task_id="deploy", poll_seconds=1,
                         rollout_timeout=dt.timedelta(days=1), response_timeout=dt.timedelta(seconds=5))
    op.on_timeout(dw.RELEASE)
    after = audit_log(entity_prefix="ramp")
    if answered_from_a_terminal:
        assert ramp.current()["state"] == "ramping" and len(after) == before
    else:
        assert ramp.current()["state"] == "rolled_back" and not needs_person(dw.RELEASE)
        assert registry.tagged("production").id != world.candidate
        last = after[-1]
        assert last["actor"] == "fraud-cd rollout" and "nobody decided within 0:00:05" in last["reason"], last
