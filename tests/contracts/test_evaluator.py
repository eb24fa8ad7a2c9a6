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
from contracts.base import FAIL, INSUFFICIENT, PASS, Verdict
from contracts.data_contract import DataContract
from contracts.drift_budget import DriftBudget
from contracts.merchant_block_rate_stability import MerchantBlockRateStability
from contracts.ranking_regression import RankingRegression
from contracts.slice_recall_regression import SliceRecallRegression
from contracts.evaluator import evaluate_contracts, gate_failures, load_contracts
from contracts.fixed_fpr_higher_recall import FixedFprHigherRecall
from release.core.config import ConfigError

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
                              "drift_budget": DriftBudget,
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
    assert (shift.slice, shift.at, shift.min_support, shift.confidence, shift.gate, shift.limits,
            shift.on_insufficient) == ("country", "policy", 500, 0.95, True, {}, "stop")
    assert (recall.min_recall_gain, recall.require_ci_above_zero, recall.min_support, recall.gate,
            recall.estimator, recall.on_insufficient) == (0.0, True, 30, True, "dm", "stop")


def test_at_suggested_is_read_as_the_policy(tmp_path):
    """Contracts written before the policy had its name: ``at: suggested`` still means it."""
    cs = load_contracts(write(tmp_path, "contracts:\n  - {name: s, kind: action_rate_shift, max_relative_shift: 0.3, "
                                        "at: suggested}\n"))
    assert cs.contracts[0].at == "policy"


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
    ("at", "tomorrow", "'policy' or 'operating_point'"),
    ("on_insufficient", "pass", "'stop' or 'warn'"),
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
    """What evaluate_contracts reads, shaped as analysis.evaluation.Evaluation has it."""

    def __init__(self, metrics, windows=None, policy_source="suggested"):
        self.metrics, self.windows, self.policy_source = metrics, windows or {}, policy_source


def test_evaluate_contracts_routes_each_kind_and_gate_failures_keeps_what_stops(tmp_path):
    from tidy import shift, slice_rows, table

    cs = load_contracts(write(tmp_path, """
contracts:
  - {name: recall, kind: fixed_fpr_higher_recall, gate: true}
  - {name: shift_gate, kind: action_rate_shift, max_relative_shift: 0.25, min_support: 100, gate: true}
  - {name: shift_warn, kind: action_rate_shift, max_relative_shift: 0.25, min_support: 100, gate: false,
     at: operating_point}
  - {name: shift_soft, kind: action_rate_shift, max_relative_shift: 0.25, min_support: 100, gate: true,
     on_insufficient: warn}
"""))
    T = "country|actions>=100"
    rec = {"incumbent": 0.5, "candidate": 0.55, "candidate-incumbent": (0.05, 0.02, 0.08),
           "policy": 0.55, "policy-incumbent": (0.05, 0.02, 0.08)}
    fpr = {"incumbent": 0.004, "candidate": 0.004, "candidate-incumbent": (0.0, -0.0001, 0.0001),
           "policy": 0.0039, "policy-incumbent": (-0.0001, -0.0002, -0.00005)}
    m = table(slice_rows("all", "all", "recall", "dm", rec, frauds=200), slice_rows("all", "all", "fpr", "dm", fpr),
              # the policy: FR within the limit, DE +50% wholly beyond, NL undecided
              shift(T, "FR", 0.02, 0.021, -0.001, 0.003, raw=0.03), shift(T, "DE", 0.02, 0.03, 0.008, 0.012, raw=0.03),
              shift(T, "NL", 0.02, 0.024, 0.001, 0.007, raw=0.02))
    vs = evaluate_contracts(cs, _Evaluation(m))
    got = [(v.contract, v.slice, v.verdict, v.gate) for v in vs]
    assert got[:2] == [("recall", "operating point", PASS, True), ("recall", "policy", PASS, True)]
    assert got[2:5] == [("shift_gate", "DE", FAIL, True), ("shift_gate", "FR", PASS, True),
                        ("shift_gate", "NL", INSUFFICIENT, True)]
    assert ("shift_warn", "DE", FAIL, False) in got  # the candidate at one global threshold: +50% everywhere
    assert all(isinstance(v, Verdict) for v in vs)
    # what stops: the gating failure, and the gating insufficient verdict told to stop; never a warning
    assert [(v.contract, v.slice) for v in gate_failures(vs)] == [("shift_gate", "DE"), ("shift_gate", "NL"),
                                                                  ("shift_soft", "DE")]
    assert [(v.contract, v.slice) for v in gate_failures(vs, {"shift_gate"})] == [("shift_soft", "DE")]
    # re-judging the approved policy says so in its sentences
    approved = evaluate_contracts(cs, _Evaluation(m, policy_source="approved"))
    assert "the approved policy blocks" in next(v for v in approved if v.contract == "shift_gate").sentence


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
    cs = load_contracts(RELEASE_YAML)
    vs = evaluate_contracts(cs, ev, manifest)
    # every contract in force gives at least one verdict, in the file's order; nothing is left unjudged
    assert list(dict.fromkeys(v.contract for v in vs)) == cs.names()
    assert all(v.verdict == PASS for v in vs[:6])
    # the window has one day: thresholds were fitted on half the cards and judged on the others
    assert ev.windows["method"] == "card" and ev.windows["fitting_rows"] + ev.windows["judging_rows"] == n
    # 3,000 rows are far too few for a country's action rate (500 blocks to stand alone): pooled, judged
    shift = [v for v in vs if v.contract == "country_action_rate_shift"]
    assert shift[0].slice == "other countries" and "(2: DE, FR)" in shift[0].sentence
    assert all(v.verdict != FAIL and not v.stops for v in shift[1:])  # a member only speaks when it moved
    # the candidate separates better by construction: both ranking figures gain, and the contracts read
    # the bootstrapped difference the evaluation reports
    for metric in ("roc_auc", "pr_auc"):
        (v,) = [v for v in vs if v.contract == f"{metric}_no_regression"]
        assert v.candidate_value > v.incumbent_value and not v.gate
        assert f"{ev.ranking_diff[metric]['diff']:+.4f}" in v.sentence
    op = next(v for v in vs if v.contract == "fixed_fpr_higher_recall" and v.slice == "operating point")
    assert op.verdict == PASS  # a clearly better candidate at the same FPR, nothing censored
    assert op.support == ev.windows["judging_frauds"]  # judged on the rows that did not fit its threshold
