"""Training workflows: a YAML file says which snapshot, which rows, what counts as a label, which features,
which windows, and which LightGBM parameters; the model is saved in LightGBM's own text format and
registered by content hash.

A workflow (all keys but ``name`` and ``features`` optional)::

    name: card-fraud-gbm
    snapshot: latest                 # latest | a snapshot hash | as_of:YYYY-MM-DD (latest built before it)
    filters:                         # rows the model trains and is evaluated on
      - {column: merchant_country, op: not_in, value: [NG]}
      - {column: amount, op: ">=", value: 1}
    label:
      explored_rows: weight          # weight (1/propensity) | unweighted | drop
      exclude_before: 2026-02-01     # ignore labels of transactions before this day
    features: [amount, log_amount, ...]
    train_window: {start: 2026-01-01, end: 2026-03-01}   # [start, end) by date; or eval_days from the end
    eval_window: {start: 2026-03-01, end: 2026-03-22}    # out of time: must start at or after train end
    validation: {days: 7, early_stopping_rounds: 30}     # the last days of the training window
    lightgbm: {learning_rate: 0.03, num_leaves: 15}

Class imbalance is handled deliberately: ``positive_weight`` multiplies fraud rows' weights (stated in
the workflow, recorded with the model), never left to LightGBM's defaults by accident.
"""
from __future__ import annotations

import datetime as dt
import re
from pathlib import Path
from typing import Any, Literal

import lightgbm as lgb
import numpy as np
import pandas as pd
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from release.config import load_yaml_model
from release.features import feature_columns
from release.training_set import EVAL_DAYS

# Columns a row filter may test besides the features
FILTER_EXTRA_COLUMNS = ["card_country", "merchant_id", "merchant_country", "merchant_category", "action", "explored"]


class RowFilter(BaseModel):
    model_config = ConfigDict(extra="forbid")
    column: str
    op: Literal["==", "!=", "<", "<=", ">", ">=", "in", "not_in"]
    value: Any

    @field_validator("column")
    @classmethod
    def _column(cls, v: str) -> str:
        allowed = feature_columns() + FILTER_EXTRA_COLUMNS
        if v not in allowed:
            raise ValueError(f"unknown column {v!r}; allowed: {allowed}")
        return v

    @model_validator(mode="after")
    def _value(self) -> "RowFilter":
        if self.op in ("in", "not_in") and not isinstance(self.value, list):
            raise ValueError(f"op {self.op!r} needs a list value; got {self.value!r}")
        if self.op not in ("in", "not_in") and isinstance(self.value, (list, dict)):
            raise ValueError(f"op {self.op!r} needs a single value; got {self.value!r}")
        return self

    def mask(self, df: pd.DataFrame) -> np.ndarray:
        col = df[self.column]
        ops = {"==": col.eq, "!=": col.ne, "<": col.lt, "<=": col.le, ">": col.gt, ">=": col.ge}
        if self.op == "in":
            return col.isin(self.value).to_numpy()
        if self.op == "not_in":
            return (~col.isin(self.value)).to_numpy()
        return ops[self.op](self.value).fillna(False).to_numpy(bool)


class LabelDefinition(BaseModel):
    model_config = ConfigDict(extra="forbid")
    explored_rows: Literal["weight", "unweighted", "drop"] = "weight"
    exclude_before: dt.date | None = None


class Window(BaseModel):
    model_config = ConfigDict(extra="forbid")
    start: dt.date
    end: dt.date

    @model_validator(mode="after")
    def _order(self) -> "Window":
        if self.end <= self.start:
            raise ValueError(f"end ({self.end}) must be after start ({self.start})")
        return self


class Validation(BaseModel):
    model_config = ConfigDict(extra="forbid")
    days: int = Field(ge=1, le=60)
    early_stopping_rounds: int = Field(30, ge=1, le=1000)


