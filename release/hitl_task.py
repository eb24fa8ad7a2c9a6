"""The release DAG's questions to a person: Airflow 3 human-in-the-loop tasks that ask at most once.

Both of the DAG's questions (the threshold approval, ``release.approval_task``; the rollout decision,
``release.rollout_task``) work the same way, and this base class is that way:

- the state store is the record: if the question is already decided (from a terminal, by automation, on a
  rerun) the task finishes without asking; a decision recorded while the request was being written is
  found after parking too;
- a response from the UI is handed to the subclass with who answered, when, and the form's params;
- with no response by ``response_timeout`` the subclass's ``on_timeout`` decides what that means.

Only light imports at module level: the DAG file imports the subclasses.
"""
from __future__ import annotations

from typing import Any

from airflow.providers.standard.operators.hitl import HITLOperator

try:  # Airflow 3.3+: the operator parks the task in AWAITING_INPUT by raising this
    from airflow.sdk.exceptions import TaskAwaitingInput
except ImportError:  # pragma: no cover - older Airflow defers instead; nothing to intercept
    TaskAwaitingInput = None


class AskOnceOperator(HITLOperator):
    """A question about one release (its id pulled from ``release_task_id``). Subclasses say whether it
    is decided already, what the form shows, and what a response or a timeout does. Returns the release id."""

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
        self.on_response(rid, chosen[0], params, who, at.isoformat() if hasattr(at, "isoformat") else str(at))
        self.log.info("%s: %s answered %r by %s.", self.task_id, rid, chosen[0], who)
        return rid
