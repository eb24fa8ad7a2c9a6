"""The pipeline configuration: one validated YAML file (``config/pipeline.yaml``, or ``FRAUDCD_PIPELINE``)
holding every time setting of the pipeline, read by the DAGs (start dates and cadences included), the
training-set build, the feature engines (offline and online) and the CLI. Nothing else hard-codes them.

- ``labels.maturity_days``: a transaction's label counts once it is this old.
- ``training_set.history_days``: how far back a snapshot reaches (its matured window is
  [as_of - history_days, as_of - maturity_days)).
- ``features``: the settings of the feature definitions: the delayed-label risk features (the merchant's,
  or a terminal's, fraud rate over one or more windows, each with its prior), the card-age cap, how far
  back window features read.
- ``schedule``: start date and cadence of the daily training-set DAG, the release DAG and the daily
  monitoring DAG.
- ``source``: the column mapping of a team's own transaction log (relative to this file), if any.
- ``workflow``: the training workflow the release trains its candidate with (relative to this file); it
  holds the evaluation split (the judging days).
- ``ramp``: the rollout plan (relative to this file): shadow and ramp-step windows, guardrails, the
  backtest's days.

What defines a snapshot lineage (labels, history, features) is hashed into every snapshot; a change of any
of them starts a new lineage, whose volume check compares like with like.

Errors name the file, the key and what is allowed; unknown and duplicate keys are errors (a typo never
silently drops a setting).
"""
from __future__ import annotations

import datetime as dt
import hashlib
import json
import os
from functools import lru_cache
from pathlib import Path

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from release.core.config import load_yaml_model
from release.core.settings import DEFAULT_POLL_SECONDS, config_dir


# The static features (release/data/features.py defines them): window and risk features may not take their names.
# Here, not there, so that validating a configuration (as the DAG files do when parsed) loads no engine.
STATIC_FEATURES = ["amount", "log_amount", "cross_border", "hour", "category_code", "card_age_days"]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)


class Labels(_Strict):
    maturity_days: int = Field(60, ge=1, le=180)


class TrainingSet(_Strict):
    history_days: int = Field(120, ge=2, le=3650)


class RiskFeature(_Strict):
    """A delayed-label risk feature of the merchant (or of the column that stands in for it, e.g. a
    terminal): the fraud rate of its allowed transactions of the ``window_days`` days before its delay
    (``delay_days``; default: the label maturity), each dispute counted from the day after it arrived,
    shrunk toward the all-merchant rate with ``prior_tx`` transactions of prior weight; and the count of
    those transactions. A delay shorter than the maturity gives a fresher signal on labels still arriving
    (the disputes known so far). ``rate`` and ``count`` name the two feature columns.

    ``clock``: how the window moves. ``day`` (the default): one table per merchant and day, the whole days
    [d - delay - window_days, d - delay - 1], each dispute counted from the day after it arrived.
    ``exact``: the window slides with the transaction's own time t: the allowed transactions of
    [t - delay - window, t - delay) and, among them, the disputes that arrived before t (the all-merchant
    prior likewise at t). Fresher by up to a day, which matters when fraud comes in bursts (a compromised
    terminal); online it needs the disputes in the event logs as they arrive (the service re-reads the
    day's disputes partition whenever it changes)."""
    rate: str = Field(pattern=r"^[a-z][a-z0-9_]*$")
    count: str = Field(pattern=r"^[a-z][a-z0-9_]*$")
    window_days: int = Field(ge=1, le=730)
    prior_tx: float = Field(gt=0)  # > 0: a merchant with no matured transaction gets the all-merchant rate
    delay_days: int | None = Field(None, ge=1, le=180)
    clock: Literal["day", "exact"] = "day"

    def delay(self, maturity_days: int) -> int:
        return int(self.delay_days if self.delay_days is not None else maturity_days)


class WindowFeature(_Strict):
    """A window aggregate of one entity's transactions in [t - window, t) (the transaction itself and
    anything at the same instant are not known): ``count``; ``sum`` of amounts; ``distinct_merchants``
    (cards only); ``amount_over_mean`` / ``amount_over_max``: the amount against the window's mean or
    maximum amount, amount / (mean + 1), the amount itself standing in for an empty window. ``entity``:
    the card, or the merchant (or the column mapped to stand in for it, e.g. a terminal)."""
    name: str = Field(pattern=r"^[a-z][a-z0-9_]*$")
    entity: Literal["card", "merchant"]
    window: str = Field(pattern=r"^[1-9][0-9]*[hd]$")  # hours or days, e.g. 1h, 24h, 7d, 30d
    aggregation: Literal["count", "sum", "distinct_merchants", "amount_over_mean", "amount_over_max"]

    @model_validator(mode="after")
    def _distinct_for_cards(self):
        if self.aggregation == "distinct_merchants" and self.entity != "card":
            raise ValueError(f"{self.name}: distinct_merchants counts a card's merchants; entity must be card")
        return self

    def window_us(self) -> int:
        n, unit = int(self.window[:-1]), self.window[-1]
        return n * (3600 if unit == "h" else 86400) * 1_000_000


