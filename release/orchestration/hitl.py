"""The Airflow side of threshold approval and rollout questions, for the CLI and the `airflow dags test` harness.

The release DAG's ``approve_thresholds`` task is a human-in-the-loop task (release.orchestration.approval_task): it
parks in AWAITING_INPUT with a request (a ``HITLDetail`` in Airflow) until a response arrives; the ``rollout``
task asks the same way. A person answers in the Airflow UI (Required actions) or from a terminal with
`fraudcd thresholds approve|reject` or `fraudcd ramp ...`; the CLI records the decision in the state store,
then answers the waiting task.

Two ways to reach Airflow, chosen by what runs:

- **Airflow for real** (`fraudcd up`, or any API server named by ``FRAUDCD_AIRFLOW_URL``): the REST API
  only (release.orchestration.airflow_api): ``GET /api/v2/dags/release/dagRuns/~/hitlDetails`` finds the
  waiting request, ``PATCH .../taskInstances/{task_id}/{map_index}/hitlDetails`` answers it, as the user of
  the caller's token (Airflow records that user as the responder, whatever name was typed). No metadata
  database, no route function, no raw SQL.
- **The `airflow dags test` harness** (`make demo`, the end-to-end tests): there is no API server, so the
  answer goes through Airflow's own response handler, the function behind that PATCH endpoint, in-process on
  the harness's metadata database (one transaction: the response, who, when, and the task resumed).

The response deadline of a parked task is enforced by the scheduler's AWAITING_INPUT timeout sweep.
`airflow dags test` runs no scheduler, so the harness runs that same sweep beside it (``python -m
fraudcd airflow-sweep``), and an unanswered request times out as it would in production.
"""
from __future__ import annotations

import datetime as dt
import os
import sys
import time
import urllib.parse
import warnings
from pathlib import Path

DAG_ID = "release"
TASK_ID = "approve_thresholds"
APPROVE_ALL, APPROVE_SOME, REJECT = "Approve all", "Approve some", "Reject"
OPTIONS = [APPROVE_ALL, APPROVE_SOME, REJECT]
# the rollout's question to a person when a stage stayed inconclusive past its bound, or every step passed
# and promotion is a person's (release.orchestration.rollout_task)
ROLLOUT_TASK_ID = "rollout"
from release.rollout.decisions import ROLLOUT_OPTIONS  # noqa: E402
_OPTIONS = {TASK_ID: OPTIONS, ROLLOUT_TASK_ID: ROLLOUT_OPTIONS}


def form_reason(params: dict | None) -> str:
    """The reason a person typed in an Airflow form, or what the audit records when they typed none."""
    return ((params or {}).get("reason") or "").strip() or "(no reason given in the Airflow form)"


def _configure() -> bool:
    """Point this process's Airflow at the project's metadata database (unless the environment already
    says where it is). False when that database does not exist yet: no DAG has ever run."""
    from release.orchestration.airflow_env import airflow_env

    for k, v in airflow_env().items():
        if k.startswith("AIRFLOW"):
            os.environ.setdefault(k, v)
    url = os.environ["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"]
    return not url.startswith("sqlite:///") or Path(url.removeprefix("sqlite:///")).exists()


def _release_of(data_interval_end) -> str:
    from release.core.dates import release_id_for

    return release_id_for(data_interval_end.date() if isinstance(data_interval_end, dt.datetime)
                          else dt.date.fromisoformat(str(data_interval_end)[:10]))


_WAITING = ("awaiting_input", "running")  # RUNNING: the request is written and the task about to park


# the task whose XCom names the release a question is about (release.orchestration.hitl_task: release_task_id)
_RELEASE_TASK = {TASK_ID: "request_approval", ROLLOUT_TASK_ID: "deploy"}


def _run_release_rest(api, run_id: str, task_id: str) -> str | None:
    """The release a waiting question's run is about: what its release task returned (a run the training-set
    asset triggered has no data interval), else the end of the run's data interval."""
    run_q = urllib.parse.quote(run_id, safe="")
    from release.orchestration.airflow_api import AirflowAPIError

    try:
        x = api.call("GET", f"dags/{DAG_ID}/dagRuns/{run_q}/taskInstances/{_RELEASE_TASK[task_id]}/xcomEntries/"
                     "return_value", deserialize="true")
        if isinstance(x.get("value"), str) and x["value"].startswith("rel-"):
            return x["value"]
    except AirflowAPIError as e:
        if e.status != 404:
            raise
    end = api.call("GET", f"dags/{DAG_ID}/dagRuns/{run_q}").get("data_interval_end")
    return _release_of(end) if end else None


