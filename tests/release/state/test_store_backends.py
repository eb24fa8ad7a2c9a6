"""The state store on SQLite and on PostgreSQL (a real server, from the pgserver wheel): the registry,
append-only history, serialized state changes and Alembic migrations behave the same on both."""
from __future__ import annotations

import json
import threading

import pytest
import sqlalchemy as sa

from release.rollout import ramp
from release.state.registry import get_model, move_tag, register_model, tag_log, tagged
from release.state.store import audit_log, transaction, write_audit


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


# ---------------------------------------------------------------- migrations


def _compare(url):
    from alembic.autogenerate import compare_metadata
    from alembic.runtime.migration import MigrationContext

    from release.state.store import VERSION_TABLE, metadata

    with sa.create_engine(url).connect() as conn:
        ctx = MigrationContext.configure(conn, opts={"version_table": VERSION_TABLE})
        return ctx.get_current_revision(), compare_metadata(ctx, metadata)


def test_a_new_store_is_migrated_to_head_and_matches_the_code(store):
    from release.core.settings import state_url
    from release.state.store import engine

    engine()
    revision, diffs = _compare(state_url())
    assert revision == "0006" and diffs == []  # every table and column the code declares, nothing else


def test_a_store_made_before_migrations_is_stamped_then_upgraded_and_keeps_its_rows(store):
    from release.core.settings import state_url
    from release.state.store import StoreNeedsMigration, engine, metadata, migrate, models

    url = state_url()
    if url.startswith("sqlite:///"):
        from pathlib import Path
        Path(url.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
    old = sa.create_engine(url)
    metadata.create_all(old)  # what the first releases did, with no version table and no triggers
    with old.begin() as conn:
        conn.execute(models.insert().values(id="m-1", sha256="ab", path="p", workflow="wf", workflow_json="{}",
                                            snapshot_hash="cd", code_version="0.1", features_json="[]",
                                            metrics_json="{}", created_at="t0", created_by="someone"))
        conn.execute(sa.text("UPDATE models SET path = 'q'"))  # nothing refused yet
    old.dispose()
    with pytest.raises(StoreNeedsMigration, match="was made before migrations existed.*fraudcd db --to head"):
        engine()  # opening never migrates
    assert migrate(sa.create_engine(url), "head") == "0006"
    assert _compare(url)[0] == "0006"
    with pytest.raises(sa.exc.DatabaseError, match="models is append-only"):
        with transaction() as conn:
            conn.execute(sa.text("UPDATE models SET path = 'r'"))
    with engine().connect() as conn:
        assert conn.execute(sa.text("SELECT path FROM models WHERE id = 'm-1'")).scalar() == "q"
    # never below the revision that made history append-only; back to it (audited) and up again
    eng = sa.create_engine(url)
    with pytest.raises(ValueError, match="Refusing to move the state store to revision 0001"):
        migrate(eng, "0001", actor="ops", reason="try")
    with pytest.raises(ValueError, match=r"needs a named actor"):
        migrate(eng, "0002")
    assert migrate(eng, "0002", actor="ops", reason="run 0002 code") == "0002"
    with pytest.raises(sa.exc.DatabaseError, match="models is append-only"), eng.begin() as conn:
        conn.execute(sa.text("UPDATE models SET path = 's'"))
    assert migrate(eng, "head", actor="ops", reason="back to head") == "0006"
    eng.dispose()
    moves = [(a["action"], a["actor"], json.loads(a["after_json"])) for a in audit_log(entity_prefix="schema")]
    assert moves == [("schema_downgrade", "ops", {"revision": "0002"}), ("schema_upgrade", "ops", {"revision": "0006"})]


def test_fraudcd_db_shows_the_revision_goes_back_and_refuses_an_unknown_one(home):
    from typer.testing import CliRunner

    from release.cli.main import app

    runner = CliRunner()
    r = runner.invoke(app, ["db"])
    assert r.exit_code == 2 and "No state store at" in r.output and "fraudcd db --create" in " ".join(r.output.split())
    assert runner.invoke(app, ["db", "--create", "--as", "ana"]).exit_code == 0
    r = runner.invoke(app, ["db"])
    assert r.exit_code == 0 and "schema revision 0006" in r.output
    r = runner.invoke(app, ["db", "--to", "0003", "--as", "ana", "--reason", "run the previous release's code"])
    assert r.exit_code == 0 and "schema revision 0003" in r.output
    r = runner.invoke(app, ["db", "--to", "0009"])
    assert r.exit_code == 2 and "Cannot migrate the state store to '0009'" in r.output
    assert "schema revision 0003" in runner.invoke(app, ["db"]).output


def test_a_store_that_already_has_the_triggers_but_no_version_table_migrates_cleanly(store):
    """Stores made by the commit that introduced the triggers, before migrations: 0002 is idempotent."""
    from release.core.settings import state_url
    from release.state.store import VERSION_TABLE, engine, migrate

    url = state_url()
    eng = sa.create_engine(url) if not url.startswith("sqlite:///") else None
    if eng is None:
        from pathlib import Path
        Path(url.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
        eng = sa.create_engine(url)
    assert migrate(eng, "head") == "0006"
    with eng.begin() as conn:
        conn.execute(sa.text(f"DROP TABLE {VERSION_TABLE}"))
    assert migrate(eng, "head") == "0006"
    eng.dispose()
    engine()
    assert _compare(url)[0] == "0006"
    register("model a\n")  # an audit row for the trigger to refuse to delete
    with pytest.raises(sa.exc.DatabaseError, match="audit is append-only"):
        with transaction() as conn:
            conn.execute(sa.text("DELETE FROM audit"))


EFFECT_COLUMNS = ["effect", "effect_lo", "effect_hi", "allowed_lo", "allowed_hi", "effect_unit"]


def test_a_store_at_0004_gains_the_verdict_effect_columns_and_its_verdicts_read_none(store):
    """Migration 0005 on a store whose verdicts were written by code of 0004: six nullable columns, NULL on
    the rows already there, the schema the code declares; back to 0004 (audited) they go, up again they
    come back."""
    from release.core.settings import state_url
    from release.state.store import engine, migrate, verdicts

    url = state_url()
    if url.startswith("sqlite:///"):
        from pathlib import Path
        Path(url.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
    eng = sa.create_engine(url)
    assert migrate(eng, "0004") == "0004"

    def columns() -> list[str]:
        with eng.connect() as conn:
            return [c["name"] for c in sa.inspect(conn).get_columns("verdicts")]

    assert not set(EFFECT_COLUMNS) & set(columns())
    with eng.begin() as conn:
        conn.execute(sa.text("INSERT INTO verdicts (release_id, stage, contract, kind, gate, slice_type, slice, "
                             "verdict, candidate_value, sentence, on_insufficient) VALUES ('rel-1', 'offline', 'c', "
                             "'slice_recall_regression', true, 'country', 'GB', 'fail', 0.41, 'GB fell.', 'stop')"))
    assert migrate(eng, "head") == "0006"
    assert columns()[-6:] == EFFECT_COLUMNS and _compare(url) == ("0006", [])
    engine()  # opens: the store is at the code's revision
    with eng.connect() as conn:
        row = conn.execute(sa.select(verdicts)).one()._mapping
    assert (row["slice"], row["candidate_value"]) == ("GB", 0.41) and [row[c] for c in EFFECT_COLUMNS] == [None] * 6
    assert migrate(eng, "0004", actor="ops", reason="run 0004 code") == "0004"
    assert not set(EFFECT_COLUMNS) & set(columns())
    assert migrate(eng, "head") == "0006" and _compare(url) == ("0006", [])
    eng.dispose()


def _legacy_line(kind, message, at, severity, details):
    """One line as fraud-cd up to 0005 appended it to alerts.jsonl (release/state/alerts.py of 0005)."""
    alert = {"at": at, "kind": kind, "severity": severity, "message": message, "details": details}
    return json.dumps(alert, sort_keys=True, default=str) + "\n"


DRIFT_KEY = "2026-03-02:feature_drift:amount:FR"
LEGACY = [  # what 0005 wrote: notify_once's keys in details (release_id, or monitoring's key), raise_alert's rows
    ("approval_requested", "rel-1: 2 thresholds await a decision", "2026-03-01T09:00:00+00:00", "warning",
     {"set_id": 1, "release_id": "rel-1"}),
    ("ramp_inconclusive", "rel-1: shadow stayed inconclusive", "2026-03-01T10:00:00+00:00", "warning",
     {"release_id": "rel-1", "pct": 0}),
    ("ramp_inconclusive", "rel-1: step 5% stayed inconclusive", "2026-03-01T11:00:00+00:00", "warning",
     {"release_id": "rel-1", "pct": 5}),
    ("monitoring_feature_drift", "amount in country FR drifted", "2026-03-02T06:00:00+00:00", "warning",
     {"key": DRIFT_KEY, "day": "2026-03-02", "slice": "FR"}),
    ("release_shipped", "rel-1 shipped. Report: /r/rel-1.html", "2026-03-03T08:00:00+00:00", "info",
     {"release_id": "rel-1", "status": "promoted"}),
]


def test_a_store_at_0005_imports_alerts_jsonl_and_a_rerun_does_not_announce_again(store, home):
    """Migration 0006 on a store that ran with alerts.jsonl: every line in order with its own time, the file
    renamed; notify_once's keys come along (what was announced stays announced), raise_alert's kinds repeat;
    back to 0005 (audited) the rows return to alerts.jsonl as 0005 wrote them, up again they are imported
    again, beside the first import's file."""
    from release.core.settings import state_url
    from release.state.alerts import notify_once, raise_alert, read_alerts
    from release.state.store import alerts, engine, migrate

    url = state_url()
    if url.startswith("sqlite:///"):
        from pathlib import Path
        Path(url.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
    eng = sa.create_engine(url)
    assert migrate(eng, "0005") == "0005"
    text = "".join(_legacy_line(*a) for a in LEGACY[:3]) + "\n" + "".join(
        _legacy_line(*a) for a in LEGACY[3:])  # a blank line, as 0005's reader skipped
    (home / "alerts.jsonl").write_text(text)
    assert migrate(eng, "head") == "0006" and _compare(url) == ("0006", [])
    engine()
    want = [{"at": at, "kind": k, "severity": s, "message": m, "details": d} for k, m, at, s, d in LEGACY]
    assert read_alerts() == want
    assert not (home / "alerts.jsonl").exists() and (home / "alerts.jsonl.imported").read_text() == text
    with eng.connect() as conn:
        keys = conn.execute(sa.select(alerts.c.kind, alerts.c.once_key, alerts.c.release_id)
                            .order_by(alerts.c.id)).all()
    assert [tuple(k) for k in keys] == [("approval_requested", "rel-1", "rel-1"),
                                        ("ramp_inconclusive", "rel-1", "rel-1"),  # as 0005's notify_once read it
                                        ("ramp_inconclusive", None, "rel-1"),
                                        ("monitoring_feature_drift", DRIFT_KEY, None),
                                        ("release_shipped", "rel-1", "rel-1")]
    # a rerun after the upgrade: announced already, whichever key field
    assert notify_once("approval_requested", "rel-1", "again", at="2026-03-04T00:00:00+00:00") is None
    assert notify_once("release_shipped", "rel-1", "again", at="2026-03-04T00:00:00+00:00") is None
    assert notify_once("monitoring_feature_drift", DRIFT_KEY, "again", at="2026-03-04T00:00:00+00:00",
                       key_field="key") is None
    shipped = notify_once("release_shipped", "rel-2", "rel-2 shipped", at="2026-03-05T00:00:00+00:00")
    breach = raise_alert("ramp_inconclusive", "rel-1: step 25% stayed inconclusive", at="2026-03-05T01:00:00+00:00",
                         severity="warning", details={"release_id": "rel-1", "pct": 25})
    assert read_alerts() == want + [shipped, breach]
    assert [a["message"] for a in read_alerts(release_id="rel-1")][-2:] == ["rel-1 shipped. Report: /r/rel-1.html",
                                                                            breach["message"]]

    assert migrate(eng, "0005", actor="ops", reason="run 0005 code") == "0005"
    with eng.connect() as conn:
        assert not sa.inspect(conn).has_table("alerts")
    back = (home / "alerts.jsonl").read_text()
    assert back == "".join(_legacy_line(*a) for a in LEGACY) + "".join(
        _legacy_line(a["kind"], a["message"], a["at"], a["severity"], a["details"]) for a in (shipped, breach))
    assert migrate(eng, "head") == "0006"
    assert read_alerts() == want + [shipped, breach]
    assert (home / "alerts.jsonl.imported.2").read_text() == back and not (home / "alerts.jsonl").exists()
    assert notify_once("release_shipped", "rel-2", "again", at="2026-03-06T00:00:00+00:00") is None
    eng.dispose()


def test_the_revisions_read_from_the_migration_files_are_alembics_walk(tmp_path, monkeypatch):
    """store.revisions() reads each migration's revision and down_revision from its text, so that opening the
    store does not import alembic; it is alembic's own walk of the same folder. A history that is not one line
    (here: two revisions after the first, a branch) is not read that way but left to alembic's walk."""
    import shutil
    from pathlib import Path

    from alembic.script import ScriptDirectory

    from release.state import store

    def alembic_walk():
        return tuple(reversed([r.revision for r in ScriptDirectory.from_config(store._alembic_config())
                               .walk_revisions()]))

    store.revisions.cache_clear()
    try:
        assert store.revisions() == alembic_walk() and len(alembic_walk()) >= 6
        assert store.head_revision() == alembic_walk()[-1]

        fake = tmp_path / "state" / "store.py"  # a copy of the migrations, with a branch
        shutil.copytree(Path(store.__file__).parent / "migrations", fake.parent / "migrations")
        (fake.parent / "migrations" / "versions" / "9999_branch.py").write_text(
            'revision = "9999"\ndown_revision = "0001"\n\n\ndef upgrade():\n    pass\n')
        monkeypatch.setattr(store, "__file__", str(fake))
        store.revisions.cache_clear()
        assert "9999" in alembic_walk() and store.revisions() == alembic_walk()
    finally:
        store.revisions.cache_clear()
