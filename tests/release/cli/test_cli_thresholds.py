"""`fraudcd thresholds ...`: show, approve (all or some), edit, reject, CSV export/import, rollback,
history and readiness, with exit codes 0 ok / 1 refused / 2 bad input, and nothing applied on an error."""
from __future__ import annotations

import json

import pandas as pd
import pytest

from release.state.approvals import create_set, live_thresholds, latest_set, set_items
from release.state.registry import register_model
from release.state.store import audit_log
from tests.release.cli.runner import fraudcd, said


@pytest.fixture
def rel(home):
    """A pending threshold set for release rel-1 of a model tagged production."""
    from release.state import registry
    from release.state.store import transaction

    m = register_model("model\n", workflow={"name": "wf"}, features=["amount"], snapshot_hash="cd" * 32,
                       code_version="t", metrics={}, at="t0", actor="trainer").id
    with transaction() as conn:
        registry.set_tag(conn, "production", m, at="t0", actor="test", reason="fixture")
    sugg = pd.DataFrame({"merchant_id": ["M1", "M2", "M3"], "suggested_threshold": [0.6, 0.9, 0.7],
                         "current_threshold": [0.5, 0.8, float("nan")], "support": [900, 500, 40],
                         "shrunk": [False, False, True], "segment": ["large", "large", "small"],
                         "policy": "keep_block_rate", "reason": ["r1", "r2", "r3"]})
    create_set(m, "rel-1", sugg, 0.8, at="t1", actor="fraud-cd pipeline", reason="suggested")
    return m


def test_show_lists_suggestions_largest_first_and_as_json(rel):
    r = fraudcd("thresholds", "show", "--release", "rel-1")
    assert r.exit_code == 0, r.output
    assert "pending" in said(r) and r.output.index("M1") < r.output.index("M2") < r.output.index("M3")
    r = fraudcd("thresholds", "show", "--release", "rel-1", "--json")
    obj = json.loads(r.stdout)
    assert obj["outcomes"] == {"pending": 3} and obj["airflow_request"] is None
    assert [t["merchant_id"] for t in obj["thresholds"]] == ["M1", "M2", "M3"]
    assert obj["thresholds"][2]["current"] is None and obj["thresholds"][0]["proposed"] == 0.6


def test_show_of_an_unknown_release_is_bad_input(home):
    fraudcd("db", "--create")
    r = fraudcd("thresholds", "show", "--release", "rel-nope")
    assert r.exit_code == 2 and "has no threshold suggestions" in said(r)


def test_approve_all_then_a_second_decision_is_refused(rel):
    r = fraudcd("thresholds", "approve", "--release", "rel-1", "--as", "dana", "--reason", "looks right")
    assert r.exit_code == 0, r.output
    assert "3 merchants approved" in said(r) and "no Airflow approval task is waiting" in said(r)
    assert live_thresholds(rel)[1].sort_index().to_dict() == {"M1": 0.6, "M2": 0.9, "M3": 0.7}
    r = fraudcd("thresholds", "reject", "--release", "rel-1", "--as", "eve", "--reason", "changed my mind")
    assert r.exit_code == 1 and "already approved by dana" in said(r)
    assert latest_set("rel-1")["status"] == "approved"


def test_approve_some(rel):
    r = fraudcd("thresholds", "approve", "--release", "rel-1", "--as", "dana", "--reason", "M3 later",
                "--merchant", "M1", "--merchant", "M2")
    assert r.exit_code == 0, r.output
    assert "2 merchants approved, 1 not approved (the global threshold applies to them)" in said(r)
    assert live_thresholds(rel)[1].sort_index().to_dict() == {"M1": 0.6, "M2": 0.9}


def test_approve_some_with_an_unknown_merchant_changes_nothing(rel):
    r = fraudcd("thresholds", "approve", "--release", "rel-1", "--as", "dana", "--reason", "x", "--merchant", "M9")
    assert r.exit_code == 2 and "merchant 'M9' is not among the 3 suggestions of rel-1" in said(r)
    assert latest_set("rel-1")["status"] == "pending"


