"""The environment Airflow runs in: AIRFLOW_HOME is the project, the metadata database and logs live
under the data folder (the metadata database in its local PostgreSQL when `fraudcd up` chose one). Computed at run time so no machine path is committed.

Secrets are not in airflow.cfg: ``fraudcd up`` (release/orchestration/airflow_up.py) writes them once to
``FRAUDCD_HOME/airflow/secrets.json`` (0600) and every Airflow process started with this environment
shares them (the API server and the scheduler must sign and check task tokens with the same key)."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from release.core import local_postgres
from release.core.settings import PROJECT_ROOT, paths


def airflow_env(base: dict[str, str] | None = None) -> dict[str, str]:
    env = dict(os.environ if base is None else base)
    home = paths().home
    af = home / "airflow"
    env.setdefault("AIRFLOW_HOME", str(PROJECT_ROOT))
    env.setdefault("AIRFLOW__CORE__DAGS_FOLDER", str(PROJECT_ROOT / "dags"))
    if "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN" not in env:
        env["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"] = metadata_url(home)
    conn = env["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"]
    if conn.startswith(("postgresql://", "postgresql+psycopg://")):
        # Airflow derives an async URL that wants asyncpg; psycopg (3) has an async driver of its own
        env.setdefault("AIRFLOW__DATABASE__SQL_ALCHEMY_CONN_ASYNC", "postgresql+psycopg_async://" + conn.split("://", 1)[1])
    env.setdefault("AIRFLOW__LOGGING__BASE_LOG_FOLDER", str(af / "logs"))
    env.setdefault("AIRFLOW__LOGGING__DAG_PROCESSOR_CHILD_PROCESS_LOG_DIRECTORY",
                   str(Path(env["AIRFLOW__LOGGING__BASE_LOG_FOLDER"]) / "dag_processor"))
    env.setdefault("AIRFLOW__CORE__LOAD_EXAMPLES", "False")
    # the simple auth manager's generated passwords: under the data folder, never in the project folder
    env.setdefault("AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE", str(af / "passwords.json"))
    for var, value in airflow_secrets(af).items():
        env.setdefault(var, value)  # a value the user set wins
    env["FRAUDCD_HOME"] = str(home)
    return env


def metadata_url(home: Path) -> str:
    """Airflow's metadata database where none is named: the data folder's choice of stores (release/core/
    local_postgres.py): its local PostgreSQL's ``airflow`` database, else ``FRAUDCD_HOME/airflow/airflow.db``."""
    if local_postgres.stores_kind(home) == "postgres":
        return local_postgres.url(home, local_postgres.AIRFLOW_DB)
    return f"sqlite:///{home / 'airflow' / 'airflow.db'}"


SECRETS_FILE = "secrets.json"
SECRET_VARS = {"jwt_secret": "AIRFLOW__API_AUTH__JWT_SECRET", "fernet_key": "AIRFLOW__CORE__FERNET_KEY"}


def airflow_secrets(folder: Path) -> dict[str, str]:
    """The shared secrets of ``folder/secrets.json`` as Airflow environment variables; none when the file
    does not exist (``fraudcd up`` writes it)."""
    try:
        data = json.loads((folder / SECRETS_FILE).read_text())
    except FileNotFoundError:
        return {}
    return {var: data[key] for key, var in SECRET_VARS.items() if data.get(key)}


def worker_hostname() -> str:
    """The host a task instance records (``[core] hostname_callable`` of the Celery workers `fraudcd up` starts):
    the worker's own name (``FRAUDCD_WORKER_NAME``, e.g. ``worker-2@host``), else the machine's name, so two
    workers on one machine are told apart."""
    import socket

    return os.environ.get("FRAUDCD_WORKER_NAME") or socket.getfqdn()


def airflow_bin() -> str:
    return str(Path(sys.executable).with_name("airflow"))


def migrate_airflow_db(env: dict[str, str] | None = None) -> None:
    """`airflow db migrate` on the configured metadata database (idempotent)."""
    env = env or airflow_env()
    if env["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"].startswith("sqlite:///"):  # a server's database exists already
        Path(env["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"].removeprefix("sqlite:///")).parent.mkdir(
            parents=True, exist_ok=True
        )
    subprocess.run([airflow_bin(), "db", "migrate"], env=env, check=True, capture_output=True, text=True)
