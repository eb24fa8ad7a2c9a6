"""The state store's tests on both backends: SQLite in FRAUDCD_HOME, or PostgreSQL (a real server, from the
pgserver wheel, one for the session: ``pg_server`` of tests/conftest.py)."""
from __future__ import annotations

import uuid

import pytest


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
