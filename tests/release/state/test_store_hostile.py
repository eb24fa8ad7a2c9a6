"""The state store and the CLI under hostile input and failing machines (issue 16, items 6-10 and 12):
schema moves are audited and never drop the append-only guarantees; who acted is recorded from the
environment beside the stated name, and nobody may state the pipeline's name; reads never need the
write lock, nor wait for a writer; a missing, empty or corrupt store is an error unless asked to create
one; data never reaches the terminal as markup; audit times are the wall clock, the data date apart."""
from __future__ import annotations

import datetime as dt
import json
import sqlite3
import subprocess
import sys
import textwrap
import time

import pytest
import sqlalchemy as sa

from release.rollout import ramp
from release.state import registry
from release.state.store import audit_log, os_user, transaction, write_audit
from tests.release.cli.runner import fraudcd, said


@pytest.fixture
def wide(monkeypatch):
    """A terminal wide enough that table cells are not wrapped (what is printed is then easy to read back)."""
    from release.cli import common

    monkeypatch.setattr(common.console, "width", 400)


def register(text: str) -> str:
    return registry.register_model(text, workflow={"name": "wf"}, features=["amount"], snapshot_hash="ab" * 32,
                                   code_version="t", metrics={}, at="t0", actor="trainer").id


@pytest.fixture
def shadowing(home):
    prod, cand = register("prod\n"), register("cand\n")
    registry.move_tag("production", prod, at="t0", actor="setup", reason="initial production model")
    ramp.start_shadow("rel-1", cand, at="t1", actor="release", reason="thresholds approved")
    return prod, cand


# ---------------------------------------------------------------- 6: schema moves


@pytest.mark.parametrize("args, message", [
    (["db", "--to", "0001", "--as", "ops", "--reason", "old code"],
     "Refusing to move the state store to revision 0001: below 0002 the database no longer refuses UPDATE and "
     "DELETE on the audit log"),
    (["db", "--to", "base", "--as", "ops", "--reason", "old code"], "Cannot migrate the state store to 'base'"),
    (["db", "--to", "0003"], "say who you are with --as NAME"),
    (["db", "--to", "0003", "--as", "ops"], "give a reason with --reason"),
    (["db", "--to", "0002", "--as", "fraud-cd pipeline", "--reason", "x"], "is reserved"),
])
def test_a_schema_move_back_needs_who_and_why_and_never_goes_below_the_append_only_revision(shadowing, args, message):
    before = audit_log()
    r = fraudcd(*args)
    assert r.exit_code == 2, r.output
    assert message in said(r)
    assert "schema revision 0006" in fraudcd("db").output and audit_log() == before  # nothing moved


def test_a_schema_move_back_is_audited_and_history_stays_append_only(shadowing):
    r = fraudcd("db", "--to", "0002", "--as", "ops (dba)", "--reason", "run the 0002 release's code")
    assert r.exit_code == 0 and "schema revision 0002" in r.output
    row = audit_log()[-1]
    assert (row["action"], row["entity"], row["actor"], row["reason"]) == (
        "schema_downgrade", "schema", "ops (dba)", "run the 0002 release's code")
    assert (json.loads(row["before_json"]), json.loads(row["after_json"])) == ({"revision": "0006"}, {"revision": "0002"})
    assert (row["os_user"], row["via"]) == (os_user(), "cli")
    for statement in ("UPDATE audit SET actor = 'mallory'", "DELETE FROM audit", "DELETE FROM tag_history",
                      "UPDATE models SET path = '/elsewhere'"):
        with pytest.raises(sa.exc.DatabaseError, match="is append-only"), transaction() as conn:
            conn.execute(sa.text(statement))


def test_a_deleted_last_audit_id_is_never_reused(shadowing, home):
    """Even by someone who drops the trigger with the sqlite3 shell: the gap shows."""
    last = audit_log()[-1]["id"]
    con = sqlite3.connect(home / "state.db")
    con.execute("DROP TRIGGER audit_no_delete")
    con.execute("DELETE FROM audit WHERE id = ?", (last,))
    con.commit()
    con.close()
    with transaction() as conn:
        write_audit(conn, at="t", actor="mallory", action="act", entity="thing", reason="hide")
    assert audit_log()[-1]["id"] == last + 1  # not `last` again: a gap where the deleted row was


