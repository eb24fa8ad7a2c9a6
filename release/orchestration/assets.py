"""The Airflow assets the DAGs share: one definition each (the DAG files import them; light: airflow.sdk only).

``TRAINING_SET``: published by the daily ``training_set`` DAG when a snapshot was built (a build its data
contract refuses publishes nothing), with ``{"as_of": "YYYY-MM-DD", "snapshot": HASH}`` as the event's extra;
the ``release`` DAG is scheduled on it and runs a release when the cadence falls on that date
(release.orchestration.cycle.release_date).
"""
from __future__ import annotations

from airflow.sdk import Asset

TRAINING_SET = Asset("fraudcd-training-set")
