"""Test-wide set-up: every test writes under a temporary folder, never the project's var/.

The environment is set before anything imports Airflow, so Airflow reads the project's airflow.cfg
with its metadata database in a temporary folder.
"""
from __future__ import annotations

import os
import tempfile
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
    from release.airflow_env import airflow_env, migrate_airflow_db

    db = tmp_path_factory.mktemp("airflow-migrated") / "airflow.db"
    env = airflow_env()
    env["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"] = f"sqlite:///{db}"
    env["AIRFLOW__LOGGING__BASE_LOG_FOLDER"] = str(db.parent / "logs")
    migrate_airflow_db(env)
    return db
