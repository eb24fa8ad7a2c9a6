"""`fraudcd up`'s environment for the Celery executor (the processes themselves: tests/dags/test_celery.py)."""
from __future__ import annotations


def test_celery_environment_derives_the_async_driver_and_the_broker(monkeypatch, home):
    from release.orchestration.airflow_up import up_env

    for var in ("AIRFLOW__CORE__EXECUTOR", "AIRFLOW__CELERY__BROKER_URL", "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN_ASYNC",
                "AIRFLOW__CELERY__WORKER_CONCURRENCY"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("AIRFLOW__DATABASE__SQL_ALCHEMY_CONN", "postgresql+psycopg://u:pw@db.internal:5432/airflow")
    env = up_env(8080, "celery", 6390)
    assert env["AIRFLOW__CORE__EXECUTOR"] == "CeleryExecutor"
    # Airflow would derive an asyncpg URL, a driver this project does not install
    assert env["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN_ASYNC"] == "postgresql+psycopg_async://u:pw@db.internal:5432/airflow"
    assert env["AIRFLOW__CELERY__BROKER_URL"] == "redis://127.0.0.1:6390/0"
    assert env["AIRFLOW__CELERY__WORKER_CONCURRENCY"] == "1"

    # what the user set wins; the local executor gets no broker
    monkeypatch.setenv("AIRFLOW__CELERY__BROKER_URL", "redis://broker.internal:6379/3")
    monkeypatch.setenv("AIRFLOW__DATABASE__SQL_ALCHEMY_CONN_ASYNC", "postgresql+asyncpg://u:pw@db.internal/airflow")
    env = up_env(8080, "celery", 6390)
    assert env["AIRFLOW__CELERY__BROKER_URL"] == "redis://broker.internal:6379/3"
    assert env["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN_ASYNC"] == "postgresql+asyncpg://u:pw@db.internal/airflow"
    monkeypatch.delenv("AIRFLOW__CELERY__BROKER_URL")
    assert "AIRFLOW__CELERY__BROKER_URL" not in up_env(8080, "local")


def test_a_printed_url_has_no_password():
    from release.orchestration.airflow_up import _redacted

    assert _redacted("postgresql+psycopg://fraud:s3cr@t@db:5432/airflow") == "postgresql+psycopg://fraud:***@db:5432/airflow"
    assert _redacted("redis://:hunter2@redis:6379/0") == "redis://:***@redis:6379/0"
    assert _redacted("sqlite:////var/airflow.db") == "sqlite:////var/airflow.db"


def test_the_choice_of_stores_is_made_once_and_never_goes_back_to_sqlite(monkeypatch, home):
    """`fraudcd up --store`: sqlite is recorded and starts no server; an unknown kind and a move back from
    PostgreSQL to SQLite are refused (exit 2) with the file as it was; the same choice again changes nothing."""
    import json

    import pytest

    from release.core import local_postgres
    from release.core.settings import state_url
    from release.orchestration.airflow_env import airflow_env
    from release.orchestration.airflow_up import UpError, choose_stores

    monkeypatch.delenv("AIRFLOW__DATABASE__SQL_ALCHEMY_CONN", raising=False)
    said = []
    with pytest.raises(UpError, match="--store 'mysql': allowed: postgres, sqlite") as e:
        choose_stores("mysql", said.append)
    assert e.value.code == 2 and not local_postgres.stores_file(home).exists()

    assert choose_stores("sqlite", said.append) == "sqlite"
    recorded = local_postgres.stores_file(home).read_text()
    assert json.loads(recorded)["kind"] == "sqlite" and json.loads(recorded)["by"].endswith("(fraudcd up)")
    assert state_url() == f"sqlite:///{home / 'state.db'}"
    assert airflow_env()["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"] == f"sqlite:///{home / 'airflow' / 'airflow.db'}"
    assert choose_stores(None, said.append) == "sqlite"  # the recorded choice, not the default
    assert local_postgres.stores_file(home).read_text() == recorded and not local_postgres.pgdata(home).exists()

    local_postgres.record_choice(home, "postgres", "ops", "probe")  # (no server needed to refuse)
    with pytest.raises(UpError, match="does not move them back to SQLite") as e:
        choose_stores("sqlite", said.append)
    assert e.value.code == 2 and json.loads(local_postgres.stores_file(home).read_text())["kind"] == "postgres"
    assert said == [] and not local_postgres.pgdata(home).exists()
