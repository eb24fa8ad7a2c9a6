"""Where a data folder's stores are, and moving a SQLite state store into PostgreSQL (`fraudcd up`'s default):
every row of every table arrives, history stays append-only, new ids go on after the copied ones, the move is
audited and idempotent, and a destination holding another store is refused with nothing written.

The data folder's own PostgreSQL (release/core/local_postgres.py): started by whoever needs the store first (two
processes at once start one server), stopped by `fraudcd down`'s function, started again on demand."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid

import pandas as pd
import pytest
import sqlalchemy as sa

from release.core import local_postgres
from release.core.procs import alive
from release.core.settings import sqlite_state_url, state_url
from release.state.store import StoreError, _engine, audit_log, copy_store, metadata, write_audit, transaction

pytestmark = pytest.mark.postgres


def _populate() -> None:
    """A store that went through a release: models, tags and their history, a release, a threshold set with its
    rows, and the audit log of all of it."""
    from release.orchestration.cycle import _update_release, start_release
    from release.state import approvals
    from release.state.registry import move_tag, register_model

    a = register_model("model a\n", workflow={"name": "wf"}, features=["amount"], snapshot_hash="ab" * 32,
                       code_version="t", metrics={"auc": 0.9}, at="t0", actor="trainer").id
    b = register_model("model b\n", workflow={"name": "wf"}, features=["amount"], snapshot_hash="cd" * 32,
                       code_version="t", metrics={}, at="t1", actor="trainer").id
    move_tag("production", a, at="t2", actor="alice", reason="first")
    start_release(pd.Timestamp("2026-03-01").date(), "cd" * 32)
    _update_release("rel-2026-03-01", candidate_model_id=b, status="trained")
    approvals.create_set(b, "rel-2026-03-01", pd.DataFrame({
        "merchant_id": ["M1", "Mé 2"], "suggested_threshold": [0.6, 0.9], "support": [900, 500], "segment": "large",
        "reason": "r"}), 0.8, at="t3", actor="fraud-cd pipeline", reason="suggested")


def _rows(url: str) -> dict[str, list[tuple]]:
    out = {}
    with _engine(url, False).connect() as conn:
        for t in metadata.sorted_tables:
            rows = conn.execute(sa.select(t).order_by(*t.primary_key.columns)).all()
            out[t.name] = [tuple(r) for r in rows]
    return out


@pytest.fixture
def pg_db(pg_server):
    name = f"m_{uuid.uuid4().hex[:12]}"
    pg_server.psql(f"CREATE DATABASE {name};")
    return pg_server.get_uri(name).replace("postgresql://", "postgresql+psycopg://")


def test_a_sqlite_store_moves_into_postgres_whole_audited_and_only_once(home, monkeypatch, pg_db):
    _populate()
    src = sqlite_state_url(home)
    before = _rows(src)
    assert before["models"] and before["audit"] and before["threshold_items"]

    counts = copy_store(src, pg_db, actor="ops (fraudcd up)", reason="the stores move to PostgreSQL")
    assert counts == {t: len(r) for t, r in before.items()}
    after = _rows(pg_db)
    assert {t: r for t, r in after.items() if t != "audit"} == {t: r for t, r in before.items() if t != "audit"}
    assert after["audit"][:-1] == before["audit"]  # every audit row as it was, ids included
    assert _rows(src) == before  # the source was only read

    monkeypatch.setenv("FRAUDCD_STATE_URL", pg_db)
    moved = audit_log()[-1]
    assert moved["action"] == "store_moved" and moved["actor"] == "ops (fraudcd up)"
    assert json.loads(moved["before_json"])["store"] == str(home / "state.db")
    assert json.loads(moved["after_json"])["rows"] == counts
    # history is still append-only there, and new rows get ids after the copied ones
    with pytest.raises(sa.exc.DatabaseError, match="audit is append-only"):
        with transaction() as conn:
            conn.execute(sa.text("DELETE FROM audit"))
    with transaction() as conn:
        write_audit(conn, at="t9", actor="bob", action="probe", entity="x", reason="after the move")
    assert [r["id"] for r in audit_log()[-2:]] == [moved["id"], moved["id"] + 1]

    # a rerun (the process died after the move committed) changes nothing
    monkeypatch.delenv("FRAUDCD_STATE_URL")
    with pytest.raises(StoreError, match="already holds a store"):  # the probe row above: no longer the move's rows
        copy_store(src, pg_db, actor="ops", reason="again")


def test_a_rerun_after_the_move_committed_is_a_no_op_and_another_store_is_refused(home, pg_db, pg_server,
                                                                                   monkeypatch):
    _populate()
    src = sqlite_state_url(home)
    first = copy_store(src, pg_db, actor="ops", reason="move")
    snapshot = _rows(pg_db)
    assert copy_store(src, pg_db, actor="ops", reason="move again") == first
    assert _rows(pg_db) == snapshot  # nothing written twice

    other = f"o_{uuid.uuid4().hex[:12]}"
    pg_server.psql(f"CREATE DATABASE {other};")
    other_url = pg_server.get_uri(other).replace("postgresql://", "postgresql+psycopg://")
    from release.state.registry import register_model

    monkeypatch.setenv("FRAUDCD_STATE_URL", other_url)
    register_model("someone else's\n", workflow={"name": "wf"}, features=["x"], snapshot_hash="ef" * 32,
                   code_version="t", metrics={}, at="t0", actor="trainer")
    monkeypatch.delenv("FRAUDCD_STATE_URL")
    theirs = _rows(other_url)
    with pytest.raises(StoreError, match=r"already holds a store \(audit 1, models 1\)\. Nothing was written"):
        copy_store(src, other_url, actor="ops", reason="move")
    assert _rows(other_url) == theirs


def test_no_store_to_move_is_said_and_nothing_is_made(home, pg_db):
    from release.state.store import StoreMissing

    with pytest.raises(StoreMissing, match="No state store at"):
        copy_store(sqlite_state_url(home), pg_db, actor="ops", reason="move")
    assert not (home / "state.db").exists()


def test_the_choice_of_stores_is_read_strictly(home):
    assert local_postgres.stores_kind(home) is None and state_url() == sqlite_state_url(home)
    f = local_postgres.stores_file(home)
    for text, said in (("{not json", "not readable as the data folder's choice"),
                       ('{"kind": "mysql"}', "kind 'mysql' is not a choice of stores; allowed: postgres, sqlite"),
                       ('["postgres"]', "kind None is not a choice")):
        f.write_text(text)
        with pytest.raises(local_postgres.LocalPostgresError, match=said):
            state_url()  # never read as "SQLite, then"
    local_postgres.record_choice(home, "sqlite", "ops", "probe")
    assert state_url() == sqlite_state_url(home)
    assert json.loads(f.read_text())["by"] == "ops"


def test_the_data_folders_postgres_starts_once_for_two_processes_stops_and_starts_again(home, tmp_path):
    """Two processes that need the store at once get one server; `fraudcd down`'s stop ends it; the next one who
    needs the store starts it again, with its rows."""
    local_postgres.record_choice(home, "postgres", "ops", "probe")
    code = ("from release.core.settings import state_url\n"
            "from release.state.store import audit_log, transaction, write_audit\n"
            "with transaction() as c:\n"
            "    write_audit(c, at='t', actor='p', action='probe', entity='x', reason='two at once')\n"
            "print(state_url())\n")
    env = dict(os.environ, FRAUDCD_HOME=str(home), XDG_RUNTIME_DIR=str(tmp_path / "run"))
    env.pop("FRAUDCD_STATE_URL", None)
    procs = [subprocess.Popen([sys.executable, "-c", code], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              text=True) for _ in range(2)]
    outs = [p.communicate(timeout=120) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outs
    urls = {o[0].strip() for o in outs}
    assert len(urls) == 1 and f"host={home / 'postgres'}" in urls.pop()  # one server, on its Unix socket
    try:
        pid = local_postgres.running_pid(home)
        assert pid is not None
        assert [r["reason"] for r in audit_log()] == ["two at once", "two at once"]
        assert local_postgres.stop(home) and local_postgres.running_pid(home) is None
        assert not alive(pid)
        # on demand again (a shell's `fraudcd audit` after `fraudcd down`): the same rows
        assert [r["reason"] for r in audit_log()] == ["two at once", "two at once"]
        assert local_postgres.running_pid(home) not in (None, pid)
    finally:
        local_postgres.stop(home)
