"""analysis.report: the release's HTML report and the index, rendered from a real release row (created by
release.orchestration.cycle.start_release in a fresh state store), a real Evaluation of a small synthetic window (ten
days: the first five fit, the last five judge), and verdicts stored by release.orchestration.cycle.check_contracts and
release.orchestration.cycle.rejudge_approved_policy."""
from __future__ import annotations

import datetime as dt
import html as htmllib
import json
import os
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from tests.analysis.synthetic_window import INC_DEFAULT, INC_PER_MERCHANT, make_scored

from analysis.evaluation import Evaluation, evaluate
from analysis.report import render_report, write_index, write_report

AS_OF = "2024-03-01"
RID = "rel-2024-03-01"
SCRIPT_MERCHANT = "M4<script>alert(1)</script>"

# stopped by a failure: a recall gain no candidate can show, judged even on a thin window (so it fails
# rather than being unjudged); the country shift only warns
FAILING = """
contracts:
  - name: big_recall_gain
    kind: fixed_fpr_higher_recall
    min_recall_gain: 0.9     # 90 points: no candidate can do that
    min_support: 10
    min_explored_frauds: 0
    min_ess: 0
    fpr_tolerance: 1.0
    gate: true
  - name: country_shift_warning
    kind: action_rate_shift
    slice: country
    max_relative_shift: 0.25
    min_support: 10
    gate: false
"""

# stopped by "insufficient data" alone: the window has 3 explored frauds with an ESS of 7, below the
# counterfactual minimum (ESS 30), so the recall gain cannot be judged and the gate stops by default;
# the country shift (limit 50 points) is judged, the merchant stability does not gate, and the country
# recall regression, too thin to judge, is told to warn
UNJUDGED = """
contracts:
  - name: recall_gain_shown
    kind: fixed_fpr_higher_recall
    min_support: 10
    fpr_tolerance: 1.0
    gate: true
  - name: country_action_rate_shift
    kind: action_rate_shift
    slice: country
    max_relative_shift: 1.0
    min_absolute_shift: 0.5
    min_support: 20          # countries where the incumbent blocked fewer judging rows are pooled
    on_insufficient: warn
    gate: true
  - name: merchant_block_rate_stability
    kind: merchant_block_rate_stability
    max_change: 0.5
    max_share: 1.0
    min_merchant_support: 50  # merchants with fewer judging transactions are pooled
    min_support: 2
    gate: false
  - name: country_recall_regression
    kind: slice_recall_regression
    slice: country
    max_drop: 0.05
    min_support: 20
    on_insufficient: warn    # a gate told to warn when it cannot judge
    gate: true
"""

# passes offline; the country shift (limit 50 points) stops an approved edit that blocks all of France
PASSING = """
contracts:
  - name: any_recall
    kind: fixed_fpr_higher_recall
    min_recall_gain: -1.0
    require_ci_above_zero: false
    fpr_tolerance: 1.0
    min_support: 10
    min_explored_frauds: 0
    min_ess: 0
  - name: country_action_rate_shift
    kind: action_rate_shift
    slice: country
    max_relative_shift: 1.0
    min_absolute_shift: 0.5
    min_support: 20
    on_insufficient: warn
    gate: true
"""


def _window() -> pd.DataFrame:
    """The shared synthetic window over ten days, with M4 split in two thin merchants in thin countries
    (LU, PL), and M4 renamed to carry a script tag."""
    scored = make_scored(seed=1)
    scored["day"] = pd.Timestamp("2023-12-01") + pd.to_timedelta(np.arange(len(scored)) % 10, "D")
    m4 = scored["merchant_id"] == "M4"
    scored.loc[m4 & (scored["card_id"] % 2 == 0), "merchant_id"] = "M5"
    scored.loc[scored["merchant_id"] == "M4", "merchant_country"] = "LU"
    scored.loc[scored["merchant_id"] == "M5", "merchant_country"] = "PL"
    scored["merchant_id"] = scored["merchant_id"].replace("M4", SCRIPT_MERCHANT)
    return scored


def _release(home: Path, monkeypatch, contracts_yaml: str, completeness: dict | None = None):
    from release.orchestration.cycle import check_contracts, release_dir, start_release

    cfile = home / "contracts.yaml"
    cfile.write_text(contracts_yaml)
    monkeypatch.setenv("FRAUDCD_CONTRACTS", str(cfile))
    rid = start_release(AS_OF, "a" * 64)
    ev = evaluate(_window(), INC_PER_MERCHANT, INC_DEFAULT, n_boot=100)
    if completeness is not None:  # as release.orchestration.cycle.evaluate_release records it
        ev.windows["label_completeness"] = completeness
    folder = release_dir(rid)
    ev.save(folder)
    from release.orchestration.cycle import _update_release

    for st in ("trained", "evaluated"):  # the legal path to the contracts (this test trains nothing)
        _update_release(rid, status=st)
    passed = check_contracts(rid)
    return rid, folder, passed


def _text(raw: str) -> str:
    return htmllib.unescape(raw)


def _plain(raw: str) -> str:
    """What a reader sees: tags dropped, entities unescaped."""
    return htmllib.unescape(re.sub(r"\s+", " ", re.sub(r"<[^>]+>", "", raw)))


def _between(raw: str, start: str, end: str) -> str:
    i = raw.index(start)
    return raw[i:raw.index(end, i)]


def _rows(table: str) -> list[list[str]]:
    """A table's body rows as what a reader sees in each cell."""
    return [[_plain(c).strip() for c in re.findall(r"<td[^>]*>(.*?)</td>", tr, flags=re.S)]
            for tr in re.findall(r"<tr[^>]*>(.*?)</tr>", table, flags=re.S) if "<td" in tr]


def _first_screen(raw: str) -> str:
    return _between(raw, '<section id="first-screen">', "</section>")


