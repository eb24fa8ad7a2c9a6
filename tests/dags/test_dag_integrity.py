"""DAG integrity: every DAG file imports cleanly, is documented, tagged, retried, and only wires tasks."""
from __future__ import annotations

import datetime as dt
import subprocess
import sys
from pathlib import Path

import pytest

DAGS = Path(__file__).resolve().parents[2] / "dags"


@pytest.fixture(scope="module")
def dagbag():
    from airflow.dag_processing.dagbag import DagBag

    return DagBag(dag_folder=str(DAGS))


def test_no_import_errors(dagbag):
    assert dagbag.import_errors == {}


def test_the_cycle_dags_exist_and_are_named_for_their_files(dagbag):
    assert set(dagbag.dag_ids) == {"training_set", "training_set_backfill", "release", "monitoring"}
    for dag_id, dag in dagbag.dags.items():
        assert Path(dag.fileloc).stem == dag_id


@pytest.mark.parametrize("dag_id", ["training_set", "training_set_backfill", "release", "monitoring"])
def test_every_dag_has_tags_docs_and_retries(dagbag, dag_id):
    dag = dagbag.dags[dag_id]
    assert "fraud-cd" in dag.tags
    assert dag.doc_md and dag_id in dag.doc_md
    assert dag.catchup is False
    assert dag.max_active_runs == 1
    for task in dag.tasks:
        if task.task_id == "approve_thresholds":
            # a person's decision is not retried: the human-in-the-loop response timeout bounds the wait
            assert task.retries == 0 and task.response_timeout is not None
        else:
            assert task.retries >= 1, f"{dag_id}.{task.task_id} has no retries"


def _first_runs(dag, n: int) -> list[str]:
    """The first ``n`` scheduled run times, from the serialized DAG the scheduler would use."""
    import pendulum
    from airflow.serialization.serialized_objects import DagSerialization
    from airflow.timetables.base import TimeRestriction

    timetable = DagSerialization.from_dict(DagSerialization.to_dict(dag)).timetable
    restriction = TimeRestriction(earliest=pendulum.datetime(2026, 1, 1, tz="UTC"), latest=None, catchup=True)
    runs, last = [], None
    for _ in range(n):
        info = timetable.next_dagrun_info(last_automated_data_interval=last, restriction=restriction)
        runs.append(info.run_after.isoformat())
        last = info.data_interval
        # tasks take their as-of date from the data interval's end: it must be the run time itself
        assert info.data_interval.end == info.run_after
    return runs


def test_schedules(dagbag):
    from airflow.serialization.serialized_objects import DagSerialization

    for daily in ("training_set", "monitoring"):
        assert _first_runs(dagbag.dags[daily], 3) == [
            "2026-01-01T00:00:00+00:00", "2026-01-02T00:00:00+00:00", "2026-01-03T00:00:00+00:00"]
    # the release runs on the published training set (its snapshot task then keeps only the cadence's days)
    timetable = DagSerialization.from_dict(DagSerialization.to_dict(dagbag.dags["release"])).timetable
    assert type(timetable).__name__ == "AssetTriggeredTimetable"
    assert [asset.name for _, asset in timetable.asset_condition.iter_assets()] == ["fraudcd-training-set"]
    outlets = dagbag.dags["training_set"].get_task("build").outlets
    assert [a.name for a in outlets] == ["fraudcd-training-set"]
    # every DAG starts at midnight UTC of its schedule's start date in config/pipeline.yaml
    from release.core.pipeline import pipeline

    sched = pipeline().schedule
    for dag_id, s in {"training_set": sched.training_set, "training_set_backfill": sched.training_set,
                      "release": sched.release, "monitoring": sched.monitoring}.items():
        start = dagbag.dags[dag_id].start_date
        assert (start.date(), start.time(), start.utcoffset().total_seconds()) == (s.start_date, dt.time(), 0)