def _open_request_rest(api, release_id: str, task_id: str) -> dict | None:
    got = api.call("GET", f"dags/{DAG_ID}/dagRuns/~/hitlDetails", task_id=task_id, response_received="false",
                   limit=100)
    for h in got.get("hitl_details", []):
        ti = h.get("task_instance") or {}
        if ti.get("task_id") != task_id or str(ti.get("state")) not in _WAITING:
            continue
        if _run_release_rest(api, ti["dag_run_id"], task_id) == release_id:
            return {"dag_id": DAG_ID, "run_id": ti["dag_run_id"], "task_id": task_id,
                    "map_index": int(ti.get("map_index", -1)), "state": str(ti.get("state")),
                    "deadline": None, "subject": h.get("subject"), "via": "rest"}
    return None


def _respond_rest(api, req: dict, option: str, params: dict) -> dict:
    path = (f"dags/{DAG_ID}/dagRuns/{urllib.parse.quote(req['run_id'], safe='')}/taskInstances/"
            f"{req['task_id']}/{req['map_index']}/hitlDetails")
    out = api.call("PATCH", path, {"chosen_options": [option], "params_input": params})
    return {**req, "responded_by": (out.get("responded_by") or {}).get("name"),
            "responded_at": out.get("responded_at"), "chosen_options": list(out.get("chosen_options") or [])}


def open_request(release_id: str, task_id: str = TASK_ID) -> dict | None:
    """The release's request (``task_id``: the threshold approval, or the rollout decision) waiting in
    Airflow for a response (the request written, no response yet, its task instance parked in
    AWAITING_INPUT or about to), or None. Through the REST API when Airflow runs for real; in-process in
    the `airflow dags test` harness."""
    from release.orchestration import airflow_api

    api = airflow_api.connect()
    if api is not None:
        return _open_request_rest(api, release_id, task_id)
    if not _configure():
        return None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from sqlalchemy import select

        from airflow.models.dagrun import DagRun
        from airflow.models.hitl import HITLDetail
        from airflow.models.taskinstance import TaskInstance as TI
        from airflow.utils.session import create_session
        from airflow.utils.state import TaskInstanceState

    with create_session() as session:
        try:
            rows = session.execute(
                select(TI.dag_id, TI.run_id, TI.task_id, TI.map_index, TI.state, TI.trigger_timeout,
                       DagRun.data_interval_end, HITLDetail.subject)
                .join(HITLDetail, HITLDetail.ti_id == TI.id)
                .join(DagRun, (DagRun.dag_id == TI.dag_id) & (DagRun.run_id == TI.run_id))
                .where(TI.dag_id == DAG_ID, TI.task_id == task_id, HITLDetail.responded_at.is_(None),
                       # RUNNING: the request is written and the task about to park; Airflow resumes it at
                       # once when it parks with a response already there
                       TI.state.in_([TaskInstanceState.AWAITING_INPUT, TaskInstanceState.RUNNING]))).all()
        except Exception as e:  # noqa: BLE001 - a metadata database without Airflow's tables yet
            if "no such table" in str(e):
                return None
            raise
    for r in rows:
        if r.data_interval_end is not None and _release_of(r.data_interval_end) == release_id:
            return {"dag_id": r.dag_id, "run_id": r.run_id, "task_id": r.task_id, "map_index": r.map_index,
                    "state": str(r.state.value if hasattr(r.state, "value") else r.state),
                    "deadline": r.trigger_timeout.isoformat() if r.trigger_timeout else None, "subject": r.subject,
                    "via": "harness"}
    return None