def test_stopped_release_report_says_stop_and_why(home, monkeypatch):
    from release.orchestration.cycle import get_release
    from release.state.releases import release_verdicts
    from release.core.settings import paths

    rid, folder, passed = _release(home, monkeypatch, FAILING)
    assert rid == RID and passed is False
    path = write_report(rid, folder, paths().reports)
    assert path == paths().reports / f"{rid}.html"
    raw = path.read_text()
    text = _text(raw)
    first = _plain(_first_screen(raw))

    assert 'class="banner stop"' in raw
    rel = get_release(rid)
    assert rel["report_path"] == str(path)
    stored = release_verdicts(rid)
    failed = [v for v in stored if v["verdict"] == "fail" and v["gate"]]
    assert [(v["contract"], v["slice"]) for v in failed] == [("big_recall_gain", "operating point")]
    assert failed[0]["sentence"] in rel["stop_reason"]
    # the first screen: stop, by one failed gate, and the failed verdict's sentence
    assert ("STOP: 1 gating verdict of the suggested policy stops this release: 1 failed." in first)
    assert '<ul id="why"' in raw
    why = _plain(_between(raw, '<ul id="why"', "</ul>"))
    assert (f"big_recall_gain · operating point · suggested policy (offline judgement): fail, stops the release. "
            f"{failed[0]['sentence']}") in why
    assert "country_shift_warning" not in why  # it warns: not a gate
    warns = _plain(_between(raw, '<ul id="warnings"', "</ul>"))
    shift = [v for v in stored if v["contract"] == "country_shift_warning" and v["verdict"] != "pass"]
    assert shift and all(f"warns: not a gate. {v['sentence']}" in warns for v in shift)
    # the stop as recorded is kept, folded
    assert f"The stop as recorded</summary>{rel['stop_reason']}" in text
    # every stored verdict appears, the non-gating one as "warns"
    for v in stored:
        assert v["sentence"] in text
    assert "warns" in text and "gates" in text

    # the figures come from the saved evaluation
    ev = Evaluation.load(folder)
    assert f"{ev.candidate_threshold:.4f}" in first
    assert f"({100 * ev.operating_fpr:.2f}%)" in first
    for metric, label in (("roc_auc", "ROC-AUC"), ("pr_auc", "PR-AUC")):
        g = ev.ranking_diff[metric]
        assert f"{label} gain (paired bootstrap by card, 95% CI)</td><td colspan=\"2\">{g['diff']:+.4f} " \
               f"({g['lo']:+.4f} .. {g['hi']:+.4f})" in text
    # ranking by slice: every slice with a figure, merchants and the contracts' pooled types aside
    m = ev.metrics
    ranked = m[(m.metric == "pr_auc") & (m.estimator == "ipw") & (m.model == "candidate-incumbent")
               & (m.slice_type != "merchant") & ~m.slice_type.str.contains("|", regex=False) & m.estimate.notna()]
    assert len(ranked) >= 2 and '<table id="ranking">' in raw
    for r in ranked.itertuples():
        assert f"{r.slice_type}: {r.slice}</td><td>{r.frauds:,.0f}</td>" in text
        assert f'{r.estimate:+.3f} <span class="ci">[{r.lo:+.3f}, {r.hi:+.3f}]</span>' in raw

    # untrusted text (a merchant id) is escaped, never injected: in the table's rows as HTML entities, in the
    # merchant data the page's script reads as JSON escapes (it cannot close the <script> element)
    assert SCRIPT_MERCHANT not in raw and "alert(1)</script>" not in raw
    assert raw.count("<script") == 2  # the report's own: the merchant data and the table's script
    assert "M4&lt;script&gt;alert(1)&lt;/script&gt;" in raw
    assert "M4\\u003cscript\\u003ealert(1)\\u003c/script\\u003e" in raw
    assert SCRIPT_MERCHANT in text

    # the audit trail shows the stop with its reason
    assert "release_stopped" in text

    index = (paths().reports / "index.html").read_text()
    assert f'<a href="{rid}.html">{rid}</a>' in index
    assert "stopped" in index


def test_fitting_and_judging_rows_and_label_completeness_are_near_the_top(home, monkeypatch):
    from release.orchestration.cycle import _label_completeness
    from release.data.label_completeness import DelayDistribution, label_completeness

    # one window not estimated (the real path: this home has no event history), one estimated from
    # 200 disputes with delays spread evenly over 0..100 days
    windows = {"method": "time", "fitting_start": "2023-12-01", "judging_start": "2023-12-06",
               "judging_end": "2023-12-11"}
    lc = _label_completeness(windows, dt.date(2024, 3, 1))
    assert lc["fitting rows"]["completeness"] is None
    dist = DelayDistribution(as_of=pd.Timestamp(AS_OF, tz="UTC"), horizon_days=120,
                             delays_days=np.linspace(0, 100, 200), disputes_used=200, cohort_start=None,
                             cohort_end=None)
    lc["judging rows"] = label_completeness(dist, dt.date(2023, 12, 6), dt.date(2023, 12, 11),
                                            AS_OF).to_dict("judging rows")
    assert 0 < lc["judging rows"]["completeness"] < 1
    rid, folder, _ = _release(home, monkeypatch, FAILING, completeness=lc)
    raw = render_report(rid, folder)
    first = _plain(_first_screen(raw))
    ev = Evaluation.load(folder)
    w = ev.windows

    # the split: ten days, the first five fit, the last five judge
    assert (w["method"], w["fitting"], w["judging"]) == ("time", "2023-12-01..2023-12-05", "2023-12-06..2023-12-10")
    assert w["fitting_rows"] + w["judging_rows"] == 900
    assert w["sentence"] in first
    assert f"The candidate's operating threshold, {ev.candidate_threshold:.4f}, was fitted on the fitting rows" in first
    table = _text(_between(raw, '<table id="windows"', "</table>"))
    assert (f"fitting rows</td><td class=\"l\">2023-12-01..2023-12-05</td><td>{w['fitting_rows']:,}</td>"
            f"<td>{w['fitting_frauds']:,}</td>") in table
    assert (f"judging rows</td><td class=\"l\">2023-12-06..2023-12-10</td><td>{w['judging_rows']:,}</td>"
            f"<td>{w['judging_frauds']:,}</td>") in table
    assert f'id="operating-threshold">{ev.candidate_threshold:.4f}</b>' in table
    # where the direct method's outcome model was fitted, and the support it rests on
    om = _plain(_between(raw, '<p id="outcome-model-support"', "</p>"))
    assert w["outcome_model"]["sentence"] in om and f"{w['outcome_model']['explored_frauds']} explored frauds" in om
    # each window's label completeness sentence, the unestimated one saying why
    listed = _text(_between(raw, '<ul id="label-completeness"', "</ul>"))
    assert lc["fitting rows"]["sentence"] in listed and "not estimated: no transactions at least 120 days" in listed
    assert lc["judging rows"]["sentence"] in listed
    assert f"{100 * lc['judging rows']['completeness']:.0f}" in lc["judging rows"]["sentence"]
    # before the evidence further down
    assert raw.index('id="windows"') < raw.index('id="counterfactual"') < raw.index('id="verdicts"')


