"""Alerts in the state store (release/state/alerts.py): one row each, read in the order raised; what is
announced once is one row however many times, or processes, announce it; an alerts.jsonl that is not
wholly alerts stops migration 0006 with every bad line named, and nothing imported or renamed."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import sqlalchemy as sa
from typer.testing import CliRunner

from release.state.alerts import count_alerts, notify_once, raise_alert, read_alerts
from release.state.store import alerts, engine

ROOT = Path(__file__).resolve().parents[3]


def _rows() -> list[tuple]:
    with engine().connect() as conn:
        return [tuple(r) for r in conn.execute(sa.select(alerts.c.kind, alerts.c.once_key, alerts.c.release_id,
                                                         alerts.c.message).order_by(alerts.c.id))]


def test_notify_once_twice_is_one_row_and_one_announcement(home, caplog):
    caplog.set_level("INFO", logger="fraudcd.alerts")
    first = notify_once("release_shipped", "rel-a", "rel-a shipped", at="2026-03-01T10:00:00+00:00")
    assert notify_once("release_shipped", "rel-a", "rel-a shipped, again", at="2026-03-01T11:00:00+00:00") is None
    assert first == {"at": "2026-03-01T10:00:00+00:00", "kind": "release_shipped", "severity": "info",
                     "message": "rel-a shipped", "details": {"release_id": "rel-a"}}
    assert _rows() == [("release_shipped", "rel-a", "rel-a", "rel-a shipped")]
    announced = [r.getMessage() for r in caplog.records if r.name == "fraudcd.alerts"]  # not other loggers' INFO
    assert announced == ["ALERT release_shipped: rel-a shipped"]
    # the key is per kind: another kind with the same key is its own announcement
    assert notify_once("release_stopped", "rel-a", "rel-a stopped", at="2026-03-01T12:00:00+00:00") is not None
    assert count_alerts() == 2


def test_raise_alert_repeats_and_only_notify_once_is_refused(home):
    for pct in (1, 5):
        raise_alert("ramp_inconclusive", f"rel-a: {pct}% stayed inconclusive", at="2026-03-01T10:00:00+00:00",
                    severity="warning", details={"release_id": "rel-a", "pct": pct})
    assert [(k, key) for k, key, *_ in _rows()] == [("ramp_inconclusive", None)] * 2
    a = notify_once("monitoring_score_drift", "2026-03-02:score_drift:score:all", "score drifted", at="2026-03-02",
                    key_field="key", details={"day": "2026-03-02"})
    assert a["details"] == {"day": "2026-03-02", "key": "2026-03-02:score_drift:score:all"}
    assert _rows()[-1][:3] == ("monitoring_score_drift", "2026-03-02:score_drift:score:all", None)


def test_alerts_read_oldest_first_or_newest_first_and_the_newest_n(home):
    for i in range(5):
        raise_alert("k", f"m{i}", at=f"2026-03-0{9 - i}T00:00:00+00:00",  # times out of order: raised order rules
                    details={"release_id": f"rel-{i % 2}"})
    assert [a["message"] for a in read_alerts()] == ["m0", "m1", "m2", "m3", "m4"]
    assert [a["message"] for a in read_alerts(2)] == ["m3", "m4"]
    assert [a["message"] for a in read_alerts(2, newest_first=True)] == ["m4", "m3"]
    assert [a["message"] for a in read_alerts(newest_first=True)] == ["m4", "m3", "m2", "m1", "m0"]
    assert [a["message"] for a in read_alerts(release_id="rel-1")] == ["m1", "m3"]
    assert read_alerts(0) == [] and count_alerts() == 5
    with pytest.raises(ValueError, match="The 'limit' parameter of read_alerts must be None or an int >= 0. Got -1"):
        read_alerts(-1)


@pytest.mark.parametrize("call, message", [
    (lambda: raise_alert("x", "y", at="t", severity="loud"), "severity 'loud' is not one of"),
    (lambda: raise_alert("", "y", at="t"), "An alert's kind must be text of 1 to 100 characters"),
    (lambda: raise_alert("x" * 101, "y", at="t"), "An alert's kind must be text of 1 to 100 characters"),
    (lambda: raise_alert("x", "y", at="t" * 41), "An alert's at must be text of 1 to 40 characters"),
    (lambda: notify_once("x", None, "y", at="t"), "notify_once needs a key"),
])
def test_an_alert_the_table_cannot_hold_is_refused_before_anything_is_written(home, call, message):
    with pytest.raises(ValueError, match=message):
        call()
    assert read_alerts() == []


RACER = r"""
import sys, time
from pathlib import Path
from release.state.alerts import notify_once
from release.state.store import engine

