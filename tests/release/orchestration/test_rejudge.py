"""release.orchestration.cycle.rejudge_approved_policy: after people decide, the offline contracts judge the policy they
approved (edits, partial approvals: every merchant not approved gets the global threshold) on the same
judging rows, before any traffic moves. A failure stops the release on the record; the approved policy
as suggested goes on."""
from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

CONTRACTS = """
contracts:
  - {name: shift, kind: action_rate_shift, slice: country, max_relative_shift: 0.25, min_support: 100}
  - {name: recall, kind: fixed_fpr_higher_recall, fpr_tolerance_relative: 0.05}
"""
MANIFEST = {"rows": 1, "data_contract": []}


def window(seed=0, n=100_000) -> pd.DataFrame:
    """Ten days, two countries, 40 merchants; a candidate that ranks better; nothing censored."""
    rng = np.random.default_rng(seed)
    merchant = rng.integers(0, 40, n)
    fraud = (rng.random(n) < 0.02).astype(float)
    risk = rng.normal(0, 1, n) + 2.5 * fraud
    return pd.DataFrame({
        "day": pd.Timestamp("2026-02-01") + pd.to_timedelta(rng.integers(0, 10, n), unit="D"),
        "merchant_id": [f"M{m}" for m in merchant], "merchant_country": np.where(merchant < 20, "FR", "DE"),
        "merchant_category": "grocery", "card_country": "FR", "card_id": rng.integers(0, 30_000, n),
        "amount": 20.0, "label": fraud, "weight": 1.0,
        "incumbent_score": 1 / (1 + np.exp(-(risk + rng.normal(0, 1.2, n) - 3))),
        "candidate_score": 1 / (1 + np.exp(-(risk + rng.normal(0, 0.4, n) - 3)))})


@pytest.fixture
def evaluated(home, monkeypatch):
    """A release whose evaluation is saved and whose suggested thresholds await a decision."""
    from analysis.evaluation import evaluate
    from release.state import approvals
    from release.orchestration.cycle import _update_release, release_dir, start_release
    from release.state.registry import register_model
    from release.core.settings import paths

    cfile = home / "contracts.yaml"
    cfile.write_text(CONTRACTS)
    monkeypatch.setenv("FRAUDCD_CONTRACTS", str(cfile))
    snap = "e" * 64
    (paths().snapshots / snap).mkdir(parents=True, exist_ok=True)
    (paths().snapshots / snap / "manifest.json").write_text(json.dumps(MANIFEST))
    rid = start_release("2026-03-01", snap)
    m = register_model("cand\n", workflow={"name": "wf"}, features=["amount"], snapshot_hash=snap, code_version="t",
                       metrics={}, at="t0", actor="trainer").id
    from contracts.evaluator import load_contracts

    w = window()
    g = float(np.quantile(w["incumbent_score"], 0.97))  # the incumbent blocks 3% of traffic
    ev = evaluate(w, {}, g, slice_names=["country"], n_boot=200, pools=load_contracts(cfile).pools())
    ev.save(release_dir(rid))
    _update_release(rid, candidate_model_id=m)
    for st in ("trained", "evaluated", "contracts_passed", "awaiting_approval"):  # the legal path
        _update_release(rid, status=st)
    approvals.create_set(m, rid, ev.suggestions, ev.candidate_threshold, at="t1", actor="fraud-cd pipeline",
                         reason="suggested")
    return rid, ev


def _verdicts(rid, stage):
    from release.state.releases import release_verdicts

    return {(v["contract"], v["slice"]): v for v in release_verdicts(rid) if v["stage"] == stage}


def test_the_policy_approved_as_suggested_is_judged_again_and_goes_on(evaluated):
    from release.state import approvals
    from release.orchestration.cycle import approval_decided, get_release, rejudge_approved_policy, release_dir

    rid, _ = evaluated
    approvals.decide(rid, approvals.APPROVED, actor="dana", reason="looks right", at="t2")
    assert approval_decided(rid) and get_release(rid)["status"] == "approved"
    assert rejudge_approved_policy(rid) is True and get_release(rid)["status"] == "rejudged"
    v = _verdicts(rid, "approved")
    assert v[("shift", "FR")]["verdict"] == "pass" and "the approved policy blocks" in v[("shift", "FR")]["sentence"]
    assert (release_dir(rid) / "approved" / "metrics.parquet").exists()
    assert rejudge_approved_policy(rid) is True  # a rerun changes nothing