def test_a_stopping_insufficient_verdict_reads_as_a_stop_on_the_first_screen(home, monkeypatch):
    from contracts.base import stops
    from release.orchestration.cycle import get_release
    from release.state.releases import release_verdicts

    rid, folder, passed = _release(home, monkeypatch, UNJUDGED)
    assert passed is False and get_release(rid)["status"] == "stopped"
    stored = release_verdicts(rid)
    stopping = [(v["contract"], v["slice"], v["verdict"]) for v in stored if stops(v)]
    assert stopping == [("recall_gain_shown", "operating point", "insufficient data")]
    # the policy's undecided FPR warns by default (policy_on_insufficient: warn)
    assert [v["on_insufficient"] for v in stored if v["contract"] == "recall_gain_shown" and v["slice"] == "policy"
            and v["verdict"] == "insufficient data"] in ([], ["warn"])
    assert not any(v["verdict"] == "fail" and v["gate"] for v in stored)
    raw = render_report(rid, folder)
    first_raw = _first_screen(raw)
    first = _plain(first_raw)

    assert 'class="banner stop"' in first_raw and "SHIP" not in first and "IN PROGRESS" not in first
    assert ("STOP: 1 gating verdict of the suggested policy stops this release: none failed, 1 could not be "
            "judged (insufficient data, and the contract stops when it cannot judge).") in first
    why = _plain(_between(raw, '<ul id="why"', "</ul>"))
    assert _between(raw, "<ul id=\"why\"", "</ul>").count("<li class=\"stops\">") == 1
    for v in stored:
        if stops(v):
            assert (f"recall_gain_shown · {v['slice']} · suggested policy (offline judgement): insufficient data, "
                    "stops the release: a gate that could not be judged (on_insufficient: stop). "
                    f"{v['sentence']}") in why
    # the gate told to warn when it cannot judge warns, below the stops, never among them
    warned = [v for v in stored if v["contract"] == "country_recall_regression" and v["verdict"] == "insufficient data"]
    assert warned
    warns = _plain(_between(raw, '<ul id="warnings"', "</ul>"))
    assert all(v["sentence"] in warns and v["sentence"] not in why for v in warned)
    # the judgement counts: 2 stop, none pass silently
    offline = [v for v in stored if v["stage"] == "offline"]
    row = _between(raw, '<td class="l">suggested policy (offline judgement)</td>', "</tr>")
    assert (f"<td>{len(offline)}</td><td>{sum(v['verdict'] == 'pass' for v in offline)}</td><td>0</td>"
            f"<td>{sum(v['verdict'] == 'insufficient data' for v in offline)}</td><td class=\"fail\">1</td>") in row
    # in the full table too, the unjudged gate reads as a stop
    table = _between(raw, '<table id="verdicts-offline"', "</table>")
    assert table.count('<tr class="stops">') == 1
    assert "stops the release: a gate that could not be judged" in table


def test_counterfactual_evidence_side_by_side_with_plain_labelled_biased(home, monkeypatch):
    rid, folder, _ = _release(home, monkeypatch, FAILING)
    raw = render_report(rid, folder)
    ev = Evaluation.load(folder)
    table = _between(raw, '<table id="counterfactual"', "</table>")
    header = table[:table.index("</tr>")]
    # plain, IPW, DM, DR in that order; plain labelled as biased by censoring, DM as what the gates judge
    assert re.findall(r"<th class=\"(?:biased)?\">(\w+)", header) == ["plain", "IPW", "DM", "DR"]
    assert '<th class="biased">plain<br><span class="biased-label">biased by censoring</span></th>' in header
    assert "DM<br><span class=\"ci\">what the gates judge</span>" in header
    m = ev.metrics
    a = m[m.slice_type == "all"]
    # each estimator's all-traffic recall, FPR and precision of the candidate, with its interval, in its column
    for metric in ("recall", "fpr", "precision"):
        label = {"recall": ">recall<", "fpr": ">false-positive rate<", "precision": ">precision<"}[metric]
        row = _between(table, label, "</tr>")
        cand = _between(table[table.index(row):], "candidate at its operating threshold", "</tr>")
        tds = re.findall(r"<td class=\"(?:biased)?\">(.*?)</td>", cand)
        assert len(tds) == 4
        for est, td in zip(("plain", "ipw", "dm", "dr"), tds):
            r = a[(a.metric == metric) & (a.estimator == est) & (a.model == "candidate")].iloc[0]
            assert f"{100 * r.estimate:.2f}%" in td and f"[{100 * r.lo:.2f}%, {100 * r.hi:.2f}%]" in td, (metric, est)
    # a difference reads in points with its interval (the DM recall gain the gates judge)
    d = a[(a.metric == "recall") & (a.estimator == "dm") & (a.model == "candidate-incumbent")].iloc[0]
    assert (f"{100 * d.estimate:+.2f} pts <span class=\"ci\">[{100 * d.lo:+.2f} pts, {100 * d.hi:+.2f} pts]"
            in table)
    # the support, counted from the judging rows themselves
    j = ev.judging
    labelled = j["label"].notna()
    explored = labelled & (j["weight"] > 1)
    support = _between(raw, '<table id="cf-support"', "</table>")
    assert (f"<td>{len(j):,}</td><td>{labelled.sum():,}</td><td>{int((j['label'] == 1).sum()):,}</td>"
            f"<td>{int((~labelled).sum()):,}</td><td>{int(explored.sum()):,}</td>") in support
    assert f">{int((explored & (j['label'] == 1)).sum()):,}</td>" in support
    w = j.loc[j["label"] == 1, "weight"]
    ess = w.sum() ** 2 / (w ** 2).sum()  # Kish
    assert ess < 30 and f'<td class="insufficient">{ess:,.0f}</td>' in support  # below the minimum of 30
    assert 'id="cf-thin"' in raw
    # the slice table carries each slice's support too: France's censored rows and explored frauds
    fr = j["merchant_country"] == "FR"
    row = _between(raw, '<td class="l">country: FR</td>', "</tr>")
    assert (f"<td>{int((fr & ~labelled).sum())}</td>"
            f'<td class="insufficient">{int((fr & explored & (j["label"] == 1)).sum())}</td>') in row