class Workflow(BaseModel):
    """A training workflow. Field names are the YAML keys."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1)
    description: str = ""
    snapshot: str = "latest"
    filters: list[RowFilter] = []
    label: LabelDefinition = LabelDefinition()
    features: list[str] = Field(min_length=1)
    categorical_features: list[str] = []
    eval_days: int = Field(EVAL_DAYS, ge=1, le=120)
    train_window: Window | None = None
    eval_window: Window | None = None
    validation: Validation | None = None
    seed: int = 7
    max_sample_weight: float = Field(50.0, gt=0)
    positive_weight: float = Field(1.0, gt=0)
    num_boost_round: int = Field(200, ge=1, le=5000)
    lightgbm: dict[str, Any] = {}

    @field_validator("features", "categorical_features")
    @classmethod
    def _known(cls, v: list[str]) -> list[str]:
        allowed = feature_columns()  # under the configured feature settings (config/pipeline.yaml)
        unknown = [f for f in v if f not in allowed]
        if unknown:
            raise ValueError(f"unknown feature(s) {unknown}; allowed: {allowed}")
        return v

    @field_validator("snapshot")
    @classmethod
    def _snapshot(cls, v: str) -> str:
        if v == "latest" or re.fullmatch(r"[0-9a-f]{64}", v):
            return v
        m = re.fullmatch(r"as_of:(\d{4}-\d{2}-\d{2})", v)
        if m:
            dt.date.fromisoformat(m.group(1))
            return v
        raise ValueError(f"must be 'latest', a 64-character snapshot hash or 'as_of:YYYY-MM-DD'; got {v!r}")

    @model_validator(mode="after")
    def _windows(self) -> "Workflow":
        if self.eval_window and self.train_window and self.eval_window.start < self.train_window.end:
            raise ValueError(f"eval_window starts {self.eval_window.start}, before train_window ends "
                             f"{self.train_window.end}: evaluation must be out of time")
        if self.validation and self.train_window and \
                self.validation.days >= (self.train_window.end - self.train_window.start).days:
            raise ValueError(f"validation.days ({self.validation.days}) must be shorter than the training window")
        return self


def load_workflow(path: str | Path) -> Workflow:
    return load_yaml_model(path, Workflow)


def split_windows(df: pd.DataFrame, eval_days: int | Workflow) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Out-of-time split of a snapshot into (training, evaluation) rows. With a workflow: its row filters,
    then its windows by date (train_window / eval_window), else the last ``eval_days`` days for evaluation
    and everything before for training. With an int: the last that many days for evaluation."""
    wf = eval_days if isinstance(eval_days, Workflow) else None
    if wf is not None:
        keep = np.ones(len(df), dtype=bool)
        for f in wf.filters:
            keep &= f.mask(df)
        df = df[keep]
    days = pd.to_datetime(df["day"])
    if wf is not None and wf.eval_window is not None:
        ev = (days >= pd.Timestamp(wf.eval_window.start)) & (days < pd.Timestamp(wf.eval_window.end))
        cut = pd.Timestamp(wf.eval_window.start)
    else:
        n = wf.eval_days if wf is not None else int(eval_days)
        cut = pd.Timestamp(days.max()) - pd.Timedelta(days=n - 1)
        ev = days >= cut
    if wf is not None and wf.train_window is not None:
        tr = (days >= pd.Timestamp(wf.train_window.start)) & (days < pd.Timestamp(wf.train_window.end))
    else:
        tr = days < cut
    return df[tr.to_numpy()], df[ev.to_numpy()]


def training_labels(train: pd.DataFrame, wf: Workflow) -> pd.DataFrame:
    """The labelled training rows under the workflow's label definition."""
    out = train[train["label"].notna()]
    if wf.label.exclude_before is not None:
        out = out[pd.to_datetime(out["day"]) >= pd.Timestamp(wf.label.exclude_before)]
    if wf.label.explored_rows == "drop":
        out = out[~out["explored"].astype(bool)]
    elif wf.label.explored_rows == "unweighted":
        out = out.assign(weight=1.0)
    return out


def training_weights(df: pd.DataFrame, wf: Workflow) -> np.ndarray:
    w = np.minimum(df["weight"].astype(float).to_numpy(), wf.max_sample_weight)
    return np.where(df["label"].astype(int).to_numpy() == 1, w * wf.positive_weight, w)


def train_model(snapshot_data: Path, wf: Workflow) -> tuple[str, dict]:
    """Train on the labelled rows of the workflow's training window. Returns (model text, training info)."""
    df = pd.read_parquet(snapshot_data)
    train, evalw = split_windows(df, wf)
    train = training_labels(train, wf)
    if train["label"].nunique() < 2:
        raise ValueError(f"The training window of {snapshot_data} has {len(train)} labelled rows and only one class;"
                         " cannot train.")
    params = {"objective": "binary", "verbosity": -1, "seed": wf.seed, "deterministic": True,
              "force_col_wise": True, "num_threads": 2, **wf.lightgbm}
    valid = None
    if wf.validation is not None:
        days = pd.to_datetime(train["day"])
        vcut = days.max() - pd.Timedelta(days=wf.validation.days - 1)
        valid, train = train[(days >= vcut).to_numpy()], train[(days < vcut).to_numpy()]
        if train["label"].nunique() < 2 or valid["label"].nunique() < 2:
            raise ValueError(f"validation.days={wf.validation.days} leaves a training or validation part with one "
                             "class; shorten it or widen the training window.")

    def dataset(part: pd.DataFrame, reference=None) -> lgb.Dataset:
        return lgb.Dataset(part[wf.features].astype(float), label=part["label"].astype(int),
                           weight=training_weights(part, wf), categorical_feature=wf.categorical_features or "auto",
                           free_raw_data=True, reference=reference)

    ds = dataset(train)
    info = {"train_rows": int(len(train)), "train_frauds": int(train["label"].astype(int).sum()),
            "train_start": str(train["day"].min()), "train_end": str(train["day"].max()),
            "eval_start": str(evalw["day"].min()), "eval_end": str(evalw["day"].max()),
            "features": wf.features, "filters": [f.model_dump() for f in wf.filters]}
    if valid is not None:
        evals: dict = {}
        params.setdefault("metric", "average_precision")
        booster = lgb.train(params, ds, num_boost_round=wf.num_boost_round, valid_sets=[dataset(valid, ds)],
                            valid_names=["validation"],
                            callbacks=[lgb.early_stopping(wf.validation.early_stopping_rounds, verbose=False),
                                       lgb.record_evaluation(evals)])
        info.update({"validation_rows": int(len(valid)), "best_iteration": int(booster.best_iteration),
                     "validation_average_precision": float(max(evals["validation"]["average_precision"]))})
        text = booster.model_to_string(num_iteration=booster.best_iteration)
    else:
        booster = lgb.train(params, ds, num_boost_round=wf.num_boost_round)
        text = booster.model_to_string()
    return text, info


def load_booster(model_text: str) -> lgb.Booster:
    return lgb.Booster(model_str=model_text)


def score(booster: lgb.Booster, df: pd.DataFrame, features: list[str]) -> np.ndarray:
    return booster.predict(df[features].astype(float), num_threads=2)
