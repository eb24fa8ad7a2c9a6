"""The release DAG's threshold-approval task: an Airflow 3 human-in-the-loop operator.

It asks, in the Airflow UI's Required actions, to approve all suggested thresholds, approve some (list
the merchants; the others get the global threshold), or reject, with optional edits
(``{"MERCHANT": 0.93}``) and a reason. The same decision can come from a terminal (`fraudcd thresholds
approve|edit|reject`), which records it in the state store and answers this task through Airflow's own
response handler (release.hitl). The state store is the record either way:

- if the set was already decided before the task asks (the CLI was quicker, or opt-in automation
  approved every segment), the task finishes at once without parking;
- a response from the UI is applied to the state store here (edits and decision in one transaction,
  the responder named as actor); a response whose decision is already recorded changes nothing;
- with no response by ``response_timeout`` (enforced by the scheduler's sweep), the set expires:
  nothing goes live, the release stops and its report says why.

Only light imports at module level: the DAG file imports this class.
"""
from __future__ import annotations

from typing import Any

from airflow.providers.standard.operators.hitl import HITLOperator
from airflow.sdk import Param

from release.hitl import APPROVE_ALL, APPROVE_SOME, OPTIONS, REJECT

try:  # Airflow 3.3+: the operator parks the task in AWAITING_INPUT by raising this
    from airflow.sdk.exceptions import TaskAwaitingInput
except ImportError:  # pragma: no cover - older Airflow defers instead; nothing to intercept
    TaskAwaitingInput = None


class ThresholdApprovalOperator(HITLOperator):
    """Approve all / approve some / reject the release's suggested thresholds, with edits. Returns the
    release id (for the tasks downstream)."""

    def __init__(self, *, release_task_id: str, params: Any = None, **kwargs: Any) -> None:
        # ``params``: the DAG's own params, which Airflow passes to every operator; the form has its own
        # (HITLOperator keeps only task-level params), so they are not merged in
        self.release_task_id = release_task_id
        super().__init__(
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

    def _release_id(self, context) -> str:
        return context["ti"].xcom_pull(task_ids=self.release_task_id)

    def execute(self, context):
        from release.cycle import approval_decided, threshold_approval_summary

        rid = self._release_id(context)
        if approval_decided(rid):  # decided before anyone was asked (CLI, automation, a rerun)
            self.log.info("The thresholds of %s were already decided; not asking again.", rid)
            return rid
        self.body = threshold_approval_summary(rid)
        try:
            return super().execute(context)  # writes the request, then parks in AWAITING_INPUT
        except Exception as parked:
            if TaskAwaitingInput is None or not isinstance(parked, TaskAwaitingInput):
                raise
            # the request is written; a decision recorded meanwhile found no request to answer
            if approval_decided(rid):
                self.log.info("The thresholds of %s were decided while the request was written.", rid)
                return rid
            raise

    def execute_complete(self, context, event: dict[str, Any]):
        from release.cycle import apply_threshold_response, expire_threshold_approval

        rid = self._release_id(context)
        if "error" in event:
            if event.get("error_type") == "timeout":
                waited = self.response_timeout
                self.log.warning("No decision on the thresholds of %s within %s: the release stops.", rid, waited)
                expire_threshold_approval(rid, waited=str(waited))
                return rid
            return super().execute_complete(context, event)  # raises the HITL error
        chosen = event["chosen_options"]
        self.validate_chosen_options(chosen)
        params = dict(event.get("params_input") or {})
        who = (event.get("responded_by_user") or {}).get("name") or "unknown Airflow user"
        at = event["responded_at"]
        out = apply_threshold_response(rid, chosen[0], params, responder=who,
                                       at=at.isoformat() if hasattr(at, "isoformat") else str(at))
        self.log.info("Thresholds of %s: %s (%s by %s).", rid, out, chosen[0], who)
        return rid


__all__ = ["ThresholdApprovalOperator", "APPROVE_ALL", "APPROVE_SOME", "REJECT"]
