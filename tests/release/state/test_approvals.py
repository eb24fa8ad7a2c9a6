"""Threshold sets: nothing goes live until a named person approves, exactly once, with a reason."""
from __future__ import annotations

import io
import json

import pandas as pd
import pytest

from release.state.approvals import ApprovalError, create_set, decide, live_thresholds, latest_set, set_rows
from release.state.registry import register_model
from release.state.store import audit_log


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
    assert latest_set("rel-1")["status"] == "pending"
    assert live_thresholds(m) is None


def test_approval_makes_the_set_live(home):
    m = model()
    set_id = new_set(m, global_threshold=0.75, M1=0.6, M2=0.9)
    out = decide("rel-1", "approved", actor="dana", reason="looks right", at="t2")
    assert {k: out[k] for k in ("set_id", "status", "approved", "not_approved", "edited")} == {
        "set_id": set_id, "status": "approved", "approved": 2, "not_approved": 0, "edited": 0}
    glob, per = live_thresholds(m)
    assert glob == 0.75
    assert per.sort_index().to_dict() == {"M1": 0.6, "M2": 0.9}
    s = latest_set("rel-1")
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
    assert latest_set("rel-1")["status"] == "approved"
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
    assert latest_set("rel-1")["status"] == "pending"  # the refused decisions changed nothing
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


# ---- edits, approve some, live versions, rollback ---------------------------------------------------------

def seg_suggestions(**by_segment: dict[str, float]) -> pd.DataFrame:
    """Suggestions grouped by segment: seg_suggestions(small={"S1": 0.5}, large={"L1": 0.9})."""
    rows = [(m, t, seg) for seg, d in by_segment.items() for m, t in d.items()]
    return pd.DataFrame({"merchant_id": [r[0] for r in rows], "suggested_threshold": [r[1] for r in rows],
                         "segment": [r[2] for r in rows], "policy": "keep_block_rate", "support": 500,
                         "reason": "enough traffic"})


def release_set(model_id, release_id, global_threshold=0.8, **by_segment):
    return create_set(model_id, release_id, seg_suggestions(**by_segment), global_threshold, at="t1",
                      actor="fraud-cd pipeline", reason="suggested")


def test_edits_change_the_proposal_keep_the_suggestion_and_go_live_only_on_approval(home):
    from release.state.approvals import edit, set_items

    m = model()
    set_id = new_set(m, M1=0.6, M2=0.9)
    out = edit("rel-1", {"M2": 0.85, "M1": "0.6"}, actor="dana", reason="M2 loses good customers", at="t2")
    assert (out["changed"], out["unchanged"], out["live"]) == (1, 1, False)  # M1 unchanged: not an edit
    assert live_thresholds(m) is None  # nothing live before the decision
    items = set_items(set_id).set_index("merchant_id")
    assert items.loc["M2", ["suggested", "proposed", "edited"]].tolist() == [0.9, 0.85, True]
    assert items.loc["M1", ["suggested", "proposed", "edited"]].tolist() == [0.6, 0.6, False]
    row = audit_log(entity_prefix="thresholds:")[-1]
    assert (row["action"], row["actor"], row["reason"]) == ("thresholds_edited", "dana", "M2 loses good customers")
    assert json.loads(row["before_json"]) == {"M2": 0.9}
    assert json.loads(row["after_json"])["M2"] == 0.85
    decide("rel-1", "approved", actor="dana", reason="ok", at="t3")
    assert live_thresholds(m)[1].sort_index().to_dict() == {"M1": 0.6, "M2": 0.85}


def test_approve_some_leaves_the_others_on_the_global_threshold(home):
    from release.state.approvals import set_items

    m = model()
    set_id = new_set(m, global_threshold=0.8, M1=0.6, M2=0.9, M3=0.7)
    out = decide("rel-1", "approved", actor="dana", reason="M3 needs a look", at="t2", merchants=["M1", "M2"])
    assert (out["approved"], out["not_approved"]) == (2, 1)
    glob, per = live_thresholds(m)
    assert glob == 0.8 and per.sort_index().to_dict() == {"M1": 0.6, "M2": 0.9}  # M3: global applies
    assert set_items(set_id).set_index("merchant_id")["outcome"].to_dict() == {
        "M1": "approved", "M2": "approved", "M3": "not_approved"}
    assert json.loads(audit_log(entity_prefix="thresholds:")[-1]["after_json"])["merchants"] == ["M1", "M2"]


