"""
### training_set

Daily: ingest the day from a team's own transaction log when a column mapping is configured
(`FRAUDCD_SOURCE`), then rebuild the training-set snapshot as of the end of the data interval, even when no release
follows, so a broken data job is found weeks before it would block one.

Point-in-time features, labels only once matured (60 days), blocked rows unlabelled, exploration rows
weighted by 1/propensity, a data contract that refuses a bad build (the last good snapshot stays), and
a content hash: rerunning the same interval finds the same snapshot. Publishes the `fraudcd-training-set`
asset.
"""
from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pendulum
from airflow.sdk import Asset, dag, task

TRAINING_SET = Asset("fraudcd-training-set")


@dag(
    dag_id=Path(__file__).stem,
    schedule="@daily",
    start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
    catchup=False,
    max_active_runs=1,
    tags=["fraud-cd", "data"],
    default_args={"retries": 2, "retry_delay": timedelta(minutes=10)},
    doc_md=__doc__,
)
def training_set():
    @task
    def ingest(data_interval_start=None, data_interval_end=None) -> dict:
        from release.cycle import ingest_interval

        return ingest_interval(data_interval_start, data_interval_end)

    @task(outlets=[TRAINING_SET])
    def build(data_interval_end=None) -> str:
        from release.cycle import build_snapshot

        return build_snapshot(data_interval_end)

    ingest() >> build()


training_set()