# ---------------------------------------------------------------- 7: who


@pytest.mark.parametrize("name", ["fraud-cd pipeline", "Fraud-CD Pipeline", "fraud cd pipeline", "fraudcd bootstrap",
                                  "fraud-cd ramp controller", "ＦＲＡＵＤ-ＣＤ pipeline", "  fraud_cd  ",
                                  "fr\u0430ud-cd pipeline", "fraud-\u0441d pipeline", "fr\u03b1ud-cd pipeline"])
def test_a_person_cannot_state_the_pipelines_name(shadowing, name):
    n = len(audit_log())
    r = fraudcd("ramp", "set", "5", "--as", name, "--reason", "x")
    assert r.exit_code == 2 and "is reserved: names beginning with 'fraud-cd' belong to fraud-cd's own automation" in said(r)
    assert len(audit_log()) == n


@pytest.mark.parametrize("name, message", [
    ("ana\nfraud-cd pipeline", "printable characters"), ("ana\x1b[2J", "printable characters"),
    ("a" * 201, "at most 200 printable characters"),
])
def test_a_stated_name_is_one_printable_line(shadowing, name, message):
    r = fraudcd("ramp", "set", "5", "--as", name, "--reason", "x")
    assert r.exit_code == 2 and message in said(r)


def test_every_audit_row_records_the_os_user_and_the_channel_beside_the_stated_name(shadowing):
    assert fraudcd("ramp", "set", "5", "--as", "ana", "--reason", "by hand").exit_code == 0
    row = audit_log()[-1]
    assert (row["actor"], row["os_user"], row["via"]) == ("ana", os_user(), "cli")
    assert json.loads(row["context_json"])["command"] == "fraudcd ramp"
    first = audit_log()[0]  # written by library code (the fixture), not the CLI
    assert (first["os_user"], first["via"]) == (os_user(), "process")


def test_a_row_written_in_an_airflow_task_records_the_dag_run_and_owner(home, monkeypatch):
    env = {"AIRFLOW_CTX_DAG_ID": "release", "AIRFLOW_CTX_TASK_ID": "run_shadow", "AIRFLOW_CTX_DAG_OWNER": "fraud-team",
           "AIRFLOW_CTX_DAG_RUN_ID": "manual__2026-05-31", "AIRFLOW_CTX_TRY_NUMBER": "2"}
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    with transaction() as conn:
        write_audit(conn, at="t", actor="fraud-cd pipeline", action="act", entity="thing", reason="task")
    row = audit_log()[-1]
    assert row["via"] == "airflow" and json.loads(row["context_json"])["airflow"] == {
        "dag_id": "release", "task_id": "run_shadow", "dag_owner": "fraud-team", "dag_run_id": "manual__2026-05-31",
        "try_number": "2"}


def test_a_service_records_the_token_subject(home):
    from release.state.store import acting

    with acting("service", token_subject="scoring-client-7"), transaction() as conn:
        write_audit(conn, at="t", actor="svc", action="act", entity="thing", reason="r")
    row = audit_log()[-1]
    assert row["via"] == "service" and json.loads(row["context_json"])["token_subject"] == "scoring-client-7"


@pytest.mark.parametrize("args", [["rollback"], ["ramp", "rollback"], ["ramp", "pause"]])
def test_a_change_without_as_says_whom_it_recorded(shadowing, args):
    r = fraudcd(*args, "--reason", "3 a.m. page")
    assert r.exit_code == 0, r.output
    assert f"no --as given: recorded as {os_user()!r} (your OS login)" in said(r)
    row = audit_log()[-1]
    assert row["actor"] == os_user() and json.loads(row["context_json"])["actor_source"] == "os_user"


# ---------------------------------------------------------------- 8: reads never need the write lock


