"""The environment Airflow runs in: AIRFLOW_HOME is the project, the metadata database and logs live
under the data folder. Computed at run time so no machine path is committed.

Secrets are not in airflow.cfg: ``fraudcd up`` (release/orchestration/airflow_up.py) writes them once to
``FRAUDCD_HOME/airflow/secrets.json`` (0600) and every Airflow process started with this environment
shares them (the API server and the scheduler must sign and check task tokens with the same key)."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from release.core.settings import PROJECT_ROOT, paths


def airflow_env(base: dict[str, str] | None = None) -> dict[str, str]:
    env = dict(os.environ if base is None else base)
    home = paths().home
    af = home / "airflow"
    env.setdefault("AIRFLOW_HOME", str(PROJECT_ROOT))
    env.setdefault("AIRFLOW__CORE__DAGS_FOLDER", str(PROJECT_ROOT / "dags"))
    env.setdefault("AIRFLOW__DATABASE__SQL_ALCHEMY_CONN", f"sqlite:///{af / 'airflow.db'}")
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
