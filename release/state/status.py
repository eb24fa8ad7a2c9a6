"""One state machine for a release and its deployment: the statuses, the transitions allowed between
them, and the one function that changes a release's status.

A release walks the pipeline (started .. backtested), then goes live: the deployment (the one
``ramp_state`` row the scoring service polls) and the release move together, in the same transaction,
through ``release.rollout.ramp`` (shadow, ramping, paused, awaiting_decision, ready_to_promote, then promoted or
rolled_back). ``stopped`` ends a release before any traffic moved. Every change is audited (who, when,
why, before and after) and the deployment's changes are versioned: a caller that decided on what it read
passes the version it read, and a change that lost the race is refused (``release.rollout.ramp.RampConflict``).

The DAG, the CLI, the live rollout (``release.rollout.driver``) and the report read these names; nothing else
defines a status.
"""
from __future__ import annotations

from enum import StrEnum

import sqlalchemy as sa


class Status(StrEnum):
    STARTED = "started"
    TRAINED = "trained"
    EVALUATED = "evaluated"
    CONTRACTS_PASSED = "contracts_passed"
    AWAITING_APPROVAL = "awaiting_approval"
    APPROVED = "approved"
    REJUDGED = "rejudged"
    BACKTESTED = "backtested"  # the offline backtest on recent history passed: ready for live traffic
    SHADOW = "shadow"  # live: the candidate scores beside production, serves nothing
    RAMPING = "ramping"  # live: the candidate serves a share of cards
    PAUSED = "paused"  # live: held where it is by a person (still guarded)
    AWAITING_DECISION = "awaiting_decision"  # live: evidence stayed inconclusive past its bound; a person decides
    READY_TO_PROMOTE = "ready_to_promote"  # live: every step passed; promotion is a person's (policy: person)
    PROMOTED = "promoted"
    ROLLED_BACK = "rolled_back"
    STOPPED = "stopped"  # stopped by a gate before any traffic moved


# The deployment (ramp_state.state) takes the live statuses, the two ends, and idle (nothing deployed yet).
IDLE = "idle"
LIVE = frozenset({Status.SHADOW, Status.RAMPING, Status.PAUSED, Status.AWAITING_DECISION, Status.READY_TO_PROMOTE})
TERMINAL = frozenset({Status.PROMOTED, Status.ROLLED_BACK, Status.STOPPED})

# The pipeline's stages in order: a rerun of an earlier stage on a release that is further on changes nothing.
PIPELINE_ORDER = [Status.STARTED, Status.TRAINED, Status.EVALUATED, Status.CONTRACTS_PASSED,
                  Status.AWAITING_APPROVAL, Status.APPROVED, Status.REJUDGED, Status.BACKTESTED]

S = Status
TRANSITIONS: dict[str, frozenset[str]] = {
    S.STARTED: frozenset({S.TRAINED, S.STOPPED}),
    S.TRAINED: frozenset({S.EVALUATED, S.STOPPED}),
    S.EVALUATED: frozenset({S.CONTRACTS_PASSED, S.STOPPED}),
    S.CONTRACTS_PASSED: frozenset({S.AWAITING_APPROVAL, S.STOPPED}),
    S.AWAITING_APPROVAL: frozenset({S.APPROVED, S.STOPPED}),
    S.APPROVED: frozenset({S.REJUDGED, S.STOPPED}),
    S.REJUDGED: frozenset({S.BACKTESTED, S.STOPPED}),
    S.BACKTESTED: frozenset({S.SHADOW, S.STOPPED}),
    S.SHADOW: frozenset({S.RAMPING, S.PAUSED, S.AWAITING_DECISION, S.ROLLED_BACK}),
    S.RAMPING: frozenset({S.RAMPING, S.PAUSED, S.AWAITING_DECISION, S.READY_TO_PROMOTE, S.PROMOTED, S.ROLLED_BACK}),
    S.PAUSED: frozenset({S.SHADOW, S.RAMPING, S.PAUSED, S.PROMOTED, S.ROLLED_BACK}),
    S.AWAITING_DECISION: frozenset({S.SHADOW, S.RAMPING, S.PAUSED, S.PROMOTED, S.ROLLED_BACK}),
    S.READY_TO_PROMOTE: frozenset({S.RAMPING, S.PAUSED, S.PROMOTED, S.ROLLED_BACK}),
    S.PROMOTED: frozenset({S.ROLLED_BACK}),  # the on-call button after a promotion: the previous model returns
    S.ROLLED_BACK: frozenset(),
    # a stopped release may start again (a named person waived the contract that stopped it, then reran it)
    # or, judged again with a contract now waived by a named person, go on from the contracts
    S.STOPPED: frozenset({S.STARTED, S.CONTRACTS_PASSED}),
}
# a release not yet approved may be started again from scratch (a rerun of the whole cycle for its date)
for _s in PIPELINE_ORDER[:PIPELINE_ORDER.index(S.AWAITING_APPROVAL) + 1]:
    TRANSITIONS[_s] = TRANSITIONS[_s] | {S.STARTED}
