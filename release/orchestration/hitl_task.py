"""The release DAG's questions to a person: Airflow 3 human-in-the-loop tasks that ask at most once.

Both of the DAG's questions (the threshold approval, ``release.orchestration.approval_task``; the rollout decision,
``release.orchestration.rollout_task``) work the same way, and this base class is that way:

- the state store is the record: if the question is already decided (from a terminal, by automation, on a
  rerun) the task finishes without asking; a decision recorded while the request was being written is
  found after parking too;
- a response from the UI is handed to the subclass with who answered, when, and the form's params;
- a response the subclass cannot apply (``refused_responses``: an edit out of range, an unknown merchant;
  Airflow's response handler checks only the option, not the form's values) changes nothing and asks
  again: the reason goes to the task log and to an alert (``release.state.alerts``, kind ``response_refused``),
  the response is cleared and the task waits for a new one, for a new ``response_timeout``. The run does
  not fail and the release does not sit in its waiting status with everything downstream upstream_failed.
  (The form's text in the UI stays as first written: Airflow keeps a request's body when it is asked again.)
- with no response by ``response_timeout`` the subclass's ``on_timeout`` decides what that means.

Only light imports at module level: the DAG file imports the subclasses.
"""
from __future__ import annotations

from typing import Any

from airflow.providers.standard.operators.hitl import HITLOperator

from release.orchestration.report_link import ReleaseReportLink

try:  # Airflow 3.3+: the operator parks the task in AWAITING_INPUT by raising this
    from airflow.sdk.exceptions import TaskAwaitingInput
except ImportError:  # pragma: no cover - older Airflow defers instead; nothing to intercept
    TaskAwaitingInput = None


class AskOnceOperator(HITLOperator):
    """A question about one release (its id pulled from ``release_task_id``). Subclasses say whether it
    is decided already, what the form shows, and what a response or a timeout does. Returns the release id."""

    #: what ``on_response`` raises for a response that cannot be applied (nothing applied): asked again
    refused_responses: tuple[type[Exception], ...] = ()
    #: the release's report, beside the question (served by release.orchestration.airflow_plugin)
    operator_extra_links = (ReleaseReportLink(),)

    def __init__(self, *, release_task_id: str, **kwargs: Any) -> None:
        self.release_task_id = release_task_id
        super().__init__(**kwargs)

    # -- what a subclass says ------------------------------------------------------------------------
    def decided(self, rid: str) -> bool:
        raise NotImplementedError

    def summary(self, rid: str) -> str:
        raise NotImplementedError

    def on_response(self, rid: str, option: str, params: dict, who: str, at: str) -> None:
        raise NotImplementedError

    def on_timeout(self, rid: str) -> None:
        raise NotImplementedError

    # -- the shared way --------------------------------------------------------------------------------
    def _release_id(self, context) -> str:
        return context["ti"].xcom_pull(task_ids=self.release_task_id)

    def execute(self, context):
        rid = self._release_id(context)
        if self.decided(rid):  # decided before anyone was asked (CLI, automation, a rerun)
            self.log.info("%s: %s needs no question (already decided).", self.task_id, rid)
            return rid
        self.body = self.summary(rid)
        try:
            return super().execute(context)  # writes the request, then parks in AWAITING_INPUT
        except Exception as parked:
            if TaskAwaitingInput is None or not isinstance(parked, TaskAwaitingInput):
                raise
            # the request is written; a decision recorded meanwhile found no request to answer
            if self.decided(rid):
                self.log.info("%s: %s was decided while the request was written.", self.task_id, rid)
                return rid
            raise

    def execute_complete(self, context, event: dict[str, Any]):
        rid = self._release_id(context)
        if "error" in event:
            if event.get("error_type") == "timeout":
                self.on_timeout(rid)
                return rid
            return super().execute_complete(context, event)  # raises the HITL error
        chosen = event["chosen_options"]
        self.validate_chosen_options(chosen)
        params = dict(event.get("params_input") or {})
        who = (event.get("responded_by_user") or {}).get("name") or "unknown Airflow user"
        at = event.get("responded_at")
        try:
            self.on_response(rid, chosen[0], params, who, at.isoformat() if hasattr(at, "isoformat") else str(at))
        except self.refused_responses as refused:
            return self._ask_again(context, rid, chosen[0], who, refused)
        self.log.info("%s: %s answered %r by %s.", self.task_id, rid, chosen[0], who)
        return rid

    def _ask_again(self, context, rid: str, option: str, who: str, refused: Exception):
        import datetime as dt

        from release.state.alerts import raise_alert

        why = str(refused)
        self.log.warning("%s: the response %r of %s to %s was not applied: %s. Asking again.", self.task_id,
                         option, who, rid, why)
        raise_alert("response_refused", f"{self.task_id} of {rid}: the response {option!r} of {who} was not "
                    f"applied ({why}); the question is asked again.",
                    at=dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"), severity="warning",
                    details={"release_id": rid, "task_id": self.task_id, "option": option, "responder": who,
                             "why": why})
        return self.execute(context)  # clears the response (Airflow keeps one per task) and waits again
