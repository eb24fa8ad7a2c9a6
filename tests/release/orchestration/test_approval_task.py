"""The threshold-approval task through real Airflow (`airflow dags test`, Airflow 3's human-in-the-loop).

A small DAG with the release DAG's ids and the real ThresholdApprovalOperator runs against a state store
holding one pending threshold set, so no model is trained. Each run parks the task in AWAITING_INPUT;
the test then answers it the way a person would:

- the CLI (`fraudcd thresholds edit` + `approve`, or `reject`), which records the decision and answers
  the task through Airflow's response handler;
- the Airflow UI's path (a response written through the same handler, nothing recorded first): the task
  applies its edits and decision to the state store, naming the responder;
- nobody: the scheduler's timeout sweep (run beside `dags test`) resumes it with a timeout and the
  release stops with nothing live;
- before the task asks: it finishes without parking.
"""
from __future__ import annotations

import datetime as dt
import json
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

pytestmark = [pytest.mark.slow]

DAY = dt.date(2026, 3, 1)
RID = f"rel-{DAY.isoformat()}"

TEST_DAG = '''
"""A stand-in for the release DAG around its approval task (same dag and task ids)."""
import os
from datetime import timedelta

import pendulum
from airflow.sdk import dag, task

from release.orchestration.approval_task import ThresholdApprovalOperator


@dag(dag_id="release", schedule=timedelta(days=14), start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
     catchup=False, tags=["test"])
def release():
    @task
    def request_approval(data_interval_end=None) -> str:
        from release.orchestration.cycle import as_date, release_id_for

        return release_id_for(as_date(data_interval_end))

    approve = ThresholdApprovalOperator(
        task_id="approve_thresholds", release_task_id="request_approval", retries=0,
        response_timeout=timedelta(seconds=int(os.environ["FRAUDCD_APPROVAL_TIMEOUT_S"])))

    @task
    def after(rid: str) -> None:
        from release.orchestration.cycle import get_release

        print("RELEASE_STATUS=" + get_release(rid)["status"])

    request_approval() >> approve
    after(approve.output)


release()
'''


@pytest.fixture
def world(tmp_path, migrated_airflow_db):
    """A state store with release RID awaiting approval of a pending set (M1, M2, M3), an Airflow
    metadata database, and a DAG folder holding the stand-in DAG."""
    import shutil

    from release.state import approvals
    from release.orchestration.cycle import start_release, _update_release
    from release.orchestration.demo import cycle_env
    from release.state.registry import register_model

    home = tmp_path / "home"
    env = cycle_env(home)  # FRAUDCD_HOME of this process, too
    dags = tmp_path / "dags"
    dags.mkdir()
    (dags / "release_stand_in.py").write_text(TEST_DAG)
    env["AIRFLOW__CORE__DAGS_FOLDER"] = str(dags)
    env["FRAUDCD_APPROVAL_TIMEOUT_S"] = "600"
    db = Path(env["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"].removeprefix("sqlite:///"))
    db.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(migrated_airflow_db, db)  # what `airflow db migrate` writes there (tests/conftest.py)
    m = register_model("model\n", workflow={"name": "wf"}, features=["amount"], snapshot_hash="cd" * 32,
                       code_version="t", metrics={}, at="t0", actor="trainer").id
    start_release(DAY, "cd" * 32)
    _update_release(RID, candidate_model_id=m)
    for st in ("trained", "evaluated", "contracts_passed", "awaiting_approval"):  # the legal path
        _update_release(RID, status=st)
    sugg = pd.DataFrame({"merchant_id": ["M1", "M2", "M3"], "suggested_threshold": [0.6, 0.9, 0.7],
                         "support": [900, 500, 40], "segment": ["large", "large", "small"], "reason": "r"})
    approvals.create_set(m, RID, sugg, 0.8, at="t1", actor="fraud-cd pipeline", reason="suggested")
    return home, env, m


def _run(home, env, name, answer=None, timeout_s=240):
    from release.orchestration.demo import run_dag

    log = home / f"{name}.log"
    run_dag("release", DAY.isoformat(), env, log, timeout_s=timeout_s, release_id=RID, answer=answer)
    text = log.read_text()
    return text, [line.split("RELEASE_STATUS=")[1].split()[0] for line in text.splitlines() if "RELEASE_STATUS=" in line]


def _fraudcd(env, *args):
    return subprocess.run([str(Path(sys.executable).with_name("fraudcd")), *args], env=env, capture_output=True,
                          text=True, timeout=120)


def _hitl_rows(env):
    """(task state, asked, chosen options, responded by) of the approval task, from Airflow's metadata
    database; asked: whether the task wrote a request (a HITLDetail row)."""
    import sqlite3

    db = env["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"].removeprefix("sqlite:///")
    with sqlite3.connect(db) as con:
        return con.execute("SELECT ti.state, h.ti_id IS NOT NULL, h.chosen_options, h.responded_by "
                           "FROM task_instance ti LEFT JOIN hitl_detail h ON h.ti_id = ti.id "
                           "WHERE ti.task_id = 'approve_thresholds'").fetchall()


