"""The rollout's watcher for a deployment without Airflow (`fraudcd serve --controller`, `fraudcd ramp
watch`): the same one-step ``release.rollout.driver.advance`` the release DAG's rollout task calls, on a timer.
Where the release DAG drives the rollout, run neither: the DAG is the driver (two would not corrupt the
state, every change carries the version it was decided on, but they would race)."""
from __future__ import annotations

from release.rollout.driver import ROLLOUT as CONTROLLER, Watcher as Controller, advance as tick, stage_traffic as step_traffic

__all__ = ["CONTROLLER", "Controller", "tick", "step_traffic"]
