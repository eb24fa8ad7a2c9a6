"""The release DAG's threshold-approval task: an Airflow 3 human-in-the-loop operator.

It asks, in the Airflow UI's Required actions, to approve all suggested thresholds, approve some (list
the merchants; the others get the global threshold), or reject, with optional edits
(``{"MERCHANT": 0.93}``) and a reason. The same decision can come from a terminal (`fraudcd thresholds
approve|edit|reject`), which records it in the state store and answers this task (release.orchestration.hitl:
over Airflow's REST API as the person's Airflow user when Airflow runs for real; through its response handler
in the `dags test` harness). The state store is the record either way:

- if the set was already decided before the task asks (the CLI was quicker, or opt-in automation
  approved every segment), the task finishes at once without parking;
- a response from the UI is applied to the state store here (edits and decision in one transaction,
  the responder named as actor); a response whose decision is already recorded changes nothing; a
  response that cannot be applied (an edit out of range, an unknown merchant, "approve some" naming
  none) changes nothing and the task asks again, saying why in its log and an alert (release.orchestration.hitl_task);
- with no response by ``response_timeout`` (enforced by the scheduler's sweep), the set expires:
  nothing goes live, the release stops and its report says why.

Only light imports at module level: the DAG file imports this class.
"""
from __future__ import annotations

from typing import Any

from airflow.sdk import Param

from release.orchestration.hitl import APPROVE_ALL, APPROVE_SOME, OPTIONS, REJECT
from release.orchestration.hitl_task import AskOnceOperator


class ThresholdApprovalOperator(AskOnceOperator):
    """Approve all / approve some / reject the release's suggested thresholds, with edits. Returns the
    release id (for the tasks downstream)."""

    def __init__(self, *, release_task_id: str, params: Any = None, **kwargs: Any) -> None:
        # ``params``: the DAG's own params, which Airflow passes to every operator; the form has its own
        # (HITLOperator keeps only task-level params), so they are not merged in
        super().__init__(
            release_task_id=release_task_id,
            subject="Approve per-merchant thresholds of {{ ti.xcom_pull(task_ids='" + release_task_id + "') }}",
            options=OPTIONS,
            multiple=False,
            params={
                "reason": Param("", type="string", description="Why (recorded in the audit log)."),
                "merchants": Param([], type="array", items={"type": "string"},
                                   description=f"For '{APPROVE_SOME}': the merchants to approve. The others get "
                                               "no threshold of their own (the global threshold applies)."),
                "edits": Param({}, type="object",
                               additionalProperties={"type": "number", "minimum": 0, "maximum": 1},
                               description='Optional changes before approving: {"MERCHANT_ID": 0.93}.'),
            },
            **kwargs,
        )

    @property
    def refused_responses(self) -> tuple[type[Exception], ...]:
        from release.state.approvals import ThresholdInputError  # an edit out of range, an unknown merchant, ...

        return (ThresholdInputError,)

    def decided(self, rid: str) -> bool:
        from release.orchestration.cycle import approval_decided

        return approval_decided(rid)

    def summary(self, rid: str) -> str:
        from release.orchestration.cycle import threshold_approval_summary

        return threshold_approval_summary(rid)

    def on_timeout(self, rid: str) -> None:
        from release.orchestration.cycle import expire_threshold_approval

        waited = self.response_timeout
        self.log.warning("No decision on the thresholds of %s within %s: the release stops.", rid, waited)
        expire_threshold_approval(rid, waited=str(waited))

    def on_response(self, rid: str, option: str, params: dict, who: str, at: str) -> None:
        from release.orchestration.cycle import apply_threshold_response

        out = apply_threshold_response(rid, option, params, responder=who, at=at)
        self.log.info("Thresholds of %s: %s (%s by %s).", rid, out, option, who)


__all__ = ["ThresholdApprovalOperator", "APPROVE_ALL", "APPROVE_SOME", "REJECT"]
