"""The release DAG's rollout decision: an Airflow 3 human-in-the-loop task.

The rollout sensor finishes when the rollout is over or needs a person: a stage stayed inconclusive past
its bound (``awaiting_decision``), or every step passed and the plan's promotion policy is ``person``
(``ready_to_promote``). This task then asks, in the Airflow UI's Required actions: extend the wait, promote
(anyway, on the record, when the evidence was inconclusive), or roll back, with a reason. The same decision
can come from a terminal (`fraudcd ramp extend | promote [--anyway] | rollback`), which changes the state
and answers this task; the state store is the record either way:

- if nobody needs to decide (the rollout ended, or a person already decided), it finishes without asking;
- a response from the UI goes through the same state machine, the Airflow user named as actor; a response
  to a question already answered from a terminal changes nothing;
- with no response by ``response_timeout`` the candidate is rolled back (nothing unjudged goes on serving
  traffic), recorded with the reason.

Only light imports at module level: the DAG file imports this class.
"""
from __future__ import annotations

from typing import Any

from airflow.providers.standard.operators.hitl import HITLOperator
from airflow.sdk import Param

from release.hitl import EXTEND, PROMOTE, ROLL_BACK, ROLLOUT_OPTIONS

try:  # Airflow 3.3+: the operator parks the task in AWAITING_INPUT by raising this
    from airflow.sdk.exceptions import TaskAwaitingInput
except ImportError:  # pragma: no cover
    TaskAwaitingInput = None


class RolloutDecisionOperator(HITLOperator):
    """Extend / promote / roll back a rollout that waits for a person. Returns the release id."""

    def __init__(self, *, release_task_id: str, params: Any = None, **kwargs: Any) -> None:
        self.release_task_id = release_task_id
        super().__init__(
            subject="Rollout of {{ ti.xcom_pull(task_ids='" + release_task_id + "') }} waits for a decision",
            options=ROLLOUT_OPTIONS,
            multiple=False,
            params={"reason": Param("", type="string", description="Why (recorded in the audit log).")},
            **kwargs,
        )

    def _release_id(self, context) -> str:
        return context["ti"].xcom_pull(task_ids=self.release_task_id)

    def execute(self, context):
        from release.rollout import decision_summary, needs_person

        rid = self._release_id(context)
        if not needs_person(rid):
            self.log.info("The rollout of %s needs no decision (it ended, or a person decided).", rid)
            return rid
        self.body = decision_summary(rid)
        try:
            return super().execute(context)
        except Exception as parked:
            if TaskAwaitingInput is None or not isinstance(parked, TaskAwaitingInput):
                raise
            if not needs_person(rid):
                self.log.info("The rollout of %s was decided while the request was written.", rid)
                return rid
            raise

    def execute_complete(self, context, event: dict[str, Any]):
        from release.rollout import apply_decision, needs_person

        rid = self._release_id(context)
        if "error" in event:
            if event.get("error_type") == "timeout":
                if needs_person(rid):
                    apply_decision(rid, ROLL_BACK, actor="fraud-cd rollout",
                                   reason=f"nobody decided within {self.response_timeout}: rolled back, the "
                                          "incumbent keeps serving")
                return rid
            return super().execute_complete(context, event)
        chosen = event["chosen_options"]
        self.validate_chosen_options(chosen)
        params = dict(event.get("params_input") or {})
        who = (event.get("responded_by_user") or {}).get("name") or "unknown Airflow user"
        if needs_person(rid):
            out = apply_decision(rid, chosen[0], actor=f"{who} (via Airflow)", airflow_user=who,
                                 reason=(params.get("reason") or "").strip() or "(no reason given in the Airflow form)")
            self.log.info("Rollout of %s: %s by %s -> %s", rid, chosen[0], who, out.get("state"))
        return rid


__all__ = ["RolloutDecisionOperator", "EXTEND", "PROMOTE", "ROLL_BACK"]