def test_unknown_merchants_and_bad_values_are_refused_and_nothing_changes(home):
    from release.state.approvals import ThresholdInputError, edit, set_items

    m = model()
    set_id = new_set(m, M1=0.6, M2=0.9)
    n_audit = len(audit_log())
    with pytest.raises(ThresholdInputError, match=r"3 problem\(s\) in the edits; nothing was applied") as e:
        edit("rel-1", {"M1": 0.5, "GHOST": 0.5, "M2": "high", "M3": 0.1}, actor="dana", reason="x", at="t2")
    assert e.value.errors == ["merchant 'GHOST' is not among the 2 suggestions of rel-1",
                              "merchant 'M2': threshold 'high' is not a number; expected a number in [0, 1]",
                              "merchant 'M3' is not among the 2 suggestions of rel-1"]
    with pytest.raises(ThresholdInputError, match=r"merchant 'M1': threshold 1.5 is out of range; expected a "
                                                  r"number in \[0, 1\]"):
        edit("rel-1", {"M1": 1.5}, actor="dana", reason="x", at="t2")
    with pytest.raises(ThresholdInputError, match="merchant 'NOPE' is not among the 2 suggestions of rel-1"):
        decide("rel-1", "approved", actor="dana", reason="x", at="t2", merchants=["M1", "NOPE"])
    assert set_items(set_id)["proposed"].tolist() == [0.6, 0.9] and latest_set("rel-1")["status"] == "pending"
    assert len(audit_log()) == n_audit


def live_edit(release_id: str, edits: dict, **kw) -> dict:
    """A live edit as `fraudcd thresholds edit --unjudged` makes it: these releases keep no evaluation to judge it
    on (tests/release/orchestration/test_rejudge.py judges live edits)."""
    from release.orchestration.live_edits import edit_thresholds

    return edit_thresholds(release_id, edits, unjudged=True, **kw)


def test_an_approved_set_is_edited_live_in_new_versions_and_rolled_back_apart_from_the_model(home):
    from release.state.approvals import history, rollback

    m = model()
    new_set(m, M1=0.6, M2=0.9)
    decide("rel-1", "approved", actor="dana", reason="ok", at="t2")
    out = live_edit("rel-1", {"M1": 0.55}, actor="eve", reason="chargebacks at M1", at="t3")
    assert out["live"] and live_thresholds(m)[1]["M1"] == 0.55
    h = history(m, "M1")
    assert h[["version", "value", "change", "actor"]].values.tolist() == [[1, 0.6, "approved", "dana"],
                                                                         [2, 0.55, "edited", "eve"]]
    assert pd.isna(h["previous_value"].iloc[0]) and h["previous_value"].iloc[1] == 0.6
    back = rollback(m, merchants=["M1"], actor="on-call", reason="the edit doubled declines", at="t4")
    assert back["merchants"] == {"M1": {"before": 0.55, "after": 0.6}}
    assert live_thresholds(m)[1].sort_index().to_dict() == {"M1": 0.6, "M2": 0.9}
    row = audit_log()[-1]
    assert (row["action"], row["actor"], row["entity"]) == ("thresholds_rollback", "on-call", f"thresholds:model:{m}")
    # the first approved threshold has nothing behind it: refused, pointing at model rollback
    with pytest.raises(ApprovalError, match=r"Nothing to roll back to for M2: .* roll back the model"):
        rollback(m, merchants=["M2"], actor="on-call", reason="x", at="t5")


