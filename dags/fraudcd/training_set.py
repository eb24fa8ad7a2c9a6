"""
### training_set

Daily (start date and cadence: `schedule.training_set` of the pipeline configuration, config/pipeline.yaml):
ingest the run's days from a team's own transaction log when a column mapping is configured, then rebuild the
training-set snapshot as of the end of the run's period, even when no release follows, so a broken data job is
found weeks before it would block one. The period is the data interval; a zero-length one (manual and trigger
runs) or none at all covers the cadence's days before its end (or before `run_after`). A configured source with
no transaction in the period fails the task.

Point-in-time features, labels only once matured (`labels.maturity_days`), blocked rows unlabelled, exploration rows
weighted by 1/propensity, a data contract that refuses a bad build (the last good snapshot stays), and
a content hash: rerunning the same interval finds the same snapshot. Publishes the `fraudcd-training-set`
asset with the snapshot's date and hash: the `release` DAG runs on it when the release cadence falls on that date.
"""
from __future__ import annotations

from datetime import timedelta
from pathlib import Path

from airflow.sdk import dag, task

from release.core.pipeline import pipeline
from release.orchestration.assets import TRAINING_SET, dag_start

SCHEDULE = pipeline().schedule.training_set


@dag(
    dag_id=Path(__file__).stem,
    schedule=timedelta(days=SCHEDULE.every_days),
    start_date=dag_start(SCHEDULE),
    catchup=False,
    max_active_runs=1,
    tags=["fraud-cd", "data"],
    default_args={"retries": 2, "retry_delay": timedelta(minutes=10)},
    doc_md=__doc__,
)
def training_set():
    @task
    def ingest(data_interval_start=None, data_interval_end=None, dag_run=None) -> dict:
        from release.orchestration.cycle import ingest_interval

        return ingest_interval(data_interval_start, data_interval_end, getattr(dag_run, "run_after", None))

    @task(outlets=[TRAINING_SET])
    def build(data_interval_end=None, dag_run=None, outlet_events=None) -> str:
        from release.orchestration.cycle import build_snapshot, published_extra

        run_after = getattr(dag_run, "run_after", None)
        h = build_snapshot(data_interval_end, run_after=run_after)
        if outlet_events is not None:  # the release DAG reads the snapshot's date from the event
            outlet_events[TRAINING_SET].extra = published_extra(data_interval_end, run_after, h)
        return h

    ingest() >> build()


training_set()
