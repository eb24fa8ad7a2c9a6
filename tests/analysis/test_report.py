"""analysis.report: the release's HTML report and the index, rendered from a real release row (created by
release.cycle.start_release in a fresh state store), a real Evaluation of a small synthetic window, and
verdicts stored by release.cycle.check_contracts."""
from __future__ import annotations

import html as htmllib
from pathlib import Path

from synthetic_window import INC_DEFAULT, INC_PER_MERCHANT, make_scored

from analysis.evaluation import Evaluation, evaluate
from analysis.report import render_report, write_index, write_report

AS_OF = "2024-03-01"
RID = "rel-2024-03-01"

FAILING = """
contracts:
  - name: big_recall_gain
    kind: fixed_fpr_higher_recall
    min_recall_gain: 0.9     # 90 points: no candidate can do that
    min_support: 10
    gate: true
  - name: country_shift_warning
    kind: action_rate_shift
    slice: country
    max_relative_shift: 0.25
    min_support: 10
    gate: false
"""

PASSING = """
contracts:
  - name: any_recall
    kind: fixed_fpr_higher_recall
    min_recall_gain: -1.0
    require_ci_above_zero: false
    fpr_tolerance: 1.0
    min_support: 10
"""


def _release(home: Path, monkeypatch, contracts_yaml: str):
    from release.cycle import check_contracts, release_dir, start_release

    cfile = home / "contracts.yaml"
    cfile.write_text(contracts_yaml)
    monkeypatch.setenv("FRAUDCD_CONTRACTS", str(cfile))
    rid = start_release(AS_OF, "a" * 64)
    scored = make_scored(seed=1)
    scored["merchant_id"] = scored["merchant_id"].replace("M4", "M4<script>alert(1)</script>")
    ev = evaluate(scored, INC_PER_MERCHANT, INC_DEFAULT, n_boot=100)
    folder = release_dir(rid)
    ev.save(folder)
    passed = check_contracts(rid)
    return rid, folder, passed


def test_stopped_release_report_says_stop_and_why(home, monkeypatch):
    from release.cycle import get_release, release_verdicts
    from release.settings import paths

    rid, folder, passed = _release(home, monkeypatch, FAILING)
    assert rid == RID and passed is False
    path = write_report(rid, folder, paths().reports)
    assert path == paths().reports / f"{rid}.html"
    raw = path.read_text()
    text = htmllib.unescape(raw)

    assert 'class="banner stop"' in raw
    rel = get_release(rid)
    assert rel["report_path"] == str(path)
    assert f"STOP: {rel['stop_reason']}" in text
    failed = [v for v in release_verdicts(rid) if v["verdict"] == "fail" and v["gate"]]
    assert [v["contract"] for v in failed] == ["big_recall_gain"]
    assert failed[0]["sentence"] in rel["stop_reason"]
    assert '<ul id="why">' in raw and f"big_recall_gain</b>: {failed[0]['sentence']}" in text
    # every stored verdict appears, the non-gating one as "warns"
    for v in release_verdicts(rid):
        assert v["sentence"] in text
    assert "warns" in text and "gates" in text

    # the numbers come from the saved evaluation
    ev = Evaluation.load(folder)
    assert f"{100 * ev.overall['incumbent_recall']:.2f}%" in text
    assert f"{100 * ev.overall['candidate_recall']:.2f}%" in text
    assert f"{ev.candidate_threshold:.4f}" in text
    assert f"({100 * ev.operating_fpr:.2f}%)" in text
    assert f"{100 * ev.recall_diff['diff']:+.1f} pts" in text
    for metric, label in (("roc_auc", "ROC-AUC"), ("pr_auc", "PR-AUC")):
        g = ev.ranking_diff[metric]
        assert f"{label} gain (paired bootstrap by card, 95% CI)</td><td colspan=\"2\">{g['diff']:+.4f} " \
               f"({g['lo']:+.4f} .. {g['hi']:+.4f})" in text
    # ranking by slice: every slice with a figure, merchants aside, with the gain and its interval
    m = ev.metrics
    ranked = m[(m.metric == "pr_auc") & (m.estimator == "ipw") & (m.model == "candidate-incumbent")
               & (m.slice_type != "merchant") & m.estimate.notna()]
    assert len(ranked) >= 2 and '<table id="ranking">' in raw
    for r in ranked.itertuples():
        assert f"{r.slice_type}: {r.slice}</td><td>{r.frauds:,.0f}</td>" in text
        assert f'{r.estimate:+.3f} <span class="ci">[{r.lo:+.3f}, {r.hi:+.3f}]</span>' in raw

    # untrusted text (a merchant id) is escaped, never injected
    assert "<script>" not in raw
    assert "M4&lt;script&gt;alert(1)&lt;/script&gt;" in raw
    assert "M4<script>alert(1)</script>" in text

    # the audit trail shows the stop with its reason
    assert "release_stopped" in text

    index = (paths().reports / "index.html").read_text()
    assert f'<a href="{rid}.html">{rid}</a>' in index
    assert "stopped" in index


def test_release_in_progress_report_has_no_stop_section(home, monkeypatch):
    from release.settings import paths

    rid, folder, passed = _release(home, monkeypatch, PASSING)
    assert passed is True
    raw = write_report(rid, folder, paths().reports).read_text()
    assert 'class="banner progress"' in raw
    assert "IN PROGRESS: contracts passed" in raw
    assert 'id="why"' not in raw


def test_report_of_a_release_not_yet_evaluated(home):
    from release.cycle import release_dir, start_release

    rid = start_release(AS_OF, "b" * 64)
    raw = render_report(rid, release_dir(rid))
    assert "IN PROGRESS: started" in raw
    assert "No verdicts yet." in raw
    assert 'id="overall"' not in raw and 'id="thresholds"' not in raw


def test_index_without_releases(home):
    from release.settings import paths

    path = write_index(paths().reports)
    assert "No releases yet." in path.read_text()


def test_report_shows_threshold_evidence_decisions_and_automation_readiness(home, monkeypatch):
    from release import approvals
    from release.registry import register_model

    rid, folder, _ = _release(home, monkeypatch, PASSING)
    ev = Evaluation.load(folder)
    m = register_model("model\n", workflow={"name": "wf"}, features=["amount"], snapshot_hash="a" * 64,
                       code_version="t", metrics={}, at="t0", actor="trainer").id
    approvals.create_set(m, rid, ev.suggestions, ev.candidate_threshold, at="t1", actor="fraud-cd pipeline",
                         reason="suggested")
    top = ev.suggestions.sort_values(["support", "merchant_id"], ascending=[False, True])["merchant_id"].tolist()
    approvals.edit(rid, {top[0]: 0.5}, actor="dana", reason="too loose", at="t2")
    approvals.decide(rid, "approved", actor="dana", reason="one left out", at="t3", merchants=top[:-1])
    raw = render_report(rid, folder)
    text = htmllib.unescape(raw)
    assert 'id="thresholds"' in raw and 'id="readiness"' in raw
    assert f"{len(top) - 1} approved, 1 not approved (global threshold), 1 edited by a person." in text
    assert "0.5000</b> (edited)" in text
    row = ev.suggestions.set_index("merchant_id").loc[top[0]]
    assert f"{100 * row['recall_before']:.1f}% → {100 * row['recall_after']:.1f}%" in text
    # readiness: every segment of this release, reviewed once; auto-approval off by default
    segs = ev.suggestions["segment"].value_counts()
    assert 'id="auto-approve">off</b>' in raw
    for seg in segs.index:
        assert f'<td class="l">{seg}</td><td>1</td><td>{segs[seg]}</td>' in raw