def test_pooled_slices_show_their_members_escaped(home, monkeypatch):
    rid, folder, _ = _release(home, monkeypatch, UNJUDGED)
    raw = render_report(rid, folder)
    j = Evaluation.load(folder).judging
    # countries where the incumbent blocked fewer than 20 judging rows: pooled as "other countries"
    blocks = (j["incumbent_score"] >= j["incumbent_threshold"]).groupby(j["merchant_country"]).sum()
    thin = sorted(blocks[blocks < 20].index)
    assert thin == ["DE", "LU", "PL"]
    country = _between(raw, '<table id="pooled-country-actions--20"', "</table>")
    assert '<td class="l">other countries</td><td class="l members">3: DE, LU, PL</td>' in country
    assert '<td class="l">FR</td><td class="l members"></td>' in country
    # merchants with fewer than 50 judging transactions: the one named with a script tag, escaped
    n = j["merchant_id"].value_counts()
    assert sorted(n[n < 50].index) == [SCRIPT_MERCHANT, "M5"]
    merchant = _between(raw, '<table id="pooled-merchant-transactions--50"', "</table>")
    assert ('<td class="l">other merchants</td><td class="l members">'
            '2: M4&lt;script&gt;alert(1)&lt;/script&gt;, M5</td>') in merchant
    assert SCRIPT_MERCHANT not in raw
    # pooled slice types stay out of the ranking table (they repeat the slices it already has)
    assert "|" not in _between(raw, '<table id="ranking"', "</table>")


def test_approved_policy_rejudgement_is_shown_beside_the_offline_judgement(home, monkeypatch):
    from release.state import approvals
    from release.orchestration.cycle import (_update_release, approval_decided, get_release, rejudge_approved_policy,
                                             request_threshold_approval)
    from release.state.releases import release_verdicts
    from release.state.registry import register_model

    rid, folder, passed = _release(home, monkeypatch, PASSING)
    assert passed is True
    m = register_model("model\n", workflow={"name": "wf"}, features=["amount"], snapshot_hash="a" * 64,
                       code_version="t", metrics={}, at="t0", actor="trainer").id
    _update_release(rid, candidate_model_id=m)
    request_threshold_approval(rid)
    raw = render_report(rid, folder)
    assert 'id="rejudgement"' not in raw
    assert "Not re-judged yet: no thresholds are approved." in _text(_between(raw, '<p id="not-rejudged"', "</p>"))
    assert "Not re-judged yet" in _plain(_first_screen(raw))

    # a person approves, cutting France's two merchants' thresholds to 0: every French row blocked
    approvals.decide(rid, "approved", actor="dana", reason="block France", at="t2",
                     edits={"M1": 0.0, "M3": 0.0})
    assert approval_decided(rid)
    raw = render_report(rid, folder)
    assert "IN PROGRESS: approved. Thresholds approved; the approved policy has not been re-judged yet." in raw
    assert "Not re-judged yet: the thresholds are approved" in raw

    assert rejudge_approved_policy(rid) is False
    assert (folder / "approved" / "evaluation.json").exists()
    rel = get_release(rid)
    assert rel["stop_reason"].startswith("Stopped by re-judging the approved policy")
    approved = [v for v in release_verdicts(rid) if v["stage"] == "approved"]
    fr = [v for v in approved if v["contract"] == "country_action_rate_shift" and v["slice"] == "FR"]
    assert [v["verdict"] for v in fr] == ["fail"]
    raw = render_report(rid, folder)
    first = _plain(_first_screen(raw))
    assert "STOP: 1 gating verdict of the approved policy stops this release: 1 failed." in first
    why = _plain(_between(raw, '<ul id="why"', "</ul>"))
    assert (f"country_action_rate_shift · FR · approved policy (re-judgement): fail, stops the release. "
            f"{fr[0]['sentence']}") in why
    # both judgements, each with its own table
    offline = _text(_between(raw, '<table id="verdicts-offline"', "</table>"))
    rejudged = _text(_between(raw, '<table id="verdicts-approved"', "</table>"))
    for v in release_verdicts(rid):
        assert v["sentence"] in (offline if v["stage"] == "offline" else rejudged)
    # the re-judged figures: the approved policy's action rate, recomputed from the judging rows
    ev = Evaluation.load(folder)
    j = ev.judging
    per = ev.suggestions.set_index("merchant_id")["suggested_threshold"].to_dict() | {"M1": 0.0, "M3": 0.0}
    thr = j["merchant_id"].map(per).fillna(ev.candidate_threshold)
    rate = float((j["candidate_score"] >= thr).mean())
    assert rate > 300 / 450  # France is two thirds of the judging rows
    section = _text(_between(raw, '<div id="rejudgement">', "</div>"))
    figures = _between(section, "action rate", "</tr>")
    assert f"{100 * rate:.2f}%" in figures
    assert f"global threshold <b>{ev.candidate_threshold:.4f}</b>" in section


