"""The pipeline configuration (release/core/pipeline.py): one validated file for every time setting; the run
periods Airflow 3 really gives; snapshot lineages; evaluation rows that must be out of time for the
candidate. Each with a known answer."""
from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

import pandas as pd
import pytest

from release.core.config import ConfigError
from release.core.pipeline import PipelineConfig, load_pipeline, pipeline, run_period

D = dt.date(2018, 10, 1)


def write(tmp_path: Path, text: str) -> Path:
    p = tmp_path / "pipeline.yaml"
    p.write_text(text)
    return p


def test_the_shipped_file_is_the_embedded_defaults():
    from release.core.settings import config_dir

    shipped = load_pipeline(config_dir() / "pipeline.yaml")
    assert shipped.model_dump(exclude={"path"}) == PipelineConfig().model_dump(exclude={"path"})


def test_settings_are_read_from_the_file_and_reread_when_it_changes(tmp_path, monkeypatch):
    p = write(tmp_path, "labels: {maturity_days: 7}\nfeatures: {risk: [{rate: r28, count: n28, window_days: 28, "
                        "prior_tx: 5}]}\n"
                        "schedule: {release: {start_date: 2018-05-01, every_days: 7}}\n")
    monkeypatch.setenv("FRAUDCD_PIPELINE", str(p))
    cfg = pipeline()
    assert cfg.labels.maturity_days == 7 and cfg.features.risk[0].window_days == 28
    assert cfg.schedule.release.start_date == dt.date(2018, 5, 1) and cfg.schedule.release.every_days == 7
    assert cfg.schedule.training_set.every_days == 1  # what the file leaves out keeps its default
    import os
    import time

    p.write_text("labels: {maturity_days: 9}\n")
    os.utime(p, ns=(time.time_ns(), time.time_ns() + 10**9))
    assert pipeline().labels.maturity_days == 9


@pytest.mark.parametrize("text, key, says", [
    ("labels: {maturity_days: '7'}\n", "labels.maturity_days", "valid integer"),      # no silent coercion
    ("labels: {maturity_day: 7}\n", "labels.maturity_day", "Extra inputs"),           # a typo is an error
    ("labels: {maturity_days: 7}\nlabels: {maturity_days: 8}\n", "", "duplicate key 'labels'"),
    ("labels: {maturity_days: 0}\n", "labels.maturity_days", "greater than or equal to 1"),
    ("training_set: {history_days: 50}\n", "", "must exceed labels.maturity_days"),
    ("features: {card_age_cap_days: 90}\n", "features", "must be below lookback_days"),
    ("features: {risk: [{rate: a, count: b, window_days: 7, prior_tx: 0}]}\n", "features.risk.0.prior_tx",
     "greater than 0"),
    ("features: {risk: [{rate: a, count: amount, window_days: 7, prior_tx: 1}]}\n", "features", "['amount'] clash"),
    ("features: {risk: [{rate: a, count: b, window_days: 7, prior_tx: 1}, {rate: a, count: c, window_days: 1, "
     "prior_tx: 1}]}\n", "features", "['a'] clash"),
    ("features: {risk: [{rate: 'A b', count: b, window_days: 7, prior_tx: 1}]}\n", "features.risk.0.rate", "pattern"),
    ("features: {risk: []}\n", "features.risk", "at least 1 item"),
    ("features: {windows: [{name: m_distinct, entity: merchant, window: 1h, aggregation: distinct_merchants}]}\n",
     "features.windows.0", "entity must be card"),
    ("features: {windows: [{name: w, entity: card, window: 90d, aggregation: count}]}\n", "features",
     "further back than lookback_days"),
    ("features: {windows: [{name: w, entity: card, window: 1w, aggregation: count}]}\n", "features.windows.0.window",
     "pattern"),
    ("features: {windows: [{name: w, entity: terminal, window: 1h, aggregation: count}]}\n",
     "features.windows.0.entity", "'card' or 'merchant'"),
    ("schedule: {release: {every_days: 14}}\n", "schedule.release.start_date", "Field required"),
    ("- just a list\n", "", "mapping at the top level"),
])
def test_a_bad_file_is_an_error_naming_the_file_and_the_key(tmp_path, text, key, says):
    p = write(tmp_path, text)
    with pytest.raises(ConfigError) as e:
        load_pipeline(p)
    assert str(p) in str(e.value) and key in str(e.value) and says in str(e.value), str(e.value)