def test_reject_stops_nothing_goes_live(rel):
    r = fraudcd("thresholds", "reject", "--release", "rel-1", "--as", "dana", "--reason", "M2 too loose")
    assert r.exit_code == 0 and "nothing goes live" in said(r)
    assert live_thresholds(rel) is None


@pytest.mark.parametrize("args,code,message", [
    (["--merchant", "M1", "--threshold", "abc"], 2, "threshold 'abc' is not a number; expected a number in [0, 1]"),
    (["--merchant", "M1", "--threshold", "1.5"], 2, "threshold 1.5 is out of range; expected a number in [0, 1]"),
    (["--merchant", "M9", "--threshold", "0.5"], 2, "merchant 'M9' is not among the 3 suggestions of rel-1"),
    (["--merchant", "M1", "--merchant", "M2", "--threshold", "0.5"], 2, "give one --threshold per --merchant"),
    (["--merchant", "M1", "--threshold", "0.5", "--merchant", "M1", "--threshold", "0.4"], 2, "repeated: M1"),
])
def test_edit_refuses_bad_input_and_changes_nothing(rel, args, code, message):
    n = len(audit_log())
    r = fraudcd("thresholds", "edit", "--release", "rel-1", *args, "--as", "dana", "--reason", "x")
    assert r.exit_code == code and message in said(r), r.output
    assert set_items(latest_set("rel-1")["id"])["proposed"].tolist() == [0.6, 0.9, 0.7]
    assert len(audit_log()) == n


def test_edit_without_a_name_is_the_os_login_said_and_marked_and_needs_a_reason(rel):
    """No --as and no Airflow running for real: the change is the OS login's, said out loud and marked as such in
    the audit row (the Airflow user's turn is tests/dags/test_up_down.py, over REST)."""
    from release.state.store import os_user

    r = fraudcd("thresholds", "edit", "--release", "rel-1", "--merchant", "M1", "--threshold", "0.5", "--as", "dana",
                "--reason", " ")
    assert r.exit_code == 2 and "give a reason" in said(r)
    r = fraudcd("thresholds", "edit", "--release", "rel-1", "--merchant", "M1", "--threshold", "0.5", "--reason", "x")
    assert r.exit_code == 0, r.output
    assert f"no --as given: recorded as {os_user()!r} (your OS login)" in said(r)
    a = audit_log()[-1]
    assert (a["action"], a["actor"]) == ("thresholds_edited", os_user())
    assert json.loads(a["context_json"])["actor_source"] == "os_user"


def test_edit_then_approve_is_audited_who_when_why_before_after(rel):
    r = fraudcd("thresholds", "edit", "--release", "rel-1", "--merchant", "M2", "--threshold", "0.85",
                "--as", "dana", "--reason", "M2 declines too many good customers")
    assert r.exit_code == 0 and "1 threshold(s) of rel-1 changed in the pending set by dana" in said(r)
    a = audit_log()[-1]
    assert (a["action"], a["actor"]) == ("thresholds_edited", "dana")
    assert a["reason"] == "M2 declines too many good customers"
    assert a["at"][:4] >= "2024" and json.loads(a["before_json"]) == {"M2": 0.9}
    assert json.loads(a["after_json"])["M2"] == 0.85
    fraudcd("thresholds", "approve", "--release", "rel-1", "--as", "dana", "--reason", "ok")
    assert live_thresholds(rel)[1]["M2"] == 0.85


def test_csv_round_trip_through_files(rel, tmp_path):
    out = tmp_path / "sugg.csv"
    r = fraudcd("thresholds", "export", "--release", "rel-1", "--out", str(out))
    assert r.exit_code == 0, r.output
    df = pd.read_csv(out)
    df.loc[df["merchant_id"] == "M3", "threshold"] = 0.75
    df.to_csv(out, index=False)
    r = fraudcd("thresholds", "import", "--release", "rel-1", "--file", str(out), "--as", "dana",
                "--reason", "spreadsheet review")
    assert r.exit_code == 0, r.output
    assert "1 threshold(s) of rel-1 changed" in said(r) and "2 already had that value" in said(r)
    assert set_items(latest_set("rel-1")["id"]).set_index("merchant_id")["proposed"]["M3"] == 0.75


