"""
### training_set_backfill

Manual runs only: rebuild the training-set snapshots as of every day the training-set cadence falls on in
[`from_date`, `to_date`] (params), as work that spreads across workers (CeleryExecutor, Kubernetes):

- `plan`: the days of those snapshots' matured windows that hold transactions and are not built yet;
- `build_day`, one mapped task a day (dynamic task mapping): that day's point-in-time features and matured
  labels for each snapshot whose window holds it, read from the day's own lookback, written to a day partition
  (temp file, then rename: a rerun finds it and writes nothing);
- `assemble`: each snapshot from its day partitions, oldest first, with the daily build's data contract and
  manifest: the same snapshot (hash, rows, values) the daily `training_set` DAG builds for that date.

The daily `training_set` DAG stays one process a day (one snapshot is not worth 60 task start-ups). A backfill
publishes no `fraudcd-training-set` asset event: past snapshots must not start past releases.
"""
from __future__ import annotations

from datetime import timedelta
from pathlib import Path

from airflow.sdk import Param, dag, task

from release.core.pipeline import pipeline
from release.orchestration.assets import dag_start

SCHEDULE = pipeline().schedule.training_set


@dag(
    dag_id=Path(__file__).stem,
    schedule=None,
    start_date=dag_start(SCHEDULE),
    catchup=False,
    max_active_runs=1,
    tags=["fraud-cd", "data"],
    default_args={"retries": 2, "retry_delay": timedelta(minutes=2)},
    params={"from_date": Param(SCHEDULE.start_date.isoformat(), type="string", format="date",
                               description="the first as-of date to build (YYYY-MM-DD)"),
            "to_date": Param(SCHEDULE.start_date.isoformat(), type="string", format="date",
                             description="the last as-of date to build (YYYY-MM-DD)")},
    doc_md=__doc__,
)
def training_set_backfill():
    @task
    def plan(params=None) -> list[str]:
        from release.orchestration.backfill import backfill_days

        return backfill_days(params["from_date"], params["to_date"])

    @task
    def build_day(day: str, params=None) -> list[str]:
        from release.orchestration.backfill import build_backfill_day

        return build_backfill_day(day, params["from_date"], params["to_date"])

    @task
    def assemble(built, params=None) -> list[dict]:
        from release.orchestration.backfill import assemble_backfill

        return assemble_backfill(params["from_date"], params["to_date"])

    assemble(build_day.expand(day=plan()))


training_set_backfill()