def test_the_backfill_maps_one_task_a_day_between_a_plan_and_an_assembly(dagbag):
    dag = dagbag.dags["training_set_backfill"]
    assert type(dag.timetable).__name__ == "NullTimetable"  # manual runs only: a backfill is asked for
    assert set(dag.params.keys()) == {"from_date", "to_date"}
    build_day = dag.get_task("build_day")
    assert type(build_day).__name__.endswith("MappedOperator")  # dynamic task mapping: one task instance a day
    assert dag.get_task("plan").downstream_task_ids == {"build_day"}
    assert build_day.downstream_task_ids == {"assemble"}
    assert not dag.get_task("assemble").outlets  # a backfill starts no release


def test_release_dag_wiring(dagbag):
    dag = dagbag.dags["release"]
    order = ["snapshot", "start", "incumbent", "train", "evaluate", "contracts"]
    for up, down in zip(order, order[1:]):
        assert down in dag.get_task(up).downstream_task_ids
    assert dag.get_task("contracts").downstream_task_ids == {"request_approval", "stopped_report"}
    tail = ["request_approval", "approve_thresholds", "rejudge", "report", "backtest", "deploy", "rollout",
            "finish"]
    for up, down in zip(tail, tail[1:]):
        assert dag.get_task(up).downstream_task_ids == {down}
    from airflow.providers.standard.operators.hitl import HITLOperator

    # one task drives the rollout (deferred between looks: no worker held) and asks a person when it needs one
    rollout = dag.get_task("rollout")
    assert isinstance(rollout, HITLOperator) and rollout.options == ["Extend the wait", "Promote", "Roll back"]
    assert rollout.response_timeout is not None and rollout.rollout_timeout > rollout.response_timeout
    from airflow.providers.standard.operators.hitl import HITLOperator

    approve = dag.get_task("approve_thresholds")
    assert isinstance(approve, HITLOperator)  # Airflow's human-in-the-loop: the UI's Required actions
    assert approve.options == ["Approve all", "Approve some", "Reject"]
    assert set(approve.params.keys()) == {"reason", "merchants", "edits"}


@pytest.mark.parametrize("name", ["training_set", "training_set_backfill", "release", "monitoring"])
def test_dag_files_do_no_heavy_work_at_import(name):
    """The scheduler parses DAG files every few seconds: no pandas, LightGBM, DuckDB or pipeline code
    may load at module level."""
    code = (
        "import runpy, sys\n"
        f"runpy.run_path({str(DAGS / 'fraudcd' / (name + '.py'))!r})\n"
        "heavy = [m for m in ('pandas', 'lightgbm', 'duckdb', 'sklearn', 'release.orchestration.cycle',"
        " 'release.data.training_set', 'release.rollout.driver', 'release.orchestration.monitoring')"
        " if m in sys.modules]\n"
        "print('HEAVY=' + ','.join(heavy))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    line = [x for x in out.stdout.splitlines() if x.startswith("HEAVY=")]
    assert line == ["HEAVY="]


def test_a_scheduler_that_first_sees_the_dags_finds_them_paused(tmp_path, migrated_airflow_db):
    """airflow.cfg: dags_are_paused_at_creation. Airflow registering the DAGs (as a dag-processor does on
    its first parse) must not let a scheduler start both cycles for today at once; a person unpauses."""
    import json
    import shutil

    from release.orchestration.airflow_env import airflow_bin, airflow_env

    env = airflow_env()
    env.pop("AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION", None)
    env["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"] = f"sqlite:///{tmp_path / 'airflow.db'}"
    shutil.copyfile(migrated_airflow_db, tmp_path / "airflow.db")
    done = subprocess.run([airflow_bin(), "dags", "reserialize"], env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    listed = subprocess.run([airflow_bin(), "dags", "list", "-o", "json"], env=env, capture_output=True, text=True,
                            timeout=300)
    [out] = [line for line in listed.stdout.splitlines() if line.startswith("[{")]  # the JSON, not log lines
    dags = {d["dag_id"]: d["is_paused"] for d in json.loads(out)}
    assert dags == {"release": "True", "training_set": "True", "training_set_backfill": "True",
                    "monitoring": "True"}, listed.stdout
