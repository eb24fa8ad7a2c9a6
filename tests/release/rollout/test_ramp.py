"""The ramp: plan validation, card-sticky routing and the audited deployment state machine."""
from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest

from release.rollout import ramp
from release.core.config import ConfigError
from release.rollout.ramp import RampError, RampPlan, card_bucket, load_plan, routed_to_candidate
from release.state.registry import register_model, tag_log, tagged
from release.core.settings import PROJECT_ROOT, config_dir
from release.state.store import audit_log

GUARDRAILS = {"action_rate_shift": {"max_relative_shift": 0.3}}


# ---------------------------------------------------------------- plan

def test_shipped_plan_validates():
    plan = load_plan(config_dir() / "ramp.yaml")
    assert plan.steps[-1] == 100 and plan.steps == sorted(plan.steps)


@pytest.mark.parametrize("steps, message", [
    ([5, 1, 100], r"steps must strictly increase; got \[5\.0, 1\.0, 100\.0\]"),
    ([1, 5, 5, 100], "steps must strictly increase"),
    ([1, 5, 50], "the last step must be 100 \\(full traffic\\); got 50"),
    ([0, 50, 100], r"every step must be a percentage in \(0, 100\]"),
    ([1, 150], r"every step must be a percentage in \(0, 100\]"),
])
def test_bad_steps_are_refused(steps, message):
    with pytest.raises(ValueError, match=message):
        RampPlan(steps=steps, guardrails=GUARDRAILS)


def test_bad_plan_file_names_the_key(tmp_path):
    p = tmp_path / "ramp.yaml"
    p.write_text("steps: [1, 50]\nguardrails:\n  action_rate_shift:\n    max_relative_shift: 1.5\n")
    with pytest.raises(ConfigError) as e:
        load_plan(p)
    msg = str(e.value)
    assert f"{p}: steps: Value error, the last step must be 100" in msg
    assert f"{p}: guardrails.action_rate_shift.max_relative_shift: Input should be less than or equal to 1" in msg


# ---------------------------------------------------------------- routing

CARDS = np.arange(100_000, dtype=np.int64)


def test_buckets_are_in_range_and_deterministic():
    b = card_bucket(CARDS)
    assert b.min() >= 0 and b.max() < 10_000
    np.testing.assert_array_equal(b, card_bucket(pd.Series(CARDS)))
    # the same card id as text lands in the same bucket (ids are hashed as strings)
    np.testing.assert_array_equal(card_bucket(CARDS[:100]), card_bucket(CARDS[:100].astype(str)))


def test_buckets_are_stable_across_processes():
    # Python's own hash() of strings is salted per process; a bucket must not be.
    code = "import numpy as np; from release.rollout.ramp import card_bucket; print(card_bucket(np.arange(500)).tolist())"
    env = {**os.environ, "PYTHONHASHSEED": "12345"}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, env=env,
                         cwd=PROJECT_ROOT)
    assert json.loads(out.stdout) == card_bucket(np.arange(500)).tolist()


def test_routing_is_sticky_as_the_share_grows():
    routed = {pct: routed_to_candidate(CARDS, pct) for pct in (1, 5, 25, 50, 100)}
    for lo, hi in ((1, 5), (5, 25), (25, 50), (50, 100)):
        assert not (routed[lo] & ~routed[hi]).any(), f"a card routed at {lo}% left the candidate at {hi}%"
    assert routed[100].all() and not routed_to_candidate(CARDS, 0).any()


@pytest.mark.parametrize("pct", [1, 5, 25, 50])
def test_routed_share_matches_the_step(pct):
    share = routed_to_candidate(CARDS, pct).mean()
    # 100k cards: the binomial standard error is at most 0.16 percentage points; allow 4 of them
    assert share == pytest.approx(pct / 100, abs=0.0064)


def test_a_card_sees_one_model_within_a_step():
    cards = np.repeat(np.arange(1000), 5)  # every card shops five times
    routed = pd.Series(routed_to_candidate(cards, 25)).groupby(cards).nunique()
    assert (routed == 1).all()


