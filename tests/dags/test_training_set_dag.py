"""The daily training_set DAG through real Airflow (`airflow dags test`): it builds the snapshot as of its
data interval, a rerun finds the same snapshot and writes nothing, a backfill run out of order compares
its volume with the build before its own date (not the newest one), and a build that breaks the data
contract fails its task with the reason in the log while the last good snapshot stays."""
from __future__ import annotations

import datetime as dt
import json
import shutil
from pathlib import Path

import pytest

pytestmark = [pytest.mark.slow]

START = dt.date(2026, 1, 1)


@pytest.fixture(scope="module")
def dag_home(tmp_path_factory):
    from release.orchestration.airflow_env import migrate_airflow_db
    from release.orchestration.demo import cycle_env
    from simulation.world import WorldConfig, simulate

    home = tmp_path_factory.mktemp("training-set-dag") / "home"
    simulate(WorldConfig(days=100, tx_per_day=400, n_merchants=80, n_cards=4000), home / "events")
    env = cycle_env(home)
    migrate_airflow_db(env)
    return home, env


def _run(home, env, day: dt.date, name: str):
    from release.orchestration.demo import run_dag

    run_dag("training_set", day.isoformat(), env, home / f"{name}.log")


def _task_states(env: dict, dag_id: str) -> dict[tuple[str, str], int]:
    """(task_id, state) -> how many task instances, read from the Airflow metadata database."""
    import sqlite3

    db = env["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"].removeprefix("sqlite:///")
    with sqlite3.connect(db) as con:
        rows = con.execute("SELECT task_id, state, count(*) FROM task_instance WHERE dag_id = ? "
                           "GROUP BY task_id, state", (dag_id,)).fetchall()
    return {(t, s): n for t, s, n in rows}


def _published(env: dict) -> list[dict]:
    """The extras of the training-set asset events the DAG published, oldest first (Airflow's database)."""
    import sqlite3

    db = env["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"].removeprefix("sqlite:///")
    with sqlite3.connect(db) as con:
        rows = con.execute("SELECT e.extra FROM asset_event e JOIN asset a ON a.id = e.asset_id "
                           "WHERE a.name = 'fraudcd-training-set' ORDER BY e.id").fetchall()
    return [json.loads(x) if isinstance(x, str) else x for (x,) in rows]


def _snapshots(home: Path) -> dict[str, dict]:
    """as_of -> manifest of every snapshot that landed."""
    out = {}
    for m in (home / "snapshots").glob("*/manifest.json"):
        if not m.parent.name.startswith("."):
            man = json.loads(m.read_text())
            out[man["config"]["as_of"]] = man
    return out


def test_the_dag_builds_as_of_its_interval_and_a_rerun_is_a_no_op(dag_home):
    home, env = dag_home
    day = START + dt.timedelta(days=90)
    _run(home, env, day, "first")
    snaps = _snapshots(home)
    assert len(snaps) == 1
    (as_of, man), = snaps.items()
    # the snapshot is as of the end of the run's data interval (Airflow 3: the run for D covers [D-1, D)),
    # never the wall clock
    assert as_of == day.isoformat()
    assert man["rows"] > 1000 and man["frauds"] > 0
    assert [c["name"] for c in man["data_contract"]] == [
        "schema", "min_rows", "both_labels", "fraud_rate_band", "no_null_features", "volume_change"]
    assert all(c["passed"] for c in man["data_contract"])
    assert all(c["expectation"] for c in man["data_contract"] if c["name"] != "volume_change")
    folder = home / "snapshots" / man["hash"]
    before = {p.name: p.stat().st_mtime_ns for p in folder.iterdir()}
    # the asset the release DAG is scheduled on says which snapshot, of which date
    assert _published(env)[-1] == {"as_of": day.isoformat(), "snapshot": man["hash"]}

    _run(home, env, day, "rerun")
    assert _snapshots(home).keys() == snaps.keys()
    assert {p.name: p.stat().st_mtime_ns for p in folder.iterdir()} == before  # nothing rewritten
    # the rerun replaced the run (one run per date) and both its tasks succeeded: ingest (no mapping
    # configured: nothing to do), then build, which found the snapshot already there
    assert _task_states(env, "training_set") == {("ingest", "success"): 1, ("build", "success"): 1}


def test_a_backfill_out_of_order_compares_with_the_build_before_its_own_date(dag_home):
    home, env = dag_home
    later, earlier = START + dt.timedelta(days=96), START + dt.timedelta(days=93)
    _run(home, env, later, "later")
    _run(home, env, earlier, "earlier")
    snaps = _snapshots(home)
    key = dt.date.isoformat
    assert {key(later), key(earlier)} <= snaps.keys()
    # the earlier date's build compares its volume with day 90's snapshot (the latest before it), not day 96's
    vol = {c["name"]: c for c in snaps[key(earlier)]["data_contract"]}["volume_change"]
    prev_rows = snaps[key(START + dt.timedelta(days=90))]["rows"]
    assert f"({prev_rows} -> {snaps[key(earlier)]['rows']})" in vol["sentence"]


def test_a_build_that_breaks_the_contract_fails_with_its_reason_and_keeps_the_last_good_one(dag_home, tmp_path):
    from release.orchestration.demo import CycleFailed, cycle_env

    home, _ = dag_home
    # a copy of the world whose dispute feed went missing: every matured row looks legitimate
    broken = tmp_path / "home"
    shutil.copytree(home / "events", broken / "events", ignore=shutil.ignore_patterns("disputes"))
    shutil.copytree(home / "snapshots", broken / "snapshots")
    env = cycle_env(broken)
    env["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"] = dag_home[1]["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"]
    good = _snapshots(broken)
    day = START + dt.timedelta(days=98)
    with pytest.raises(CycleFailed):
        _run(broken, env, day, "broken")
    log = (broken / "broken.log").read_text()
    assert "Training-set data contract failed" in log
    assert "both labels must be present among matured, allowed rows; found [0]" in log
    assert _snapshots(broken).keys() == good.keys()  # nothing landed; the last good snapshots stay
    assert not [p for p in (broken / "snapshots").iterdir() if p.name.startswith(".tmp-")]