def respond(release_id: str, option: str, *, user: str, reason: str, merchants: list[str] | None = None,
            edits: dict[str, float] | None = None, task_id: str = TASK_ID) -> dict | None:
    """Answer the release's waiting task (the threshold approval, or the rollout decision). Airflow for
    real: through the REST API, as the user of the caller's token (``user`` is not sent: Airflow records
    the token's user). The harness: through Airflow's response handler in-process, as ``user``. Returns
    what Airflow recorded, or None if no task is waiting."""
    from release.orchestration import airflow_api

    if option not in _OPTIONS[task_id]:
        raise ValueError(f"option must be one of {_OPTIONS[task_id]}; got {option!r}.")
    params = ({"reason": reason, "merchants": list(merchants or []), "edits": dict(edits or {})} if task_id == TASK_ID
              else {"reason": reason})
    api = airflow_api.connect()
    if api is not None:
        req = _open_request_rest(api, release_id, task_id)
        return None if req is None else _respond_rest(api, req, option, params)
    req = open_request(release_id, task_id)
    if req is None:
        return None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from airflow.api_fastapi.auth.managers.simple.user import SimpleAuthManagerUser
        from airflow.api_fastapi.core_api.datamodels.hitl import UpdateHITLDetailPayload
        from airflow.utils.session import create_session
        update_hitl_detail = _response_handler()

    payload = UpdateHITLDetailPayload(chosen_options=[option], params_input=params)
    with create_session() as session:
        out = update_hitl_detail(dag_id=req["dag_id"], dag_run_id=req["run_id"], task_id=req["task_id"],
                                 update_hitl_detail_payload=payload,
                                 user=SimpleAuthManagerUser(username=user, role=None), session=session,
                                 map_index=req["map_index"])
    return {**req, "responded_by": out.responded_by.name, "responded_at": out.responded_at.isoformat(),
            "chosen_options": list(out.chosen_options)}


_PUBLIC_ROUTES = "airflow.api_fastapi.core_api.routes.public"


def _response_handler():
    """Airflow's response handler (``routes.public.hitl.update_hitl_detail``, the function behind the PATCH
    endpoint), imported without its package's ``__init__``: that builds the whole public REST API's routers (every
    route module, about 4 of the 7 CPU seconds the import costs here, paid by each `fraudcd` answer in the
    harness). The module itself is imported as Airflow wrote it; its package stands in for the import only,
    then goes, so a later import of the package in this process runs its ``__init__`` and reuses the
    module. Anything unexpected (another layout in another Airflow release): the plain import."""
    import importlib
    import types

    if _PUBLIC_ROUTES in sys.modules:
        return importlib.import_module(_PUBLIC_ROUTES + ".hitl").update_hitl_detail
    try:
        routes = importlib.import_module(_PUBLIC_ROUTES.rsplit(".", 1)[0])
        stand_in = types.ModuleType(_PUBLIC_ROUTES)
        stand_in.__path__ = [str(Path(routes.__path__[0]) / "public")]
        sys.modules[_PUBLIC_ROUTES] = stand_in
        try:
            return importlib.import_module(_PUBLIC_ROUTES + ".hitl").update_hitl_detail
        finally:
            if sys.modules.get(_PUBLIC_ROUTES) is stand_in:
                del sys.modules[_PUBLIC_ROUTES]
            if getattr(routes, "public", None) is stand_in:
                delattr(routes, "public")
    except Exception:  # noqa: BLE001 - whatever failed, the package's own import is the reference
        sys.modules.pop(_PUBLIC_ROUTES + ".hitl", None)
        from airflow.api_fastapi.core_api.routes.public.hitl import update_hitl_detail

        return update_hitl_detail


def sweep_timeouts() -> None:
    """One pass of the scheduler's AWAITING_INPUT timeout sweep: requests past their deadline resume
    with a timeout (the task then records that nobody decided)."""
    _configure()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from airflow.jobs.job import Job
        from airflow.jobs.scheduler_job_runner import SchedulerJobRunner

    SchedulerJobRunner(job=Job()).check_awaiting_input_timeouts()


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def sweep_beside(parent: int, every: float = 1.0, max_seconds: float = 3600.0, first_after: float = 0.0) -> None:
    """Run the scheduler's AWAITING_INPUT timeout sweep every ``every`` seconds while process ``parent`` (an
    `airflow dags test`) lives, at most ``max_seconds`` (`fraudcd airflow-sweep`, started by the harness).
    ``first_after``: the first sweep waits this long (no request can be past its deadline before: the shortest
    response timeout of the run's tasks, counted from the run's start), and Airflow is imported only then:
    a run that ends before pays nothing for its sweep."""
    start = time.monotonic()
    deadline = start + max_seconds
    while _alive(parent) and time.monotonic() < min(start + first_after, deadline):
        time.sleep(min(every, 1.0))
    if not _alive(parent) or time.monotonic() >= deadline:
        return
    _configure()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from airflow.jobs.job import Job
        from airflow.jobs.scheduler_job_runner import SchedulerJobRunner
    runner = SchedulerJobRunner(job=Job())
    while _alive(parent) and time.monotonic() < deadline:
        try:
            runner.check_awaiting_input_timeouts()
        except Exception as e:  # noqa: BLE001 - a locked SQLite database: try again at the next tick
            print(f"sweep: {type(e).__name__}: {e}", file=sys.stderr)
        time.sleep(every)
