"""release.orchestration.cycle's approval stages without Airflow: a response from the Airflow form applied to the
state store (edits and decision together, or nothing), a decision recorded first (CLI) left alone, an
expiry stopping the release, and auto-approval only when opted in."""
from __future__ import annotations

import datetime as dt

import pandas as pd
import pytest

DAY = dt.date(2026, 3, 1)
RID = "rel-2026-03-01"


@pytest.fixture
def pending(home):
    from release.state import approvals
    from release.orchestration.cycle import _update_release, start_release
    from release.state.registry import register_model

    m = register_model("model\n", workflow={"name": "wf"}, features=["amount"], snapshot_hash="cd" * 32,
                       code_version="t", metrics={}, at="t0", actor="trainer").id
    start_release(DAY, "cd" * 32)
    _update_release(RID, candidate_model_id=m)
    for st in ("trained", "evaluated", "contracts_passed", "awaiting_approval"):  # the legal path
        _update_release(RID, status=st)
    sugg = pd.DataFrame({"merchant_id": ["M1", "M2"], "suggested_threshold": [0.6, 0.9], "segment": "small"})
    approvals.create_set(m, RID, sugg, 0.8, at="t1", actor="fraud-cd pipeline", reason="suggested")
    return m


def test_an_airflow_response_applies_its_edits_and_decision_together(pending):
    from release.state import approvals
    from release.orchestration.cycle import apply_threshold_response, get_release

    out = apply_threshold_response(RID, "Approve all", {"reason": "ok", "merchants": [], "edits": {"M2": 0.85}},
                                   responder="risk-analyst", at="2026-03-02T10:00:00+00:00")
    assert out == "approved" and get_release(RID)["status"] == "approved"
    assert approvals.live_thresholds(pending)[1].sort_index().to_dict() == {"M1": 0.6, "M2": 0.85}
    s = approvals.latest_set(RID)
    assert (s["decided_by"], s["decided_at"]) == ("risk-analyst (via Airflow)", "2026-03-02T10:00:00+00:00")


@pytest.mark.parametrize("option,params,message", [
    ("Approve some", {"reason": "x", "merchants": [], "edits": {}}, "'Approve some' needs the merchants to approve"),
    ("Approve all", {"reason": "x", "merchants": [], "edits": {"M9": 0.5}}, "merchant 'M9' is not among"),
    ("Approve all", {"reason": "x", "merchants": [], "edits": {"M1": 0.5, "M2": 7}}, "threshold 7 is out of range"),
])
def test_an_invalid_airflow_response_changes_nothing(pending, option, params, message):
    from release.state import approvals
    from release.orchestration.cycle import apply_threshold_response, get_release

    with pytest.raises(approvals.ThresholdInputError, match=message):
        apply_threshold_response(RID, option, params, responder="risk-analyst", at="t2")
    assert approvals.latest_set(RID)["status"] == "pending"
    assert approvals.set_items(approvals.latest_set(RID)["id"])["proposed"].tolist() == [0.6, 0.9]  # M1 untouched
    assert get_release(RID)["status"] == "awaiting_approval"


def test_a_response_after_a_recorded_decision_changes_nothing(pending):
    from release.state import approvals
    from release.orchestration.cycle import apply_threshold_response

    approvals.decide(RID, "rejected", actor="dana", reason="no", at="t2")
    assert apply_threshold_response(RID, "Approve all", {"reason": "late", "edits": {"M1": 0.1}},
                                    responder="eve", at="t3") == "rejected"
    assert approvals.live_thresholds(pending) is None


def test_an_expiry_stops_the_release_with_nothing_live(pending):
    from release.state import approvals
    from release.orchestration.cycle import expire_threshold_approval, get_release

    expire_threshold_approval(RID, waited="3 days, 0:00:00")
    rel = get_release(RID)
    assert rel["status"] == "stopped"
    assert rel["stop_reason"] == ("Thresholds not decided: no decision on the suggested thresholds within "
                                  "3 days, 0:00:00; nothing went live.")
    assert approvals.live_thresholds(pending) is None


def _history(m, n):
    """n earlier releases whose 'small' suggestions a person accepted unedited."""
    from release.state import approvals

    for i in range(n):
        rid = f"rel-2025-0{i + 1}-01"
        approvals.create_set(m, rid, pd.DataFrame({"merchant_id": ["M1"], "suggested_threshold": [0.6],
                                                   "segment": "small"}), 0.8, at="t", actor="p", reason="s")
        approvals.decide(rid, "approved", actor="dana", reason="ok", at="t")


def _request(monkeypatch, home, yaml_text):
    """Run the request stage on a fresh evaluation-less set: the stage's auto-approval part."""
    from release.state import approvals
    from release.orchestration import cycle

    cfg = home / "config"
    (cfg / "workflows").mkdir(parents=True)
    (cfg / "thresholds.yaml").write_text(yaml_text)
    monkeypatch.setenv("FRAUDCD_CONFIG", str(cfg))

    # a saved evaluation (the file the stage reads), holding only what the stage needs
    from analysis.evaluation import Evaluation

    Evaluation(overall={}, slices=pd.DataFrame({"slice_type": ["all"]}), recall_diff={}, operating_fpr=0.0,
               candidate_threshold=0.8,
               suggestions=pd.DataFrame({"merchant_id": ["M1", "M2"], "suggested_threshold": [0.6, 0.9],
                                         "segment": "small"})).save(cycle.release_dir(RID))
    cycle.request_threshold_approval(RID)
    return approvals.latest_set(RID)


def test_auto_approval_never_fires_unless_opted_in(home, monkeypatch):
    from release.orchestration.cycle import _update_release, start_release
    from release.state.registry import register_model

    m = register_model("model\n", workflow={"name": "wf"}, features=["amount"], snapshot_hash="cd" * 32,
                       code_version="t", metrics={}, at="t0", actor="trainer").id
    _history(m, 5)
    start_release(DAY, "cd" * 32)
    _update_release(RID, candidate_model_id=m)
    for st in ("trained", "evaluated", "contracts_passed"):  # the legal path to the approval request
        _update_release(RID, status=st)
    s = _request(monkeypatch, home, "automation: {auto_approve: {enabled: false, after_unedited_releases: 2}}\n")
    assert s["status"] == "pending"  # five unedited releases, but the setting is off


def test_auto_approval_when_opted_in_is_recorded_as_automatic(home, monkeypatch):
    from release.state import approvals
    from release.orchestration.cycle import _update_release, approval_decided, start_release
    from release.state.registry import register_model

    m = register_model("model\n", workflow={"name": "wf"}, features=["amount"], snapshot_hash="cd" * 32,
                       code_version="t", metrics={}, at="t0", actor="trainer").id
    _history(m, 2)
    start_release(DAY, "cd" * 32)
    _update_release(RID, candidate_model_id=m)
    for st in ("trained", "evaluated", "contracts_passed"):  # the legal path to the approval request
        _update_release(RID, status=st)
    s = _request(monkeypatch, home, "automation: {auto_approve: {enabled: true, after_unedited_releases: 2}}\n")
    assert (s["status"], s["automatic"], s["decided_by"]) == ("approved", True, approvals.auto_actor(2))
    assert approval_decided(RID)
    assert approvals.live_thresholds(m)[1].sort_index().to_dict() == {"M1": 0.6, "M2": 0.9}
