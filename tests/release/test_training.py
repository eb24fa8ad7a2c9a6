"""Training workflows: validation, the out-of-time split, IPW weights and deterministic training."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from release.config import ConfigError
from release.features import FEATURE_COLUMNS
from release.settings import config_dir
from release.training import Workflow, load_booster, load_workflow, score, split_windows, train_model, training_weights


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
