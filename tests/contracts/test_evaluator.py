"""contracts.evaluator: loading the contracts in force from YAML (bad files fail naming the file and the
key path) and turning an evaluation into verdicts."""
from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from contracts.action_rate_shift import ActionRateShift
from contracts.base import FAIL, PASS, Verdict
from contracts.data_contract import DataContract
from contracts.merchant_block_rate_stability import MerchantBlockRateStability
from contracts.ranking_regression import RankingRegression
from contracts.slice_recall_regression import SliceRecallRegression
from contracts.evaluator import evaluate_contracts, gate_failures, load_contracts
from contracts.fixed_fpr_higher_recall import FixedFprHigherRecall
from release.config import ConfigError

RELEASE_YAML = Path(__file__).resolve().parents[2] / "contracts" / "release.yaml"


def at(p: Path) -> str:
    """A regex matching the file name exactly, as ConfigError starts its lines with it."""
    return re.escape(str(p))


def write(tmp_path: Path, text: str) -> Path:
    p = tmp_path / "contracts.yaml"
    p.write_text(text)
    return p


def test_the_contracts_in_force_load_as_written():
    cs = load_contracts(RELEASE_YAML)
    raw = yaml.safe_load(RELEASE_YAML.read_text())["contracts"]
    assert [c.name for c in cs.contracts] == [r["name"] for r in raw]
    for c, r in zip(cs.contracts, raw):
        assert isinstance(c, {"action_rate_shift": ActionRateShift,
                              "fixed_fpr_higher_recall": FixedFprHigherRecall,
                              "slice_recall_regression": SliceRecallRegression,
                              "merchant_block_rate_stability": MerchantBlockRateStability,
                              "ranking_regression": RankingRegression,
                              "data_contract": DataContract}[r["kind"]])
        for key, value in r.items():
            assert getattr(c, key) == value, key


def test_defaults_apply_to_keys_left_out(tmp_path):
    cs = load_contracts(write(tmp_path, """
contracts:
  - {name: shift, kind: action_rate_shift, max_relative_shift: 0.3}
  - {name: recall, kind: fixed_fpr_higher_recall}
"""))
    shift, recall = cs.contracts
    assert (shift.slice, shift.at, shift.min_support, shift.confidence, shift.gate, shift.limits) == (
        "country", "suggested", 1000, 0.95, True, {})
    assert (recall.min_recall_gain, recall.require_ci_above_zero, recall.min_support, recall.gate) == (
        0.0, True, 30, True)


def test_an_unknown_key_fails_naming_the_file_and_key_path(tmp_path):
    p = write(tmp_path, """
contracts:
  - name: shift
    kind: action_rate_shift
    max_relative_shift: 0.25
    max_relativ_shift: 0.1
""")
    with pytest.raises(ConfigError, match=at(p) + r": contracts\.0\.action_rate_shift\.max_relativ_shift: "
                                          r"Extra inputs are not permitted"):
        load_contracts(p)


@pytest.mark.parametrize("key,value,allowed", [
    ("max_relative_shift", "1.5", "less than or equal to 1"),
    ("max_relative_shift", "0", "greater than 0"),
    ("confidence", "0.4", "greater than 0.5"),
    ("min_support", "0", "greater than or equal to 1"),
    ("slice", "continent", "'all', 'country', 'merchant', 'category', 'card_country', 'merchant_size', 'amount_band' or 'card_segment'"),
    ("at", "tomorrow", "'suggested' or 'operating_point'"),
])
def test_a_bad_value_fails_naming_the_file_key_path_and_what_is_allowed(tmp_path, key, value, allowed):
    body = {"name": "recall", "kind": "fixed_fpr_higher_recall"}
    shift = {"name": "shift", "kind": "action_rate_shift", "max_relative_shift": 0.25}
    shift[key] = yaml.safe_load(value)
    p = write(tmp_path, yaml.safe_dump({"contracts": [body, shift]}))
    with pytest.raises(ConfigError) as e:
        load_contracts(p)
    msg = str(e.value)
    assert msg.startswith(f"{p}: contracts.1.action_rate_shift.{key}: ")
    assert allowed in msg