def _w(name, entity, window, aggregation):
    return WindowFeature(name=name, entity=entity, window=window, aggregation=aggregation)


DEFAULT_WINDOWS = [
    _w("card_tx_1h", "card", "1h", "count"), _w("card_tx_24h", "card", "24h", "count"),
    _w("card_amount_24h", "card", "24h", "sum"), _w("card_tx_7d", "card", "7d", "count"),
    _w("card_amount_7d", "card", "7d", "sum"), _w("card_tx_30d", "card", "30d", "count"),
    _w("amount_vs_card_avg_30d", "card", "30d", "amount_over_mean"),
    _w("amount_vs_card_max_30d", "card", "30d", "amount_over_max"),
    _w("card_merchants_24h", "card", "24h", "distinct_merchants"),
    _w("merchant_tx_1h", "merchant", "1h", "count"), _w("merchant_tx_24h", "merchant", "24h", "count"),
    _w("merchant_tx_7d", "merchant", "7d", "count"), _w("merchant_amount_24h", "merchant", "24h", "sum"),
    _w("amount_vs_merchant_avg_7d", "merchant", "7d", "amount_over_mean"),
]

DEFAULT_RISK = RiskFeature(rate="merchant_fraud_rate", count="merchant_matured_tx", window_days=90, prior_tx=200.0)


class Features(_Strict):
    """The settings of the feature definitions (release/data/features.py is the one definition of each
    feature; the offline and online engines both read these)."""
    windows: list[WindowFeature] = Field(default_factory=lambda: list(DEFAULT_WINDOWS))
    risk: list[RiskFeature] = Field(default_factory=lambda: [DEFAULT_RISK], min_length=1)
    # "days since first seen", capped below lookback_days so offline and online agree (see features.py)
    card_age_cap_days: int = Field(30, ge=1, le=365)
    # how far back window features read before a window's start: at least the longest window (30 days)
    lookback_days: int = Field(60, ge=31, le=730)

    @model_validator(mode="after")
    def _consistent(self):
        if self.card_age_cap_days >= self.lookback_days:
            raise ValueError(f"card_age_cap_days ({self.card_age_cap_days}) must be below lookback_days "
                             f"({self.lookback_days}): an age capped above what is read depends on the query")
        names = self.columns()
        clash = sorted({n for n in names if names.count(n) > 1} | (set(names) & set(STATIC_FEATURES)))
        if clash:
            raise ValueError(f"window and risk feature names must be unique and not those of other features; "
                             f"{clash} clash (other features: {STATIC_FEATURES})")
        long = [w.name for w in self.windows if w.window_us() > self.lookback_days * 86400 * 1_000_000]
        if long:
            raise ValueError(f"windows {long} reach further back than lookback_days ({self.lookback_days})")
        return self

    def columns(self) -> list[str]:
        """The window and risk features' columns, in order."""
        return [w.name for w in self.windows] + [n for r in self.risk for n in (r.rate, r.count)]

    def longest_window_us(self, entity: str) -> int:
        return max((w.window_us() for w in self.windows if w.entity == entity), default=0)

    def reach(self, maturity_days: int) -> int:
        """How many days before a day the risk features read: the largest delay plus window."""
        return max(r.delay(maturity_days) + r.window_days for r in self.risk)


class DagSchedule(_Strict):
    start_date: dt.date
    every_days: int = Field(ge=1, le=366)

    def due(self, day: dt.date) -> bool:
        """Whether the cadence falls on ``day``: every ``every_days`` days from ``start_date`` (anchored there,
        whenever a scheduler first saw the DAG)."""
        return day >= self.start_date and (day - self.start_date).days % self.every_days == 0

    def next_due(self, day: dt.date) -> dt.date:
        """The first day on or after ``day`` the cadence falls on."""
        if day <= self.start_date:
            return self.start_date
        return day + dt.timedelta(days=-(day - self.start_date).days % self.every_days)


class Schedule(_Strict):
    training_set: DagSchedule = DagSchedule(start_date=dt.date(2026, 1, 1), every_days=1)
    release: DagSchedule = DagSchedule(start_date=dt.date(2026, 1, 1), every_days=14)
    monitoring: DagSchedule = DagSchedule(start_date=dt.date(2026, 1, 1), every_days=1)