def test_the_rejudgement_reads_the_contracts_once(evaluated, monkeypatch):
    """One stage, one contract set: what the judging computes (pooled slices, detailed slices, the drift anchor) and
    what judges it come from the same reading of the file, so an edit made meanwhile cannot split them."""
    import contracts.evaluator as evaluator
    import release.orchestration.cycle as cycle
    from release.state import approvals

    rid, _ = evaluated
    approvals.decide(rid, approvals.APPROVED, actor="dana", reason="looks right", at="t2")
    reads = []
    real = evaluator.load_contracts

    def counted(path, *a, **kw):
        reads.append(path)
        return real(path, *a, **kw)

    monkeypatch.setattr(evaluator, "load_contracts", counted)
    monkeypatch.setattr(cycle, "load_contracts", counted)
    assert cycle.approval_decided(rid) and cycle.rejudge_approved_policy(rid) is True
    assert len(reads) == 1, reads


def test_an_edit_that_cuts_one_countrys_thresholds_stops_the_release_before_any_traffic(evaluated):
    from release.state import approvals, registry
    from release.orchestration.cycle import deploy_candidate, get_release, rejudge_approved_policy, run_backtest
    from release.state.store import audit_log

    rid, ev = evaluated
    fr = ev.suggestions[ev.suggestions["merchant_id"].str[1:].astype(int) < 20]
    edits = {r.merchant_id: round(r.suggested_threshold * 0.4, 6) for r in fr.itertuples()}
    approvals.decide(rid, approvals.APPROVED, actor="dana", reason="block more in FR", at="t2", edits=edits)
    from release.orchestration.cycle import approval_decided

    approval_decided(rid)
    assert rejudge_approved_policy(rid) is False
    rel = get_release(rid)
    assert rel["status"] == "stopped" and rel["stop_reason"].startswith("Stopped by re-judging the approved policy: FR:")
    assert _verdicts(rid, "approved")[("shift", "FR")]["verdict"] == "fail"
    assert _verdicts(rid, "offline") == {}  # this test recorded no offline verdicts; the stages are apart
    assert registry.tagged("candidate") is None
    assert [a["action"] for a in audit_log()][-1] == "release_stopped"
    assert run_backtest(rid) is False and deploy_candidate(rid) == "stopped"  # nothing reaches traffic
    from release.rollout import ramp

    assert ramp.current()["state"] == "idle"


def test_a_partial_approval_gives_every_other_merchant_the_global_threshold(evaluated):
    from analysis.evaluation import Evaluation
    from release.state import approvals
    from release.orchestration.cycle import approval_decided, rejudge_approved_policy, release_dir

    rid, ev = evaluated
    approvals.decide(rid, approvals.APPROVED, actor="dana", reason="the big ones only", at="t2",
                     merchants=["M0", "M1"])
    approval_decided(rid)
    rejudge_approved_policy(rid)
    judged = Evaluation.load(release_dir(rid) / "approved")
    assert judged.policy_source == "approved"
    pol = judged.slices[(judged.slices["at"] == "policy") & (judged.slices["slice_type"] == "all")].iloc[0]
    j = ev.judging
    thr = np.where(j["merchant_id"].isin(["M0", "M1"]),
                   j["merchant_id"].map(ev.suggestions.set_index("merchant_id")["suggested_threshold"]),
                   ev.candidate_threshold)
    assert pol["candidate_action_rate"] == pytest.approx((j["candidate_score"] >= thr).mean())


def test_a_waived_contract_lets_the_approved_policy_go_on_on_the_record(evaluated):
    from release.state import approvals
    from release.orchestration.cycle import approval_decided, get_release, rejudge_approved_policy, waive_contract

    rid, ev = evaluated
    fr = ev.suggestions[ev.suggestions["merchant_id"].str[1:].astype(int) < 20]
    approvals.decide(rid, approvals.APPROVED, actor="dana", reason="x", at="t2",
                     edits={r.merchant_id: round(r.suggested_threshold * 0.4, 6) for r in fr.itertuples()})
    approval_decided(rid)
    waive_contract(rid, "shift", actor="Risk lead (Ana)", reason="FR campaign, one cycle", at="t3")
    waive_contract(rid, "recall", actor="Risk lead (Ana)", reason="FR campaign, one cycle", at="t3")
    assert rejudge_approved_policy(rid) is True and get_release(rid)["status"] == "rejudged"


