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

from airflow.sdk import Param

from release.hitl import EXTEND, PROMOTE, ROLL_BACK, ROLLOUT_OPTIONS
from release.hitl_task import AskOnceOperator


class RolloutDecisionOperator(AskOnceOperator):
    """Extend / promote / roll back a rollout that waits for a person. Returns the release id."""

    def __init__(self, *, release_task_id: str, params: Any = None, **kwargs: Any) -> None:
        super().__init__(
            release_task_id=release_task_id,
            subject="Rollout of {{ ti.xcom_pull(task_ids='" + release_task_id + "') }} waits for a decision",
            options=ROLLOUT_OPTIONS,
            multiple=False,
            params={"reason": Param("", type="string", description="Why (recorded in the audit log).")},
            **kwargs,
        )

    def decided(self, rid: str) -> bool:
        from release.rollout import needs_person

        return not needs_person(rid)  # the rollout ended, or a person decided

    def summary(self, rid: str) -> str:
        from release.rollout import decision_summary

        return decision_summary(rid)

    def on_timeout(self, rid: str) -> None:
        from release.rollout import apply_decision

        if not self.decided(rid):  # decided from a terminal meanwhile: that decision stands
            self.log.warning("No decision on the rollout of %s within %s: rolling back.", rid, self.response_timeout)
            apply_decision(rid, ROLL_BACK, actor="fraud-cd rollout",
                           reason=f"nobody decided within {self.response_timeout}: rolled back, the incumbent "
                                  "keeps serving")

    def on_response(self, rid: str, option: str, params: dict, who: str, at: str) -> None:
        from release.rollout import apply_decision

        if not self.decided(rid):  # a question already answered from a terminal changes nothing
            apply_decision(rid, option, actor=f"{who} (via Airflow)", airflow_user=who,
                           reason=(params.get("reason") or "").strip() or "(no reason given in the Airflow form)")


__all__ = ["RolloutDecisionOperator", "EXTEND", "PROMOTE", "ROLL_BACK"]
