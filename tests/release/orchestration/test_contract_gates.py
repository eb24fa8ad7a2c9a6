"""Release contracts drive the cycle (release.orchestration.cycle.check_contracts): for each contract kind a candidate
built to violate it is stopped with the contract's sentence as the reason, one built to pass it goes
on, and a thin slice gets "insufficient data". Overrides unblock exactly one release, on the record."""
from __future__ import annotations

import json
import re

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from analysis.evaluation import evaluate

N = 8000


def scored(seed=0, worse_fr_recall=False, random_candidate=False, thin_country=False, cand_sep=0.4, steady=False):
    rng = np.random.default_rng(seed)
    merchant = rng.choice([f"M{i}" for i in range(20)], N)
    country = np.where(np.isin(merchant, [f"M{i}" for i in range(10)]), "FR", "DE")
    if thin_country:
        country[:40] = "LU"
    fraud = (rng.random(N) < 0.05).astype(float)
    inc = np.clip(rng.normal(0.3 + 0.25 * fraud, 0.1), 0, 1)
    cand = np.clip(rng.normal(0.3 + cand_sep * fraud, 0.1), 0, 1)
    if worse_fr_recall:
        fr_fraud = (country == "FR") & (fraud == 1)
        cand[fr_fraud] = np.clip(rng.normal(0.3, 0.1, fr_fraud.sum()), 0, 1)
    if random_candidate:
        cand = rng.random(N)
    if steady:  # the incumbent's own ranking, retrained: the same decisions but for a few near the threshold
        cand = np.clip(inc + rng.normal(0, 0.005, N), 0, 1)
    return pd.DataFrame({"merchant_id": merchant, "merchant_country": country, "merchant_category": "grocery",
                         "card_country": country, "card_id": rng.integers(0, 5000, N),
                         "amount": np.round(rng.gamma(2.0, 40.0, N), 2), "label": fraud, "weight": 1.0,
                         "incumbent_score": inc, "candidate_score": cand})


MANIFEST_OK = {"rows": N, "data_contract": [{"name": n, "passed": True, "observed": 1, "sentence": f"{n} fine"}
                                            for n in ("schema", "min_rows", "both_labels",
                                                      "fraud_rate_band", "no_null_features", "volume_change")]}


@pytest.fixture
def release(home, monkeypatch):
    """make(day, contracts_yaml, window, manifest) -> (release id, passed)"""
    from release.orchestration.cycle import check_contracts, release_dir, start_release
    from release.core.settings import paths

    def make(day: str, contracts_yaml: str, window: pd.DataFrame, manifest: dict | None = None):
        cfile = home / "contracts.yaml"
        cfile.write_text(contracts_yaml)
        monkeypatch.setenv("FRAUDCD_CONTRACTS", str(cfile))
        snap = "b" * 64
        (paths().snapshots / snap).mkdir(parents=True, exist_ok=True)
        (paths().snapshots / snap / "manifest.json").write_text(json.dumps(manifest or MANIFEST_OK))
        rid = start_release(day, snap)
        evaluate(window, {}, 0.5, n_boot=200).save(release_dir(rid))
        from release.orchestration.cycle import _update_release

        for st in ("trained", "evaluated"):  # the legal path to the contracts (this test trains nothing)
            _update_release(rid, status=st)
        return rid, check_contracts(rid)

    return make


def _verdicts(rid):
    from release.state.releases import release_verdicts

    return {(v["contract"], v["slice"]): v for v in release_verdicts(rid)}


ACTION = """
contracts:
  - {name: shift, kind: action_rate_shift, slice: country, at: operating_point, max_relative_shift: 0.25,
     min_support: 50}
"""
RECALL = """
contracts:
  - {name: recall, kind: fixed_fpr_higher_recall, min_support: 30}
"""
SLICE_RECALL = """
contracts:
  - {name: country_recall, kind: slice_recall_regression, slice: country, max_drop: 0.05, min_support: 30}
"""
STABILITY = """
contracts:
  - {name: stability, kind: merchant_block_rate_stability, at: operating_point, max_change: 0.005,
     max_share: 0.05, min_merchant_support: 100, min_support: 10, gate: true}
"""
DATA = """
contracts:
  - {name: data, kind: data_contract, checks: [fraud_rate_band, volume_change]}
"""