def test_the_period_of_a_run_is_never_empty():
    # a scheduled daily run: its data interval
    assert run_period("2018-09-30T00:00:00+00:00", "2018-10-01T00:00:00+00:00") == (D - dt.timedelta(days=1), D)
    # Airflow 3's trigger timetables and manual runs: a zero-length interval covers the cadence before its end
    assert run_period("2018-10-01T00:00:00+00:00", "2018-10-01T00:00:00+00:00") == (D - dt.timedelta(days=1), D)
    assert run_period(D, D, every_days=14) == (D - dt.timedelta(days=14), D)
    # a run without a logical date: run_after stands in for the end
    assert run_period(None, None, dt.datetime(2018, 10, 1, 9, 30, tzinfo=dt.timezone.utc)) == (
        D - dt.timedelta(days=1), D)
    with pytest.raises(ValueError, match="no data interval and no run_after"):
        run_period(None, None, None)


def _team_source(tmp_path: Path, days: list[dt.date]) -> Path:
    rows = []
    for i, d in enumerate(days):
        for j in range(20):
            rows.append({"txn": f"{i}-{j}", "when": f"{d} 1{j % 10}:00:00", "customer": str(j % 7),
                         "terminal": str(j % 3), "amt": 10.0 + j, "fraud": int(j == 0)})
    (tmp_path / "log.csv").write_text(pd.DataFrame(rows).to_csv(index=False))
    m = tmp_path / "source.yaml"
    m.write_text("path: log.csv\ncolumns: {tx_id: txn, ts: when, card_id: customer, amount: amt, fraud_flag: fraud}\n"
                 "merchant_stand_in: terminal\nlabel_delay_days: 7\n")
    return m


def test_a_zero_length_interval_ingests_its_day_and_an_empty_period_fails(tmp_path, home, monkeypatch):
    from release.orchestration.cycle import ingest_interval
    from release.core.io import list_partitions
    from release.data.source import SourceError

    monkeypatch.setenv("FRAUDCD_SOURCE", str(_team_source(tmp_path, [D - dt.timedelta(days=1), D])))
    out = ingest_interval(f"{D}T00:00:00+00:00", f"{D}T00:00:00+00:00")  # what a trigger timetable gives
    assert out["ingested"] and out["rows"] == 20 and out["period"] == [str(D - dt.timedelta(days=1)), str(D)]
    assert [p.parent.name for p in list_partitions(home / "events" / "transactions", D - dt.timedelta(days=5), D)] \
        == [f"day={D - dt.timedelta(days=1)}"]
    with pytest.raises(SourceError, match="no transactions in 2018-11-01 .. 2018-11-01"):
        ingest_interval("2018-11-02", "2018-11-02")


def test_a_configured_source_in_the_pipeline_file_is_found_relative_to_it(tmp_path, monkeypatch):
    from release.core.pipeline import source_mapping

    m = _team_source(tmp_path, [D])
    monkeypatch.setenv("FRAUDCD_PIPELINE", str(write(tmp_path, "source: source.yaml\n")))
    assert source_mapping() == m.resolve()


def test_the_dags_take_start_date_and_cadence_from_the_configuration(tmp_path, monkeypatch):
    """`airflow dags test release 2018-10-01` ran nothing while start_date was fixed at 2026-01-01."""
    monkeypatch.setenv("FRAUDCD_PIPELINE", str(write(
        tmp_path, "schedule:\n  training_set: {start_date: 2018-04-01, every_days: 1}\n"
                  "  release: {start_date: 2018-05-01, every_days: 7}\n")))
    from airflow.dag_processing.dagbag import DagBag

    from release.core.settings import PROJECT_ROOT

    dags = DagBag(dag_folder=str(PROJECT_ROOT / "dags")).dags
    assert dags["training_set"].start_date.date() == dt.date(2018, 4, 1)
    assert dags["release"].start_date.date() == dt.date(2018, 5, 1)
    assert dags["training_set"].timetable.delta == dt.timedelta(days=1)
    # the release runs on the published training set, on the days its configured cadence falls on
    from release.core.pipeline import pipeline
    from release.orchestration.cycle import NotDue, release_date
    from types import SimpleNamespace

    assert pipeline().schedule.release.due(dt.date(2018, 5, 29))
    published = {"t": [SimpleNamespace(extra={"as_of": "2018-05-29"})]}
    assert release_date(published) == dt.date(2018, 5, 29)
    with pytest.raises(NotDue, match="next on 2018-06-05"):
        release_date({"t": [SimpleNamespace(extra={"as_of": "2018-05-30"})]})


