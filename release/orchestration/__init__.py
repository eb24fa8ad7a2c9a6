"""Orchestration: the release cycle's stages and the Airflow glue (the human-in-the-loop tasks, the
Airflow environment, `make up`) and the demo harness."""