def _downgraded(home):
    assert fraudcd("db", "--create", "--as", "ana").exit_code == 0
    assert fraudcd("db", "--to", "0003", "--as", "ana", "--reason", "older code").exit_code == 0


@pytest.mark.parametrize("args", [["status"], ["audit"], ["ramp", "status"], ["verdicts", "rel-1"],
                                  ["thresholds", "show", "--release", "rel-1"],
                                  ["ramp", "set", "5", "--as", "ana", "--reason", "x"]])
def test_a_store_at_an_older_revision_is_not_migrated_on_open(home, args):
    _downgraded(home)
    r = fraudcd(*args)
    assert r.exit_code == 2, r.output
    assert ("is at schema revision 0003; this fraud-cd reads and writes revision 0006. Nothing was read or changed. "
            "Run `fraudcd db --to head`") in said(r)
    assert "schema revision 0003" in fraudcd("db").output


WRITER = textwrap.dedent("""
    import sqlite3, sys, time
    con = sqlite3.connect(sys.argv[1], isolation_level=None)
    con.execute("BEGIN IMMEDIATE")
    con.execute("INSERT INTO ramp_steps (release_id, step, pct, outcome, rows, candidate_rows, details_json, at) "
                "VALUES ('rel-x', 1, 1.0, 'passed', 0, 0, '{}', 't')")
    print("holding", flush=True)
    time.sleep(float(sys.argv[2]))
    con.execute("COMMIT")
""")


def test_reads_go_on_while_another_process_holds_the_write_lock(shadowing, home):
    writer = subprocess.Popen([sys.executable, "-c", WRITER, str(home / "state.db"), "20"], stdout=subprocess.PIPE,
                              text=True)
    try:
        assert writer.stdout.readline().strip() == "holding"
        for args in (["status", "--json"], ["audit", "--json"], ["ramp", "status", "--json"], ["db"]):
            t0 = time.monotonic()
            r = fraudcd(*args)
            assert r.exit_code == 0, (args, r.output)
            assert time.monotonic() - t0 < 5, args  # not the 30 s busy timeout
        assert json.loads(fraudcd("ramp", "status", "--json").output)["state"] == "shadow"
    finally:
        writer.kill()
        writer.wait()


# ---------------------------------------------------------------- 9: missing, empty, corrupt


def _page_of_garbage(path):
    path.write_bytes(b"SQLite format 3\x00" + bytes(range(256)) * 16)


STORES = {
    "missing": (lambda p: None, "No state store at {path}: the file does not exist"),
    "empty": (lambda p: p.write_bytes(b""), "No state store at {path}: the file is empty"),
    "garbage": (lambda p: p.write_bytes(b"\x00garbage bytes, not a database" * 100),
                "The state store {path} is not a SQLite database: a SQLite file begins with"),
    "damaged": (_page_of_garbage, "The state store {path} is damaged"),
    "directory": (lambda p: p.mkdir(), "The state store {path} is a directory"),
}


@pytest.mark.parametrize("kind", STORES)
@pytest.mark.parametrize("args", [["status"], ["audit"], ["ramp", "status"], ["db"],
                                  ["thresholds", "show", "--release", "rel-1"],
                                  ["rollback", "--as", "ana", "--reason", "x"]])
def test_a_missing_empty_or_corrupt_store_is_bad_input(home, kind, args):
    path = home / "state.db"
    make, message = STORES[kind]
    make(path)
    before = path.read_bytes() if path.is_file() else None
    r = fraudcd(*args)
    assert r.exit_code == 2, r.output
    assert message.format(path=path) in said(r) and r.exception is None or isinstance(r.exception, SystemExit)
    assert "Traceback" not in r.output
    assert (path.read_bytes() if path.is_file() else None) == before  # nothing created, nothing written