def test_a_waived_failure_is_shown_as_waived_not_as_a_stop(home, monkeypatch):
    from release.orchestration.cycle import check_contracts, get_release, waive_contract

    rid, folder, passed = _release(home, monkeypatch, FAILING)
    assert passed is False
    waive_contract(rid, "big_recall_gain", actor="Risk lead (Ana)", reason="known label outage",
                   at="2024-03-02T09:00:00+00:00")
    assert check_contracts(rid) is True and get_release(rid)["status"] == "contracts_passed"
    raw = render_report(rid, folder)
    assert 'class="banner progress"' in raw and 'id="why"' not in raw and 'id="record-mismatch"' not in raw
    assert "Risk lead (Ana)" in _plain(_between(raw, '<ul id="overrides"', "</ul>"))
    row = [_plain(c) for c in re.findall(r"<td[^>]*>(.*?)</td>", _between(raw, '<tr class="waived">', "</tr>"),
                                         flags=re.S)]
    assert row[:6] == ["big_recall_gain", "operating point", "fail (waived)", "gates", "stop",
                       "would stop the release; waived for it by a named person"]


def test_release_in_progress_report_has_no_stop_section(home, monkeypatch):
    from release.core.settings import paths

    rid, folder, passed = _release(home, monkeypatch, PASSING)
    assert passed is True
    raw = write_report(rid, folder, paths().reports).read_text()
    assert 'class="banner progress"' in raw
    assert "IN PROGRESS: contracts passed" in raw
    assert 'id="why"' not in raw and 'id="record-mismatch"' not in raw


def test_a_legacy_verdict_without_on_insufficient_reads_as_a_stop(home, monkeypatch):
    """A verdict stored before on_insufficient existed (NULL) is read as stopping (contracts.base.stops);
    on a release whose status says otherwise, the report says so instead of showing a silent pass."""
    from release.state.store import transaction, verdicts

    rid, folder, passed = _release(home, monkeypatch, PASSING)
    assert passed is True
    with transaction() as conn:
        conn.execute(verdicts.insert().values(
            release_id=rid, stage="offline", contract="old_gate", kind="fixed_fpr_higher_recall", gate=True,
            slice_type="all", slice="operating point", verdict="insufficient data", support=12,
            sentence="Too few frauds to judge the old gate.", on_insufficient=None))
    raw = render_report(rid, folder)
    first = _plain(_first_screen(raw))
    assert 'id="record-mismatch"' in raw
    assert ("old_gate · operating point · suggested policy (offline judgement): insufficient data, "
            "stops the release") in first
    assert "Too few frauds to judge the old gate." in first


def test_report_reads_an_evaluation_saved_before_the_policy_was_named(home, monkeypatch):
    """An evaluation saved before the rebuild: slices at "suggested" (not "policy"), metrics with plain and
    IPW only, no counterfactual support, no windows. The report still shows it, and says the split is
    unrecorded."""
    import json

    rid, folder, _ = _release(home, monkeypatch, PASSING)
    s = pd.read_parquet(folder / "slices.parquet")
    s["at"] = s["at"].replace({"policy": "suggested"})
    s.to_parquet(folder / "slices.parquet")
    m = pd.read_parquet(folder / "metrics.parquet")
    m = m[m["estimator"].isin(["all", "plain", "ipw"]) & ~m["slice_type"].str.contains("|", regex=False)]
    m = m.drop(columns=["censored", "explored", "explored_frauds", "ess_frauds", "ess_legit", "members"])
    m["model"] = m["model"].replace({"policy": "suggested", "policy-incumbent": "suggested-incumbent"})
    m.to_parquet(folder / "metrics.parquet")
    meta = json.loads((folder / "evaluation.json").read_text())
    del meta["windows"]
    (folder / "evaluation.json").write_text(json.dumps(meta))
    raw = render_report(rid, folder)
    assert '<table id="slices">' in raw and "country: FR" in raw
    header = _between(raw, '<table id="counterfactual"', "</tr>")
    assert re.findall(r"<th class=\"(?:biased)?\">(\w+)", header) == ["plain", "IPW"]
    policy = _between(raw, "policy that would go live</td>", "</tr>")
    assert "n/a" not in policy  # the old "suggested" rows read as the policy
    assert 'id="judged-on"' not in raw
    assert "no record of which rows fitted" in _plain(_between(raw, '<p class="note stopnote" id="windows"', "</p>"))


def test_report_of_a_release_not_yet_evaluated(home):
    from release.orchestration.cycle import release_dir, start_release

    rid = start_release(AS_OF, "b" * 64)
    raw = render_report(rid, release_dir(rid))
    assert "IN PROGRESS: started" in raw
    assert "No verdicts yet." in raw
    assert 'id="overall"' not in raw and 'id="thresholds"' not in raw and 'id="counterfactual"' not in raw


def test_index_without_releases(home):
    from release.core.settings import paths

    path = write_index(paths().reports)
    assert "No releases yet." in path.read_text()


def approved_release(home, monkeypatch, edited: int = 0) -> tuple[str, Path, Evaluation, list[str]]:
    """A release whose thresholds dana approved with the ``edited``-th largest merchant's threshold edited to
    0.5 and the smallest left out: (release id, folder, its evaluation, merchants largest first)."""
    from release.state import approvals
    from release.state.registry import register_model

    rid, folder, _ = _release(home, monkeypatch, PASSING)
    ev = Evaluation.load(folder)
    m = register_model("model\n", workflow={"name": "wf"}, features=["amount"], snapshot_hash="a" * 64,
                       code_version="t", metrics={}, at="t0", actor="trainer").id
    approvals.create_set(m, rid, ev.suggestions, ev.candidate_threshold, at="t1", actor="fraud-cd pipeline",
                         reason="suggested")
    top = ev.suggestions.sort_values(["support", "merchant_id"], ascending=[False, True])["merchant_id"].tolist()
    approvals.edit(rid, {top[edited]: 0.5}, actor="dana", reason="too loose", at="t2")
    approvals.decide(rid, "approved", actor="dana", reason="one left out", at="t3", merchants=top[:-1])
    return rid, folder, ev, top


