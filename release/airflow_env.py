"""The environment Airflow runs in: AIRFLOW_HOME is the project, the metadata database and logs live
under the data folder. Computed at run time so no machine path is committed."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from release.settings import PROJECT_ROOT, paths


def airflow_env(base: dict[str, str] | None = None) -> dict[str, str]:
    env = dict(os.environ if base is None else base)
    home = paths().home
    af = home / "airflow"
    env.setdefault("AIRFLOW_HOME", str(PROJECT_ROOT))
    env.setdefault("AIRFLOW__CORE__DAGS_FOLDER", str(PROJECT_ROOT / "dags"))
    env.setdefault("AIRFLOW__DATABASE__SQL_ALCHEMY_CONN", f"sqlite:///{af / 'airflow.db'}")
    env.setdefault("AIRFLOW__LOGGING__BASE_LOG_FOLDER", str(af / "logs"))
    env.setdefault("AIRFLOW__CORE__LOAD_EXAMPLES", "False")
    env["FRAUDCD_HOME"] = str(home)
    return env


def airflow_bin() -> str:
    return str(Path(sys.executable).with_name("airflow"))


def migrate_airflow_db(env: dict[str, str] | None = None) -> None:
    """`airflow db migrate` on the configured metadata database (idempotent)."""
    env = env or airflow_env()
    Path(env["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"].removeprefix("sqlite:///")).parent.mkdir(
        parents=True, exist_ok=True
    )
    subprocess.run([airflow_bin(), "db", "migrate"], env=env, check=True, capture_output=True, text=True)