def test_rollback_of_one_change_undoes_every_merchant_it_touched_unless_changed_since(home):
    from release.state.approvals import rollback

    m = model()
    new_set(m, M1=0.6, M2=0.9, M3=0.7)
    decide("rel-1", "approved", actor="dana", reason="ok", at="t2")
    c1 = live_edit("rel-1", {"M1": 0.5, "M2": 0.8}, actor="eve", reason="batch", at="t3")["change_id"]
    c2 = live_edit("rel-1", {"M2": 0.75}, actor="eve", reason="again", at="t4")["change_id"]
    with pytest.raises(ApprovalError, match=f"Cannot undo change {c1}: 1 merchant\\(s\\) changed since \\(M2\\)"):
        rollback(m, change_id=c1, actor="on-call", reason="x", at="t5")
    rollback(m, change_id=c2, actor="on-call", reason="undo the second", at="t5")
    rollback(m, change_id=c1, actor="on-call", reason="undo the first", at="t6")
    assert live_thresholds(m)[1].sort_index().to_dict() == {"M1": 0.6, "M2": 0.9, "M3": 0.7}


def test_a_rejected_or_expired_set_cannot_be_edited(home):
    from release.state.approvals import edit, expire

    m = model()
    new_set(m, "rel-1")
    decide("rel-1", "rejected", actor="dana", reason="no", at="t2")
    with pytest.raises(ApprovalError, match="were rejected by dana at t2; they cannot be edited"):
        edit("rel-1", {"M1": 0.5}, actor="dana", reason="x", at="t3")
    new_set(m, "rel-2")
    assert expire("rel-2", actor="fraud-cd pipeline", reason="no decision in 3 days", at="t4")["status"] == "expired"
    assert live_thresholds(m) is None
    with pytest.raises(ApprovalError, match="already expired"):
        decide("rel-2", "approved", actor="dana", reason="late", at="t5")


# ---- CSV round trip ---------------------------------------------------------------------------------------

def test_csv_export_edit_import_round_trip(home):
    from release.state.approvals import export_csv, import_csv, set_items

    m = model()
    set_id = new_set(m, M1=0.6123456789012345, M2=0.9)
    text = export_csv("rel-1")
    df = pd.read_csv(io.StringIO(text))
    assert df.columns.tolist() == ["merchant_id", "segment", "policy", "support", "shrunk", "current_threshold",
                                   "suggested_threshold", "threshold", "reason"]
    df.loc[df["merchant_id"] == "M2", "threshold"] = 0.88
    out = import_csv("rel-1", df.to_csv(index=False), actor="dana", reason="spreadsheet review", at="t2")
    assert (out["changed"], out["unchanged"]) == (1, 1)  # full precision: M1 imports unchanged
    assert set_items(set_id).set_index("merchant_id")["proposed"].to_dict() == {"M1": 0.6123456789012345, "M2": 0.88}
    assert json.loads(audit_log()[-1]["after_json"])["_source"] == "csv"


@pytest.mark.parametrize("csv_text,errors", [
    ("merchant_id,threshold\nM1,abc\n", ["row 2, column threshold: 'abc' is not a number; expected a number in [0, 1]"]),
    ("merchant_id,threshold\nM1,1.2\nM2,-0.1\n", ["row 2, column threshold: 1.2 is out of range; expected a number in [0, 1]",
                                                 "row 3, column threshold: -0.1 is out of range; expected a number in [0, 1]"]),
    ("merchant_id,threshold\nM1,0.5\nM1,0.4\n", ["row 3, column merchant_id: 'M1' appears again (first at row 2); "
                                                 "each merchant at most once"]),
    ("merchant_id,threshold\nM9,0.5\n", ["row 2, column merchant_id: 'M9' is not among the 2 suggestions of rel-1"]),
    ("merchant_id,threshold\nM1,\n", ["row 2, column threshold: is empty; expected a number in [0, 1]"]),
    ("merchant,value\nM1,0.5\n", ["row 1 (header): no 'merchant_id', 'threshold' column; expected columns merchant_id "
                                  "and threshold (others are ignored); got 'merchant', 'value'"]),
    ("merchant_id,threshold\nM1,0.5,extra\n", ["row 2: 3 cells; expected 2 like the header"]),
    ("", ["the file is empty; expected a header row with merchant_id and threshold"]),
])
def test_csv_import_reports_every_problem_and_applies_nothing(home, csv_text, errors):
    from release.state.approvals import ThresholdInputError, import_csv, set_items

    m = model()
    set_id = new_set(m, M1=0.6, M2=0.9)
    good = "M2,0.5\n" if csv_text.startswith("merchant_id,threshold\n") and "M2" not in csv_text else ""
    n_audit = len(audit_log())
    with pytest.raises(ThresholdInputError, match="nothing was applied") as e:
        import_csv("rel-1", csv_text + good, actor="dana", reason="x", at="t2")
    assert e.value.errors == errors
    assert set_items(set_id)["proposed"].tolist() == [0.6, 0.9]  # not even the good row
    assert len(audit_log()) == n_audit