@pytest.mark.parametrize("kind, code", [("missing", 0), ("empty", 0), ("garbage", 2), ("damaged", 2)])
def test_db_create_starts_a_store_only_where_none_is(home, kind, code):
    STORES[kind][0](home / "state.db")
    r = fraudcd("db", "--create", "--as", "ana", "--reason", "new deployment")
    assert r.exit_code == code, r.output
    if code == 2:
        assert f"The state store {home / 'state.db'} is" in said(r)
    else:
        assert "created a new state store" in said(r)
        assert [(a["action"], a["actor"]) for a in audit_log()] == [("store_created", "ana")]
        assert fraudcd("status").exit_code == 0


def test_a_state_url_into_a_missing_folder_creates_nothing(home, monkeypatch, tmp_path):
    monkeypatch.setenv("FRAUDCD_STATE_URL", f"sqlite:///{tmp_path / 'typo' / 'state.db'}")
    r = fraudcd("status")
    assert r.exit_code == 2 and "No state store at" in said(r) and not (tmp_path / "typo").exists()


# ---------------------------------------------------------------- 10: markup in data prints as it is


@pytest.mark.parametrize("name", ["[/]", "[bold red]ana[/bold red]", "ana :smile: [link=http://x]y"])
def test_markup_in_a_name_prints_literally_everywhere(shadowing, wide, name):
    r = fraudcd("ramp", "set", "5", "--as", name, "--reason", f"reason {name}")
    assert r.exit_code == 0, r.output
    assert f"last change by {name}: reason {name}" in said(r)
    for args in (["ramp", "status"], ["audit", "--limit", "3"], ["status"]):
        r = fraudcd(*args)
        assert r.exit_code == 0, (args, r.output)
    assert name in said(fraudcd("ramp", "status"))
    assert name in fraudcd("audit", "--limit", "1").output


def test_audit_shows_the_latest_rows_and_refuses_a_limit_below_one(shadowing):
    """`fraudcd audit --limit N`: the latest N rows, oldest first; 0 or a negative number was every row, or every
    row but the first, in silence: now a clear error."""
    import json

    from release.state.store import audit_log

    for pct in ("5", "10"):
        assert fraudcd("ramp", "set", pct, "--as", "ana", "--reason", "step").exit_code == 0
    ids = [a["id"] for a in audit_log()]
    assert [a["id"] for a in audit_log(limit=2)] == ids[-2:]
    assert [r["id"] for r in json.loads(fraudcd("audit", "--limit", "2", "--json").stdout)] == ids[-2:]
    for bad in ("0", "-1"):
        r = fraudcd("audit", "--limit", bad)
        assert r.exit_code == 2 and "greater than or equal to 1" in said(r)
    with pytest.raises(ValueError, match="at least 1"):
        audit_log(limit=0)


def test_a_merchant_named_as_markup_prints_literally(home, wide):
    import pandas as pd

    from release.state.approvals import create_set

    m = register("model\n")
    with transaction() as conn:
        registry.set_tag(conn, "production", m, at="t0", actor="test", reason="fixture")
    sugg = pd.DataFrame({"merchant_id": ["[bold red]M1", "M2[/]"], "suggested_threshold": [0.6, 0.9],
                         "current_threshold": [0.5, 0.8], "support": [900, 500], "shrunk": [False, False],
                         "segment": ["[/]", "large"], "policy": "keep_block_rate", "reason": ["[red]r1", "r2"]})
    create_set(m, "rel-1", sugg, 0.8, at="t1", actor="fraud-cd pipeline", reason="suggested")
    r = fraudcd("thresholds", "edit", "--release", "rel-1", "--merchant", "[bold red]M1", "--threshold", "0.7",
                "--as", "[/]", "--reason", "[b]why")
    assert r.exit_code == 0, r.output
    assert "[bold red]M1: 0.6000 -> 0.7000" in said(r) and "by [/]" in said(r)
    r = fraudcd("thresholds", "show", "--release", "rel-1")
    assert r.exit_code == 0, r.output
    assert "[bold red]M1" in r.output and "M2[/]" in r.output and "[red]r1" in r.output
    assert fraudcd("audit").exit_code == 0


# ---------------------------------------------------------------- 12: audit time is the wall clock


