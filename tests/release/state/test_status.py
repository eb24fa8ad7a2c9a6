"""The one state machine: a release's status and the deployment move together, only as the transition
table allows, each change audited; nothing else in the code writes the deployment row."""
from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import sqlalchemy as sa

from release.rollout import ramp
from release.rollout.ramp import RampError
from release.state.registry import move_tag, register_model
from release.core.settings import PROJECT_ROOT
from release.state.status import (IDLE, LIVE, PIPELINE_ORDER, TERMINAL, TRANSITIONS, IllegalTransition, Status,
                            is_rerun, move_release)
from release.state.store import audit_log, engine, releases, transaction


def ctl(fn, *args, reason="because", **kw):
    return fn(*args, at="2026-12-01T00:00:00+00:00", actor="oncall", reason=reason, **kw)


def status(rid: str) -> str:
    with engine().connect() as conn:
        return conn.execute(sa.select(releases.c.status).where(releases.c.id == rid)).scalar()


def make_release(rid: str, st: Status) -> None:
    with transaction() as conn:
        conn.execute(releases.insert().values(id=rid, as_of="2026-05-01", status=str(st), incumbent_bootstrap=False,
                                              updated_at="t"))


@pytest.fixture
def models(home):
    prod = register_model("prod\n", workflow={"name": "p"}, features=["amount"], snapshot_hash="s",
                          code_version="t", metrics={}, at="t", actor="setup").id
    cand = register_model("cand\n", workflow={"name": "c"}, features=["amount"], snapshot_hash="s",
                          code_version="t", metrics={}, at="t", actor="setup").id
    move_tag("production", prod, at="t0", actor="setup", reason="initial production model")
    return prod, cand


def test_every_status_has_its_transitions_and_terminal_ones_lead_nowhere_new():
    assert set(TRANSITIONS) == set(Status)
    assert TRANSITIONS[Status.ROLLED_BACK] == frozenset()
    assert TRANSITIONS[Status.PROMOTED] == {Status.ROLLED_BACK}  # only the on-call button after a promotion
    for s in LIVE:  # a live candidate can always be rolled back, and never silently "stopped"
        assert Status.ROLLED_BACK in TRANSITIONS[s] and Status.STOPPED not in TRANSITIONS[s]
    for s in PIPELINE_ORDER:  # before traffic, any gate may stop the release; nothing skips to live
        assert Status.STOPPED in TRANSITIONS[s]
        assert not (TRANSITIONS[s] & LIVE) or s == Status.BACKTESTED


def test_nothing_reaches_traffic_without_the_backtest(models):
    _, cand = models
    for st in PIPELINE_ORDER[:-1] + [Status.STOPPED]:
        rid = f"rel-{st}"
        make_release(rid, st)
        with pytest.raises(RampError, match=f"cannot go from {st} to shadow"):
            ctl(ramp.start_shadow, rid, cand)
        assert ramp.current()["state"] == IDLE and status(rid) == st  # nothing changed, neither row


def test_the_release_and_the_deployment_move_together_and_are_audited(models):
    _, cand = models
    make_release("rel-1", Status.BACKTESTED)
    ctl(ramp.start_shadow, "rel-1", cand)
    assert status("rel-1") == "shadow" and ramp.current()["state"] == "shadow"
    ctl(ramp.set_pct, 5)
    assert status("rel-1") == "ramping"
    ctl(ramp.ask, reason="inconclusive")
    assert status("rel-1") == "awaiting_decision" == ramp.current()["state"]
    ctl(ramp.extend, reason="more traffic tomorrow")
    assert status("rel-1") == "ramping" and ramp.current()["pct"] == 5
    ctl(ramp.rollback, reason="enough")
    assert status("rel-1") == "rolled_back" == ramp.current()["state"]
    trail = [(a["action"], json.loads(a["before_json"]), json.loads(a["after_json"]))
             for a in audit_log(entity_prefix="release:rel-1")]
    moves = [(b["status"], a["status"]) for act, b, a in trail if act == "release_status"]
    assert moves == [("backtested", "shadow"), ("shadow", "ramping"), ("ramping", "awaiting_decision"),
                     ("awaiting_decision", "ramping"), ("ramping", "rolled_back")]