def test_cli_edit_then_approve_answers_the_waiting_task(world):
    from release.state import approvals
    from release.orchestration.cycle import get_release

    home, env, m = world
    said = []

    def answer():
        r = _fraudcd(env, "thresholds", "show", "--release", RID, "--json")
        said.append(json.loads(r.stdout)["airflow_request"])
        e = _fraudcd(env, "thresholds", "edit", "--release", RID, "--merchant", "M2", "--threshold", "0.85",
                     "--as", "dana", "--reason", "M2 declines good customers")
        a = _fraudcd(env, "thresholds", "approve", "--release", RID, "--as", "dana", "--reason", "reviewed")
        said.append(a.stdout)
        return e.returncode == 0 and a.returncode == 0

    _, status = _run(home, env, "cli-approve", answer)
    assert said[0]["task_id"] == "approve_thresholds" and said[0]["state"] == "awaiting_input"
    assert "answered Airflow task release.approve_thresholds" in " ".join(said[1].split())
    assert status == ["approved"] and get_release(RID)["status"] == "approved"
    assert approvals.live_thresholds(m)[1].sort_index().to_dict() == {"M1": 0.6, "M2": 0.85, "M3": 0.7}
    (state, asked, chosen, by), = _hitl_rows(env)
    assert state == "success" and asked and json.loads(chosen) == ["Approve all"] and json.loads(by)["name"] == "dana"
    decided = [a for a in __import__("release.state.store", fromlist=["audit_log"]).audit_log()
               if a["action"].startswith("thresholds_")]
    assert [(a["action"], a["actor"]) for a in decided] == [("thresholds_edited", "dana"), ("thresholds_approved", "dana")]
    # the plugin's listener, loaded by `airflow dags test` too: the run's note says where the release stands
    from release.orchestration.demo import run_notes_in

    assert list(run_notes_in(env).values()) == [f"**{RID}: the run ended (success) with the release still approved.** "
                                          "No report yet."]


def test_a_response_from_the_airflow_ui_path_is_applied_with_its_edits(world):
    from release.state import approvals
    from release.orchestration import hitl
    from release.orchestration.cycle import get_release

    home, env, m = world

    def answer():  # what the Required actions page sends: Airflow's handler, nothing recorded first
        code = ("from release.orchestration import hitl; r = hitl.respond('%s', hitl.APPROVE_SOME, user='risk-analyst', "
                "reason='M3 needs a closer look', merchants=['M1', 'M2'], edits={'M1': 0.65}); "
                "print(r['responded_by'])" % RID)
        r = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
        return r.returncode == 0 and r.stdout.strip().endswith("risk-analyst")

    _, status = _run(home, env, "ui-approve-some", answer)
    assert status == ["approved"] and get_release(RID)["status"] == "approved"
    glob, per = approvals.live_thresholds(m)
    assert glob == 0.8 and per.sort_index().to_dict() == {"M1": 0.65, "M2": 0.9}  # M3: the global applies
    s = approvals.latest_set(RID)
    assert (s["decided_by"], s["reason"]) == ("risk-analyst (via Airflow)", "M3 needs a closer look")
    items = approvals.set_items(s["id"]).set_index("merchant_id")
    assert items["outcome"].to_dict() == {"M1": "approved", "M2": "approved", "M3": "not_approved"}
    assert items.loc["M1", "edited"] and not items.loc["M2", "edited"]
    assert hitl.open_request(RID) is None


def test_a_response_that_cannot_be_applied_is_refused_and_asked_again(world):
    """Issue 17, item 3: a response from the UI with an edit out of range, then one naming a merchant that
    was not suggested, each change nothing; the task does not fail, it asks again and says why; the
    next, valid, response is applied."""
    from release.state import approvals
    from release.orchestration import hitl
    from release.state.alerts import read_alerts
    from release.orchestration.cycle import get_release
    from release.state.store import audit_log

    home, env, m = world
    responses = [(["M1", "M2"], {"M1": 1.5}), (["M1", "ZZ"], {}), (["M1", "M2"], {"M1": 0.65})]  # bad, bad, good
    seen = []

    def answer():
        merchants, edits = responses[len(seen)]
        seen.append(get_release(RID)["status"])  # what the store says when the person is asked
        code = ("from release.orchestration import hitl; hitl.respond(%r, hitl.APPROVE_SOME, user='risk-analyst', reason='r', "
                "merchants=%r, edits=%r)" % (RID, merchants, edits))
        r = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
        assert r.returncode == 0, r.stderr
        return len(seen) == len(responses)  # the run helper answers again while the task waits again

    text, status = _run(home, env, "ui-bad-then-good", answer)
    assert seen == ["awaiting_approval"] * 3  # a refused response moved nothing
    assert status == ["approved"] and get_release(RID)["status"] == "approved", text[-3000:]
    assert approvals.live_thresholds(m)[1].sort_index().to_dict() == {"M1": 0.65, "M2": 0.9}
    refused = [a["details"] for a in read_alerts() if a["kind"] == "response_refused"]
    assert [r["responder"] for r in refused] == ["risk-analyst"] * 2
    assert "threshold 1.5 is out of range" in refused[0]["why"] and "'ZZ' is not among" in refused[1]["why"]
    assert text.count("Asking again") == 2
    decided = [a for a in audit_log() if a["action"].startswith("thresholds_")]
    assert {a["actor"] for a in decided} == {"risk-analyst (via Airflow)"}, decided  # the valid response only
    assert sorted(a["action"] for a in decided) == ["thresholds_approved", "thresholds_edited"], decided
    assert hitl.open_request(RID) is None


