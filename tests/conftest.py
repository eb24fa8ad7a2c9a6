"""Test-wide set-up: every test writes under a temporary folder, never the project's var/.

The environment is set before anything imports Airflow, so Airflow reads the project's airflow.cfg
with its metadata database in a temporary folder.
"""
from __future__ import annotations

import os
import tempfile
import threading
from pathlib import Path

import pytest

PROJECT_ROOT = Path(__file__).resolve().parents[1]
_SESSION_DIR = Path(tempfile.mkdtemp(prefix="fraudcd-tests-"))

os.environ["AIRFLOW_HOME"] = str(PROJECT_ROOT)
os.environ["AIRFLOW__CORE__DAGS_FOLDER"] = str(PROJECT_ROOT / "dags")
os.environ["AIRFLOW__CORE__LOAD_EXAMPLES"] = "False"
os.environ["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"] = f"sqlite:///{_SESSION_DIR / 'airflow' / 'airflow.db'}"
os.environ["AIRFLOW__LOGGING__BASE_LOG_FOLDER"] = str(_SESSION_DIR / "airflow" / "logs")
os.environ["FRAUDCD_HOME"] = str(_SESSION_DIR / "home")
for var in ("FRAUDCD_STATE_URL", "FRAUDCD_CONFIG", "FRAUDCD_CONTRACTS", "FRAUDCD_PIPELINE", "FRAUDCD_SOURCE"):
    os.environ.pop(var, None)


# the threads the project starts (release/data/online_features.py, decision_log.py, service.py, rollout.py, demo.py)
_PROJECT_THREADS = ("rates-", "risk-tables", "decision-log", "decision-journal", "scoring", "rollout-watcher",
                    "replayer", "deployment-watcher", "shadow-worker")


@pytest.fixture(autouse=True, scope="module")
def no_thread_outlives_its_test_file():
    """A test file that leaves one of the project's threads running fails, naming the thread. A leftover
    thread (a DuckDB preparation ahead, a journal committer on closed segments) runs on under the next
    files' tests; on CI one such leftover ended the whole run with a segmentation fault two test files
    later, with no test to blame. Per file, not per test: a module-scoped service fixture keeps its
    threads for the file. Threads get a few seconds to finish what they were told to stop."""
    before = set(threading.enumerate())
    yield
    left = [t for t in threading.enumerate() if t not in before and t.name.startswith(_PROJECT_THREADS)]
    for t in left:
        t.join(timeout=5)
    alive = sorted(t.name for t in left if t.is_alive())
    assert not alive, f"the tests of this file left threads running: {alive} (close what they started)"


@pytest.fixture
def home(tmp_path, monkeypatch) -> Path:
    """A fresh, empty FRAUDCD_HOME (data folder and SQLite state store) for one test."""
    h = tmp_path / "home"
    h.mkdir()
    monkeypatch.setenv("FRAUDCD_HOME", str(h))
    return h


@pytest.fixture(scope="session")
def migrated_airflow_db(tmp_path_factory) -> Path:
    """An Airflow metadata database (SQLite) just after `airflow db migrate`, made once per session.
    Read-only: copy it to where a test's Airflow environment points instead of migrating a new one there
    (a few seconds each). A migrated database does not depend on the DAG folder or FRAUDCD settings: two
    migrations differ only in the time their log_template rows were written."""
    from release.orchestration.airflow_env import airflow_env, migrate_airflow_db

    db = tmp_path_factory.mktemp("airflow-migrated") / "airflow.db"
    env = airflow_env()
    env["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"] = f"sqlite:///{db}"
    env["AIRFLOW__LOGGING__BASE_LOG_FOLDER"] = str(db.parent / "logs")
    migrate_airflow_db(env)
    return db


@pytest.fixture(scope="session")
def pg_server(tmp_path_factory):
    """A PostgreSQL server from the pgserver wheel, one for the session: each test makes its own databases."""
    import os

    os.environ.setdefault("XDG_RUNTIME_DIR", str(tmp_path_factory.mktemp("run")))  # pgserver asks for one
    import pgserver

    srv = pgserver.get_server(tmp_path_factory.mktemp("pg"), cleanup_mode="stop")
    yield srv
    # an immediate shutdown (SIGQUIT to the postmaster, as `pg_ctl -m immediate stop`): this throwaway
    # cluster skips the checkpoint a fast shutdown writes for every database the tests made (over 10 s
    # on a busy machine); done when the postmaster removes its pid file, as pg_ctl waits for it
    import signal
    import time

    os.kill(srv.get_pid(), signal.SIGQUIT)
    deadline = time.monotonic() + 30
    while (srv.pgdata / "postmaster.pid").exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    srv.cleanup()