def test_action_rate_shift_stops_a_shifting_candidate_and_passes_a_steady_one(release):
    from release.orchestration.cycle import get_release

    window = scored(cand_sep=0.25)  # as good as the incumbent, except ...
    window.loc[window["merchant_country"] == "FR", "candidate_score"] += 0.3  # FR blocks far more
    rid, passed = release("2026-03-01", ACTION, window)
    assert passed is False
    rel = get_release(rid)
    # one global threshold at the incumbent's FPR: FR blocks more, so DE must block less; both are caught
    assert rel["status"] == "stopped" and rel["stop_reason"].startswith("Stopped by release contracts: DE:")
    assert _verdicts(rid)[("shift", "DE")]["verdict"] == "fail" and _verdicts(rid)[("shift", "FR")]["verdict"] != "pass"
    assert "DE: the candidate blocks" in rel["stop_reason"]
    rid2, passed2 = release("2026-03-15", ACTION, scored(seed=1, steady=True))
    assert passed2 is True and _verdicts(rid2)[("shift", "FR")]["verdict"] == "pass"


def test_action_rate_shift_pools_a_thin_country_and_an_unjudged_pool_stops_unless_told_to_warn(release):
    rid, passed = release("2026-03-01", ACTION, scored(thin_country=True, steady=True))
    v = _verdicts(rid)
    assert "LU" not in {k[1] for k in v} or v[("shift", "LU")]["verdict"] != "pass"
    assert v[("shift", "other countries")]["verdict"] == "insufficient data" and passed is False
    assert "(1: LU)" in v[("shift", "other countries")]["sentence"]
    warn = ACTION.replace("min_support: 50}", "min_support: 50, on_insufficient: warn}")
    rid2, passed2 = release("2026-03-15", warn, scored(thin_country=True, steady=True))
    assert passed2 is True and _verdicts(rid2)[("shift", "other countries")]["on_insufficient"] == "warn"


def test_fixed_fpr_higher_recall_stops_a_worse_candidate(release):
    rid, passed = release("2026-03-01", RECALL, scored(random_candidate=True))
    v = _verdicts(rid)[("recall", "operating point")]
    assert passed is False and v["verdict"] == "fail" and "It must catch more" in v["sentence"]
    rid2, passed2 = release("2026-03-15", RECALL, scored(seed=2))
    assert passed2 is True


def test_slice_recall_regression_stops_a_candidate_worse_in_one_country(release):
    rid, passed = release("2026-03-01", SLICE_RECALL, scored(worse_fr_recall=True, thin_country=True))
    v = _verdicts(rid)
    assert passed is False
    assert v[("country_recall", "FR")]["verdict"] == "fail"
    assert v[("country_recall", "DE")]["verdict"] == "pass"
    assert v[("country_recall", "other countries")]["verdict"] == "insufficient data"  # LU, pooled and thin
    rid2, passed2 = release("2026-03-15", SLICE_RECALL, scored(seed=3))
    assert passed2 is True


def test_merchant_block_rate_stability_gates_when_configured_to(release):
    window = scored()
    window["candidate_score"] = window["candidate_score"] + np.where(window["merchant_id"] < "M3", 0.3, 0.0)
    rid, passed = release("2026-03-01", STABILITY, window)
    assert passed is False and _verdicts(rid)[("stability", "all")]["verdict"] == "fail"


def test_data_contract_failure_recorded_by_the_build_stops_the_release(release):
    bad = json.loads(json.dumps(MANIFEST_OK))
    bad["data_contract"][5] = {"name": "volume_change", "passed": False, "observed": 0.8,
                               "sentence": "row count moved 80% against the previous build (100 -> 180)"}
    rid, passed = release("2026-03-01", DATA, scored(), bad)
    v = _verdicts(rid)
    assert passed is False and v[("data", "volume_change")]["verdict"] == "fail"
    assert v[("data", "fraud_rate_band")]["verdict"] == "pass"