# ---------------------------------------------------------------- state machine

def register(text):
    return register_model(text, workflow={"name": "wf"}, features=["amount"], snapshot_hash="ef" * 32,
                          code_version="t", metrics={}, at="t0", actor="trainer").id


@pytest.fixture
def models(home):
    """prod is in production; cand is the release's candidate."""
    prod, cand = register("prod\n"), register("cand\n")
    from release.state.registry import move_tag

    move_tag("production", prod, at="t0", actor="setup", reason="initial production model")
    return prod, cand


def ctl(fn, *args, at="t", actor="oncall", reason="because"):
    return fn(*args, at=at, actor=actor, reason=reason)


def test_idle_by_default_and_nothing_to_ramp(home):
    assert ramp.current()["state"] == ramp.IDLE and ramp.current()["pct"] == 0
    with pytest.raises(RampError, match=r"No candidate is in shadow or ramping \(state: idle\); nothing to ramp"):
        ctl(ramp.set_pct, 5)
    with pytest.raises(RampError, match="Nothing to roll back"):
        ctl(ramp.rollback)


def test_shadow_then_ramp(models):
    prod, cand = models
    s = ctl(ramp.start_shadow, "rel-1", cand)
    assert (s["state"], s["pct"], s["candidate_model_id"]) == ("shadow", 0.0, cand)
    assert tagged("shadow").id == cand and tagged("production").id == prod
    s = ctl(ramp.set_pct, 5)
    assert (s["state"], s["pct"]) == ("ramping", 5.0)
    assert ramp.current()["pct"] == 5.0 and ramp.current()["release_id"] == "rel-1"


@pytest.mark.parametrize("pct", [-1, 100.5])
def test_ramp_share_must_be_a_percentage(models, pct):
    ctl(ramp.start_shadow, "rel-1", models[1])
    with pytest.raises(RampError, match=f"A ramp share must be a percentage in \\[0, 100\\]; got {pct}"):
        ctl(ramp.set_pct, pct)
    assert ramp.current()["state"] == "shadow"


def test_rollback_from_ramp_goes_to_zero_and_keeps_production(models):
    prod, cand = models
    ctl(ramp.start_shadow, "rel-1", cand)
    ctl(ramp.set_pct, 25)
    s = ctl(ramp.rollback, reason="decline rate jumped in BR")
    assert (s["state"], s["pct"]) == ("rolled_back", 0.0)
    assert tagged("shadow") is None and tagged("production").id == prod
    assert (s["updated_by"], s["reason"]) == ("oncall", "decline rate jumped in BR")
    with pytest.raises(RampError, match="state: rolled_back"):
        ctl(ramp.set_pct, 50)  # a rolled-back candidate cannot be ramped again


def test_rollback_from_shadow(models):
    ctl(ramp.start_shadow, "rel-1", models[1])
    assert ctl(ramp.rollback)["state"] == "rolled_back"
    assert tagged("shadow") is None


@pytest.mark.parametrize("steps", [[], [5], [5, 99.9]])
def test_promote_is_refused_below_100_percent(models, steps):
    ctl(ramp.start_shadow, "rel-1", models[1])
    for pct in steps:
        ctl(ramp.set_pct, pct)
    with pytest.raises(RampError, match=r"Only a candidate ramped to 100% .*can be promoted"):
        ctl(ramp.promote)
    assert tagged("production").id == models[0]