def test_report_shows_threshold_evidence_decisions_and_automation_readiness(home, monkeypatch):
    rid, folder, ev, top = approved_release(home, monkeypatch)
    raw = render_report(rid, folder)
    text = _text(raw)
    assert 'id="merchants"' in raw and 'id="readiness"' in raw
    assert f"{len(top) - 1} approved, 1 not approved (global threshold), 1 edited by a person." in text
    # every merchant is in the page's data, largest first, with what became of it and who edited it
    data = json.loads(_between(raw, '<script type="application/json" id="merchant-data">', "</script>")
                      .split(">", 1)[1])
    keys = [c["key"] for c in data["columns"]]
    rows = [dict(zip(keys, r)) for r in data["rows"]]
    for c in data["columns"]:
        if "values" in c:
            for r in rows:
                r[c["key"]] = None if r[c["key"]] is None else c["values"][r[c["key"]]]
        if "templates" in c:  # a reason: its sentence's template once, each merchant's numbers in its row
            for r in rows:
                parts, nums = c["templates"][r[c["key"]][0]].split("\u0001"), r[c["key"]][1:]
                r[c["key"]] = parts[0] + "".join(n + p for n, p in zip(nums, parts[1:]))
    reasons = ev.suggestions.set_index("merchant_id")["reason"]
    assert [r["reason"] for r in rows] == [reasons[m] for m in top]  # every reason, back exactly
    assert [r["merchant_id"] for r in rows] == top
    first, last = rows[0], rows[-1]
    assert first["proposed"] == 0.5 and first["edited_by"] == "dana" and first["outcome"].startswith("approved")
    assert last["outcome"].startswith("not approved") and last["edited_by"] == ""
    row = ev.suggestions.set_index("merchant_id").loc[top[0]]
    for key, col in (("recall_before", "recall_before"), ("recall_after", "recall_after"),
                     ("fpr_after_hi", "fpr_after_hi"), ("block_after", "expected_block_rate")):
        assert first[key] == pytest.approx(row[col], abs=1e-5)  # rates sent to 5 decimals (shown to 4)
    assert first["suggested"] == pytest.approx(row["suggested_threshold"], abs=1e-4)  # to 4 decimals, as shown
    # the same figures in the table's first row, written for a reader without the script
    body = _between(raw, '<table id="merchants">', "</table>")
    first_row = _plain(_between(body, "<tbody><tr>", "</tr>"))
    assert "0.5000" in first_row and "dana" in first_row
    assert f"{100 * row['recall_before']:.1f}%" in first_row and f"{100 * row['recall_after']:.1f}%" in first_row
    # readiness: every segment of this release, reviewed once; auto-approval off by default
    segs = ev.suggestions["segment"].value_counts()
    assert 'id="auto-approve">off</b>' in raw
    for seg in segs.index:
        assert f'<td class="l">{seg}</td><td>1</td><td>{segs[seg]}</td>' in raw


def test_index_lists_the_alerts_newest_first_and_escaped(home, monkeypatch):
    from analysis import report
    from release.state.alerts import notify_once, raise_alert
    from release.core.settings import paths

    raise_alert("ramp_guardrail_breach", "rel-a: <script>alert(1)</script> moved FR", at="2026-03-01T10:00:00+00:00",
                details={"release_id": "rel-a"})
    notify_once("release_shipped", "rel-b", "rel-b shipped", at="2026-03-02T10:00:00+00:00")
    page = write_index(paths().reports).read_text()
    table = page[page.index('id="alerts"'):]
    assert table.index("release_shipped") < table.index("ramp_guardrail_breach")  # newest first
    assert "<script>" not in page and "&lt;script&gt;alert(1)&lt;/script&gt;" in table
    assert ">rel-a<" in table and ">rel-b<" in table
    assert "Newest first (the state store's alerts; <code>fraudcd status</code> shows the newest)." in page
    monkeypatch.setattr(report, "INDEX_ALERTS", 1)  # more alerts than the index shows: it says how many
    page = write_index(paths().reports).read_text()
    table = page[page.index('id="alerts"'):]
    assert "Newest first: the 1 newest of 2 (the state store's alerts" in page
    assert "release_shipped" in table and "ramp_guardrail_breach" not in table


def test_index_without_alerts_says_so(home):
    from release.core.settings import paths

    assert "No alerts." in write_index(paths().reports).read_text()


def _live(home, monkeypatch, steps: list[tuple[float, str, dict]]):
    """A release through approval and into the live rollout by the state machine's own functions
    (release.rollout.ramp), with its stages recorded as the rollout records them (driver._record): each step
    (share, outcome, the score-shift and latency figures)."""
    from release.orchestration.cycle import _update_release
    from release.rollout import ramp
    from release.rollout.driver import _record
    from contracts.base import MS, PSI
    from release.rollout.guardrails import _limit_verdict

    rid, folder, passed = _release(home, monkeypatch, PASSING)
    assert passed is True
    for st in ("awaiting_approval", "approved", "rejudged", "backtested"):
        _update_release(rid, status=st)
    from release.state.registry import register_model

    cand = register_model("model\n", workflow={"name": "wf"}, features=["amount"], snapshot_hash="a" * 64,
                          code_version="t", metrics={}, at="t0", actor="trainer").id
    ramp.start_shadow(rid, cand, at="2026-01-01T00:00:00+00:00", actor="fraud-cd pipeline", reason="deploy")
    for i, (pct, outcome, g) in enumerate(steps):
        if pct > 0:
            ramp.set_pct(pct, at=f"2026-01-01T0{i}:10:00+00:00", actor="fraud-cd rollout", reason=f"step {i}")
        details = {"rows": 2000 + i, "candidate_rows": 500 + i, "event_seconds": 3600 * (i + 1), "guardrails": {
            "score_shift": {"value": g["psi"], "status": "pass" if g["psi"] <= 0.2 else "fail"},
            "latency_p99": {"value": g["ms"], "lo": g["ms"] * 0.8, "hi": g["ms"] * 1.3, "status": "pass"}},
            "breaches": [] if outcome == "passed" else [f"score shift PSI {g['psi']:.3f} beyond 0.2"], "missing": []}
        vs = [_limit_verdict(f"live_{i}_score_shift", "score_shift", "pass" if g["psi"] <= 0.2 else "fail", g["psi"],
                             0.2, 500 + i, f"PSI {g['psi']:.3f}", PSI),
              _limit_verdict(f"live_{i}_latency_p99", "latency", "pass", g["ms"], 250.0, 500 + i, f"p99 {g['ms']} ms",
                             MS, g["ms"] * 0.8, g["ms"] * 1.3)]
        _record(rid, "shadow" if pct == 0 else "ramp", i, pct, outcome, details, vs,
                at=f"2026-01-01T0{i}:30:00+00:00")
    return rid, folder


