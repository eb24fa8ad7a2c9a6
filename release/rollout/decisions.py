"""The answers to a rollout that waits for a person (a stage inconclusive past its bound, or every step passed
and promotion is a person's), from Airflow's Required actions or `fraudcd ramp ...`. Defined here, without heavy
imports: the DAG file's tasks name them, and the scheduler parses that file every few seconds."""
from __future__ import annotations

EXTEND, PROMOTE, ROLL_BACK = "Extend the wait", "Promote", "Roll back"
ROLLOUT_OPTIONS = [EXTEND, PROMOTE, ROLL_BACK]