def test_promote_at_100_then_rollback_restores_the_previous_model(models):
    prod, cand = models
    ctl(ramp.start_shadow, "rel-1", cand)
    for pct in (1, 5, 25, 50, 100):
        ctl(ramp.set_pct, pct)
    s = ctl(ramp.promote, reason="all steps passed")
    assert s["state"] == "promoted"
    assert tagged("production").id == cand and tagged("previous").id == prod
    assert tagged("shadow") is None and ramp.production_model_id() == cand

    s = ctl(ramp.rollback, actor="pat", reason="merchant complaints after promotion")
    assert tagged("production").id == prod and tagged("previous") is None
    assert (s["state"], s["pct"], s["candidate_model_id"]) == ("rolled_back", 0.0, cand)
    prod_moves = [(h["model_id"], h["previous_model_id"]) for h in tag_log() if h["tag"] == "production"]
    assert prod_moves == [(prod, None), (cand, prod), (prod, cand)]
    with pytest.raises(RampError, match="Nothing to roll back"):
        ctl(ramp.rollback)  # there is no model before the previous one


def test_every_state_change_is_audited_in_order(models):
    _, cand = models
    ctl(ramp.start_shadow, "rel-1", cand, at="t1", actor="pipeline", reason="shadow")
    ctl(ramp.set_pct, 100, at="t2", actor="pipeline", reason="step")
    ctl(ramp.promote, at="t3", actor="pipeline", reason="passed")
    ctl(ramp.rollback, at="t4", actor="pat", reason="complaints")
    rows = audit_log(entity_prefix="ramp")
    assert [(r["action"], r["at"], r["actor"], r["reason"]) for r in rows] == [
        ("ramp_shadow", "t1", "pipeline", "shadow"), ("ramp_set", "t2", "pipeline", "step"),
        ("promote", "t3", "pipeline", "passed"), ("model_rollback", "t4", "pat", "complaints")]
    assert rows[0]["before_json"] is None
    assert json.loads(rows[1]["before_json"])["state"] == "shadow"
    assert json.loads(rows[1]["after_json"]) == {"release_id": "rel-1", "candidate_model_id": cand, "pct": 100.0,
                                                "state": "ramping"}


def test_a_control_without_a_named_actor_changes_nothing(models):
    ctl(ramp.start_shadow, "rel-1", models[1])
    with pytest.raises(ValueError, match="named actor"):
        ctl(ramp.set_pct, 50, actor="  ")
    assert ramp.current()["state"] == "shadow" and ramp.current()["pct"] == 0.0


def test_a_second_rollback_does_not_undo_an_older_promotion(home):
    """Rolled back a ramping candidate, then pressed again: production must stay where it is."""
    from release.rollout import ramp
    from release.state import registry
    from release.state.registry import register_model

    def model(name):
        return register_model(f"tree\n{name}\n", workflow={"name": name}, features=["amount"], snapshot_hash="s" * 64,
                              code_version="test", metrics={}, at="2026-03-01T00:00:00+00:00", actor="t").id

    old, a, b = model("old"), model("a"), model("b")
    at, who = "2026-03-01T00:00:00+00:00", "on-call"
    registry.move_tag("production", old, at=at, actor=who, reason="seed")
    ramp.start_shadow("rel-a", a, at=at, actor=who, reason="a")
    ramp.set_pct(100, at=at, actor=who, reason="a to 100")
    ramp.promote(at=at, actor=who, reason="a promoted")
    ramp.start_shadow("rel-b", b, at=at, actor=who, reason="b")
    ramp.set_pct(5, at=at, actor=who, reason="b to 5")
    assert ramp.rollback(at=at, actor=who, reason="b misbehaves")["state"] == ramp.ROLLED_BACK
    with pytest.raises(ramp.RampError, match="Nothing to roll back: the last change"):
        ramp.rollback(at=at, actor=who, reason="pressed twice")
    assert registry.tagged("production").id == a


# ---------------------------------------------------------------- pause, resume, serialized controls