def test_pipeline_rows_carry_the_wall_clock_and_the_data_date_apart(shadowing, wide):
    from release.orchestration import cycle
    from release.state.store import releases

    rid = "rel-2026-05-31"
    with transaction() as conn:
        conn.execute(releases.insert().values(id=rid, as_of="2026-05-31", status="backtested",
                                              candidate_model_id=shadowing[1], incumbent_bootstrap=False,
                                              updated_at="t"))
    assert fraudcd("ramp", "rollback", "--as", "ana", "--reason", "make room").exit_code == 0
    n = len(audit_log())
    before = dt.datetime.now(dt.timezone.utc).replace(microsecond=0)
    cycle.deploy_candidate(rid)  # what the release DAG's deploy task does
    assert cycle.get_release(rid)["status"] == "shadow"
    rows = audit_log()
    new = rows[n:]
    from release.rollout.driver import ROLLOUT

    assert new and {r["actor"] for r in new} == {ROLLOUT}
    assert {r["logical_date"] for r in new} == {"2026-05-31T00:00:00+00:00"}
    assert all(dt.datetime.fromisoformat(r["at"]) >= before for r in new)  # when it happened, not the data date
    assert [r["at"] for r in rows[n - 1:]] == sorted(r["at"] for r in rows[n - 1:])  # later rows sort later
    assert rows[n - 1]["logical_date"] is None  # a person's action has no data date
    assert "ramp_shadow (data date 2026-05-31)" in said(fraudcd("audit", "--limit", "1"))


def test_the_rollout_times_a_stage_from_the_wall_clock(home):
    from release.rollout import driver as rollout
    from release.orchestration.cycle import PIPELINE, at_of
    from release.state.store import logical_date, utc_now

    cand = register("cand\n")
    registry.move_tag("production", register("prod\n"), at="t0", actor="setup", reason="initial")
    with logical_date(at_of(dt.date(2026, 5, 31))):  # what the release DAG's shadow task does
        ramp.start_shadow("rel-2026-05-31", cand, at=utc_now(), actor=PIPELINE, reason="shadow")
    now = dt.datetime.now(dt.timezone.utc)
    since = rollout._utc(ramp.stage_started_at(), now)
    assert 0 <= (now - since).total_seconds() < 60  # the shadow began just now, not on the data date


def _cli(home, *args, timeout=120):
    import os

    env = {**os.environ, "FRAUDCD_HOME": str(home)}
    return subprocess.run([sys.executable, "-m", "release.cli.main", *args], env=env, capture_output=True, text=True,
                          timeout=timeout)


def test_a_damaged_data_page_is_a_clear_error_not_a_traceback(shadowing, home):
    """The store's header and schema are fine, the audit table's own page is garbage: every read says the
    store is damaged, exit 2, no traceback."""
    con = sqlite3.connect(home / "state.db")
    con.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    page_size = con.execute("PRAGMA page_size").fetchone()[0]
    root = con.execute("SELECT rootpage FROM sqlite_master WHERE name = 'audit'").fetchone()[0]
    con.close()
    with open(home / "state.db", "r+b") as f:
        f.seek((root - 1) * page_size)
        f.write(b"\xff" * 64)
    for args in (["audit"], ["status"], ["ramp", "status"]):
        r = _cli(home, *args)
        assert r.returncode == 2, (args, r.stdout, r.stderr)
        assert "the state store at" in r.stderr and "is damaged or unreadable" in r.stderr
        assert "Traceback" not in r.stderr


# The CLI as `python -m release.cli.main` runs it, with the state store's SQLite busy timeout (30 s, passed to
# sqlalchemy.create_engine as connect_args) cut to 1 s: a writer that cannot get the lock gets the same
# "database is locked" error from SQLite, 29 s sooner. No setting exposes the timeout (connect_args wins
# over a URL's ?timeout=), so the one call is wrapped in the child process.
CLI_SHORT_BUSY_TIMEOUT = textwrap.dedent("""
    import runpy, sys
    import sqlalchemy
    create_engine = sqlalchemy.create_engine
    def short_busy_timeout(url, **kw):
        if "timeout" in kw.get("connect_args", {}):
            kw["connect_args"] = {**kw["connect_args"], "timeout": 1.0}
        return create_engine(url, **kw)
    sqlalchemy.create_engine = short_busy_timeout
    runpy.run_module("release.cli.main", run_name="__main__", alter_sys=True)
""")


