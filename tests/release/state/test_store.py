"""The state store: audit rows need who and why; the log keeps its order; a change and its record commit
together."""
from __future__ import annotations

import json

import pytest
import sqlalchemy as sa

from release.core.settings import paths, state_url
from release.state.store import audit_log, engine, models, transaction, write_audit


def audit(conn, i, entity="thing:1", actor="alice", reason="because", **kw):
    write_audit(conn, at=f"t{i}", actor=actor, action=f"act{i}", entity=entity, reason=reason, **kw)


def test_the_store_lives_in_the_home_folder(home):
    assert state_url() == f"sqlite:///{home.resolve() / 'state.db'}"
    assert paths().home == home.resolve()
    with transaction() as conn:
        audit(conn, 1)
    assert (home / "state.db").exists()


@pytest.mark.parametrize("actor", ["", "   "])
def test_an_audit_row_needs_an_actor(home, actor):
    with pytest.raises(ValueError, match="Every audited change needs a named actor \\(who\\)"), transaction() as conn:
        audit(conn, 1, actor=actor)
    assert audit_log() == []


@pytest.mark.parametrize("reason", ["", "\t"])
def test_an_audit_row_needs_a_reason(home, reason):
    message = r"Every audited change needs a reason \(why\)\. Got none for act1 on thing:1"
    with pytest.raises(ValueError, match=message), transaction() as conn:
        audit(conn, 1, reason=reason)
    assert audit_log() == []


def test_audit_log_keeps_the_order_of_writing(home):
    # timestamps deliberately out of order: the log is ordered by when rows were appended, not by `at`
    for i in (3, 1, 2):
        with transaction() as conn:
            audit(conn, i, entity=f"thing:{i}")
    assert [r["action"] for r in audit_log()] == ["act3", "act1", "act2"]
    assert [r["action"] for r in audit_log(limit=2)] == ["act1", "act2"]


def test_audit_log_filters_by_entity_prefix(home):
    with transaction() as conn:
        audit(conn, 1, entity="model:m-1")
        audit(conn, 2, entity="tag:production")
        audit(conn, 3, entity="model:m-2")
    assert [r["entity"] for r in audit_log(entity_prefix="model:")] == ["model:m-1", "model:m-2"]


def test_before_and_after_are_stored_as_json(home):
    with transaction() as conn:
        audit(conn, 1, before={"b": 2, "a": 1}, after={"pct": 5.0})
        audit(conn, 2)
    first, second = audit_log()
    assert json.loads(first["before_json"]) == {"a": 1, "b": 2} and json.loads(first["after_json"]) == {"pct": 5.0}
    assert second["before_json"] is None and second["after_json"] is None


def test_a_change_and_its_audit_row_commit_together_or_not_at_all(home):
    row = {"id": "m-x", "sha256": "0" * 64, "path": "/nowhere", "workflow": "wf", "workflow_json": "{}",
           "snapshot_hash": "s", "code_version": "v", "features_json": "[]", "metrics_json": "{}", "created_at": "t",
           "created_by": "alice"}
    with pytest.raises(ValueError, match="named actor"), transaction() as conn:
        conn.execute(models.insert().values(**row))
        audit(conn, 1, actor="")  # refused: the insert above must be undone with it
    with engine().connect() as conn:
        assert conn.execute(sa.select(sa.func.count()).select_from(models)).scalar() == 0
    with transaction() as conn:
        conn.execute(models.insert().values(**row))
        audit(conn, 2)
    with engine().connect() as conn:
        assert conn.execute(sa.select(models.c.id)).scalars().all() == ["m-x"]
    assert [r["action"] for r in audit_log()] == ["act2"]
