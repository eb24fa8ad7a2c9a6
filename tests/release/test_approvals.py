"""Threshold sets: nothing goes live until a named person approves, exactly once, with a reason."""
from __future__ import annotations

import json

import pandas as pd
import pytest

from release.approvals import ApprovalError, create_set, decide, live_thresholds, pending_set, set_rows
from release.registry import register_model
from release.store import audit_log


def model(text: str = "model\n") -> str:
    return register_model(text, workflow={"name": "wf"}, features=["amount"], snapshot_hash="cd" * 32,
                          code_version="t", metrics={}, at="t0", actor="trainer").id


def suggestions(**values: float) -> pd.DataFrame:
    return pd.DataFrame({"merchant_id": list(values), "suggested_threshold": list(values.values()),
                         "support": 500, "reason": "enough traffic"})


def new_set(model_id, release_id="rel-1", global_threshold=0.8, **values):
    return create_set(model_id, release_id, suggestions(**(values or {"M1": 0.6, "M2": 0.9})), global_threshold,
                      at="t1", actor="fraud-cd pipeline", reason="suggested from the evaluation window")


def test_nothing_is_live_until_approved(home):
    m = model()
    new_set(m)
    assert pending_set("rel-1")["status"] == "pending"
    assert live_thresholds(m) is None


def test_approval_makes_the_set_live(home):
    m = model()
    set_id = new_set(m, global_threshold=0.75, M1=0.6, M2=0.9)
    assert decide("rel-1", "approved", actor="dana", reason="looks right", at="t2") == {
        "set_id": set_id, "status": "approved"}
    glob, per = live_thresholds(m)
    assert glob == 0.75
    assert per.sort_index().to_dict() == {"M1": 0.6, "M2": 0.9}
    s = pending_set("rel-1")
    assert (s["status"], s["decided_by"], s["decided_at"], s["reason"]) == ("approved", "dana", "t2", "looks right")


def test_a_rejected_set_never_goes_live(home):
    m = model()
    new_set(m)
    decide("rel-1", "rejected", actor="dana", reason="M2 too loose", at="t2")
    assert live_thresholds(m) is None


def test_a_second_decision_is_refused_and_the_first_stands(home):
    m = model()
    new_set(m)
    decide("rel-1", "approved", actor="dana", reason="ok", at="t2")
    with pytest.raises(ApprovalError, match="The thresholds of release rel-1 were already approved by dana at t2; "
                                            "nothing changed."):
        decide("rel-1", "rejected", actor="eve", reason="changed my mind", at="t3")
    assert pending_set("rel-1")["status"] == "approved"
    assert live_thresholds(m) is not None
    assert [a["action"] for a in audit_log(entity_prefix="thresholds:")] == [
        "create_threshold_set", "thresholds_approved"]


def test_decisions_are_audited_with_actor_and_reason(home):
    m = model()
    set_id = new_set(m)
    decide("rel-1", "rejected", actor="dana", reason="M2 too loose", at="t2")
    row = audit_log(entity_prefix="thresholds:")[-1]
    assert (row["action"], row["entity"], row["actor"], row["reason"], row["at"]) == (
        "thresholds_rejected", f"thresholds:{set_id}", "dana", "M2 too loose", "t2")
    assert json.loads(row["before_json"]) == {"status": "pending"}
    assert json.loads(row["after_json"]) == {"status": "rejected", "release_id": "rel-1", "model_id": m}


def test_a_decision_needs_a_named_person_and_a_reason(home):
    m = model()
    new_set(m)
    with pytest.raises(ValueError, match="needs a named actor"):
        decide("rel-1", "approved", actor="", reason="ok", at="t2")
    with pytest.raises(ValueError, match="needs a reason"):
        decide("rel-1", "approved", actor="dana", reason="", at="t2")
    assert pending_set("rel-1")["status"] == "pending"  # the refused decisions changed nothing
    assert live_thresholds(m) is None


def test_only_approve_or_reject(home):
    new_set(model())
    with pytest.raises(ApprovalError, match="decision must be 'approved' or 'rejected'; got 'maybe'"):
        decide("rel-1", "maybe", actor="dana", reason="?", at="t2")


def test_deciding_a_release_without_suggestions(home):
    with pytest.raises(ApprovalError, match="Release 'rel-9' has no threshold suggestions to decide on"):
        decide("rel-9", "approved", actor="dana", reason="ok", at="t2")


def test_live_thresholds_are_the_latest_approved_set_of_that_model(home):
    m, other = model("m\n"), model("other\n")
    new_set(m, "rel-1", 0.8, M1=0.6)
    decide("rel-1", "approved", actor="dana", reason="ok", at="t2")
    new_set(m, "rel-2", 0.7, M1=0.5, M3=0.4)
    decide("rel-2", "approved", actor="dana", reason="ok", at="t3")
    new_set(m, "rel-3", 0.1, M1=0.1)
    decide("rel-3", "rejected", actor="dana", reason="too strict", at="t4")
    new_set(other, "rel-4", 0.99, M1=0.99)
    decide("rel-4", "approved", actor="dana", reason="ok", at="t5")
    glob, per = live_thresholds(m)
    assert glob == 0.7 and per.sort_index().to_dict() == {"M1": 0.5, "M3": 0.4}
    assert live_thresholds(other)[0] == 0.99


def test_rerun_replaces_a_pending_set_but_never_undoes_a_decision(home):
    m = model()
    new_set(m, "rel-1", 0.8, M1=0.6)
    second = new_set(m, "rel-1", 0.7, M2=0.5)  # rerun before anyone decided: replaces
    assert set(set_rows(second)["merchant_id"]) == {"M2"}
    decide("rel-1", "approved", actor="dana", reason="ok", at="t2")
    third = new_set(m, "rel-1", 0.1, M9=0.1)  # rerun after the decision: the approved set stays
    assert third == second
    glob, per = live_thresholds(m)
    assert glob == 0.7 and per.to_dict() == {"M2": 0.5}


def test_an_automatic_set_created_approved_is_live_at_once_and_audited(home):
    m = model()
    create_set(m, None, suggestions(M1=0.6), 0.8, at="t1", actor="fraud-cd pipeline",
               reason="bootstrap incumbent", status="approved", automatic=True)
    glob, per = live_thresholds(m)
    assert glob == 0.8 and per.to_dict() == {"M1": 0.6}
    row = audit_log(entity_prefix="thresholds:")[-1]
    assert row["actor"] == "fraud-cd pipeline" and row["reason"] == "bootstrap incumbent"
    assert json.loads(row["after_json"])["status"] == "approved"