def test_an_override_unblocks_exactly_one_release_and_is_on_the_record(release):
    from analysis.report import write_report
    from release.orchestration.cycle import get_release, release_dir, waive_contract
    from release.core.settings import paths
    from release.state.store import audit_log

    rid_a, passed = release("2026-03-01", RECALL, scored(random_candidate=True))
    assert passed is False
    waive_contract(rid_a, "recall", actor="Risk lead (Ana)", reason="known label outage; accept for one cycle",
                   at="2026-03-02T09:00:00+00:00")
    rid_b, passed_b = release("2026-03-15", RECALL, scored(random_candidate=True))
    assert passed_b is False  # the waiver named release A only
    from release.orchestration.cycle import check_contracts

    assert check_contracts(rid_a) is True  # A's contracts checked again: the failure is waived
    assert get_release(rid_a)["status"] == "contracts_passed" and get_release(rid_b)["status"] == "stopped"
    assert _verdicts(rid_a)[("recall", "operating point")]["verdict"] == "fail"  # the verdict is not rewritten
    waived = [a for a in audit_log() if a["action"] == "contract_waived"]
    assert [(a["actor"], a["reason"], a["entity"]) for a in waived] == [
        ("Risk lead (Ana)", "known label outage; accept for one cycle", f"release:{rid_a}")]
    last = audit_log()[-2:]
    assert [a["action"] for a in last] == ["release_continued_on_override", "release_status"]
    assert json.loads(last[1]["after_json"])["status"] == "contracts_passed"  # stopped -> contracts_passed, audited
    page = write_report(rid_a, release_dir(rid_a), paths().reports).read_text()
    assert 'id="overrides"' in page and "Risk lead (Ana)" in page and "(waived)" in page


def test_override_cli_refuses_unknown_contracts_and_anonymous_waivers(release):
    from release.cli.main import app
    from release.state.store import audit_log

    rid, _ = release("2026-03-01", RECALL, scored(random_candidate=True))
    runner = CliRunner()
    r = runner.invoke(app, ["override", "--release", rid, "--contract", "recal", "--as", "Ana", "--reason", "x"])
    assert r.exit_code == 2 and "Unknown contract 'recal'" in r.output and "recall" in r.output
    r = runner.invoke(app, ["override", "--release", rid, "--contract", "recall", "--reason", "x"])
    assert r.exit_code == 2 and "--as" in r.output
    r = runner.invoke(app, ["override", "--release", "rel-1999-01-01", "--contract", "recall", "--as", "Ana",
                            "--reason", "x"])
    assert r.exit_code == 2 and "No release" in r.output
    assert not [a for a in audit_log() if a["action"] == "contract_waived"]
    r = runner.invoke(app, ["override", "--release", rid, "--contract", "recall", "--as", "Ana", "--reason", "ok"])
    assert r.exit_code == 0, r.output
    r = runner.invoke(app, ["override", "--release", rid, "--contract", "recall", "--as", "Bo", "--reason", "again"])
    assert r.exit_code == 2 and "already waived" in r.output


def test_verdicts_cli_exit_code_follows_gates_and_waivers(release):
    from release.cli.main import app
    from release.orchestration.cycle import waive_contract

    rid, _ = release("2026-03-01", RECALL, scored(random_candidate=True))
    runner = CliRunner()
    r = runner.invoke(app, ["verdicts", rid])
    assert r.exit_code == 1 and "It must catch more" in r.output
    waive_contract(rid, "recall", actor="Ana", reason="one cycle", at="2026-03-02T00:00:00+00:00")
    r = runner.invoke(app, ["verdicts", rid])
    assert r.exit_code == 0 and "override: recall waived for this release by Ana" in r.output
    assert runner.invoke(app, ["verdicts", "rel-1999-01-01"]).exit_code == 2


def test_merchant_block_rate_stability_is_judged_on_rows_that_did_not_fit_the_thresholds(release):
    """At the policy, each merchant's threshold was fitted to keep its block rate on the fitting rows, so a
    move can only show on the judging rows: with a few hundred rows a merchant cannot be told apart from a
    0.5-point move, and the contract says so instead of passing what it could not see."""
    at_policy = STABILITY.replace("at: operating_point", "at: suggested")  # the old name still means the policy
    rid, passed = release("2026-03-01", at_policy, scored())
    v = _verdicts(rid)[("stability", "all")]
    # never a pass: most merchants are undecided; whether one or two of the 20 show a move wholly beyond 0.5
    # points (M8 moves about 4 points, M9 about 2, on a few hundred rows) rests on the bootstrap's draws, so
    # the verdict is "insufficient data" (1 moved: 5%, at the limit) or "fail" (2 moved: 10%)
    undecided = int(re.search(r"(\d+) undecided", v["sentence"]).group(1))
    assert v["verdict"] in ("insufficient data", "fail") and undecided >= 15 and passed is False, v["sentence"]
    thin = STABILITY.replace("min_merchant_support: 100", "min_merchant_support: 5000")
    rid2, passed2 = release("2026-03-15", thin, scored())
    v = _verdicts(rid2)[("stability", "all")]
    assert passed2 is False and v["verdict"] == "insufficient data" and v["support"] == 1  # all pooled into one