@pytest.fixture(scope="module")
def snapshot_world_events(tmp_path_factory) -> Path:
    """The 100-day world of the snapshot tests, simulated once for the module (read-only: each test copies it)."""
    from simulation.world import WorldConfig, simulate

    out = tmp_path_factory.mktemp("snapshot-world") / "events"
    simulate(WorldConfig(start=dt.date(2018, 3, 1), days=100, tx_per_day=200, n_merchants=40, n_cards=1500), out)
    return out


@pytest.fixture
def snapshot_world(snapshot_world_events):
    """``snapshot_world(home)`` puts the world's event logs in ``home``: the same bytes a simulation of the
    same (seeded, deterministic) configuration writes there, copied instead of simulated again."""
    import shutil

    def put(home: Path) -> None:
        shutil.copytree(snapshot_world_events, home / "events")

    return put


def test_a_change_of_maturity_starts_a_new_lineage(home, tmp_path, monkeypatch, snapshot_world):
    """The volume check compares like with like: a 30-day-maturity build is not compared with a 60-day one
    ("row count moved 88%" was a snapshot of another maturity)."""
    from release.orchestration.cycle import build_snapshot
    from release.data.training_set import latest_snapshot

    snapshot_world(home)
    first = build_snapshot("2018-06-01")
    other = build_snapshot("2018-06-03", maturity_days=30)
    man = json.loads((home / "snapshots" / other / "manifest.json").read_text())
    vol = {c["name"]: c for c in man["data_contract"]}["volume_change"]
    assert "no previous" in vol["sentence"].lower(), vol["sentence"]
    assert man["config"]["lineage"] != json.loads((home / "snapshots" / first / "manifest.json").read_text())[
        "config"]["lineage"]
    same = build_snapshot("2018-06-05")  # the configured lineage compares with its own earlier build
    vol = {c["name"]: c for c in json.loads((home / "snapshots" / same / "manifest.json").read_text())[
        "data_contract"]}["volume_change"]
    first_rows = json.loads((home / "snapshots" / first / "manifest.json").read_text())["rows"]
    assert f"({first_rows} -> " in vol["sentence"], vol["sentence"]
    assert latest_snapshot(home / "snapshots", lineage=man["config"]["lineage"]).hash == other


def test_feature_settings_change_the_snapshot_hash(home, monkeypatch, tmp_path, snapshot_world):
    from release.orchestration.cycle import build_snapshot

    snapshot_world(home)
    a = build_snapshot("2018-06-01")
    monkeypatch.setenv("FRAUDCD_PIPELINE", str(write(
        tmp_path, "features: {risk: [{rate: merchant_fraud_rate, count: merchant_matured_tx, window_days: 28, "
                  "prior_tx: 5}]}\n")))
    b = build_snapshot("2018-06-01")
    assert a != b
    cfg = json.loads((home / "snapshots" / b / "manifest.json").read_text())["config"]
    assert cfg["features"]["risk"] == [{"rate": "merchant_fraud_rate", "count": "merchant_matured_tx",
                                        "window_days": 28, "prior_tx": 5.0, "delay_days": None,
                                        "clock": "day"}] and cfg["feature_code"]


def _model(snapshot_hash: str, train_end: str):
    from release.state.registry import Model

    return Model(id="m" * 64, sha256="", path=Path("x"), workflow="{}", features=[], snapshot_hash=snapshot_hash,
                 code_version="", metrics={"training": {"train_end": train_end}}, created_at="", created_by="")


def test_evaluation_rows_inside_the_candidates_training_window_stop_the_release(home, snapshot_world):
    from release.orchestration.cycle import build_snapshot, evaluation_leak

    snapshot_world(home)
    h = build_snapshot("2018-06-01")
    man = json.loads((home / "snapshots" / h / "manifest.json").read_text())
    ev = pd.DataFrame({"day": pd.date_range("2018-07-11", "2018-07-31").date})
    leak = evaluation_leak(_model(h, "2018-09-02"), man, ev)
    assert leak and "Leaky evaluation" in leak and "2018-09-02" in leak and "2018-07-11" in leak
    assert evaluation_leak(_model(h, "2018-07-10"), man, ev) is None
    # a candidate of another maturity is not judged on these rows either
    h30 = build_snapshot("2018-06-01", maturity_days=30)
    msg = evaluation_leak(_model(h30, "2018-04-01"), man, ev)
    assert msg and "30-day label maturity" in msg and "60 days" in msg