def test_reject_through_the_cli_stops_the_release(world):
    from release.state import approvals
    from release.orchestration.cycle import get_release

    home, env, m = world

    def answer():
        return _fraudcd(env, "thresholds", "reject", "--release", RID, "--as", "dana",
                        "--reason", "M2 far too loose").returncode == 0

    _, status = _run(home, env, "cli-reject", answer)
    rel = get_release(RID)
    assert status == ["stopped"] and rel["stop_reason"] == "Thresholds rejected by dana: M2 far too loose"
    assert approvals.live_thresholds(m) is None
    (state, asked, chosen, by), = _hitl_rows(env)
    assert state == "success" and asked and json.loads(chosen) == ["Reject"]


def test_no_decision_within_the_response_timeout_expires_the_set(world):
    from release.state import approvals
    from release.orchestration.cycle import get_release
    from release.state.store import audit_log

    home, env, m = world
    env["FRAUDCD_APPROVAL_TIMEOUT_S"] = "3"
    text, status = _run(home, env, "timeout", answer=None)
    assert _hitl_rows(env) == [("success", 1, None, None)]  # it asked, and nobody answered
    assert f"No decision on the thresholds of {RID} within 0:00:03: the release stops." in text
    assert status == ["stopped"]
    rel = get_release(RID)
    assert rel["stop_reason"] == ("Thresholds not decided: no decision on the suggested thresholds within 0:00:03; "
                                  "nothing went live.")
    assert approvals.latest_set(RID)["status"] == "expired" and approvals.live_thresholds(m) is None
    last = [a for a in audit_log() if a["action"] == "thresholds_expired"]
    # the row carries the release's data date as its own field and the wall clock as its time
    assert [(a["actor"], a["logical_date"][:10]) for a in last] == [("fraud-cd pipeline", DAY.isoformat())]
    assert all(a["at"][:10] >= dt.date.today().isoformat() for a in last)


def test_a_decision_recorded_before_the_task_asks_is_taken_without_parking(world):
    from release.orchestration.cycle import get_release

    home, env, m = world
    r = _fraudcd(env, "thresholds", "approve", "--release", RID, "--as", "dana", "--reason", "early")
    assert r.returncode == 0 and "no Airflow approval task is waiting" in " ".join(r.stdout.split())
    text, status = _run(home, env, "decided-early")
    assert status == ["approved"] and get_release(RID)["status"] == "approved"
    assert _hitl_rows(env) == [("success", 0, None, None)]  # finished without asking


def test_the_harness_sweep_waits_for_the_shortest_response_timeout_and_a_run_over_before_pays_nothing():
    """`airflow dags test` runs no scheduler, so the harness sweeps beside it, from the shortest response timeout
    on (no request can be past its deadline before). A run over by then: the sweep ends without importing
    Airflow; a run whose timeout can come first gets its sweep (the timeout test above: 3 s)."""
    import threading
    import time

    from release.core.settings import waits

    parent = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(1.5)"])
    threading.Thread(target=parent.wait, daemon=True).start()  # reaped when it ends, as the harness's poll does
    code = ("import sys, time\nfrom release.orchestration.hitl import sweep_beside\nt = time.monotonic()\n"
            f"sweep_beside({parent.pid}, every=0.2, max_seconds=60, first_after=30)\n"
            "print(round(time.monotonic() - t, 1), 'airflow' in sys.modules)")
    t0 = time.monotonic()
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    took, imported = r.stdout.split()
    assert imported == "False" and float(took) < 5 and time.monotonic() - t0 < 20, r.stdout + r.stderr
    # the harness's own choice: the shortest of the two waits a person can leave unanswered
    w = waits({"FRAUDCD_APPROVAL_TIMEOUT_S": "600", "FRAUDCD_DECISION_TIMEOUT_S": "45"})
    assert (w.approval_s, w.decision_s, w.rollout_s) == (600, 45, 30 * 24 * 3600)
    with pytest.raises(ValueError, match="FRAUDCD_DECISION_TIMEOUT_S"):
        waits({"FRAUDCD_DECISION_TIMEOUT_S": "soon"})
