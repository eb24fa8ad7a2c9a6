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

``lightgbm`` is checked when the workflow loads, with LightGBM itself: every key must be a LightGBM
parameter or one of its aliases (at most one name per parameter); keys the workflow sets elsewhere are
refused (``num_iterations``: use ``num_boost_round``; ``seed``; ``early_stopping_round``: use
``validation.early_stopping_rounds``; ``categorical_feature``: use ``categorical_features``), as are the
command-line parameters that name files; the objective must give probabilities (binary or
cross_entropy); and the values must be accepted by LightGBM (one boosting round on a few made-up rows).

Class imbalance is handled deliberately: ``positive_weight`` multiplies fraud rows' weights (stated in
the workflow, recorded with the model), never left to LightGBM's defaults by accident.
"""
from __future__ import annotations

import datetime as dt
import difflib
import re
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
import pandas as pd
from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator, model_validator

from release.core.config import load_yaml_model, shown
from release.data.features import feature_columns
from release.data.training_set import EVAL_DAYS

if TYPE_CHECKING:
    import lightgbm as lgb

# LightGBM parameters the workflow sets through its own keys, or that only LightGBM's command line uses
# (data and model files): a workflow's ``lightgbm`` may not name them (or any alias of them).
LIGHTGBM_SET_ELSEWHERE = {"num_iterations": "num_boost_round", "seed": "seed",
                          "early_stopping_round": "validation.early_stopping_rounds",
                          "categorical_feature": "categorical_features"}
LIGHTGBM_COMMAND_LINE_ONLY = {"task", "data", "valid", "input_model", "output_model", "output_result", "config",
                              "save_binary", "convert_model", "convert_model_language", "machine_list_filename",
                              "initscore_filename", "forcedsplits_filename", "forcedbins_filename",
                              "label_column", "weight_column", "group_column", "ignore_column", "header",
                              "two_round", "snapshot_freq", "predict_raw_score", "predict_leaf_index",
                              "predict_contrib", "precise_float_parser", "parser_config_file"}
PROBABILITY_OBJECTIVES = {"binary", "cross_entropy", "xentropy"}  # the model's score is a fraud probability

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
        twice = sorted({f for f in v if v.count(f) > 1})
        if twice:
            raise ValueError(f"feature(s) {twice} listed more than once; list each feature once")
        return v

    @field_validator("categorical_features")
    @classmethod
    def _categoricals_are_features(cls, v: list[str], info: ValidationInfo) -> list[str]:
        features = info.data.get("features")
        missing = [f for f in v if features is not None and f not in features]
        if missing:
            raise ValueError(f"{missing} not in features; a categorical feature must also be listed in features "
                             f"(got features {features})")
        return v

    @field_validator("lightgbm")
    @classmethod
    def _lightgbm_parameters(cls, v: dict[str, Any], info: ValidationInfo) -> dict[str, Any]:
        problems = lightgbm_parameter_problems(v, info.data.get("features"), info.data.get("categorical_features"),
                                               info.data.get("seed", 7))
        if problems:
            raise ValueError("; ".join(problems))
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


def _lightgbm_aliases() -> dict[str, str]:
    """Every LightGBM parameter name and alias -> its canonical name, from LightGBM itself."""
    from lightgbm.basic import _ConfigAliases  # LightGBM's own table (LGBM_DumpParamAliases)

    out = {}
    for name, aliases in _ConfigAliases._get_all_param_aliases().items():
        for a in [name, *aliases]:
            out[a] = name
    return out


def lightgbm_params(wf: "Workflow", num_threads: int = 2) -> dict[str, Any]:
    """The parameters LightGBM trains with: the workflow's ``lightgbm`` over fixed defaults."""
    return _params(wf.lightgbm, wf.seed, num_threads)


def _params(lightgbm: dict[str, Any], seed: int, num_threads: int) -> dict[str, Any]:
    return {"objective": "binary", "verbosity": -1, "seed": seed, "deterministic": True,
            "force_col_wise": True, "num_threads": num_threads, **lightgbm}


def _lightgbm_refuses(params: dict[str, Any], features: list[str], categorical: list[str]) -> str | None:
    """LightGBM's own complaint about ``params`` after one boosting round on a few made-up rows, or None."""
    import lightgbm as lgb

    rng = np.random.default_rng(0)
    n = 40
    x = pd.DataFrame(rng.random((n, len(features))), columns=features)
    for c in categorical:
        x[c] = rng.integers(0, 4, n).astype(float)
    y = np.arange(n) % 2
    try:
        ds = lgb.Dataset(x, label=y, weight=np.ones(n), categorical_feature=categorical or "auto", params=params,
                         free_raw_data=False)
        lgb.train(params, ds, num_boost_round=1, valid_sets=[lgb.Dataset(x, label=y, reference=ds)])
    except lgb.basic.LightGBMError as e:
        return re.sub(r"\s+at /\S+, line \d+\s*\.?", "", str(e)).strip()
    return None


