"""What the DAGs share: the Airflow assets and the start date, one definition each (the DAG files import them;
light: airflow.sdk and pendulum only).

``TRAINING_SET``: published by the daily ``training_set`` DAG when a snapshot was built (a build its data
contract refuses publishes nothing), with ``{"as_of": "YYYY-MM-DD", "snapshot": HASH}`` as the event's extra;
the ``release`` DAG is scheduled on it and runs a release when the cadence falls on that date
(release.orchestration.cycle.release_date).
"""
from __future__ import annotations

import pendulum
from airflow.sdk import Asset

TRAINING_SET = Asset("fraudcd-training-set")


def dag_start(schedule) -> pendulum.DateTime:
    """A DAG's ``start_date`` from its schedule in config/pipeline.yaml (release.core.pipeline.DagSchedule):
    midnight UTC of its ``start_date``, where its first interval begins."""
    d = schedule.start_date
    return pendulum.datetime(d.year, d.month, d.day, tz="UTC")
