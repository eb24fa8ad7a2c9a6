"""contracts.data_contract: the training-set build's named checks as release verdicts."""
from __future__ import annotations

import pytest

from contracts.base import FAIL, PASS
from contracts.data_contract import DataContract
from contracts.evaluator import load_contracts
from release.core.config import ConfigError
from release.data.data_quality import DATA_CHECKS


def manifest(**failed):
    return {"rows": 1234, "data_contract": [
        {"name": n, "passed": n not in failed, "observed": 0.31 if n == "fraud_rate_band" else 5,
         "sentence": failed.get(n, f"{n} fine")} for n in DATA_CHECKS]}


def contract(checks):
    return DataContract(name="training_set_data_contract", kind="data_contract", checks=checks)


def test_checks_recorded_as_passed_pass_with_their_sentences():
    vs = contract(list(DATA_CHECKS)).check(manifest())
    assert [(v.slice, v.verdict) for v in vs] == [(n, PASS) for n in DATA_CHECKS]
    assert vs[1].sentence == "min_rows: min_rows fine." and vs[1].support == 1234


def test_a_failed_check_fails_with_the_build_reason():
    bad = "the matured fraud rate is 31.0000%, outside the allowed band 0.0100% .. 20.0000%"
    (v,) = contract(["fraud_rate_band"]).check(manifest(fraud_rate_band=bad))
    assert v.verdict == FAIL and v.sentence == f"fraud_rate_band: {bad}." and v.candidate_value == 0.31


def test_a_data_check_carries_no_effect_to_draw():
    """A check is passed or not by the build, with no interval, and the snapshot records no band as numbers:
    the effect fields stay empty rather than half-filled."""
    for v in contract(list(DATA_CHECKS)).check(manifest(fraud_rate_band="outside")):
        assert (v.effect, v.effect_lo, v.effect_hi, v.allowed_lo, v.allowed_hi, v.effect_unit) == (None,) * 6


def test_a_snapshot_without_a_record_fails_rather_than_passing_silently():
    (v,) = contract(["volume_change"]).check({"rows": 10})
    assert v.verdict == FAIL and "records no result for this check" in v.sentence
    assert contract(["min_rows"]).check(None)[0].verdict == FAIL


def test_an_unknown_check_name_fails_on_load_with_file_and_key(tmp_path):
    p = tmp_path / "c.yaml"
    p.write_text("contracts:\n  - {name: data, kind: data_contract, checks: [min_rows, row_count]}\n")
    with pytest.raises(ConfigError, match=r"c\.yaml: contracts\.0\.data_contract\.checks\.1: .*'min_rows'"):
        load_contracts(p)
