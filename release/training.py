"""Training workflows: a YAML file says which features, weights and LightGBM parameters; the model is
saved in LightGBM's own text format and registered by content hash."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import lightgbm as lgb
import numpy as np
import pandas as pd
from pydantic import BaseModel, ConfigDict, Field, field_validator

from release.config import load_yaml_model
from release.features import FEATURE_COLUMNS


class Workflow(BaseModel):
    """A training workflow. Field names are the YAML keys."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1)
    description: str = ""
    features: list[str] = Field(min_length=1)
    categorical_features: list[str] = []
    eval_days: int = Field(21, ge=1, le=120)
    seed: int = 7
    max_sample_weight: float = Field(50.0, gt=0)
    positive_weight: float = Field(1.0, gt=0)
    num_boost_round: int = Field(200, ge=1, le=5000)
    lightgbm: dict[str, Any] = {}

    @field_validator("features", "categorical_features")
    @classmethod
    def _known(cls, v: list[str]) -> list[str]:
        unknown = [f for f in v if f not in FEATURE_COLUMNS]
        if unknown:
            raise ValueError(f"unknown feature(s) {unknown}; allowed: {FEATURE_COLUMNS}")
        return v


def load_workflow(path: str | Path) -> Workflow:
    return load_yaml_model(path, Workflow)


def split_windows(df: pd.DataFrame, eval_days: int) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Out-of-time split: the last ``eval_days`` days of the snapshot are the evaluation window."""
    last = pd.Timestamp(df["day"].max())
    cut = last - pd.Timedelta(days=eval_days - 1)
    days = pd.to_datetime(df["day"])
    return df[days < cut], df[days >= cut]


def training_weights(df: pd.DataFrame, wf: Workflow) -> np.ndarray:
    w = np.minimum(df["weight"].astype(float).to_numpy(), wf.max_sample_weight)
    return np.where(df["label"].astype(int).to_numpy() == 1, w * wf.positive_weight, w)


def train_model(snapshot_data: Path, wf: Workflow) -> tuple[str, dict]:
    """Train on the labelled rows of the snapshot's training window. Returns (model text, training info)."""
    df = pd.read_parquet(snapshot_data)
    train, evalw = split_windows(df, wf.eval_days)
    train = train[train["label"].notna()]
    if train["label"].nunique() < 2:
        raise ValueError(f"The training window of {snapshot_data} has {len(train)} labelled rows and only one class;"
                         " cannot train.")
    params = {"objective": "binary", "verbosity": -1, "seed": wf.seed, "deterministic": True,
              "force_col_wise": True, "num_threads": 2, **wf.lightgbm}
    ds = lgb.Dataset(train[wf.features].astype(float), label=train["label"].astype(int),
                     weight=training_weights(train, wf), categorical_feature=wf.categorical_features or "auto",
                     free_raw_data=True)
    booster = lgb.train(params, ds, num_boost_round=wf.num_boost_round)
    info = {"train_rows": int(len(train)), "train_frauds": int(train["label"].astype(int).sum()),
            "train_start": str(train["day"].min()), "train_end": str(train["day"].max()),
            "eval_start": str(evalw["day"].min()), "eval_end": str(evalw["day"].max()),
            "features": wf.features}
    return booster.model_to_string(), info


def load_booster(model_text: str) -> lgb.Booster:
    return lgb.Booster(model_str=model_text)


def score(booster: lgb.Booster, df: pd.DataFrame, features: list[str]) -> np.ndarray:
    return booster.predict(df[features].astype(float), num_threads=2)
