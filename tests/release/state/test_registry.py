"""The model registry: content-derived ids, tamper detection and audited tag moves."""
from __future__ import annotations

import hashlib
import json

import pytest
import sqlalchemy as sa

from release.state.registry import RegistryError, get_model, move_tag, register_model, tag_log, tagged
from release.core.settings import paths
from release.state.store import audit_log

AT = "2026-05-01T00:00:00+00:00"


def register(text: str, workflow: str = "wf", actor: str = "trainer"):
    return register_model(text, workflow={"name": workflow, "seed": 7}, features=["amount", "hour"],
                          snapshot_hash="ab" * 32, code_version="0.1.0", metrics={"auc": 0.9}, at=AT, actor=actor)


def test_model_id_is_derived_from_the_sha256_of_the_text(home):
    text = "tree\nversion=v4\nnum_leaves=7\n"
    m = register(text)
    sha = hashlib.sha256(text.encode()).hexdigest()
    assert m.sha256 == sha and m.id == f"m-{sha[:16]}"
    assert m.path.parent == paths().models and m.path.read_text() == text
    assert m.text() == text
    assert (m.workflow, m.features, m.metrics, m.created_by) == ("wf", ["amount", "hour"], {"auc": 0.9}, "trainer")


def test_registering_the_same_bytes_twice_gives_the_same_model(home):
    first = register("same bytes\n", workflow="wf-a", actor="alice")
    again = register("same bytes\n", workflow="wf-b", actor="bob")
    assert again == first  # the first registration stands; nothing is overwritten
    assert [a["action"] for a in audit_log()] == ["register_model"]
    assert register("other bytes\n").id != first.id


def test_registration_is_audited(home):
    m = register("audited\n", actor="carol")
    (row,) = audit_log(entity_prefix="model:")
    assert row["entity"] == f"model:{m.id}" and row["actor"] == "carol" and row["at"] == AT
    assert json.loads(row["after_json"])["sha256"] == m.sha256
    assert row["reason"]


def test_tampered_bytes_are_refused_on_load(home):
    m = register("original model\n")
    m.path.write_text("original model\nplus one sneaky tree\n")
    with pytest.raises(RegistryError, match=f"Model {m.id}: the bytes at .* do not match the registered hash"):
        get_model(m.id).text()
    with pytest.raises(RegistryError, match="do not match the registered hash"):
        m.booster()


def test_unknown_model_id(home):
    with pytest.raises(RegistryError, match="No model with id 'm-0000' in the registry"):
        get_model("m-0000")
    assert get_model("m-0000", missing_ok=True) is None


def test_tags_move_with_history_and_audit(home):
    a, b = register("model a\n"), register("model b\n")
    assert tagged("production") is None
    move_tag("production", a.id, at="t1", actor="alice", reason="first production model")
    move_tag("production", b.id, at="t2", actor="bob", reason="b is better")
    assert tagged("production") == b
    hist = [(h["tag"], h["model_id"], h["previous_model_id"], h["actor"], h["reason"]) for h in tag_log()]
    assert hist == [("production", a.id, None, "alice", "first production model"),
                    ("production", b.id, a.id, "bob", "b is better")]
    moves = audit_log(entity_prefix="tag:")
    assert [(json.loads(r["before_json"]), json.loads(r["after_json"]), r["actor"]) for r in moves] == [
        ({"model_id": None}, {"model_id": a.id}, "alice"),
        ({"model_id": a.id}, {"model_id": b.id}, "bob")]


def test_moving_a_tag_to_where_it_already_is_records_nothing(home):
    a = register("model a\n")
    move_tag("candidate", a.id, at="t1", actor="alice", reason="new candidate")
    move_tag("candidate", a.id, at="t2", actor="alice", reason="again")
    assert len(tag_log()) == 1 and len(audit_log(entity_prefix="tag:")) == 1


def test_clearing_a_tag(home):
    a = register("model a\n")
    move_tag("shadow", a.id, at="t1", actor="alice", reason="shadow it")
    move_tag("shadow", None, at="t2", actor="alice", reason="done")
    assert tagged("shadow") is None
    assert tag_log()[-1]["previous_model_id"] == a.id and tag_log()[-1]["model_id"] is None


def test_unknown_tag_is_refused(home):
    a = register("model a\n")
    with pytest.raises(RegistryError, match="Unknown tag 'champion'; allowed: production, candidate, shadow, previous"):
        move_tag("champion", a.id, at="t1", actor="alice", reason="x")
    with pytest.raises(RegistryError, match="Unknown tag 'champion'"):
        tagged("champion")
    assert tag_log() == []


def test_a_tag_cannot_point_at_an_unregistered_model_and_nothing_is_recorded(home):
    register("model a\n")
    with pytest.raises(sa.exc.IntegrityError):
        move_tag("production", "m-doesnotexist0000", at="t1", actor="alice", reason="typo")
    assert tagged("production") is None
    assert tag_log() == [] and audit_log(entity_prefix="tag:") == []


def test_a_tag_move_without_a_reason_is_refused_and_changes_nothing(home):
    a = register("model a\n")
    with pytest.raises(ValueError, match="needs a reason"):
        move_tag("production", a.id, at="t1", actor="alice", reason=" ")
    assert tagged("production") is None and tag_log() == []


@pytest.mark.parametrize("statement", [
    "UPDATE models SET sha256 = 'ff' WHERE id = :id",
    "UPDATE models SET path = '/elsewhere' WHERE id = :id",
    "DELETE FROM models WHERE id = :id",
])
def test_the_store_refuses_to_repoint_or_drop_a_registered_model(home, statement):
    from release.state.store import engine

    m = register("immutable bytes\n")
    with pytest.raises(sa.exc.DatabaseError, match="models is append-only"):
        with engine().begin() as conn:
            conn.execute(sa.text(statement), {"id": m.id})
    assert get_model(m.id) == m and get_model(m.id).text() == "immutable bytes\n"


@pytest.mark.parametrize("table", ["audit", "tag_history"])
def test_the_audit_log_and_tag_history_cannot_be_rewritten(home, table):
    from release.state.store import engine

    a = register("model a\n")
    move_tag("production", a.id, at="t1", actor="alice", reason="first")
    for statement in (f"UPDATE {table} SET actor = 'mallory'", f"DELETE FROM {table}"):
        with pytest.raises(sa.exc.DatabaseError, match=f"{table} is append-only"):
            with engine().begin() as conn:
                conn.execute(sa.text(statement))
    assert [r["actor"] for r in audit_log(entity_prefix="tag:")] == ["alice"]
