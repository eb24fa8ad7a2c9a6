"""Outcomes that reach people: a release announces the approval request and how its run ended (shipped,
rolled back, stopped, or still open) once each, in the state store's alerts and to the webhook named by
FRAUDCD_ALERT_WEBHOOK (a real HTTP server on this machine receives it here)."""
from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pandas as pd
import pytest

DAY = "2026-03-01"
RID = f"rel-{DAY}"


@pytest.fixture
def webhook(monkeypatch):
    """A local HTTP server recording every JSON body POSTed to it; FRAUDCD_ALERT_WEBHOOK points at it."""
    received: list[dict] = []

    class Hook(BaseHTTPRequestHandler):
        def do_POST(self):
            received.append(json.loads(self.rfile.read(int(self.headers["Content-Length"]))))
            self.send_response(204)
            self.end_headers()

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Hook)
    t = threading.Thread(target=server.serve_forever, daemon=True)
    t.start()
    monkeypatch.setenv("FRAUDCD_ALERT_WEBHOOK", f"http://127.0.0.1:{server.server_port}/hook")
    yield received
    server.shutdown()
    server.server_close()


def _release(path):
    from release.orchestration.cycle import _update_release, start_release
    from release.state.registry import register_model

    m = register_model("model\n", workflow={"name": "wf"}, features=["amount"], snapshot_hash="cd" * 32,
                       code_version="t", metrics={}, at="t0", actor="trainer").id
    start_release(DAY, "cd" * 32)
    _update_release(RID, candidate_model_id=m)
    for st in path:  # the legal path
        _update_release(RID, status=st)
    return m


def test_a_stopped_release_is_announced_once_with_its_reason(home, webhook):
    from release.state.alerts import read_alerts
    from release.orchestration.cycle import _stop, announce_outcome

    _release(["trained", "evaluated"])
    _stop(RID, "Stopped by the offline contracts: FR: the policy blocks 40% more.", "t1", [])
    first = announce_outcome(RID)
    assert announce_outcome(RID) is None  # a rerun of the task pages nobody again
    [alert] = read_alerts()  # the store's row, as the webhook received it
    assert alert == first and webhook == [first] and not (home / "alerts.jsonl").exists()
    assert alert["kind"] == "release_stopped" and alert["severity"] == "warning"
    assert alert["message"] == (f"{RID} stopped before any traffic moved. Stopped by the offline contracts: "
                                "FR: the policy blocks 40% more.")
    assert alert["details"]["release_id"] == RID and alert["details"]["status"] == "stopped"


def test_a_run_that_ends_with_the_release_open_is_not_announced_as_an_outcome(home, webhook):
    from release.orchestration.cycle import announce_outcome

    _release(["trained"])
    alert = announce_outcome(RID)
    assert alert["kind"] == "release_unfinished" and "still trained" in alert["message"]
    assert [a["kind"] for a in webhook] == ["release_unfinished"]


def test_each_release_is_announced_for_itself(home, webhook):
    """Once per release, not once ever: another release's outcome is its own alert."""
    from release.state.alerts import notify_once, read_alerts

    assert notify_once("release_shipped", "rel-a", "a shipped", at="t") is not None
    assert notify_once("release_shipped", "rel-b", "b shipped", at="t") is not None
    assert notify_once("release_shipped", "rel-a", "a shipped", at="t") is None
    assert [(a["kind"], a["details"]["release_id"]) for a in webhook] == [("release_shipped", "rel-a"),
                                                                          ("release_shipped", "rel-b")]
    assert read_alerts() == webhook


def test_an_unknown_severity_is_refused(home):
    from release.state.alerts import raise_alert, read_alerts

    with pytest.raises(ValueError, match="severity 'loud' is not one of"):
        raise_alert("x", "y", at="t", severity="loud")
    assert read_alerts() == []