def test_an_illegal_release_move_changes_neither_row(models):
    """The deployment's own table allows a promotion from ramping at 100%, but a release row that says
    otherwise (e.g. edited by hand to stopped) refuses it: one transaction, nothing half-written."""
    _, cand = models
    make_release("rel-1", Status.BACKTESTED)
    ctl(ramp.start_shadow, "rel-1", cand)
    ctl(ramp.set_pct, 100)
    with transaction() as conn:
        conn.execute(releases.update().where(releases.c.id == "rel-1").values(status="stopped"))
    before = ramp.current()
    with pytest.raises(RampError, match="cannot go from stopped to promoted"):
        ctl(ramp.promote)
    after = ramp.current()
    assert (after["state"], after["pct"], after["version"]) == (before["state"], before["pct"], before["version"])
    from release.state.registry import tagged
    assert tagged("production").id == models[0]  # the tag moves were rolled back with it


def test_a_second_live_release_is_refused_while_one_is_live(models):
    _, cand = models
    make_release("rel-1", Status.BACKTESTED)
    make_release("rel-2", Status.BACKTESTED)
    ctl(ramp.start_shadow, "rel-1", cand)
    with pytest.raises(RampError, match="rel-1 .* is live"):
        ctl(ramp.start_shadow, "rel-2", cand)
    assert ramp.current()["release_id"] == "rel-1" and status("rel-2") == "backtested"


def test_promote_anyway_only_from_a_decision_and_on_the_record(models):
    prod, cand = models
    make_release("rel-1", Status.BACKTESTED)
    ctl(ramp.start_shadow, "rel-1", cand)
    ctl(ramp.set_pct, 5)
    with pytest.raises(RampError, match="Only a candidate ramped to 100%"):
        ctl(ramp.promote, anyway=True)  # nobody asked: a person cannot skip the evidence by saying "anyway"
    ctl(ramp.ask, reason="inconclusive at 5%")
    ctl(ramp.promote, anyway=True, reason="fraud ring: the candidate catches it; accepted on the record")
    assert status("rel-1") == "promoted" and ramp.current()["pct"] == 100
    last = audit_log(entity_prefix="ramp")[-1]
    assert last["action"] == "promote_anyway" and json.loads(last["before_json"])["state"] == "awaiting_decision"


@pytest.mark.parametrize("frm,to,rerun", [
    (Status.EVALUATED, Status.TRAINED, True),  # train again on an evaluated release: nothing moves back
    (Status.PROMOTED, Status.EVALUATED, True),
    (Status.SHADOW, Status.REJUDGED, True),
    (Status.STOPPED, Status.EVALUATED, True),  # a stage rerun on a stopped release keeps it stopped
    (Status.STOPPED, Status.CONTRACTS_PASSED, False),  # a waiver's rerun of the contracts may go on
    (Status.TRAINED, Status.EVALUATED, False),
    (Status.RAMPING, Status.RAMPING, False),  # live statuses are the deployment's, never a "rerun"
])
def test_reruns_of_a_stage_never_move_a_release_back(frm, to, rerun):
    assert is_rerun(frm, to) is rerun


def test_move_release_refuses_what_the_table_does_not_allow(home):
    make_release("rel-1", Status.TRAINED)
    with transaction() as conn:
        with pytest.raises(IllegalTransition, match="cannot go from trained to approved"):
            move_release(conn, "rel-1", Status.APPROVED, at="t", actor="x", reason="skip ahead")
    assert status("rel-1") == "trained"
    with transaction() as conn:
        assert move_release(conn, "rel-1", Status.STARTED, at="t", actor="x", reason="rerun") is True
    assert status("rel-1") == "started"


def test_no_code_but_the_ramp_module_writes_the_deployment_row():
    """One driver: the deployment row (ramp_state) is written only by release/rollout/ramp.py, and release
    statuses only through release/state/status.py (move_release) or the first insert of a release."""
    writers, status_writers = [], []
    for p in sorted((PROJECT_ROOT / "release").rglob("*.py")) + sorted((PROJECT_ROOT / "dags").rglob("*.py")):
        text = p.read_text()
        rel = str(p.relative_to(PROJECT_ROOT))
        if re.search(r"ramp_state\s*\.\s*(update|insert|delete)\(", text) or "UPDATE ramp_state" in text:
            writers.append(rel)
        for m in re.finditer(r"releases\.update\(\)[^\n]*\n?[^\n]*values\(([^)]*)", text):
            if "status=" in m.group(1) and rel != "release/state/status.py":
                status_writers.append(rel)
    assert writers == ["release/rollout/ramp.py"]
    assert status_writers == []