class PipelineConfig(_Strict):
    labels: Labels = Labels()
    training_set: TrainingSet = TrainingSet()
    features: Features = Field(default_factory=Features)
    schedule: Schedule = Schedule()
    source: str | None = None  # a column-mapping YAML, relative to the pipeline file's folder
    workflow: str | None = None  # the release's training workflow (default config/workflows/default.yaml)
    ramp: str | None = None  # the rollout plan: stages, windows, guardrails (default <config>/ramp.yaml)
    path: str | None = Field(None, exclude=True)  # where it was read from (set on load, not in the file)

    @model_validator(mode="after")
    def _history_beyond_maturity(self):
        if self.training_set.history_days <= self.labels.maturity_days:
            raise ValueError(f"training_set.history_days ({self.training_set.history_days}) must exceed "
                             f"labels.maturity_days ({self.labels.maturity_days}): no matured window otherwise")
        return self

    def lineage(self) -> dict:
        return lineage_of(self.labels.maturity_days, self.training_set.history_days, self.features)

    def _relative(self, value: str | None) -> Path | None:
        if value is None:
            return None
        p = Path(value).expanduser()
        return p if p.is_absolute() or self.path is None else (Path(self.path).parent / p).resolve()

    def source_path(self) -> Path | None:
        return self._relative(self.source)

    def workflow_path(self) -> Path:
        """The training workflow the release DAG runs when its run does not name one."""
        return self._relative(self.workflow) or config_dir() / "workflows" / "default.yaml"

    def ramp_path(self) -> Path:
        """The rollout plan (shadow and ramp windows, guardrails, the backtest's days)."""
        return self._relative(self.ramp) or config_dir() / "ramp.yaml"


def pipeline_file() -> Path:
    return Path(os.environ.get("FRAUDCD_PIPELINE", config_dir() / "pipeline.yaml")).resolve()


def ramp_file() -> Path:
    """The rollout plan in force: the pipeline configuration's ``ramp``, else ``<config>/ramp.yaml``."""
    return pipeline().ramp_path()


def rollout_poll_seconds() -> float:
    """The ramp plan's ``poll_seconds``, read without loading the plan's models (the DAG file needs only
    this, and the scheduler parses it every few seconds); the whole plan is validated when the rollout runs."""
    from release.core.config import load_yaml

    path = ramp_file()
    plan = load_yaml(path.read_text(), path) or {}
    value = plan.get("poll_seconds", DEFAULT_POLL_SECONDS) if isinstance(plan, dict) else DEFAULT_POLL_SECONDS
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) and value > 0 \
        else DEFAULT_POLL_SECONDS


def load_pipeline(path: str | Path | None = None) -> PipelineConfig:
    """The pipeline configuration at ``path`` (default: ``pipeline_file()``; embedded defaults when that
    file does not exist and no path was given)."""
    p = Path(path) if path is not None else pipeline_file()
    if path is None and not p.exists():
        return PipelineConfig()
    cfg = load_yaml_model(p, PipelineConfig)
    return cfg.model_copy(update={"path": str(p.resolve())})


@lru_cache(maxsize=8)
def _cached(path: str, mtime_ns: int) -> PipelineConfig:
    return load_pipeline(path)


def pipeline() -> PipelineConfig:
    """The configuration in force, re-read when its file changes."""
    p = pipeline_file()
    if not p.exists():
        return PipelineConfig()
    return _cached(str(p), p.stat().st_mtime_ns)


def source_mapping() -> Path | None:
    """The column mapping of a team's own transaction log, if one is configured: ``FRAUDCD_SOURCE``, else
    the pipeline configuration's ``source``, else ``<config>/source.yaml`` when it exists. None: the event
    logs under FRAUDCD_HOME are read as they are."""
    env = os.environ.get("FRAUDCD_SOURCE")
    if env:
        return Path(env).resolve()
    configured = pipeline().source_path()
    if configured is not None:
        return configured
    p = config_dir() / "source.yaml"
    return p if p.exists() else None


def lineage_of(maturity_days: int, history_days: int, features: Features) -> dict:
    """What makes two snapshots comparable: label maturity, history and the feature settings."""
    return {"maturity_days": int(maturity_days), "history_days": int(history_days),
            "features": features.model_dump(mode="json")}


def lineage_key(lineage: dict) -> str:
    return hashlib.sha256(json.dumps(lineage, sort_keys=True).encode()).hexdigest()[:16]


def run_period(start: dt.datetime | dt.date | str | None, end: dt.datetime | dt.date | str | None,
               run_after: dt.datetime | dt.date | str | None = None, every_days: int = 1) -> tuple[dt.date, dt.date]:
    """The days [first, end) a run covers, from what Airflow 3 really gives a task: a data interval
    [start, end); a zero-length one (trigger timetables, manual runs: start == end); or none at all (a run
    without a logical date), where the run's ``run_after`` stands in for its end. A zero-length or absent
    interval covers the ``every_days`` days before its end. Never an empty period: an interval that would
    cover no whole day is an error, not a silent no-op."""
    def day(x) -> dt.date | None:
        if x is None:
            return None
        if isinstance(x, dt.datetime):
            return x.date()
        if isinstance(x, dt.date):
            return x
        return dt.datetime.fromisoformat(str(x)).date()

    last = day(end) or day(run_after)
    if last is None:
        raise ValueError("The run has no data interval and no run_after: cannot tell which days it covers.")
    first = day(start)
    if first is None or first >= last:
        first = last - dt.timedelta(days=int(every_days))
    return first, last