# ---- automation readiness and opt-in auto-approval --------------------------------------------------------

def _review(m, rid, decision="approved", edits=None, **by_segment):
    from release.state.approvals import edit

    release_set(m, rid, **by_segment)
    if edits:
        edit(rid, edits, actor="dana", reason="adjusted", at="t")
    decide(rid, decision, actor="dana", reason="reviewed", at="t")


def test_readiness_is_the_unedited_share_and_streak_per_segment(home):
    from release.state.approvals import readiness

    m = model()
    seg = dict(small={"S1": 0.5, "S2": 0.6}, large={"L1": 0.9})
    _review(m, "rel-1", **seg)                              # all unedited
    _review(m, "rel-2", edits={"L1": 0.85}, **seg)          # large edited
    _review(m, "rel-3", **seg)                              # all unedited
    _review(m, "rel-4", **seg)                              # all unedited
    r = readiness(releases_window=6, streak_window=4).set_index("segment")
    assert r.loc["small", ["releases", "suggestions", "accepted_unedited", "streak"]].tolist() == [4, 8, 8, 4]
    assert r.loc["large", ["releases", "suggestions", "accepted_unedited", "streak"]].tolist() == [4, 4, 3, 2]
    assert r.loc["large", "share_unedited"] == 0.75
    _review(m, "rel-5", decision="rejected", **seg)         # a rejection breaks every streak
    r = readiness(releases_window=2, streak_window=4).set_index("segment")
    assert r["streak"].to_dict() == {"large": 0, "small": 0}
    assert r.loc["small", ["releases", "suggestions", "accepted_unedited"]].tolist() == [2, 4, 2]


def test_auto_approval_never_fires_when_disabled(home):
    from release.state.approvals import readiness, segments_ready
    from analysis.thresholds import AutoApprove

    m = model()
    for i in range(1, 8):
        _review(m, f"rel-{i}", small={"S1": 0.5})
    r = readiness(6, 4)
    assert r.set_index("segment").loc["small", "streak"] == 6  # as far as readiness looks back
    assert segments_ready(r, AutoApprove()) == []  # the default: off
    assert segments_ready(r, AutoApprove(enabled=False, after_unedited_releases=1)) == []
    assert segments_ready(r, AutoApprove(enabled=True, after_unedited_releases=4)) == ["small"]
    assert segments_ready(r, AutoApprove(enabled=True, after_unedited_releases=7)) == []
    assert segments_ready(r, AutoApprove(enabled=True, after_unedited_releases=4, segments=["large"])) == []