def test_pause_holds_the_share_and_resume_lets_it_move(models):
    ctl(ramp.start_shadow, "rel-1", models[1])
    ctl(ramp.set_pct, 25)
    s = ctl(ramp.pause, reason="investigating a merchant complaint")
    assert (s["state"], s["pct"]) == ("paused", 25.0)
    assert ctl(ramp.set_pct, 5)["state"] == "paused"  # an operator may move a paused share; it stays paused
    with pytest.raises(RampError, match=r"Only a candidate in shadow or ramping .*can be paused \(state: paused\)"):
        ctl(ramp.pause)
    s = ctl(ramp.resume)
    assert (s["state"], s["pct"]) == ("ramping", 5.0)
    with pytest.raises(RampError, match=r"Only a paused ramp can be resumed \(state: ramping\)"):
        ctl(ramp.resume)
    assert [a["action"] for a in audit_log(entity_prefix="ramp")] == [
        "ramp_shadow", "ramp_set", "ramp_pause", "ramp_set", "ramp_resume"]


def test_a_paused_shadow_resumes_as_shadow_and_a_paused_100_can_be_promoted(models):
    ctl(ramp.start_shadow, "rel-1", models[1])
    ctl(ramp.pause)
    assert ctl(ramp.resume)["state"] == "shadow"
    ctl(ramp.set_pct, 100)
    ctl(ramp.pause)
    assert ctl(ramp.promote)["state"] == "promoted"


def test_a_decision_on_a_stale_state_is_refused(models):
    """The controller read the state, an operator changed it, the controller's change must not land."""
    ctl(ramp.start_shadow, "rel-1", models[1])
    seen = ctl(ramp.set_pct, 25)
    ctl(ramp.pause, actor="pat", reason="hold on")
    n = len(audit_log())
    with pytest.raises(ramp.RampConflict, match=r"The ramp changed since it was read \(now paused at 25%, last "
                                                r"change by pat: hold on\); nothing done"):
        ramp.set_pct(50, at="t", actor="controller", reason="step passed", expect={"version": seen["version"]})
    with pytest.raises(ramp.RampConflict):
        ramp.rollback(at="t", actor="controller", reason="breach", expect={"version": seen["version"]})
    assert len(audit_log()) == n and ramp.current()["state"] == "paused"
    assert ramp.set_pct(50, at="t", actor="controller", reason="fresh", expect={"version": ramp.current()["version"]})


OPERATOR = """
import os, random, sys, time
from pathlib import Path
from release.rollout import ramp
name, gate = sys.argv[1], Path(sys.argv[2])
while not gate.exists():
    time.sleep(0.001)
rng = random.Random(name)
done = 0
for i in range(40):
    op = rng.choice(["set", "set", "pause", "resume"])
    try:
        if op == "set":
            ramp.set_pct(rng.choice([1, 5, 25, 50, 100]), at=f"{name}-{i}", actor=name, reason=f"{name} op {i}")
        else:
            getattr(ramp, op)(at=f"{name}-{i}", actor=name, reason=f"{name} op {i}")
        done += 1
    except ramp.RampError:
        pass
print(done)
"""


def test_two_operators_at_once_cannot_corrupt_the_state(models, tmp_path):
    """Two processes fire 40 controls each at the same store. Every change that succeeded is in the
    audit log exactly once, each one's 'before' is the previous one's 'after' (no lost update), and
    the state is the last one's 'after'."""
    ctl(ramp.start_shadow, "rel-1", models[1])
    gate = tmp_path / "go"
    procs = [subprocess.Popen([sys.executable, "-c", OPERATOR, name, str(gate)], cwd=PROJECT_ROOT,
                              stdout=subprocess.PIPE, text=True, env=os.environ.copy()) for name in ("ana", "bo")]
    gate.touch()
    done = [int(p.communicate(timeout=120)[0]) for p in procs]
    assert all(p.returncode == 0 for p in procs)
    rows = audit_log(entity_prefix="ramp")
    assert len(rows) == 1 + sum(done) and sum(done) > 20
    assert {r["actor"] for r in rows[1:]} == {"ana", "bo"}
    for prev, cur in zip(rows, rows[1:]):
        assert json.loads(cur["before_json"]) == json.loads(prev["after_json"]), (prev, cur)
    last = json.loads(rows[-1]["after_json"])
    assert {k: ramp.current()[k] for k in last} == last
