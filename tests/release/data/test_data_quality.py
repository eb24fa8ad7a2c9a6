"""The training-set data contract evaluated by Great Expectations (release/data/data_quality.py)."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from release.data.data_quality import DATA_CHECKS, data_checks
from release.data.features import FEATURE_COLUMNS

REPO = Path(__file__).resolve().parents[3]


def _frame(n=200, frauds=4, blocked=0):
    """n rows of all-ones features; ``frauds`` positives, ``blocked`` unlabelled (pd.NA) rows."""
    df = pd.DataFrame({c: np.ones(n) for c in FEATURE_COLUMNS})
    df["tx_id"] = np.arange(n)
    df["label"] = pd.array([1] * frauds + [0] * (n - frauds - blocked) + [pd.NA] * blocked, dtype="Int8")
    return df


def _checks(df, **kw):
    out = data_checks(df, feature_columns=FEATURE_COLUMNS, **kw)
    assert [c["name"] for c in out] == list(DATA_CHECKS)
    return {c["name"]: c for c in out}


def _failed(checks):
    return sorted(name for name, c in checks.items() if not c["passed"])


def test_a_healthy_frame_passes_all_six_checks():
    checks = _checks(_frame(), previous_rows=180)
    assert _failed(checks) == []
    assert DATA_CHECKS == ("schema", "min_rows", "both_labels", "fraud_rate_band", "no_null_features",
                           "volume_change")
    for c in checks.values():
        assert set(c) == {"name", "passed", "observed", "sentence", "expectation"}
        assert isinstance(c["passed"], bool)
    assert checks["schema"]["observed"] == []
    assert checks["min_rows"]["observed"] == 200
    assert checks["both_labels"]["observed"] == [0, 1]
    assert checks["fraud_rate_band"]["observed"] == pytest.approx(0.02)
    assert checks["no_null_features"]["observed"] == []
    assert checks["volume_change"]["observed"] == pytest.approx(20 / 180)


def test_too_few_rows():
    checks = _checks(_frame(n=50, frauds=2))
    assert _failed(checks) == ["min_rows"]
    assert checks["min_rows"]["observed"] == 50
    assert checks["min_rows"]["sentence"] == "the snapshot has 50 rows; at least 100 are required"


def test_one_class_fails_both_labels_and_leaves_the_rate_unmeasured():
    checks = _checks(_frame(frauds=0))
    assert _failed(checks) == ["both_labels", "fraud_rate_band"]
    assert checks["both_labels"]["observed"] == [0]
    assert checks["both_labels"]["sentence"] == "both labels must be present among matured, allowed rows; found [0]"
    assert checks["fraud_rate_band"]["sentence"] == "the matured fraud rate cannot be measured without both labels"


def test_a_label_outside_zero_and_one_is_reported():
    df = _frame()
    df.loc[10, "label"] = 2
    checks = _checks(df)
    assert not checks["both_labels"]["passed"]
    assert checks["both_labels"]["observed"] == [0, 1, 2]


def test_fraud_rate_above_the_band():
    checks = _checks(_frame(frauds=60))  # 60 / 200 = 30% > 20%
    assert _failed(checks) == ["fraud_rate_band"]
    assert checks["fraud_rate_band"]["observed"] == pytest.approx(0.3)
    assert checks["fraud_rate_band"]["sentence"] == (
        "the matured fraud rate is 30.0000%, outside the allowed band 0.0100% .. 20.0000%")


def test_fraud_rate_below_the_band():
    checks = _checks(_frame(frauds=4), fraud_rate_band=(0.05, 0.2))  # 2% < 5%
    assert _failed(checks) == ["fraud_rate_band"]
    assert checks["fraud_rate_band"]["sentence"] == (
        "the matured fraud rate is 2.0000%, outside the allowed band 5.0000% .. 20.0000%")


def test_fraud_rate_counts_only_labelled_rows():
    # 4 frauds among 150 labelled rows (50 blocked, label NA): 2.67%, and the NA rows are not a third class
    checks = _checks(_frame(n=200, frauds=4, blocked=50))
    assert _failed(checks) == []
    assert checks["fraud_rate_band"]["observed"] == pytest.approx(4 / 150)
    assert checks["both_labels"]["observed"] == [0, 1]
    # 35 frauds among 150 labelled rows is 23.3% (above 20%) although 35/200 = 17.5% would pass
    checks = _checks(_frame(n=200, frauds=35, blocked=50))
    assert _failed(checks) == ["fraud_rate_band"]
    assert checks["fraud_rate_band"]["sentence"].startswith("the matured fraud rate is 23.3333%, outside")


def test_nulls_in_a_feature_fail_but_an_unknown_category_is_allowed():
    df = _frame()
    df.loc[3, "category_code"] = np.nan
    assert _failed(_checks(df)) == []
    df.loc[5, "card_tx_24h"] = np.nan
    checks = _checks(df)
    assert _failed(checks) == ["no_null_features"]
    assert checks["no_null_features"]["observed"] == ["card_tx_24h"]
    assert checks["no_null_features"]["sentence"] == "features that must never be null have nulls: card_tx_24h"
    # what may be null is a parameter, not a hard-coded column
    assert _failed(_checks(df, nullable_features=("category_code", "card_tx_24h"))) == []


def test_volume_jump_against_the_previous_build():
    df = _frame(n=200)
    assert _failed(_checks(df, previous_rows=150)) == []  # +33%: within 50%
    checks = _checks(df, previous_rows=100)
    assert _failed(checks) == ["volume_change"]
    assert checks["volume_change"]["observed"] == pytest.approx(1.0)
    assert checks["volume_change"]["sentence"] == (
        "row count moved 100% against the previous build (100 -> 200), more than the allowed 50%")
    first = _checks(df)["volume_change"]
    assert first["passed"] and first["observed"] is None
    assert first["sentence"] == "no previous build to compare volume with"


def test_missing_required_columns_fail_the_schema_and_the_other_checks_still_answer():
    df = _frame().drop(columns=["hour", "label"])
    checks = _checks(df, previous_rows=200)
    assert checks["schema"]["observed"] == ["hour", "label"]
    found = ", ".join(sorted(df.columns))
    assert checks["schema"]["sentence"] == f"required columns are missing: hour, label (found: {found})"
    assert "tx_id" in found  # the found list is the frame's, not only the required columns
    assert _failed(checks) == ["both_labels", "fraud_rate_band", "no_null_features", "schema"]
    assert "could not be checked" in checks["both_labels"]["sentence"]
    assert checks["fraud_rate_band"]["sentence"].startswith("the matured fraud rate cannot be measured")
    assert checks["no_null_features"]["sentence"] == (
        "features could not be checked for nulls, their columns are missing: hour")
    assert checks["min_rows"]["passed"] and checks["volume_change"]["passed"]


def test_required_columns_can_name_columns_beyond_the_features():
    checks = _checks(_frame().drop(columns=["tx_id"]), required_columns=[*FEATURE_COLUMNS, "label", "tx_id"])
    assert _failed(checks) == ["schema"] and checks["schema"]["observed"] == ["tx_id"]


def test_a_non_numeric_feature_fails_the_schema():
    df = _frame()
    df["amount"] = df["amount"].astype(str)
    checks = _checks(df)
    assert _failed(checks) == ["schema"]
    assert checks["schema"]["sentence"].startswith("features must be numeric but are not: amount (")


def test_every_check_is_decided_by_great_expectations(monkeypatch):
    checks = _checks(_frame(), previous_rows=200)
    assert checks["schema"]["expectation"].split(", ") == [
        "expect_table_columns_to_match_set", "expect_column_values_to_be_in_type_list"]
    assert checks["min_rows"]["expectation"] == "expect_table_row_count_to_be_between"
    assert checks["both_labels"]["expectation"] == "expect_column_distinct_values_to_equal_set"
    assert checks["fraud_rate_band"]["expectation"] == "expect_column_mean_to_be_between"
    assert checks["no_null_features"]["expectation"] == "expect_column_values_to_not_be_null"
    assert checks["volume_change"]["expectation"] == "expect_table_row_count_to_be_between"
    # and the observed value is GX's: make GX's mean expectation report something else, and it shows
    import great_expectations.expectations as gxe

    monkeypatch.setattr(gxe.ExpectColumnMeanToBeBetween, "_validate",
                        lambda self, metrics, runtime_configuration=None, execution_engine=None:
                        {"success": False, "result": {"observed_value": 0.5}})
    rate = _checks(_frame())["fraud_rate_band"]
    assert not rate["passed"] and rate["observed"] == 0.5


def test_nothing_is_written_to_disk(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    _checks(_frame())
    assert list(tmp_path.iterdir()) == []


def test_importing_the_module_does_not_import_great_expectations():
    code = "import sys, release.data.data_quality; print('great_expectations' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
