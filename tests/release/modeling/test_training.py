"""Training workflows: validation, the out-of-time split, IPW weights and deterministic training."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from release.core.config import ConfigError
from release.data.features import FEATURE_COLUMNS
from release.core.settings import config_dir
from release.state.registry import load_booster
from release.modeling.training import Workflow, load_workflow, score, split_windows, train_model, training_weights


def small_workflow(**overrides) -> Workflow:
    """A quick workflow for the tiny snapshot (bagging on, so the seed matters)."""
    base = {
        "name": "tiny", "features": ["amount", "cross_border", "card_tx_24h", "category_code", "hour"],
        "categorical_features": ["category_code"], "eval_days": 3, "seed": 7, "num_boost_round": 15,
        "max_sample_weight": 50, "positive_weight": 5.0,
        "lightgbm": {"num_leaves": 7, "min_data_in_leaf": 20, "learning_rate": 0.1, "bagging_fraction": 0.7,
                     "bagging_freq": 1, "feature_fraction": 0.8},
    }
    return Workflow(**{**base, **overrides})


# ---------------------------------------------------------------- workflow files

@pytest.mark.parametrize("name", ["default.yaml", "bootstrap.yaml"])
def test_shipped_workflows_validate(name):
    wf = load_workflow(config_dir() / "workflows" / name)
    assert set(wf.features) <= set(FEATURE_COLUMNS)


def test_unknown_feature_is_refused_naming_file_and_key(tmp_path):
    p = tmp_path / "wf.yaml"
    p.write_text("name: x\nfeatures: [amount, card_tx_90d]\n")
    with pytest.raises(ConfigError, match=r"wf\.yaml: features: .*unknown feature\(s\) \['card_tx_90d'\]"):
        load_workflow(p)


def test_out_of_range_and_misspelt_keys_are_refused(tmp_path):
    p = tmp_path / "wf.yaml"
    p.write_text("name: x\nfeatures: [amount]\neval_days: 0\nnum_boost_rounds: 10\n")
    with pytest.raises(ConfigError) as e:
        load_workflow(p)
    msg = str(e.value)
    assert "eval_days: Input should be greater than or equal to 1 (got 0)" in msg
    assert "num_boost_rounds: Extra inputs are not permitted" in msg


# ---------------------------------------------------------------- split and weights

def test_split_holds_out_the_last_eval_days():
    days = pd.date_range("2026-01-01", periods=10, freq="D")
    df = pd.DataFrame({"day": np.repeat(days, 2), "x": range(20)})
    train, evalw = split_windows(df, eval_days=3)
    assert sorted(evalw["day"].unique()) == list(days[-3:])
    assert sorted(train["day"].unique()) == list(days[:-3])
    assert len(train) + len(evalw) == len(df)


def test_training_weights_clip_inverse_propensity_then_upweight_positives():
    df = pd.DataFrame({
        # weight: 1/propensity from the snapshot
        "weight": pd.array([1.0, 200.0, 2.0, 200.0], dtype="Float64"),
        "label": pd.array([0, 1, 1, 0], dtype="Int8"),
    })
    wf = small_workflow(max_sample_weight=50.0, positive_weight=5.0)
    # 200 is clipped at 50 before the positive multiplier: 50 * 5 = 250 for the explored fraud
    np.testing.assert_allclose(training_weights(df, wf), [1.0, 250.0, 10.0, 50.0])


# ---------------------------------------------------------------- training

def test_training_is_deterministic(tiny_snapshot):
    wf = small_workflow()
    text1, info1 = train_model(tiny_snapshot.data, wf)
    text2, info2 = train_model(tiny_snapshot.data, wf)
    assert text1 == text2
    assert info1 == info2


def test_seed_and_weights_reach_the_model(tiny_snapshot):
    text, _ = train_model(tiny_snapshot.data, small_workflow())
    assert train_model(tiny_snapshot.data, small_workflow(seed=8))[0] != text
    assert train_model(tiny_snapshot.data, small_workflow(positive_weight=1.0))[0] != text


def test_model_trains_only_on_labelled_rows_of_the_training_window(tiny_snapshot):
    df = pd.read_parquet(tiny_snapshot.data)
    train, _evalw = split_windows(df, 3)
    _, info = train_model(tiny_snapshot.data, small_workflow())
    labelled = train[train["label"].notna()]
    assert info["train_rows"] == len(labelled) < len(train)  # the blocked rows carry no label
    assert info["train_frauds"] == int(labelled["label"].astype(int).sum()) > 0
    assert info["train_end"] < info["eval_start"]
    assert info["eval_end"] == str(df["day"].max())


def test_trained_text_loads_and_scores_probabilities(tiny_snapshot):
    wf = small_workflow()
    text, _ = train_model(tiny_snapshot.data, wf)
    booster = load_booster(text)
    assert booster.feature_name() == wf.features
    df = pd.read_parquet(tiny_snapshot.data).head(50)
    p = score(booster, df, wf.features)
    assert p.shape == (50,) and ((p > 0) & (p < 1)).all()


def test_one_class_training_window_is_refused(tiny_snapshot, tmp_path):
    df = pd.read_parquet(tiny_snapshot.data)
    df["label"] = df["label"].where(df["label"].isna(), 0).astype("Int8")
    p = tmp_path / "data.parquet"
    df.to_parquet(p)
    with pytest.raises(ValueError, match="labelled rows and only one class; cannot train"):
        train_model(p, small_workflow())


# ---------------------------------------------------------------- workflow: snapshot, filters, labels, windows

@pytest.mark.parametrize("yaml_tail, message", [
    ("filters: [{column: shoe_size, op: '==', value: 3}]", r"filters\.0\.column: .*unknown column 'shoe_size'"),
    ("filters: [{column: amount, op: '~', value: 3}]", r"filters\.0\.op: Input should be '==', '!=', "),
    ("filters: [{column: amount, op: in, value: 3}]", r"filters\.0: .*op 'in' needs a list value; got 3"),
    ("snapshot: yesterday", r"snapshot: .*must be 'latest', a 64-character snapshot hash or 'as_of:YYYY-MM-DD'"),
    ("train_window: {start: 2026-03-01, end: 2026-02-01}", r"train_window: .*end \(2026-02-01\) must be after start"),
    ("train_window: {start: 2026-01-01, end: 2026-03-01}\neval_window: {start: 2026-02-20, end: 2026-03-10}",
     r"eval_window starts 2026-02-20, before train_window ends 2026-03-01: evaluation must be out of time"),
    ("label: {explored_rows: ignore}", r"label\.explored_rows: Input should be 'weight', 'unweighted' or 'drop'"),
])
def test_bad_workflow_values_name_the_key_and_what_is_allowed(tmp_path, yaml_tail, message):
    p = tmp_path / "wf.yaml"
    p.write_text("name: x\nfeatures: [amount]\n" + yaml_tail + "\n")
    with pytest.raises(ConfigError, match=message):
        load_workflow(p)


def test_windows_by_date_and_filters_pick_the_rows(tiny_snapshot):
    df = pd.read_parquet(tiny_snapshot.data)
    days = sorted(pd.to_datetime(df["day"]).unique())
    wf = small_workflow(train_window={"start": days[0].date(), "end": days[4].date()},
                        eval_window={"start": days[6].date(), "end": days[8].date()},
                        filters=[{"column": "amount", "op": ">=", "value": 10.0},
                                 {"column": "merchant_country", "op": "not_in", "value": ["US"]}])
    train, ev = split_windows(df, wf)
    assert set(pd.to_datetime(train["day"])) == set(days[:4])
    assert set(pd.to_datetime(ev["day"])) == set(days[6:8])  # the two days between are in neither
    for part in (train, ev):
        assert (part["amount"] >= 10).all() and not (part["merchant_country"] == "US").any()
    expected = df[(df["amount"] >= 10) & (df["merchant_country"] != "US") & pd.to_datetime(df["day"]).isin(days[:4])]
    assert len(train) == len(expected)


def test_label_definition_changes_the_training_rows_and_weights(tiny_snapshot):
    from release.modeling.training import training_labels

    df = pd.read_parquet(tiny_snapshot.data)
    df.loc[df.index[:40], "explored"] = True  # make sure there are explored rows to act on
    df.loc[df.index[:40], "weight"] = 200.0
    labelled = df[df["label"].notna()]
    kept = training_labels(df, small_workflow(label={"explored_rows": "drop"}))
    assert len(kept) == len(labelled[~labelled["explored"]])
    flat = training_labels(df, small_workflow(label={"explored_rows": "unweighted"}))
    assert (flat["weight"] == 1.0).all() and len(flat) == len(labelled)
    cut = sorted(pd.to_datetime(df["day"]).unique())[5]
    late = training_labels(df, small_workflow(label={"exclude_before": cut.date()}))
    assert (pd.to_datetime(late["day"]) >= cut).all()


def test_validation_window_early_stops_and_records_it(tiny_snapshot):
    wf = small_workflow(validation={"days": 3, "early_stopping_rounds": 5}, num_boost_round=200)
    text, info = train_model(tiny_snapshot.data, wf)
    assert 1 <= info["best_iteration"] <= 200 and info["validation_rows"] > 0
    assert 0 <= info["validation_average_precision"] <= 1
    assert load_booster(text).num_trees() == info["best_iteration"]


def test_fraudcd_train_registers_a_deterministic_model_with_its_lineage_and_an_audit_entry(tiny, tiny_snapshot,
                                                                                          tmp_path, monkeypatch):
    import json
    import shutil
    import subprocess
    import sys
    from pathlib import Path

    home = tmp_path / "home"
    shutil.copytree(tiny_snapshot.path, home / "snapshots" / tiny_snapshot.hash)
    wf = tmp_path / "wf.yaml"
    wf.write_text("name: tiny-cli\nfeatures: [amount, cross_border, hour]\neval_days: 3\nnum_boost_round: 10\n"
                  f"snapshot: {tiny_snapshot.hash}\nlightgbm: {{num_leaves: 4, min_data_in_leaf: 20}}\n")
    env = {**__import__("os").environ, "FRAUDCD_HOME": str(home)}
    cmd = [str(Path(sys.executable).with_name("fraudcd")), "train", "--workflow", str(wf), "--as", "ana (analyst)",
           "--reason", "try fewer features", "--json"]
    first = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=120)
    assert first.returncode == 0, first.stderr
    again = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=120)
    a, b = json.loads(first.stdout), json.loads(again.stdout)
    assert a["model_id"] == b["model_id"]  # same workflow, same snapshot: same bytes, same id
    assert a["snapshot"] == tiny_snapshot.hash and a["workflow"] == "tiny-cli"
    assert a["metrics"]["training"]["train_rows"] > 0
    monkeypatch.setenv("FRAUDCD_HOME", str(home))
    from release.state import registry
    from release.state.store import audit_log

    model = registry.get_model(a["model_id"])
    assert model.path.read_text().startswith("tree")  # LightGBM's own text format
    trains = [e for e in audit_log() if e["action"] == "train"]
    assert len(trains) == 2 and trains[0]["actor"] == "ana (analyst)" and trains[0]["reason"] == "try fewer features"
    bad = subprocess.run(cmd[:3] + [str(tmp_path / "missing.yaml")] + cmd[4:], env=env, capture_output=True,
                         text=True, timeout=60)
    assert bad.returncode == 2 and "no such configuration file" in " ".join(bad.stderr.split())
