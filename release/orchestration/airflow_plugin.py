"""The Airflow plugin: release reports served by Airflow's own API server, to Airflow's own users.

Registered through the package's ``airflow.plugins`` entry point (pyproject.toml), so every Airflow that has
fraud-cd installed loads it; nothing to copy into a plugins folder.

- ``/fraudcd/reports/`` (a "Release reports" entry in the UI's navigation): the report index and every
  release's report, read from ``FRAUDCD_HOME/reports``. Airflow does not authenticate a plugin's routes,
  so this does: the caller's Airflow identity (the UI's session cookie, or a bearer token), and the right
  to read the ``release`` DAG (a report is about its runs). No identity: 401; no right: 403. Only report
  files (release.core.settings.REPORT_NAME, the names `fraudcd report serve` gives out too) are served;
  any other name is 404.
- ``/fraudcd/reports/runs/{run_id}``: the report of the release a ``release`` DAG run is about (its data
  interval's end names it), as a redirect.
- a "Release report" link on the tasks where people act (threshold approval, the rollout's questions):
  the report of the task's release.
- a listener (release.orchestration.run_note): when a ``release`` DAG run ends, its note says what became
  of the release (shipped, rolled back, stopped, or still open and why), with the report's link.

Light at import (Airflow loads plugins in every process, task runners included): FastAPI and Airflow's own
modules only; the project's heavier modules inside the routes.
"""
from __future__ import annotations

from fastapi import Depends, FastAPI, HTTPException, Request
from fastapi.responses import FileResponse, RedirectResponse

from airflow.plugins_manager import AirflowPlugin

from release.core.settings import REPORT_NAME, paths
from release.orchestration import run_note
from release.orchestration.report_link import REPORTS_PREFIX as PREFIX, ReleaseReportLink
DAG_ID = "release"

reports_app = FastAPI(title="fraud-cd release reports", docs_url=None, redoc_url=None, openapi_url=None)


async def _reader(request: Request):
    """The caller, if Airflow knows them and they may read the release DAG."""
    from airflow.api_fastapi.app import get_auth_manager
    from airflow.api_fastapi.auth.managers.models.resource_details import DagDetails
    from airflow.api_fastapi.core_api.security import get_user

    authorization = request.headers.get("authorization", "")
    bearer = None
    if authorization.lower().startswith("bearer "):
        from fastapi.security import HTTPAuthorizationCredentials

        bearer = HTTPAuthorizationCredentials(scheme="Bearer", credentials=authorization[7:].strip())
    user = await get_user(request, None, bearer)  # 401/403 for no or a bad identity
    if not get_auth_manager().is_authorized_dag(method="GET", details=DagDetails(id=DAG_ID), user=user):
        raise HTTPException(status_code=403, detail=f"{user.get_name()} may not read the {DAG_ID} DAG's runs")
    return user


def _reports_dir():
    return paths().reports


@reports_app.get("/")
async def index(_user=Depends(_reader)):
    return _file("index.html")


@reports_app.get("/runs/{run_id}")
async def report_of_run(run_id: str, _user=Depends(_reader)):
    from airflow.models.dagrun import DagRun
    from airflow.utils.session import create_session

    from release.core.dates import release_id_for

    with create_session() as session:
        run = session.query(DagRun).filter(DagRun.dag_id == DAG_ID, DagRun.run_id == run_id).one_or_none()
        end = run.data_interval_end if run is not None else None
    if end is None:
        raise HTTPException(status_code=404, detail=f"no {DAG_ID} DAG run {run_id!r} with a data interval")
    return RedirectResponse(f"{PREFIX}/{release_id_for(end.date())}.html", status_code=307)


@reports_app.get("/{name}")
async def report(name: str, _user=Depends(_reader)):
    return _file(name)


def _file(name: str) -> FileResponse:
    if not REPORT_NAME.fullmatch(name):
        raise HTTPException(status_code=404, detail="not a report")
    path = _reports_dir() / name
    if not path.is_file():
        raise HTTPException(status_code=404, detail=f"no report {name} (yet)")
    return FileResponse(path, media_type="text/html; charset=utf-8",
                        headers={"Cache-Control": "no-store", "X-Content-Type-Options": "nosniff"})


class FraudCDPlugin(AirflowPlugin):
    name = "fraudcd"
    fastapi_apps = [{"app": reports_app, "url_prefix": PREFIX, "name": "fraud-cd release reports"}]
    external_views = [{"name": "Release reports", "href": PREFIX.lstrip("/") + "/", "destination": "nav",
                       "url_route": "fraudcd-reports"}]
    operator_extra_links = [ReleaseReportLink()]
    listeners = [run_note]  # the release's outcome in its DAG run's note