def test_a_bad_value_in_the_recall_contract(tmp_path):
    p = write(tmp_path, "contracts:\n  - {name: r, kind: fixed_fpr_higher_recall, fpr_tolerance: 2}\n")
    with pytest.raises(ConfigError, match=at(p) + r": contracts\.0\.fixed_fpr_higher_recall\.fpr_tolerance: "
                                          r"Input should be less than or equal to 1 \(got 2\)"):
        load_contracts(p)


def test_an_unknown_kind_fails_listing_the_known_ones(tmp_path):
    p = write(tmp_path, "contracts:\n  - {name: x, kind: precision_floor}\n")
    with pytest.raises(ConfigError, match=at(p) + r": contracts\.0: Input tag 'precision_floor' found using 'kind' "
                                          r"does not match any of the expected tags: 'action_rate_shift', "
                                          r"'fixed_fpr_higher_recall'"):
        load_contracts(p)


def test_duplicate_contract_names_are_refused(tmp_path):
    p = write(tmp_path, """
contracts:
  - {name: recall, kind: fixed_fpr_higher_recall}
  - {name: shift, kind: action_rate_shift, max_relative_shift: 0.2}
  - {name: recall, kind: fixed_fpr_higher_recall, min_support: 50}
""")
    with pytest.raises(ConfigError, match=at(p) + r": .*contract names must be unique; repeated: \['recall'\]"):
        load_contracts(p)


def test_an_empty_contract_list_is_refused(tmp_path):
    p = write(tmp_path, "contracts: []\n")
    with pytest.raises(ConfigError, match=at(p) + r": contracts: List should have at least 1 item"):
        load_contracts(p)


def test_missing_file_not_yaml_and_not_a_mapping(tmp_path):
    with pytest.raises(ConfigError, match="nope.yaml: no such configuration file"):
        load_contracts(tmp_path / "nope.yaml")
    with pytest.raises(ConfigError, match="contracts.yaml: not valid YAML"):
        load_contracts(write(tmp_path, "contracts: [unclosed\n"))
    with pytest.raises(ConfigError, match="contracts.yaml: expected a mapping at the top level, got list"):
        load_contracts(write(tmp_path, "- name: x\n"))


class _Evaluation:
    """The two attributes evaluate_contracts reads, shaped as analysis.evaluation.Evaluation has them."""

    def __init__(self, overall, recall_diff, slices):
        self.overall, self.recall_diff, self.slices = overall, recall_diff, slices


def test_evaluate_contracts_routes_each_kind_and_gate_failures_keeps_only_gating_fails(tmp_path):
    cs = load_contracts(write(tmp_path, """
contracts:
  - {name: recall, kind: fixed_fpr_higher_recall, gate: true}
  - {name: shift_gate, kind: action_rate_shift, max_relative_shift: 0.25, min_support: 100, gate: true}
  - {name: shift_warn, kind: action_rate_shift, max_relative_shift: 0.25, min_support: 100, gate: false,
     at: operating_point}
"""))
    slices = pd.DataFrame([
        # suggested: FR within the limit, DE +50% and significant
        {"at": "suggested", "slice_type": "country", "slice": "FR", "transactions": 5000,
         "incumbent_action_rate": 0.02, "candidate_action_rate": 0.021, "candidate_only_actions": 5,
         "incumbent_only_actions": 0},
        {"at": "suggested", "slice_type": "country", "slice": "DE", "transactions": 5000,
         "incumbent_action_rate": 0.02, "candidate_action_rate": 0.03, "candidate_only_actions": 50,
         "incumbent_only_actions": 0},
        # operating point: FR +50% and significant (only warns)
        {"at": "operating_point", "slice_type": "country", "slice": "FR", "transactions": 5000,
         "incumbent_action_rate": 0.02, "candidate_action_rate": 0.03, "candidate_only_actions": 50,
         "incumbent_only_actions": 0},
    ])
    overall = {"incumbent_recall": 0.5, "candidate_recall": 0.55, "incumbent_fpr": 0.004,
               "candidate_fpr": 0.004, "frauds": 200.0}
    vs = evaluate_contracts(cs, _Evaluation(overall, {"diff": 0.05, "lo": 0.02, "hi": 0.08}, slices))
    got = [(v.contract, v.slice, v.verdict, v.gate) for v in vs]
    assert got == [("recall", "all", PASS, True),
                   ("shift_gate", "FR", PASS, True), ("shift_gate", "DE", FAIL, True),
                   ("shift_warn", "FR", FAIL, False)]
    assert all(isinstance(v, Verdict) for v in vs)
    assert [(v.contract, v.slice) for v in gate_failures(vs)] == [("shift_gate", "DE")]