def test_a_shipped_release_shows_every_stage_its_pictures_and_what_on_call_can_do(home, monkeypatch):
    from release.core.settings import paths
    from release.rollout import ramp

    steps = [(0, "passed", {"psi": 0.04, "ms": 0.9}), (25, "passed", {"psi": 0.05, "ms": 1.1}),
             (100, "passed", {"psi": 0.03, "ms": 0.8})]
    rid, folder = _live(home, monkeypatch, steps)
    ramp.promote(at="2026-01-01T05:00:00+00:00", actor="oncall", reason="all steps passed")
    raw = write_report(rid, folder, paths().reports).read_text()
    first = _plain(_first_screen(raw)).strip()
    assert first.startswith("SHIP: the candidate passed every gate")
    assert 'fraudcd rollback --reason "..."' in first  # on call's button, as a command
    # every stage, as recorded: share, the candidate's decisions, hours of transaction time
    table = _rows(_between(raw, '<table id="ramp">', "</table>"))
    for i, (pct, outcome, _) in enumerate(steps):
        stage = "shadow" if i == 0 else f"step {i}"
        assert [stage, f"{pct}.0%", f"{2000 + i:,}", f"{500 + i:,}", f"{float(i + 1):.1f}", outcome, ""] in table
    # the guardrails over the stages: a picture, its limits from the stored verdicts
    fig = _between(raw, '<figure id="rollout-guardrails">', "</figure>")
    assert "score shift (PSI), limit 0.2" in fig and "latency p99 (ms), limit 250" in fig
    # the models' pictures from the judging rows, with the operating points marked
    for fid in ("curves", "score-distributions", "calibration"):
        assert re.search(f'<figure id="{fid}"[^>]*><svg role="img"', raw), fid
    assert "candidate operating point" in _between(raw, '<figure id="curves">', "</figure>")


def test_a_rolled_back_release_says_stop_and_shows_the_breach(home, monkeypatch):
    from release.core.settings import paths
    from release.rollout import ramp

    rid, folder = _live(home, monkeypatch, [(0, "passed", {"psi": 0.04, "ms": 0.9}),
                                            (25, "failed", {"psi": 0.41, "ms": 1.0})])
    ramp.rollback(at="2026-01-01T03:00:00+00:00", actor="fraud-cd rollout", reason="score shift PSI 0.410 beyond 0.2")
    raw = write_report(rid, folder, paths().reports).read_text()
    assert 'class="banner stop"' in raw
    table = _rows(_between(raw, '<table id="ramp">', "</table>"))
    assert ["step 1", "25.0%", "2,001", "501", "2.0", "failed", "score shift PSI 0.410 beyond 0.2"] in table
    assert 'id="next-steps"' not in raw  # nothing is live: no button to press


def test_a_rollout_waiting_for_a_person_names_each_answer_as_a_command(home, monkeypatch):
    from release.core.settings import paths
    from release.rollout import ramp

    rid, folder = _live(home, monkeypatch, [(0, "passed", {"psi": 0.04, "ms": 0.9}),
                                            (25, "inconclusive", {"psi": 0.05, "ms": 1.0})])
    ramp.ask(at="2026-01-01T03:00:00+00:00", actor="fraud-cd rollout", reason="step 1 stayed inconclusive")
    raw = write_report(rid, folder, paths().reports).read_text()
    first = _plain(_first_screen(raw)).strip()
    assert first.startswith("IN PROGRESS: awaiting decision")
    for cmd in ('fraudcd ramp extend --reason "..."', 'fraudcd ramp promote --anyway --reason "..."',
                'fraudcd ramp rollback --reason "..."', "fraudcd ramp status"):
        assert cmd in first


def test_a_release_waiting_for_approval_names_the_commands_with_its_id(home, monkeypatch):
    from release.core.settings import paths
    from release.orchestration.cycle import _update_release

    rid, folder, passed = _release(home, monkeypatch, PASSING)
    _update_release(rid, status="awaiting_approval")
    first = _plain(_first_screen(write_report(rid, folder, paths().reports).read_text())).strip()
    assert first.startswith("IN PROGRESS: awaiting approval")
    for cmd in (f"fraudcd thresholds show --release {rid}", f'fraudcd thresholds approve --release {rid} --reason "..."',
                f'fraudcd thresholds reject --release {rid} --reason "..."'):
        assert cmd in first


def test_the_index_draws_each_releases_judgement_and_counts_outcomes(home, monkeypatch):
    from release.core.settings import paths

    rid, folder, passed = _release(home, monkeypatch, PASSING)
    write_report(rid, folder, paths().reports)
    index = (paths().reports / "index.html").read_text()
    assert '<p id="outcome-counts" class="meta">1 releases: 1 contracts passed.</p>' in index
    assert '<figure id="trends"><svg role="img"' in index
    from analysis.report import release_trends
    from release.state.releases import releases_newest_first

    (t,) = release_trends(releases_newest_first())
    m = Evaluation.load(folder).metrics
    a = m[(m.slice_type == "all") & (m.metric == "recall") & (m.estimator == "dm") & (m.model == "policy")]
    assert t["recall_policy"] == pytest.approx(float(a["estimate"].iloc[0]))
    assert t["recall_policy_lo"] == pytest.approx(float(a["lo"].iloc[0]))