name, gate, n, racers = sys.argv[1], Path(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
engine()  # opened before the start
(gate / name).touch()
while len(list(gate.iterdir())) < racers:  # every racer ready: go together
    time.sleep(0.001)
for i in range(n):
    a = notify_once("release_shipped", f"rel-{i}", f"rel-{i} shipped ({name})", at="2026-03-01T00:00:00+00:00")
    print(i, int(a is not None), flush=True)
"""


def test_processes_racing_to_announce_the_same_releases_announce_each_once(store, home, tmp_path):
    """Three processes announce the same 30 releases at the same moment: each release is one row, announced
    by exactly one of them (the one whose row it is), on SQLite and on PostgreSQL."""
    read_alerts()  # the store exists before the race
    gate, n, racers = tmp_path / "gate", 30, 3
    gate.mkdir()
    env = dict(os.environ, PYTHONPATH=str(ROOT))  # FRAUDCD_HOME and FRAUDCD_STATE_URL as this test's
    procs = {f"p{j}": subprocess.Popen([sys.executable, "-c", RACER, f"p{j}", str(gate), str(n), str(racers)],
                                       env=env, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for j in range(racers)}
    won: dict[int, list[str]] = {i: [] for i in range(n)}
    for name, p in procs.items():
        out, err = p.communicate(timeout=240)
        assert p.returncode == 0, err
        lines = [line.split() for line in out.splitlines()]
        assert [int(i) for i, _ in lines] == list(range(n))
        for i, ok in lines:
            if ok == "1":
                won[int(i)].append(name)
    assert all(len(w) == 1 for w in won.values()), won
    rows = _rows()
    assert sorted(key for _, key, *_ in rows) == sorted(f"rel-{i}" for i in range(n))
    assert {key: msg for _, key, _, msg in rows} == {f"rel-{i}": f"rel-{i} shipped ({won[i][0]})" for i in range(n)}


# ---------------------------------------------------------------- migration 0006: alerts.jsonl that is not all alerts

GOOD = ('{"at": "2026-03-01T09:00:00+00:00", "details": {"release_id": "rel-1", "set_id": 1}, '
        '"kind": "approval_requested", "message": "rel-1: thresholds await a decision", "severity": "warning"}')
GOOD2 = GOOD.replace("approval_requested", "release_shipped").replace("thresholds await a decision", "shipped")


def test_an_alerts_file_with_lines_that_are_not_alerts_stops_the_upgrade_and_names_each_line(home):
    """Every line that is not an alert is named (number, what is wrong, its start); nothing is imported,
    the store stays at 0005 and the file as it was. With the lines repaired, the upgrade imports them all."""
    from release.cli.main import app
    from release.state.store import migrate, store_revision, writer_engine

    assert migrate(writer_engine(), "0005") == "0005"
    lines = [GOOD, GOOD[:40], "[1, 2]", GOOD.replace('"warning"', '"loud"'), GOOD.replace('"kind"', '"kinds"'),
             GOOD2[:-25]]  # the last one cut short by a crash, without its newline
    f = home / "alerts.jsonl"
    f.write_text("\n".join(lines))
    before = f.read_bytes()
    r = CliRunner().invoke(app, ["db", "--to", "head", "--as", "ops"])
    said = " ".join(r.output.split())
    assert r.exit_code == 2, r.output
    assert f"Cannot import {f} into the state store's alerts table (migration 0006): 5 of its lines are not an " \
           "alert: line 2: not JSON (Unterminated string" in said
    assert "line 3: a JSON list, not an object: '[1, 2]'" in said
    assert "line 4: its severity 'loud' is not one of error, warning, info" in said
    assert "line 5: it has fields the table has no column for: 'kinds'" in said
    assert "line 6: not JSON" in said and "Nothing was imported or changed" in said
    assert "then run `fraudcd db --to head` again" in said
    assert store_revision() == "0005" and f.read_bytes() == before and not (home / "alerts.jsonl.imported").exists()
    with writer_engine().connect() as conn:
        assert not sa.inspect(conn).has_table("alerts")

    f.write_text("\n".join([GOOD, GOOD2]) + "\n")  # the operator's repair: the torn and the bad lines gone
    r = CliRunner().invoke(app, ["db", "--to", "head", "--as", "ops"])
    assert r.exit_code == 0 and "schema revision 0006" in r.output, r.output
    assert [a["kind"] for a in read_alerts()] == ["approval_requested", "release_shipped"]
    assert (home / "alerts.jsonl.imported").exists() and not f.exists()


def test_a_downgrade_never_overwrites_an_alerts_file_that_is_there(home):
    """Back to 0005 the rows go to alerts.jsonl; one already there (written by something else) is kept and
    the downgrade refused, the store still at 0006 with its alerts."""
    from release.cli.main import app
    from release.state.store import store_revision

    raise_alert("ramp_guardrail_breach", "rel-1: rolled back", at="2026-03-01T10:00:00+00:00")
    (home / "alerts.jsonl").write_text("someone's file\n")
    r = CliRunner().invoke(app, ["db", "--to", "0005", "--as", "ops", "--reason", "run 0005 code"])
    assert r.exit_code == 2 and f"Cannot move the alerts back to {home / 'alerts.jsonl'}" in " ".join(r.output.split())
    assert store_revision() == "0006" and [a["message"] for a in read_alerts()] == ["rel-1: rolled back"]
    assert (home / "alerts.jsonl").read_text() == "someone's file\n"


def test_no_code_but_the_alerts_module_writes_the_alerts_table():
    """One driver: alerts are written only by release/state/alerts.py (and imported once by migration 0006)."""
    import re

    writes = re.compile(r"\balerts\s*\.\s*(update|insert|delete)\(|insert\(alerts\)"
                        r"|(INSERT INTO|UPDATE|DELETE FROM) alerts\b")
    files = sorted((ROOT / "release").rglob("*.py")) + sorted((ROOT / "dags").rglob("*.py"))
    writers = [str(p.relative_to(ROOT)) for p in files if writes.search(p.read_text())]
    assert writers == ["release/state/alerts.py"]