def lightgbm_parameter_problems(lightgbm: dict[str, Any], features: list[str] | None = None,
                                categorical: list[str] | None = None, seed: int = 7) -> list[str]:
    """What is wrong with a workflow's ``lightgbm`` parameters (empty: nothing), naming each key. The
    values are tried by LightGBM itself when the workflow's features are known (valid)."""
    aliases = _lightgbm_aliases()
    problems, canonical = [], {}
    for key, value in lightgbm.items():
        name = aliases.get(key)
        if name is None:
            near = difflib.get_close_matches(key, list(aliases), n=1)
            problems.append(f"lightgbm.{key}: not a LightGBM parameter"
                            + (f" (did you mean {near[0]!r}?)" if near else ""))
            continue
        label = key if key == name else f"{key} (LightGBM's {name})"
        if name in canonical:
            problems.append(f"lightgbm.{key}: sets {name} again (already set as {canonical[name]!r}); give it once")
            continue
        canonical[name] = key
        if name in LIGHTGBM_SET_ELSEWHERE:
            problems.append(f"lightgbm.{label}: set it with the workflow's {LIGHTGBM_SET_ELSEWHERE[name]} key")
        elif name in LIGHTGBM_COMMAND_LINE_ONLY:
            problems.append(f"lightgbm.{label}: a LightGBM command-line parameter; not allowed in a workflow")
        elif not (_scalar(value) or (isinstance(value, list) and value and all(map(_scalar, value)))):
            problems.append(f"lightgbm.{key}: expected a number, a string, true/false or a list of them; "
                            f"got {shown(value)}")
        elif isinstance(value, str) and _numeric_text(value):
            problems.append(f"lightgbm.{key}: {shown(value)} is a number written as a string; write it "
                            f"without quotes")
        elif name in LIGHTGBM_BOUNDS and not (isinstance(value, (int, float)) and not isinstance(value, bool)
                                              and LIGHTGBM_BOUNDS[name][0] <= value <= LIGHTGBM_BOUNDS[name][1]):
            lo, hi, _ = LIGHTGBM_BOUNDS[name]
            problems.append(f"lightgbm.{key}: must be a number in [{lo}, {hi}] ({LIGHTGBM_BOUNDS[name][2]}); "
                            f"got {shown(value)}")
        elif name == "objective" and value not in PROBABILITY_OBJECTIVES:
            problems.append(f"lightgbm.{key}: the model must score fraud probabilities, so the objective must be "
                            f"one of {sorted(PROBABILITY_OBJECTIVES)}; got {shown(value)}")
    if problems or features is None or categorical is None:
        return problems
    if _lightgbm_refuses(_params(lightgbm, seed, 1), features, categorical) is None:
        return []
    for key, value in lightgbm.items():  # name the culprit(s): each parameter alone over the defaults
        why = _lightgbm_refuses(_params({key: value}, seed, 1), features, categorical)
        if why:
            problems.append(f"lightgbm.{key}: LightGBM refuses {shown(value)}: {why}")
    return problems or ["LightGBM refuses these parameters together: "
                        + str(_lightgbm_refuses(_params(lightgbm, seed, 1), features, categorical))]


# Resource parameters LightGBM accepts but cannot survive: bounded here, with why (a workflow with
# num_threads: 100000 crashed the trainer with a segfault, max_bin: 1e8 would exhaust memory)
LIGHTGBM_BOUNDS = {
    "num_threads": (0, 256, "threads; 0 lets LightGBM choose"),
    "max_bin": (2, 65535, "histogram bins per feature"),
}


def _numeric_text(v: str) -> bool:
    try:
        float(v.strip())
    except ValueError:
        return False
    return True


def _scalar(v: object) -> bool:
    return isinstance(v, (bool, int, float, str)) and not (isinstance(v, float) and not np.isfinite(v))


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
    import lightgbm as lgb  # here, not at the top: a process that only reads (a report, a CLI answer) never loads it

    df = pd.read_parquet(snapshot_data)
    train, evalw = split_windows(df, wf)
    train = training_labels(train, wf)
    if train["label"].nunique() < 2:
        raise ValueError(f"The training window of {snapshot_data} has {len(train)} labelled rows and only one class;"
                         " cannot train.")
    params = lightgbm_params(wf)
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


def score(booster: lgb.Booster, df: pd.DataFrame, features: list[str]) -> np.ndarray:
    return booster.predict(df[features].astype(float), num_threads=2)