def test_the_contracts_kept_at_evaluation_judge_the_release_whatever_the_file_says_later(evaluated, home):
    """The evaluation keeps the contracts file in force with the release; the re-judgement (days later, after people
    decided) and an override judge by that copy, not by a file edited meanwhile: here replaced by a contract so
    tight that the approved policy would fail it. A file that does not validate is refused before anything is
    kept, and the next evaluation keeps the file as it is then."""
    from release.core.config import ConfigError
    from release.orchestration.cycle import (approval_decided, rejudge_approved_policy, release_contracts, release_dir,
                                             waive_contract)
    from release.state import approvals
    from release.state.overrides import OverrideError
    from release.state.releases import get_release

    rid, _ = evaluated
    assert release_contracts(rid, keep=True).names() == ["shift", "recall"]  # what evaluate_release does
    kept = release_dir(rid) / "contracts.yaml"
    assert kept.read_text() == CONTRACTS
    cfile = home / "contracts.yaml"
    edited = """
contracts:
  - {name: tighter, kind: action_rate_shift, slice: country, max_relative_shift: 0.0001, min_absolute_shift: 0,
     min_support: 1}
"""
    cfile.write_text(edited)
    with pytest.raises(OverrideError, match="shift, recall"):
        waive_contract(rid, "tighter", actor="dana", reason="the new rule is not this release's", at="t2")
    approvals.decide(rid, approvals.APPROVED, actor="dana", reason="looks right", at="t2")
    assert approval_decided(rid) and rejudge_approved_policy(rid) is True, get_release(rid)["stop_reason"]
    assert {c for c, _ in _verdicts(rid, "approved")} == {"shift", "recall"}

    cfile.write_text("contracts:\n  - {name: broken, kind: no_such_kind}\n")
    with pytest.raises(ConfigError, match="contracts.yaml"):
        release_contracts(rid, keep=True)
    assert kept.read_text() == CONTRACTS  # nothing half-kept
    cfile.write_text(edited)
    assert release_contracts(rid, keep=True).names() == ["tighter"] and release_contracts(rid).names() == ["tighter"]


def _live_edit_audits():
    from release.state.store import audit_log

    return [a for a in audit_log() if a["action"] == "thresholds_live_edit"]


def _live_and_cut(evaluated):
    """The release's suggestions approved and re-judged (live): (release, model, its live per-merchant thresholds,
    an edit that cuts every FR merchant's threshold to 40%: FR's block rate rises far beyond the shift limit)."""
    from release.orchestration.cycle import approval_decided, rejudge_approved_policy
    from release.state import approvals

    rid, ev = evaluated
    approvals.decide(rid, approvals.APPROVED, actor="dana", reason="looks right", at="t2")
    assert approval_decided(rid) and rejudge_approved_policy(rid) is True
    m = approvals.latest_set(rid)["model_id"]
    fr = ev.suggestions[ev.suggestions["merchant_id"].str[1:].astype(int) < 20]
    cut = {r.merchant_id: round(r.suggested_threshold * 0.4, 6) for r in fr.itertuples()}
    return rid, m, approvals.live_thresholds(m)[1].to_dict(), cut


def test_a_live_edit_is_judged_by_the_releases_contracts_before_it_moves_money(evaluated):
    """An approved set's thresholds are live: an edit of them moves money at once, with no later gate. It is judged
    first, as the approved policy was (the kept contracts, the evaluation's judging rows), on the live policy with
    the edit: an edit that cuts one country's thresholds is refused naming the contract, nothing applied; a small
    edit goes live with its judgement on the record; going ahead despite a contract is on the record with the
    sentences it overrode; the check is of the live thresholds as judged (a change landing meanwhile refuses it);
    and nothing else can change live thresholds unjudged."""
    from release.orchestration.live_edits import LiveEditRefused, edit_thresholds, judge_live_edit
    from release.state import approvals

    rid, m, live_before, cut = _live_and_cut(evaluated)

    with pytest.raises(LiveEditRefused, match=r"\[shift\] FR: the policy as edited live blocks") as refused:
        edit_thresholds(rid, cut, actor="eve", reason="block more in FR", at="t3")
    assert "nothing was applied" in str(refused.value)
    assert approvals.live_thresholds(m)[1].to_dict() == live_before and _live_edit_audits() == []

    one = next(iter(cut))
    out = edit_thresholds(rid, {one: live_before[one] + 0.001}, actor="eve", reason="a touch stricter", at="t4")
    assert out["live"] and out["changed"] == 1
    assert approvals.live_thresholds(m)[1][one] == pytest.approx(live_before[one] + 0.001)
    (a,) = _live_edit_audits()
    j = json.loads(a["after_json"])["_judgement"]
    assert j["judged"] and j["change_id"] == 1 and j["despite"] == []  # judged against the approval's change
    assert {(v["contract"], v["slice"]) for v in j["verdicts"]} >= {("shift", "FR"), ("shift", "DE")}
    assert not any(v["stops"] for v in j["verdicts"])

    with pytest.raises(LiveEditRefused, match="names no contract of release"):
        edit_thresholds(rid, cut, actor="eve", reason="x", at="t5", despite=["shfit"])
    stale = judge_live_edit(rid, m, {one: 0.5})
    out = edit_thresholds(rid, cut, actor="Risk lead (Ana)", reason="FR card-testing attack, one week", at="t6",
                          despite=["shift", "recall"])
    assert out["changed"] == len(cut)
    j = json.loads(_live_edit_audits()[-1]["after_json"])["_judgement"]
    assert j["despite"] == ["recall", "shift"]
    fr_verdict = [v for v in j["verdicts"] if (v["contract"], v["slice"]) == ("shift", "FR")][0]
    assert fr_verdict["stops"] and "the policy as edited live blocks" in fr_verdict["sentence"]

    # judged against change 2; change 3 (the edit above) landed since: refused, nothing applied
    with pytest.raises(approvals.ApprovalError, match=r"changed \(change 3\) after this edit was judged"):
        approvals.edit(rid, {one: 0.5}, actor="eve", reason="x", at="t7", judgement=stale)
    with pytest.raises(approvals.ApprovalError, match="judge it first"):
        approvals.edit(rid, {one: 0.5}, actor="eve", reason="x", at="t7")
    with pytest.raises(approvals.ApprovalError, match="judge it first"):
        approvals.import_csv(rid, f"merchant_id,threshold\n{one},0.5\n", actor="eve", reason="x", at="t7")
    assert approvals.live_thresholds(m)[1][one] == cut[one]