def test_the_contracts_in_force_judge_a_real_evaluation():
    """The shipped contracts run end to end on analysis.evaluation output."""
    from analysis.evaluation import evaluate

    rng = np.random.default_rng(0)
    n = 3000
    fraud = (rng.random(n) < 0.05).astype(float)
    scored = pd.DataFrame({
        "merchant_id": rng.choice(["M1", "M2", "M3"], n),
        "merchant_country": rng.choice(["FR", "DE"], n),
        "merchant_category": "grocery", "card_country": "FR",
        "card_id": rng.integers(0, 2000, n), "amount": 10.0,
        "label": fraud, "weight": 1.0,
        "incumbent_score": np.clip(rng.normal(0.3 + 0.2 * fraud, 0.1), 0, 1),
        "candidate_score": np.clip(rng.normal(0.3 + 0.4 * fraud, 0.1), 0, 1),
    })
    ev = evaluate(scored, {}, 0.45, n_boot=200)
    manifest = {"rows": n, "data_contract": [
        {"name": name, "passed": True, "observed": None, "sentence": f"{name} ok"}
        for name in ("schema", "min_rows", "both_labels", "fraud_rate_band", "no_null_features", "volume_change")]}
    vs = evaluate_contracts(load_contracts(RELEASE_YAML), ev, manifest)
    assert [(v.contract, v.slice) for v in vs] == [
        ("training_set_data_contract", "schema"), ("training_set_data_contract", "min_rows"),
        ("training_set_data_contract", "both_labels"),
        ("training_set_data_contract", "fraud_rate_band"), ("training_set_data_contract", "no_null_features"),
        ("training_set_data_contract", "volume_change"),
        ("country_action_rate_shift", "DE"), ("country_action_rate_shift", "FR"),
        ("fixed_fpr_higher_recall", "all"),
        ("country_recall_regression", "DE"), ("country_recall_regression", "FR"),
        ("merchant_size_recall_regression", "large"), ("merchant_size_recall_regression", "medium"),
        ("merchant_block_rate_stability", "all"),
        ("roc_auc_no_regression", "all"), ("pr_auc_no_regression", "all")]
    assert all(v.verdict == PASS for v in vs[:6])
    # the candidate separates better by construction: both ranking figures gain, and the contracts read
    # the bootstrapped difference the evaluation reports
    for v, metric in zip(vs[-2:], ("roc_auc", "pr_auc")):
        assert v.verdict == PASS and v.candidate_value > v.incumbent_value and not v.gate
        assert f"{ev.ranking_diff[metric]['diff']:+.4f}" in v.sentence
    recall = vs[8]
    assert recall.verdict == PASS  # a clearly better candidate at the same FPR
    assert recall.candidate_value == ev.overall["candidate_recall"]
    assert recall.support == int((fraud == 1).sum())
