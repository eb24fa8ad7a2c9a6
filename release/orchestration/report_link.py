"""The "Release report" link on the tasks where people act (threshold approval, the rollout's questions).

Its own light module (airflow.sdk only): the DAG file imports the operators that carry it, and the Airflow
plugin (release.orchestration.airflow_plugin) registers it and serves what it points at.
"""
from __future__ import annotations

from airflow.sdk import BaseOperatorLink

REPORTS_PREFIX = "/fraudcd/reports"  # where the plugin serves FRAUDCD_HOME/reports


class ReleaseReportLink(BaseOperatorLink):
    """On a task that asks a person about a release: that release's report (served by the plugin)."""

    name = "Release report"

    def get_link(self, operator, *, ti_key) -> str:
        # Airflow 3 computes an operator's links in the worker when the task ends, with the running task
        # instance as ti_key: the release id is the XCom of the task that named the release
        pull = getattr(ti_key, "xcom_pull", None)
        rid = pull(task_ids=operator.release_task_id) if pull is not None else None
        return f"{REPORTS_PREFIX}/{rid}.html" if rid else ""
