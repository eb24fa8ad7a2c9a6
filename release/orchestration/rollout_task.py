"""The release DAG's rollout: one task that drives the rollout to its end and asks a person each time it
needs one.

Every ``poll_seconds`` the task looks at the scoring service's decision log once (``release.orchestration.cycle.rollout_done``:
at most one step of the state machine per look). Between looks it is deferred on a timer: no worker is
held. When the rollout needs a person (a stage stayed inconclusive past its bound, ``awaiting_decision``; or
every step passed and the plan's promotion policy is ``person``, ``ready_to_promote``) it asks in the Airflow
UI's Required actions: extend the wait, promote (anyway, on the record, when the evidence was inconclusive),
or roll back, with a reason. After an answer it goes on looking, and asks again if the rollout needs a
person again (an extended stage that stays inconclusive asks a second time, in Airflow, not only in a
terminal). It returns the release id when the rollout is over: promoted, rolled back, or stopped.

The same decision can come from a terminal (`fraudcd ramp extend | promote [--anyway] | rollback`), which
changes the state and answers the waiting question; the state store is the record either way:

- a response from the UI goes through the same state machine, the Airflow user named as actor; a response
  to a question already answered from a terminal changes nothing;
- with no response by ``response_timeout`` the candidate is rolled back (nothing unjudged goes on serving
  traffic), recorded with the reason;
- Airflow keeps one request per task instance and the text it was first written with: a second question
  shows the first one's summary in the UI. What is missing now is in the rollout's alert (``release.state.alerts``)
  and in `fraudcd ramp status`, which the form names.

A rollout that is not over after ``rollout_timeout`` (for instance paused by on call for weeks) fails the
task; the deployment stays as it is, guarded, and on call decides.

Only light imports at module level: the DAG file imports this class.
"""
from __future__ import annotations

import datetime as dt
from typing import Any

from airflow.sdk import Param

from release.rollout.decisions import EXTEND, PROMOTE, ROLL_BACK, ROLLOUT_OPTIONS
from release.orchestration.hitl_task import AskOnceOperator


class RolloutTimedOut(RuntimeError):
    """The rollout was not over within the task's bound; nothing was changed."""


class RolloutOperator(AskOnceOperator):
    """Drive the release's rollout on the service's evidence; ask a person whenever it needs one. Returns the
    release id once the rollout is over."""

    def __init__(self, *, release_task_id: str, poll_seconds: float, rollout_timeout: dt.timedelta,
                 params: Any = None, **kwargs: Any) -> None:  # ``params``: the DAG's, replaced by the form's
        super().__init__(
            release_task_id=release_task_id,
            subject="Rollout of {{ ti.xcom_pull(task_ids='" + release_task_id + "') }} waits for a decision",
            options=ROLLOUT_OPTIONS,
            multiple=False,
            params={"reason": Param("", type="string", description="Why (recorded in the audit log).")},
            **kwargs,
        )
        self.poll_seconds = float(poll_seconds)
        self.rollout_timeout = rollout_timeout

    # -- the question --------------------------------------------------------------------------------------
    def decided(self, rid: str) -> bool:
        from release.rollout.driver import needs_person

        return not needs_person(rid)  # the rollout ended, or a person decided

    def summary(self, rid: str) -> str:
        from release.rollout.driver import decision_summary

        return decision_summary(rid)

    def on_timeout(self, rid: str) -> None:
        from release.rollout.driver import apply_decision

        if not self.decided(rid):  # decided from a terminal meanwhile: that decision stands
            self.log.warning("No decision on the rollout of %s within %s: rolling back.", rid, self.response_timeout)
            apply_decision(rid, ROLL_BACK, actor="fraud-cd rollout",
                           reason=f"nobody decided within {self.response_timeout}: rolled back, the incumbent "
                                  "keeps serving")

    def on_response(self, rid: str, option: str, params: dict, who: str, at: str) -> None:
        from release.orchestration.hitl import form_reason
        from release.rollout.driver import apply_decision

        if not self.decided(rid):  # a question already answered from a terminal changes nothing
            apply_decision(rid, option, actor=f"{who} (via Airflow)", airflow_user=who,
                           reason=form_reason(params))

    # -- the drive -----------------------------------------------------------------------------------------
    def execute(self, context):
        return self._look(context)

    def look_again(self, context, event: Any = None):
        """Resumed by the timer: look at the evidence again."""
        return self._look(context)

    def execute_complete(self, context, event: dict[str, Any]):
        super().execute_complete(context, event)  # applies the answer (or the timeout's roll back)
        return self._look(context)  # then goes on: the rollout may need a person again

    def _look(self, context):
        from release.orchestration.cycle import rollout_done

        rid = self._release_id(context)
        if rollout_done(rid, or_needs_person=True):
            if self.decided(rid):
                return rid  # over
            super().execute(context)  # asks; returns only when decided meanwhile (from a terminal)
            return self._look(context)
        started = context["ti"].start_date
        if started is not None and dt.datetime.now(dt.timezone.utc) - started > self.rollout_timeout:
            raise RolloutTimedOut(f"the rollout of {rid} is not over after {self.rollout_timeout}; the deployment "
                                  "stays as it is (guarded); on call decides with `fraudcd ramp ...`.")
        from airflow.providers.standard.triggers.temporal import TimeDeltaTrigger

        self.defer(trigger=TimeDeltaTrigger(dt.timedelta(seconds=self.poll_seconds)), method_name="look_again")


__all__ = ["RolloutOperator", "RolloutTimedOut", "EXTEND", "PROMOTE", "ROLL_BACK"]
