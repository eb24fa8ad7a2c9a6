"""
### monitoring
Daily (start date and cadence: `schedule.monitoring` of the pipeline configuration, config/pipeline.yaml): watch
the deployed model between releases, on the trailing week of live traffic ending with the run's last day.
Score drift (its live scores against its scores on the judging rows of the release that shipped it), feature
drift (each feature it reads, recomputed from the event logs, against its training snapshot; merchant-level
features over merchant-days), and each country's live action rate against the rate the release judged, within
the release contract's limit. Findings are kept per day under `FRAUDCD_HOME/monitoring`; each one that fires
becomes an alert (`fraudcd status`, `fraudcd monitor`, the notifier) saying what moved, by how much, since when
and what to do. Too little traffic is "insufficient", never an alert and never "ok"; nothing deployed is said.
"""
from __future__ import annotations

from datetime import timedelta
from pathlib import Path

from airflow.sdk import dag, task

from release.core.pipeline import pipeline
from release.orchestration.assets import dag_start

SCHEDULE = pipeline().schedule.monitoring


@dag(
    dag_id=Path(__file__).stem,
    schedule=timedelta(days=SCHEDULE.every_days),
    start_date=dag_start(SCHEDULE),
    catchup=False,
    max_active_runs=1,
    tags=["fraud-cd", "monitoring"],
    default_args={"retries": 2, "retry_delay": timedelta(minutes=10)},
    doc_md=__doc__,
)
def monitoring():
    @task
    def monitor(data_interval_start=None, data_interval_end=None, dag_run=None) -> dict:
        from release.orchestration.monitoring import monitor_interval

        return monitor_interval(data_interval_start, data_interval_end, getattr(dag_run, "run_after", None))

    monitor()


monitoring()