def test_each_contracts_slices_are_drawn_as_a_forest_against_what_passes(home, monkeypatch):
    """A figure per contract and judgement, one row per verdict that stored its effect (failures and
    unjudged first), labelled by slice; a verdict without an effect (a data contract, no slice at all) is
    not drawn."""
    from release.state.releases import release_view

    rid, folder, passed = _release(home, monkeypatch, FAILING)
    assert passed is False
    raw = render_report(rid, folder)
    vs = [v for v in release_view(rid)["verdicts"] if v["stage"] == "offline"]
    from analysis.report import ONE_SLICE_A_FIGURE

    drawn = {}  # a figure per contract and unit; a kind judging two quantities, a figure per slice
    for v in vs:
        if v["effect"] is not None:
            drawn.setdefault((v["contract"], v["effect_unit"],
                              v["slice"] if v["kind"] in ONE_SLICE_A_FIGURE else ""), []).append(v)
    assert drawn, "the contracts stored no effect"
    figures = re.findall(r'<figure class="forest" data-contract="([^"]+)" data-stage="offline">(.*?)</figure>', raw,
                         flags=re.S)
    assert sorted(c for c, _ in figures) == sorted(c for c, _, _ in drawn)
    for contract, svg in figures:
        labels = [htmllib.unescape(t) for t in re.findall(r"<text[^>]*>([^<]*)</text>", svg)]
        group = [v for (c, _, sl), g in drawn.items() if c == contract for v in g
                 if not sl or any(sl in t for t in labels)]
        for v in group:
            assert any(v["slice"][:20] in t for t in labels), (contract, v["slice"])
        # a failure is drawn in the failure colour, its interval wholly outside what passes
        if any(v["verdict"] == "fail" for v in group):
            assert "#b91c1c" in svg
    big = [v for v in vs if v["contract"] == "big_recall_gain"]
    assert big[0]["verdict"] == "fail" and big[0]["effect_hi"] < big[0]["allowed_lo"] == 0.9


def test_a_rollout_stage_rewrites_the_report_and_a_failed_rewrite_never_undoes_the_stage(home, monkeypatch):
    """release.orchestration.cycle._report_stage, what the rollout calls after each stage it changes: a
    process of its own (`fraudcd report RELEASE`, the rollout does not wait) rewrites the report, which then
    shows the stage; a report that cannot be written says why in the stage's log and undoes nothing."""
    from release.orchestration import cycle
    from release.rollout import ramp

    rid, folder = _live(home, monkeypatch, [(0, "passed", {"psi": 0.04, "ms": 0.9})])
    ramp.set_pct(5, at="2026-01-01T02:00:00+00:00", actor="fraud-cd rollout", reason="shadow passed")
    proc = cycle._report_stage(rid)
    assert proc.pid != os.getpid() and os.getsid(proc.pid) == proc.pid  # its own session: outlives a deferral
    assert proc.wait(timeout=120) == 0
    page = Path(cycle.get_release(rid)["report_path"]).read_text()
    assert "IN PROGRESS: ramping" in page and '<table id="ramp">' in page
    (folder / "metrics.parquet").write_text("not parquet")  # a broken evaluation folder
    assert cycle._report_stage(rid).wait(timeout=120) != 0
    assert "parquet" in cycle.stage_report_log(rid).read_text().lower()
    assert "IN PROGRESS: ramping" in Path(cycle.get_release(rid)["report_path"]).read_text()  # the last one stays
    assert ramp.current()["pct"] == 5.0 and cycle.get_release(rid)["status"] == "ramping"


def test_the_evaluations_pictures_are_drawn_once_and_again_when_what_they_show_changes(home, monkeypatch):
    """The report is rewritten at every rollout stage; the evaluation's pictures are kept in the release folder
    under a key of what they are drawn from: the same inputs give the same page without drawing again, and a
    changed input (the judging rows rewritten) draws them again."""
    from analysis.report import CHARTS_CACHE

    rid, folder, passed = _release(home, monkeypatch, PASSING)
    first = render_report(rid, folder)
    cache = folder / CHARTS_CACHE
    stamp = cache.stat().st_mtime_ns
    assert render_report(rid, folder) == first and cache.stat().st_mtime_ns == stamp  # read, not drawn
    key = json.loads(cache.read_text())["key"]
    j = pd.read_parquet(folder / "judging.parquet")
    j.loc[j["label"] == 1, "candidate_score"] = 0.0  # the candidate now ranks every fraud last
    j.to_parquet(folder / "judging.parquet")
    again = render_report(rid, folder)
    assert json.loads(cache.read_text())["key"] != key
    curves = lambda raw: _between(raw, '<figure id="curves">', "</figure>")  # noqa: E731
    assert curves(again) != curves(first)


def test_the_report_lists_each_live_change_of_the_approved_thresholds_and_how_it_was_judged(home, monkeypatch):
    """After approval, a person's live edit (judged by the release's contracts first) and an on-call rollback
    each get a row: who, when, the merchants' values before and after, whether and how it was judged, why."""
    from release.orchestration.live_edits import edit_thresholds
    from release.state import approvals

    rid, folder, ev, top = approved_release(home, monkeypatch)
    text = _text(render_report(rid, folder))
    assert "Live changes since the approval" in text and "None: the thresholds live are those approved." in text
    m = approvals.latest_set(rid)["model_id"]
    before = approvals.live_thresholds(m)[1][top[1]]
    out = edit_thresholds(rid, {top[1]: round(before + 0.01, 4)}, actor="eve", reason="chargebacks at the second",
                          at="2026-05-20T10:00:00+00:00")
    assert out["judgement"]["judged"]
    approvals.rollback(m, change_id=out["change_id"], actor="on-call", reason="declines doubled",
                       at="2026-05-20T11:00:00+00:00")
    raw = render_report(rid, folder)
    table = _text(_between(raw, 'id="live-change-table"', "</table>"))
    rows = [" ".join(re.sub("<[^>]+>", " ", r).split()) for r in table.split("<tr>")[2:]]
    assert len(rows) == 2, rows
    assert rows[0].startswith(f"2026-05-20T10:00:00+00:00 eve edit (change {out['change_id']}) "
                              f"{top[1]} {before:.4f} → {before + 0.01:.4f} judged: ")
    assert "pass" in rows[0] and "went ahead despite" not in rows[0] and rows[0].endswith("chargebacks at the second")
    assert rows[1].startswith(f"2026-05-20T11:00:00+00:00 on-call rollback of change {out['change_id']}")
    assert f"{top[1]} {before + 0.01:.4f} → {before:.4f} not judged: a rollback puts back earlier values" in rows[1]