def test_csv_import_errors_name_row_column_value_and_apply_nothing(rel, tmp_path):
    bad = tmp_path / "bad.csv"
    bad.write_text("merchant_id,threshold\nM1,0.55\nM2,lots\nM9,0.5\nM1,0.4\nM3,2\n")
    r = fraudcd("thresholds", "import", "--release", "rel-1", "--file", str(bad), "--as", "dana", "--reason", "x")
    assert r.exit_code == 2
    text = " ".join(r.output.split())
    for line in ("4 problem(s) in the CSV; nothing was applied",
                 "row 3, column threshold: 'lots' is not a number; expected a number in [0, 1]",
                 "row 4, column merchant_id: 'M9' is not among the 3 suggestions of rel-1",
                 "row 5, column merchant_id: 'M1' appears again (first at row 2)",
                 "row 6, column threshold: 2 is out of range; expected a number in [0, 1]"):
        assert line in text, line
    assert set_items(latest_set("rel-1")["id"])["proposed"].tolist() == [0.6, 0.9, 0.7]  # not even M1
    r = fraudcd("thresholds", "import", "--release", "rel-1", "--file", str(tmp_path / "missing.csv"),
                "--as", "dana", "--reason", "x")
    assert r.exit_code == 2 and "cannot read" in said(r)


def test_live_edit_history_and_threshold_rollback_leave_the_model_alone(rel):
    from release.state import registry

    fraudcd("thresholds", "approve", "--release", "rel-1", "--as", "dana", "--reason", "ok")
    edit = ("thresholds", "edit", "--release", "rel-1", "--merchant", "M1", "--threshold", "0.5", "--as", "eve",
            "--reason", "fraud ring at M1")
    # a live edit is judged by the release's contracts first; this release kept no evaluation to judge it on
    r = fraudcd(*edit)
    assert r.exit_code == 1 and "cannot be judged by the contracts of release rel-1: no evaluation is kept" in said(r)
    assert "Nothing was applied" in said(r) and live_thresholds(rel)[1]["M1"] == 0.6
    r = fraudcd(*edit, "--unjudged")
    assert r.exit_code == 0 and "changed live" in said(r)
    assert "not judged (no evaluation is kept in its folder): applied unjudged, on the record" in said(r)
    change = int(r.output.split("change id ")[1].split()[0])
    shown = {t["merchant_id"]: (t["proposed"], t["live"])
             for t in json.loads(fraudcd("thresholds", "show", "--release", "rel-1", "--json").stdout)["thresholds"]}
    assert shown == {"M1": (0.6, 0.5), "M2": (0.9, 0.9), "M3": (0.7, 0.7)}  # approved vs live now
    h = json.loads(fraudcd("thresholds", "history", "--merchant", "M1", "--json").stdout)
    assert [(x["version"], x["value"], x["change"], x["actor"]) for x in h] == [
        (1, 0.6, "approved", "dana"), (2, 0.5, "edited", "eve")]
    r = fraudcd("thresholds", "rollback", "--change", str(change), "--as", "on-call", "--reason", "too strict")
    assert r.exit_code == 0, r.output
    assert live_thresholds(rel)[1]["M1"] == 0.6
    assert registry.tagged("production").id == rel  # the model did not move
    r = fraudcd("thresholds", "rollback", "--merchant", "M2", "--as", "on-call", "--reason", "x")
    assert r.exit_code == 1 and "Nothing to roll back to for M2" in said(r)
    r = fraudcd("thresholds", "rollback", "--as", "on-call", "--reason", "x")
    assert r.exit_code == 2


def test_readiness_table_says_auto_approve_is_off_by_default(rel):
    fraudcd("thresholds", "approve", "--release", "rel-1", "--as", "dana", "--reason", "ok")
    obj = json.loads(fraudcd("thresholds", "readiness", "--json").stdout)
    assert obj["auto_approve"]["enabled"] is False
    assert {s["segment"]: (s["suggestions"], s["accepted_unedited"], s["streak"], s["auto_approve"])
            for s in obj["segments"]} == {"large": (2, 2, 1, "off"), "small": (1, 1, 1, "off")}