def test_the_approval_request_is_announced_with_where_to_answer(home, monkeypatch, webhook):
    from analysis.evaluation import Evaluation
    from release.orchestration import cycle

    _release(["trained", "evaluated", "contracts_passed"])
    cfg = home / "config"
    (cfg / "workflows").mkdir(parents=True)
    (cfg / "thresholds.yaml").write_text("automation: {auto_approve: {enabled: false, after_unedited_releases: 2}}\n")
    monkeypatch.setenv("FRAUDCD_CONFIG", str(cfg))
    Evaluation(overall={}, slices=pd.DataFrame({"slice_type": ["all"]}), recall_diff={}, operating_fpr=0.0,
               candidate_threshold=0.8,
               suggestions=pd.DataFrame({"merchant_id": ["M1", "M2"], "suggested_threshold": [0.6, 0.9],
                                         "segment": "small"})).save(cycle.release_dir(RID))
    set_id = cycle.request_threshold_approval(RID)
    cycle.request_threshold_approval(RID)  # a rerun asks nobody again
    [alert] = webhook
    assert alert["kind"] == "approval_requested" and alert["details"] == {"set_id": set_id, "release_id": RID}
    assert "2 suggested per-merchant thresholds await a decision" in alert["message"]
    assert "Required actions" in alert["message"] and "fraudcd thresholds" in alert["message"]


class _Run:
    """What the listener reads of a DAG run (Airflow's DagRun has these attributes)."""

    def __init__(self, dag_id="release", day=DAY, note=None):
        import datetime as dt

        self.dag_id, self.run_id, self.note = dag_id, f"scheduled__{day}T00:00:00+00:00", note
        self.data_interval_end = dt.datetime.fromisoformat(f"{day}T00:00:00+00:00")
        self.run_after = self.logical_date = self.data_interval_end


def test_the_run_note_says_how_the_release_ended(home):
    """The plugin's listener, on a release DAG run's end: the outcome (the alerts' words), the reason and
    the report's link; a release still open says so, and where to look when the run failed."""
    from release.orchestration import run_note
    from release.orchestration.cycle import _stop, _update_release

    run = _Run()
    run_note.on_dag_run_success(dag_run=run, msg="success")
    assert run.note == f"No release: {DAY} is not a release date (`schedule.release`, " \
                                         "config/pipeline.yaml)."
    failed = _Run()
    run_note.on_dag_run_failed(dag_run=failed, msg="task_failure")
    assert failed.note.startswith(f"No release was started for {DAY}: the run failed")

    _release(["trained"])
    run = _Run()
    run_note.on_dag_run_failed(dag_run=run, msg="task_failure")
    assert run.note == (f"**{RID}: the run ended (failed) with the release still trained.** The failed task's "
                        "log says why. No report yet.")

    _update_release(RID, status="evaluated")
    _stop(RID, "Stopped by the offline contracts: FR: the policy blocks 40% more.", "t1", [])
    _update_release(RID, report_path=str(home / "reports" / f"{RID}.html"))
    run = _Run()
    run_note.on_dag_run_success(dag_run=run, msg="success")
    assert run.note == (f"**{RID} stopped before any traffic moved.** Stopped by the offline contracts: FR: the "
                        f"policy blocks 40% more. [Release report](/fraudcd/reports/runs/{run.run_id})")


def test_the_run_note_keeps_a_persons_note_and_leaves_other_dags_alone(home):
    from release.orchestration import run_note

    _release(["trained"])
    mine = _Run(note="Rerun after the disputes backfill (Dana)")
    run_note.on_dag_run_success(dag_run=mine, msg="success")
    assert mine.note == "Rerun after the disputes backfill (Dana)"
    other = _Run(dag_id="training_set")
    run_note.on_dag_run_success(dag_run=other, msg="success")
    assert other.note is None


def test_the_run_note_listener_is_registered_by_the_plugin():
    from release.orchestration import airflow_plugin, run_note

    assert run_note in airflow_plugin.FraudCDPlugin.listeners