def test_a_live_edit_with_nothing_to_judge_it_on_is_refused_unless_said_unjudged(evaluated):
    from release.orchestration.cycle import approval_decided, rejudge_approved_policy, release_dir
    from release.orchestration.live_edits import LiveEditRefused, edit_thresholds
    from release.state import approvals

    rid, ev = evaluated
    with pytest.raises(approvals.ThresholdInputError, match="are for live edits"):  # a pending set: judged later
        edit_thresholds(rid, {"M1": 0.5}, actor="eve", reason="x", at="t2", despite=["shift"])
    approvals.decide(rid, approvals.APPROVED, actor="dana", reason="looks right", at="t2")
    assert approval_decided(rid) and rejudge_approved_policy(rid) is True
    (release_dir(rid) / "judging.parquet").unlink()  # an evaluation that kept no judging rows
    with pytest.raises(LiveEditRefused, match="its evaluation kept no judging rows.*add --unjudged"):
        edit_thresholds(rid, {"M1": 0.5}, actor="eve", reason="x", at="t3")
    assert _live_edit_audits() == []
    out = edit_thresholds(rid, {"M1": 0.5}, actor="eve", reason="merchant under attack", at="t3", unjudged=True)
    assert out["changed"] == 1
    j = json.loads(_live_edit_audits()[-1]["after_json"])["_judgement"]
    assert j == {"change_id": 1, "judged": False, "why": "its evaluation kept no judging rows", "verdicts": [],
                 "despite": []}


def test_fraudcd_thresholds_edit_and_import_refuse_a_live_edit_a_contract_stops(evaluated, tmp_path):
    """The commands people use: exit 1 naming the contract and nothing applied, for `edit` and for a CSV `import`;
    `--despite` for each stopping contract applies it, saying so."""
    from release.state import approvals
    from tests.release.cli.runner import fraudcd, said

    rid, m, before, cut = _live_and_cut(evaluated)
    args = [a for mid, x in cut.items() for a in ("--merchant", mid, "--threshold", str(x))]
    base = ("thresholds", "edit", "--release", rid, *args, "--as", "eve", "--reason", "block more in FR")
    r = fraudcd(*base)
    assert r.exit_code == 1 and "The release's contracts stop this live edit; nothing was applied." in said(r)
    assert "[shift] FR: the policy as edited live blocks" in said(r)
    csv = tmp_path / "cut.csv"
    csv.write_text("merchant_id,threshold\n" + "".join(f"{k},{v}\n" for k, v in cut.items()))
    r = fraudcd("thresholds", "import", "--release", rid, "--file", str(csv), "--as", "eve", "--reason", "same")
    assert r.exit_code == 1 and "[shift] FR:" in said(r)
    assert approvals.live_thresholds(m)[1].to_dict() == before and _live_edit_audits() == []
    r = fraudcd(*base, "--despite", "shift", "--despite", "recall")
    assert r.exit_code == 0, said(r)
    assert f"{len(cut)} threshold(s) of {rid} changed live" in said(r)
    assert "applied despite recall, shift (on the record)" in said(r)
