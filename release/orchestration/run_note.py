"""The outcome of a release in its DAG run's note: a green run does not say whether the release shipped.

An Airflow listener (registered by the plugin, release.orchestration.airflow_plugin, so every Airflow with
fraud-cd installed loads it): when a ``release`` DAG run ends, successful or failed, its note (the run's
"Note" in the UI, ``note`` in REST v2) says what became of the release, why, and where its report is:

- shipped, rolled back or stopped (the words of release.orchestration.cycle.OUTCOMES, the alerts' too), the
  stop reason, and the report's link (the plugin's ``/fraudcd/reports/runs/{run_id}``);
- a run that ended with its release still open (a failed task): that status, and that the failed task's log
  says why;
- a run of a day the cadence does not fall on: no release.

Where it runs: in the process that decides the run's end. In the scheduler the run object is in the
scheduler's session, and the note rides on the same commit as the run's state; ``airflow dags test`` (the
harness) hands over a run object outside any session, so the note is written in a session of its own.
Either way through Airflow's model (``DagRun.note``), no SQL of ours. A note a person already wrote is kept: the
outcome is not written over it.

Light at import (Airflow loads plugins in every process): the project's modules are imported in the hook.
"""
from __future__ import annotations

import logging

from airflow.listeners import hookimpl

DAG_ID = "release"
log = logging.getLogger(__name__)


def note_for(release: dict | None, run_id: str, run_state: str, as_of: str) -> str:
    """The note of a ``release`` DAG run that ended in ``run_state`` (success, failed), about ``release``
    (a row of the releases table; None: no release was started for the run's date)."""
    from release.state.status import Status
    from release.orchestration.cycle import OUTCOMES, outcome_reason
    from release.orchestration.report_link import REPORTS_PREFIX

    if release is None:
        if run_state == "success":
            return f"No release: {as_of} is not a release date (`schedule.release`, config/pipeline.yaml)."
        return f"No release was started for {as_of}: the run failed before it (see the failed task's log)."
    rid, status = release["id"], Status(release["status"])
    kind, _, what = OUTCOMES.get(status, (None, None, None))
    why = outcome_reason(release)
    link = f"[Release report]({REPORTS_PREFIX}/runs/{run_id})" if release.get("report_path") else "No report yet."
    if kind is None:
        head = f"**{rid}: the run ended ({run_state}) with the release still {status.value}.**"
        tail = " The failed task's log says why." if run_state == "failed" else ""
        return f"{head}{tail} {link}"
    return f"**{rid} {what}.**" + (f" {why}" if why else "") + f" {link}"


def _release_of_run(dag_run) -> tuple[dict | None, str]:
    from release.core.dates import release_id_for
    from release.state.releases import get_release

    end = dag_run.data_interval_end or dag_run.run_after or dag_run.logical_date
    as_of = end.date()
    try:
        return get_release(release_id_for(as_of)), as_of.isoformat()
    except KeyError:  # no release was started for the run's date
        return None, as_of.isoformat()


def _write(dag_run, run_state: str) -> None:
    if (dag_run.note or "").strip():
        return  # a person's note stands
    release, as_of = _release_of_run(dag_run)
    dag_run.note = note_for(release, dag_run.run_id, run_state, as_of)


def _annotate(dag_run, run_state: str) -> None:
    if dag_run.dag_id != DAG_ID:
        return
    try:
        from sqlalchemy import inspect

        state = inspect(dag_run, raiseerr=False)
        if state is None or state.session is not None or state.transient:
            _write(dag_run, run_state)  # the scheduler's own run object: the note rides on its commit
            return
        # `airflow dags test` hands its listeners a run object that belongs to no session: the note is written
        # through Airflow's model in a session of its own (nothing else of the run is being written meanwhile)
        from airflow.models.dagrun import DagRun
        from airflow.utils.session import create_session

        with create_session() as session:
            run = session.query(DagRun).filter(DagRun.dag_id == dag_run.dag_id,
                                               DagRun.run_id == dag_run.run_id).one()
            _write(run, run_state)
    except Exception:  # noqa: BLE001 - a note must never fail the scheduler's loop; say it in its log
        log.exception("fraud-cd: could not write the outcome into the note of %s %s", dag_run.dag_id,
                      dag_run.run_id)


@hookimpl
def on_dag_run_success(dag_run, msg: str) -> None:
    _annotate(dag_run, "success")


@hookimpl
def on_dag_run_failed(dag_run, msg: str) -> None:
    _annotate(dag_run, "failed")


def run_notes(dag_id: str = DAG_ID) -> dict[str, str | None]:
    """{run id: note} of the DAG's runs, for the `airflow dags test` harness (`make demo`, the end-to-end
    tests), which has no API server: read through Airflow's model on the harness's metadata database.
    Airflow for real: ``GET /api/v2/dags/release/dagRuns`` gives each run's ``note``."""
    from release.orchestration.hitl import _configure

    if not _configure():
        return {}
    from airflow.models.dagrun import DagRun
    from airflow.utils.session import create_session

    with create_session() as session:
        return {r.run_id: r.note for r in session.query(DagRun).filter(DagRun.dag_id == dag_id)}