def test_auto_approved_segments_are_recorded_as_automatic_and_the_rest_waits_for_a_person(home):
    from release.state.approvals import auto_actor, auto_approve_segments, history, set_items

    m = model()
    set_id = release_set(m, "rel-1", small={"S1": 0.5, "S2": 0.6}, large={"L1": 0.9})
    out = auto_approve_segments("rel-1", ["small"], after=4, at="t2")
    assert (out["status"], out["auto_approved"]) == ("pending", 2)
    assert live_thresholds(m) is None  # still nothing live: the set waits for a person on 'large'
    decide("rel-1", "approved", actor="dana", reason="large looks fine", at="t3")
    assert set_items(set_id).set_index("merchant_id")["outcome"].to_dict() == {
        "L1": "approved", "S1": "auto_approved", "S2": "auto_approved"}
    h = history(m).set_index("merchant_id")
    assert h.loc["S1", "automatic"] and h.loc["S1", "actor"] == auto_actor(4) and h.loc["S1", "change"] == "auto_approved"
    assert not h.loc["L1", "automatic"] and h.loc["L1", "actor"] == "dana"
    # a set entirely auto-approvable is approved by the automation itself, as automatic
    set2 = release_set(m, "rel-2", small={"S1": 0.5})
    assert auto_approve_segments("rel-2", ["small"], after=4, at="t4")["status"] == "approved"
    s = latest_set("rel-2")
    assert (s["id"], s["status"], s["automatic"], s["decided_by"]) == (set2, "approved", True, auto_actor(4))
    acts = [(a["action"], a["actor"]) for a in audit_log(entity_prefix=f"thresholds:{set2}")]
    assert acts == [("create_threshold_set", "fraud-cd pipeline"), ("thresholds_auto_approved", auto_actor(4)),
                    ("thresholds_approved", auto_actor(4))]


def test_auto_approved_suggestions_a_person_later_edits_break_the_streak(home):
    from release.state.approvals import auto_approve_segments, readiness

    m = model()
    for i in range(1, 5):
        _review(m, f"rel-{i}", small={"S1": 0.5})
    release_set(m, "rel-5", small={"S1": 0.5})
    auto_approve_segments("rel-5", ["small"], after=4, at="t")
    assert readiness(6, 4).set_index("segment").loc["small", "streak"] == 4  # automation is not a review
    live_edit("rel-5", {"S1": 0.45}, actor="dana", reason="too loose after all", at="t")
    assert readiness(6, 4).set_index("segment").loc["small", "streak"] == 0


def test_a_rerun_for_another_model_supersedes_the_pending_set_and_audits_every_dropped_edit(home):
    from release.state.approvals import edit, set_items

    m, other = model("m\n"), model("other\n")
    first = new_set(m, "rel-1", 0.8, M1=0.6, M2=0.9)
    edit("rel-1", {"M1": 0.5}, actor="dana", reason="chargebacks last week", at="t2")
    second = new_set(other, "rel-1", 0.7, M1=0.6, M2=0.9)  # the rerun trained another candidate
    assert latest_set("rel-1")["id"] == second
    assert not set_items(second)["edited"].any()  # one model's threshold is no value for another's scores
    assert set_items(first).set_index("merchant_id")["outcome"].tolist() == ["superseded", "superseded"]
    row = [r for r in audit_log() if r["action"] == "thresholds_superseded"][-1]
    assert row["entity"] == f"thresholds:{first}"
    dropped = json.loads(row["after_json"])["edits_dropped"]
    assert dropped == {"M1": {"edited_by": "dana", "edited_at": "t2", "edit_reason": "chargebacks last week",
                              "suggested_before": 0.6, "edited_value": 0.5,
                              "why": "the rerun's candidate is another model"}}


def test_edits_carried_over_by_one_rerun_survive_the_next_with_their_author(home):
    from release.state.approvals import edit, set_items

    m = model()
    new_set(m, "rel-1", 0.8, M1=0.6)
    edit("rel-1", {"M1": 0.5}, actor="dana", reason="r", at="t2")
    new_set(m, "rel-1", 0.8, M1=0.6)
    third = new_set(m, "rel-1", 0.8, M1=0.62)
    assert set_items(third).set_index("merchant_id").loc["M1", "proposed"] == 0.5
    carried = json.loads([r for r in audit_log() if r["action"] == "thresholds_edits_carried_over"][-1]["after_json"])
    assert carried["M1"]["edited_by"] == "dana" and carried["M1"]["suggested_now"] == 0.62