def test_latest_is_the_latest_of_the_configured_lineage(home, tmp_path, monkeypatch, snapshot_world):
    from release.orchestration.cycle import build_snapshot, evaluation_leak
    from release.data.training_set import resolve_snapshot

    snapshot_world(home)
    a = build_snapshot("2018-06-01")
    monkeypatch.setenv("FRAUDCD_PIPELINE", str(write(
        tmp_path, "features: {risk: [{rate: merchant_fraud_rate, count: merchant_matured_tx, window_days: 7, "
                  "prior_tx: 1}]}\n")))
    b = build_snapshot("2018-06-01")  # same date, other feature settings
    assert resolve_snapshot(home / "snapshots", "latest").hash == b
    monkeypatch.delenv("FRAUDCD_PIPELINE")
    assert resolve_snapshot(home / "snapshots", "latest").hash == a
    # a candidate trained on other feature settings is not scored on these rows
    man = json.loads((home / "snapshots" / a / "manifest.json").read_text())
    msg = evaluation_leak(_model(b, "2018-03-01"), man, pd.DataFrame({"day": [dt.date(2018, 4, 1)]}))
    assert msg and "other settings" in msg


def test_a_workflow_that_trains_on_the_evaluation_days_stops_the_release_saying_why(home, tmp_path,
                                                                                     snapshot_world):
    """Through the release stages: a workflow whose training window covers the evaluation window (the leak
    found with a pinned snapshot) stops the release at evaluation, with the sentence on the record."""
    from release.orchestration.cycle import (ReleaseStopped, build_snapshot, ensure_incumbent, evaluate_release, get_release,
                               start_release, train_candidate)
    from release.core.settings import config_dir

    snapshot_world(home)
    snap = build_snapshot("2018-06-08")  # matured window 2018-03-01 .. 04-08; evaluation: its last 21 days
    wf = tmp_path / "leaky.yaml"
    wf.write_text((config_dir() / "workflows" / "default.yaml").read_text().replace(
        "eval_days: 21", "eval_days: 21\ntrain_window: {start: 2018-03-01, end: 2018-04-09}"))
    rid = start_release("2018-06-08", snap, workflow=str(wf))
    ensure_incumbent(rid)
    train_candidate(rid)
    with pytest.raises(ReleaseStopped, match="Leaky evaluation"):
        evaluate_release(rid)
    rel = get_release(rid)
    assert rel["status"] == "stopped" and "2018-04-08" in rel["stop_reason"] and "2018-03-19" in rel["stop_reason"]


def test_the_rollout_plan_is_the_one_the_pipeline_file_names(tmp_path, monkeypatch):
    """``ramp:`` (relative to the pipeline file) is the plan every reader takes: the rollout driver, the
    backtest, the CLI and the DAG file's poll interval (``rollout_poll_seconds``); without it, <config>/ramp.yaml."""
    from release.core.pipeline import ramp_file, rollout_poll_seconds
    from release.core.settings import config_dir
    from release.rollout.ramp import load_plan

    shipped = (config_dir() / "ramp.yaml").read_text()
    (tmp_path / "plans").mkdir()
    (tmp_path / "plans" / "slow.yaml").write_text(shipped.replace("poll_seconds: 60", "poll_seconds: 7")
                                                 .replace("steps: [1, 5, 25, 50, 100]", "steps: [10, 100]"))
    monkeypatch.setenv("FRAUDCD_PIPELINE", str(write(tmp_path, "ramp: plans/slow.yaml\n")))
    assert ramp_file() == (tmp_path / "plans" / "slow.yaml").resolve()
    assert rollout_poll_seconds() == 7.0 and load_plan(ramp_file()).steps == [10, 100]
    monkeypatch.setenv("FRAUDCD_PIPELINE", str(write(tmp_path, "labels: {maturity_days: 30}\n")))
    assert ramp_file() == config_dir() / "ramp.yaml" and rollout_poll_seconds() == 60.0
