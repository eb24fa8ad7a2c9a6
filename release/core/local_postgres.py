"""Where a data folder's databases are: SQLite files, or a PostgreSQL server of its own started from a wheel.

`fraudcd up` runs Airflow for real, and its default is a local PostgreSQL: the server of the ``pgserver`` wheel
(no system package), its data in ``FRAUDCD_HOME/postgres``, listening on a Unix socket only (no TCP port), with
two databases: ``airflow`` (Airflow's metadata) and ``fraudcd_state`` (the state store). `fraudcd up --store
sqlite` keeps the SQLite files (``FRAUDCD_HOME/state.db``, ``FRAUDCD_HOME/airflow/airflow.db``) instead.

The choice is made once per data folder and written to ``FRAUDCD_HOME/stores.json`` (by `fraudcd up`, with who
made it and when): every process and shell that shares the data folder (Airflow's components and task
processes, the scoring service, `fraudcd status` in another terminal) reads the same file, so no one has to
export a URL. Without the file (`make demo`, the tests, a library caller) the stores are SQLite. A URL set in the
environment (``FRAUDCD_STATE_URL``, ``AIRFLOW__DATABASE__SQL_ALCHEMY_CONN``) always wins over the file.

The server is started by whoever needs it first (`fraudcd up`, or a command in a shell after `fraudcd down`) and
keeps running until `fraudcd down` stops it; starting one that runs is a no-op. As root, pgserver runs
PostgreSQL as the system user ``pgserver`` (created if missing) and opens the folders above its data to others
for traversal (g+rx, o+rx): run fraud-cd as a normal user to keep the data folder's own permission policy.
"""
from __future__ import annotations

import datetime as dt
import json
import os
import signal
import time
from functools import lru_cache
from pathlib import Path

from release.core.procs import alive

STORES_FILE = "stores.json"
KINDS = ("postgres", "sqlite")
AIRFLOW_DB = "airflow"
STATE_DB = "fraudcd_state"


class LocalPostgresError(RuntimeError):
    pass


def stores_file(home: Path) -> Path:
    return Path(home) / STORES_FILE


def stores_kind(home: Path) -> str | None:
    """The data folder's recorded choice (``postgres`` or ``sqlite``), None when none was made. A file that is
    not what `fraudcd up` writes is an error that says where it is, never read as SQLite."""
    f = stores_file(home)
    try:
        data = json.loads(f.read_text())
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as e:
        raise LocalPostgresError(f"{f}: not readable as the data folder's choice of stores ({e}); it holds "
                                 '{"kind": "postgres"} or {"kind": "sqlite"}, written by `fraudcd up --store`') from None
    kind = data.get("kind") if isinstance(data, dict) else None
    if kind not in KINDS:
        raise LocalPostgresError(f"{f}: kind {kind!r} is not a choice of stores; allowed: {', '.join(KINDS)}")
    return kind


def record_choice(home: Path, kind: str, actor: str, reason: str) -> None:
    """Write the data folder's choice (temp file, then rename), with who made it and when."""
    from release.core.io import atomic_write_text

    if kind not in KINDS:
        raise LocalPostgresError(f"--store {kind!r}: allowed: {', '.join(KINDS)}")
    atomic_write_text(json.dumps({"kind": kind, "by": actor, "reason": reason,
                                  "at": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")}, indent=2)
                      + "\n", stores_file(home))


def pgdata(home: Path) -> Path:
    return Path(home) / "postgres"


def _lock(home: Path):
    """One starter at a time among the data folder's processes (pgserver's own lock lives in each process's
    runtime folder, which two shells need not share), held until the returned file is closed."""
    import fcntl

    f = open(Path(home) / ".postgres.lock", "w")
    fcntl.flock(f, fcntl.LOCK_EX)
    return f


def _server(home: Path):
    """The data folder's server, started if it is not running (pgserver: initdb on first use). Left running
    when this process ends (cleanup_mode None): `fraudcd down` stops it. The caller holds ``_lock``."""
    os.environ.setdefault("XDG_RUNTIME_DIR", str(Path(home) / "run"))  # pgserver keeps its lock file there
    Path(os.environ["XDG_RUNTIME_DIR"]).mkdir(parents=True, exist_ok=True, mode=0o700)
    import logging

    # pgserver says at INFO what it checks on every call, and again from an atexit hook (after a test runner or a
    # task has closed its log streams); its warnings and errors still show
    logging.getLogger("pgserver").setLevel(logging.WARNING)
    try:
        import pgserver
    except ImportError:  # pragma: no cover - a dependency of fraud-cd
        raise LocalPostgresError("the local PostgreSQL needs the pgserver package: pip install pgserver") from None
    folder = pgdata(home)
    folder.mkdir(parents=True, exist_ok=True)
    try:
        srv = pgserver.get_server(folder, cleanup_mode=None)
        srv.ensure_postgres_running()  # get_server hands back this process's earlier handle as it was: stopped since?
        return srv
    except Exception as e:  # noqa: BLE001 - pgserver raises what pg_ctl/initdb raised; its log says why
        log = folder / "log"
        tail = log.read_text(errors="replace")[-2000:] if log.exists() else "(no log)"
        raise LocalPostgresError(f"the local PostgreSQL in {folder} did not start ({e!r}); the end of its log "
                                 f"{log}:\n{tail}") from None


@lru_cache(maxsize=8)
def url(home: Path, database: str) -> str:
    """A SQLAlchemy URL (psycopg 3) of ``database`` on the data folder's server, which is started, and the
    database created, when missing (both under the data folder's lock: two processes make one of each)."""
    import psycopg

    with _lock(home):
        srv = _server(Path(home))
        with psycopg.connect(srv.get_uri("postgres"), autocommit=True) as conn:
            if conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (database,)).fetchone() is None:
                conn.execute(f'CREATE DATABASE "{database}"')
        return srv.get_uri(database).replace("postgresql://", "postgresql+psycopg://", 1)


def running_pid(home: Path) -> int | None:
    """The postmaster's pid when the data folder's server runs, else None."""
    pid_file = pgdata(home) / "postmaster.pid"
    try:
        pid = int(pid_file.read_text().splitlines()[0])
    except (FileNotFoundError, IndexError, ValueError):
        return None
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return None
    except PermissionError:  # runs as pgserver's own user (we are root, or not its owner): it lives
        pass
    return pid


def stop(home: Path, timeout_s: float = 30.0) -> bool:
    """Stop the data folder's server (a fast shutdown: SIGINT to the postmaster, as `pg_ctl -m fast stop`),
    waiting until it has ended and its pid file is gone; SIGQUIT past ``timeout_s``. Returns whether one was
    running."""
    pid = running_pid(home)
    if pid is None:
        return False
    os.kill(pid, signal.SIGINT)
    deadline = time.monotonic() + timeout_s
    while running_pid(home) is not None or alive(pid):
        if time.monotonic() > deadline:
            os.kill(pid, signal.SIGQUIT)
            deadline = time.monotonic() + 10
        time.sleep(0.1)
    url.cache_clear()
    return True
