"""The state store's tests on both backends: SQLite in FRAUDCD_HOME, or PostgreSQL (a real server, from the
pgserver wheel, one for the session)."""
from __future__ import annotations

import uuid

import pytest


@pytest.fixture(scope="session")
def pg_server(tmp_path_factory):
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


@pytest.fixture(params=["sqlite", "postgresql"])
def store(request, home, monkeypatch):
    """A fresh, empty state store: SQLite in FRAUDCD_HOME, or a new PostgreSQL database."""
    if request.param == "postgresql":
        srv = request.getfixturevalue("pg_server")
        name = f"t_{uuid.uuid4().hex[:12]}"
        srv.psql(f"CREATE DATABASE {name};")
        url = srv.get_uri(name).replace("postgresql://", "postgresql+psycopg://")
        monkeypatch.setenv("FRAUDCD_STATE_URL", url)
    return request.param
