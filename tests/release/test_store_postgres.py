"""The state store on PostgreSQL (a real server, from the pgserver wheel): the registry, append-only
history and serialized state changes behave as on SQLite."""
from __future__ import annotations

import threading
import uuid

import pytest
import sqlalchemy as sa

from release import ramp
from release.registry import get_model, move_tag, register_model, tag_log, tagged
from release.store import audit_log, transaction, write_audit


@pytest.fixture(scope="module")
def pg_server(tmp_path_factory):
    import pgserver

    srv = pgserver.get_server(tmp_path_factory.mktemp("pg"), cleanup_mode="stop")
    yield srv
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


def register(text):
    return register_model(text, workflow={"name": "wf"}, features=["amount"], snapshot_hash="ab" * 32,
                          code_version="0.1.0", metrics={}, at="t0", actor="trainer").id


def test_registry_tags_and_audit(store):
    a, b = register("model a\n"), register("model b\n")
    assert register("model a\n") == a  # the same bytes are the same model
    move_tag("production", a, at="t1", actor="alice", reason="first")
    move_tag("production", b, at="t2", actor="bob", reason="better")
    assert tagged("production").id == b and get_model(a).text() == "model a\n"
    assert [(h["model_id"], h["previous_model_id"]) for h in tag_log()] == [(a, None), (b, a)]
    assert [r["actor"] for r in audit_log(entity_prefix="tag:")] == ["alice", "bob"]


@pytest.mark.parametrize("table, statement", [
    ("models", "UPDATE models SET sha256 = 'ff'"), ("models", "DELETE FROM models"),
    ("audit", "UPDATE audit SET actor = 'mallory'"), ("audit", "DELETE FROM audit"),
    ("tag_history", "DELETE FROM tag_history"),
])
def test_history_is_append_only(store, table, statement):
    a = register("model a\n")
    move_tag("production", a, at="t1", actor="alice", reason="first")
    with pytest.raises(sa.exc.DatabaseError, match=f"{table} is append-only"):
        with transaction() as conn:
            conn.execute(sa.text(statement))
    assert get_model(a).text() == "model a\n" and len(audit_log()) == 2 and len(tag_log()) == 1


def test_a_ramp_control_waits_for_a_change_in_flight_then_sees_it_and_does_nothing(store):
    prod, cand = register("prod\n"), register("cand\n")
    move_tag("production", prod, at="t0", actor="setup", reason="initial")
    ramp.start_shadow("rel-1", cand, at="t1", actor="release", reason="shadow")
    seen = ramp.current()  # what on call read before pressing the button
    holding, done, outcome = threading.Event(), threading.Event(), {}

    def other_change():  # another state change, committed while on call's control is waiting
        with transaction() as conn:
            write_audit(conn, at="t2", actor="controller", action="ramp_set", entity="ramp",
                        before=None, after={"pct": 1}, reason="step 1")
            holding.set()
            done.wait(2)  # hold the transaction open

    t = threading.Thread(target=other_change)
    t.start()
    holding.wait(5)

    def control():
        try:
            outcome["result"] = ramp.set_pct(50, at="t3", actor="oncall", reason="push", expect=seen)
        except ramp.RampConflict as e:
            outcome["conflict"] = str(e)

    c = threading.Thread(target=control)
    c.start()
    c.join(0.5)
    assert c.is_alive()  # serialized: it waits for the change in flight
    done.set()
    t.join(5)
    c.join(30)
    assert "conflict" in outcome and "changed since it was read" in outcome["conflict"]
    assert ramp.current()["pct"] == 0.0