# the deployment row: nothing deployed yet, or the last release ended; a new one enters shadow
DEPLOYMENT_FROM_REST = frozenset({IDLE, S.PROMOTED, S.ROLLED_BACK})


class IllegalTransition(ValueError):
    """A status change the state machine does not allow; nothing was changed."""


def allowed(frm: str, to: str) -> bool:
    return to in TRANSITIONS.get(frm, frozenset())


def is_rerun(frm: str, to: str) -> bool:
    """A stage run again on a release that is already at or past it (or stopped): not a change."""
    if frm == to and to not in LIVE:
        return True
    if to not in PIPELINE_ORDER or to == S.STARTED:
        return False
    if frm in PIPELINE_ORDER:
        return PIPELINE_ORDER.index(frm) > PIPELINE_ORDER.index(to)
    if frm == S.STOPPED:  # an earlier stage rerun on a stopped release; only a waiver's rerun restarts it
        return to != S.CONTRACTS_PASSED
    return frm in LIVE or frm in (S.PROMOTED, S.ROLLED_BACK)


def check_deployment(frm: str | None, to: str) -> None:
    """The deployment row's own transition (also for a deployment whose release has no release row, as
    when a person deploys a model by hand)."""
    frm = frm or IDLE
    if to == S.SHADOW and frm in DEPLOYMENT_FROM_REST:
        return
    if frm == to and to in (S.RAMPING, S.PAUSED):
        return
    if frm in (S.PROMOTED, S.ROLLED_BACK) and to == S.ROLLED_BACK:  # the production model rolled back to the
        return                                                       # previous one (release.rollout.ramp.rollback)
    if frm in DEPLOYMENT_FROM_REST or not allowed(frm, to):
        raise IllegalTransition(f"The deployment cannot go from {frm} to {to}.")


def move_release(conn, release_id: str | None, to: str, *, at: str, actor: str, reason: str | None,
                 **values) -> bool:
    """Change a release's status (and ``values``: stop_reason, model ids ...) in the caller's transaction,
    with its audit row. A rerun of an earlier pipeline stage leaves the status as it is (returns False;
    ``values`` still apply). Anything the table does not allow is an IllegalTransition."""
    from release.state.store import releases, write_audit

    if release_id is None:
        return False
    cur = conn.execute(sa.select(releases.c.status).where(releases.c.id == release_id)).scalar()
    if cur is None:  # a deployment without a release row (a model deployed by hand): nothing to move
        return False
    to = Status(to)
    if is_rerun(cur, to):
        if values:
            conn.execute(releases.update().where(releases.c.id == release_id).values(**values))
        return False
    if not allowed(cur, to):
        raise IllegalTransition(f"Release {release_id} cannot go from {cur} to {to}"
                                + (f" ({reason})" if reason else "") + "; nothing was changed.")
    conn.execute(releases.update().where(releases.c.id == release_id).values(status=str(to), updated_at=at,
                                                                              **values))
    write_audit(conn, at=at, actor=actor, action="release_status", entity=f"release:{release_id}",
                before={"status": str(cur)}, after={"status": str(to), **{k: v for k, v in values.items()
                                                                          if k != "stop_reason"}},
                reason=reason or values.get("stop_reason") or f"{cur} -> {to}")
    return True