def test_a_change_while_another_process_holds_the_store_says_busy_not_a_traceback(shadowing, home):
    import os

    holder = subprocess.Popen([sys.executable, "-c", textwrap.dedent(f"""
        import sqlite3, time
        con = sqlite3.connect({str(home / 'state.db')!r}, isolation_level=None)
        con.execute("BEGIN IMMEDIATE")
        print("holding", flush=True)
        time.sleep(60)
    """)], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "holding"
        r = subprocess.run([sys.executable, "-c", CLI_SHORT_BUSY_TIMEOUT, "ramp", "pause", "--as", "oncall",
                            "--reason", "test"], env={**os.environ, "FRAUDCD_HOME": str(home)},
                           capture_output=True, text=True, timeout=90)
    finally:
        holder.kill()
        holder.wait()
    assert r.returncode == 1, (r.stdout, r.stderr)
    assert "the state store is busy" in r.stderr and "Traceback" not in r.stderr


def test_a_store_made_by_a_library_caller_under_umask_022_follows_the_permission_policy(tmp_path):
    """An Airflow task or a library caller never calls the CLI's umask: the store's files still come out
    no wider than 0640."""
    import os

    home = tmp_path / "lib-home"
    code = ("import os; os.umask(0o022)\n"
            "from release.state.store import transaction, write_audit\n"
            "with transaction() as c:\n"
            "    write_audit(c, at='2026-12-01T00:00:00+00:00', actor='t', action='x', entity='y', reason='r')\n")
    r = subprocess.run([sys.executable, "-c", code], env={**os.environ, "FRAUDCD_HOME": str(home)},
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    modes = {p.name: p.stat().st_mode & 0o777 for p in home.glob("state.db*")}
    assert modes and all(m & ~0o640 == 0 for m in modes.values()), {k: oct(v) for k, v in modes.items()}


def test_control_characters_never_reach_the_terminal(shadowing, wide):
    """A --reason with an ESC sequence is refused, and so is one from a library caller (the audit's own check);
    one already stored (written before that check, or by another tool) prints escaped, not as a live
    terminal sequence."""
    from release.state.store import audit

    r = fraudcd("ramp", "pause", "--as", "oncall", "--reason", "ok\x1b[31m\x1b]0;pwned\x07")
    assert r.exit_code == 2 and "A reason must be printable text: it holds the control character '\\x1b'" in said(r)
    with pytest.raises(ValueError, match="A reason must be printable text"), transaction() as c:
        write_audit(c, at="2026-12-01T00:00:00+00:00", actor="lib", action="note", entity="x",
                    reason="stored\x1b[31mRED")
    with transaction() as c:
        c.execute(audit.insert().values(at="2026-12-01T00:00:00+00:00", actor="lib", action="note", entity="x",
                                        reason="stored\x1b[31mRED"))
    r = fraudcd("audit")
    assert r.exit_code == 0 and "\x1b" not in r.output and "stored\\x1b[31mRED" in r.output


def test_a_library_caller_never_starts_a_store_at_a_named_url(home, monkeypatch, tmp_path):
    """An Airflow task with FRAUDCD_STATE_URL pointing at a wrong place fails, instead of running the
    release on a new, empty store."""
    from release.state.store import StoreMissing

    monkeypatch.setenv("FRAUDCD_STATE_URL", f"sqlite:///{tmp_path / 'typo.db'}")
    with pytest.raises(StoreMissing, match=r"No state store at .*typo\.db \(FRAUDCD_STATE_URL\)"):
        ramp.current()
    assert not (tmp_path / "typo.db").exists()
