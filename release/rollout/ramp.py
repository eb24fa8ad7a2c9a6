"""Ramp state and the controls on it: one row of deployment state (candidate, share of traffic, state)
changed only by serialized, audited transitions of the one state machine (``release.state.status``): the
deployment row and its release's status move together, in one transaction, or not at all.

States: idle -> shadow -> ramping (pct 1..100) -> [ready_to_promote] -> promoted; any live state ->
rolled_back. Paused holds the candidate's share where it is (the rollout does not advance it) until
resumed. awaiting_decision: the evidence stayed inconclusive past its bound; a person extends the wait,
promotes anyway (on the record) or rolls back.

Every control runs in one transaction (SQLite: BEGIN IMMEDIATE, so two operators are serialized) that
writes the new state and its audit row together. A caller that decided on what it read earlier (the
ramp controller) passes ``expect``: the change is refused if the state moved in between.
"""
from __future__ import annotations

import numpy as np
import pandas as pd
import sqlalchemy as sa
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from release.core.config import load_yaml_model
from release.core.settings import DEFAULT_POLL_SECONDS
from release.rollout.guardrails import Guardrails  # the guardrails of a stage: one definition, release/rollout/guardrails.py
from release.state.registry import set_tag, tagged
from release.state.store import audit, engine, ramp_state, transaction, write_audit

from release.state.status import IDLE, LIVE, Status, check_deployment, move_release

SHADOW, RAMPING, PAUSED, ROLLED_BACK, PROMOTED = (Status.SHADOW, Status.RAMPING, Status.PAUSED, Status.ROLLED_BACK,
                                                  Status.PROMOTED)
AWAITING_DECISION, READY_TO_PROMOTE = Status.AWAITING_DECISION, Status.READY_TO_PROMOTE


class RampError(ValueError):
    pass


class Evidence(BaseModel):
    """What one stage of the rollout (the shadow period, or one ramp step) needs before it can pass. The
    evidence is the candidate's own decisions in the service's decision log: in shadow those it scored
    beside production, in a step those routed to it. A stage passes only when every guardrail was judged
    and held AND these minimums are met; short of that it waits, and past ``max_wait_seconds`` (wall clock,
    since the stage began or a person extended it) it pauses and asks a person. It never passes unjudged."""

    model_config = ConfigDict(extra="forbid")
    min_candidate_rows: int = Field(200, ge=1)
    min_event_seconds: float = Field(0, ge=0)  # span of the transactions' own time (ts) the evidence covers
    min_seconds: float = Field(0, ge=0)  # and the stage lasted at least this long (wall clock)
    max_wait_seconds: float = Field(86400, gt=0)


class BacktestPlan(BaseModel):
    model_config = ConfigDict(extra="forbid")
    days: int = Field(14, ge=1, le=90)  # recent history replayed through both models before shadow (offline)


class RampPlan(BaseModel):
    """The ramp plan YAML. Field names are the YAML keys."""

    model_config = ConfigDict(extra="forbid")
    steps: list[float] = Field(min_length=1)
    shadow: Evidence = Evidence(min_candidate_rows=2000)
    step: Evidence = Evidence()
    guardrails: Guardrails
    promotion: Literal["automatic", "person"] = "person"  # after the last step: promote, or ask a person
    poll_seconds: float = Field(DEFAULT_POLL_SECONDS, gt=0, le=3600)  # how often the release DAG looks at the evidence
    backtest: BacktestPlan = BacktestPlan()

    @field_validator("steps")
    @classmethod
    def _steps(cls, v: list[float]) -> list[float]:
        if any(not 0 < s <= 100 for s in v):
            raise ValueError(f"every step must be a percentage in (0, 100]; got {v}")
        if v != sorted(v) or len(set(v)) != len(v):
            raise ValueError(f"steps must strictly increase; got {v}")
        if v[-1] != 100:
            raise ValueError(f"the last step must be 100 (full traffic); got {v[-1]}")
        return v


def load_plan(path) -> RampPlan:
    return load_yaml_model(path, RampPlan)


def card_bucket(card_ids: pd.Series | np.ndarray) -> np.ndarray:
    """A stable bucket in [0, 10000) per card: the same card always lands in the same bucket, so a card
    sees one model during a ramp step and keeps it as the share grows."""
    ids = np.asarray(card_ids).astype(str).astype(object)
    # pandas' hash_array is SipHash with a fixed key: stable across processes and machines, vectorised.
    # Categorizing first (the default) gives the same hashes; it only pays off on many rows, and costs
    # ~0.1 ms on the scoring service's one row.
    return (pd.util.hash_array(ids, categorize=len(ids) > 64) % np.uint64(10000)).astype(np.int64)


def routed_to_candidate(card_ids, pct: float) -> np.ndarray:
    return card_bucket(card_ids) < round(pct * 100)


def current() -> dict:
    """The deployment's ramp state, with ``version`` (the id of its last audited change)."""
    with engine().connect() as conn:
        r = conn.execute(sa.select(ramp_state).where(ramp_state.c.id == 1)).first()
        version = _version(conn)
    if r is None:
        return {"release_id": None, "candidate_model_id": None, "pct": 0.0, "state": IDLE, "updated_at": None,
                "updated_by": None, "reason": None, "version": version}
    return {**dict(r._mapping), "version": version}


class RampConflict(RampError):
    """The ramp changed between reading it and acting on it; nothing was done."""


def _version(conn) -> int:
    """The id of the last audited ramp change: it moves with every change, so it tells whether the
    state a caller read is still the state now."""
    return int(conn.execute(sa.select(sa.func.max(audit.c.id)).where(audit.c.entity == "ramp")).scalar() or 0)


def _check_expected(conn, cur, expect: dict | None) -> None:
    if expect is None:
        return
    if _version(conn) != expect.get("version"):
        now = dict(cur._mapping) if cur is not None else {"state": IDLE, "pct": 0.0}
        raise RampConflict(f"The ramp changed since it was read (now {now['state']} at {now['pct']:g}%, last change "
                           f"by {now.get('updated_by')}: {now.get('reason')}); nothing done.")


def _write(conn, *, at: str, actor: str, reason: str, action: str, **values) -> dict:
    """The one way the deployment changes: the transition is checked against the state machine, the
    deployment row and its release's status are written together with the audit row."""
    before = conn.execute(sa.select(ramp_state).where(ramp_state.c.id == 1)).first()
    before_d = dict(before._mapping) if before else None
    new = {**(before_d or {"release_id": None, "candidate_model_id": None, "pct": 0.0, "state": IDLE}), **values,
           "id": 1, "updated_at": at, "updated_by": actor, "reason": reason}
    frm = before_d["state"] if before_d else IDLE
    try:
        check_deployment(frm, new["state"])
    except ValueError as e:
        raise RampError(str(e)) from None
    new["state"] = str(new["state"])
    if before is None:
        conn.execute(ramp_state.insert().values(**new))
    else:
        conn.execute(ramp_state.update().where(ramp_state.c.id == 1).values(**new))
    if new["state"] != frm or action in ("ramp_shadow", "model_rollback"):
        try:
            move_release(conn, new["release_id"], new["state"], at=at, actor=actor, reason=reason,
                         **({"stop_reason": reason} if new["state"] == ROLLED_BACK else {}))
        except ValueError as e:
            raise RampError(str(e)) from None
    write_audit(conn, at=at, actor=actor, action=action, entity="ramp",
                before={k: before_d[k] for k in ("release_id", "candidate_model_id", "pct", "state")} if before_d else None,
                after={k: new[k] for k in ("release_id", "candidate_model_id", "pct", "state")}, reason=reason)
    return {**new, "version": _version(conn)}


def start_shadow(release_id: str, model_id: str, *, at: str, actor: str, reason: str,
                 expect: dict | None = None) -> dict:
    """Deploy the candidate in shadow: it scores every transaction beside production and serves nothing.
    Refused while another candidate is live (roll it back or promote it first)."""
    with transaction() as conn:
        cur = _current(conn)
        _check_expected(conn, cur, expect)
        if cur is not None and cur.state in LIVE:
            raise RampError(f"{cur.release_id} (candidate {cur.candidate_model_id}) is live ({cur.state} at "
                            f"{cur.pct:g}%); roll it back or promote it before deploying another.")
        set_tag(conn, "shadow", model_id, at=at, actor=actor, reason=reason)
        return _write(conn, at=at, actor=actor, reason=reason, action="ramp_shadow", release_id=release_id,
                      candidate_model_id=model_id, pct=0.0, state=SHADOW)


def _current(conn):
    return conn.execute(sa.select(ramp_state).where(ramp_state.c.id == 1)).first()


def _state(cur) -> str:
    return cur.state if cur is not None else IDLE


def set_pct(pct: float, *, at: str, actor: str, reason: str, expect: dict | None = None) -> dict:
    """Route ``pct``% of cards to the candidate. A paused ramp stays paused at the new share; a person
    setting the share of a ramp that waits for a decision has decided (it ramps again)."""
    if not 0 <= pct <= 100:
        raise RampError(f"A ramp share must be a percentage in [0, 100]; got {pct}.")
    with transaction() as conn:
        cur = _current(conn)
        _check_expected(conn, cur, expect)
        if _state(cur) not in LIVE:
            raise RampError(f"No candidate is in shadow or ramping (state: {_state(cur)}); nothing to ramp.")
        to = PAUSED if cur.state == PAUSED else RAMPING if pct > 0 else SHADOW
        if to == SHADOW and cur.state not in (AWAITING_DECISION, PAUSED, SHADOW):
            to = RAMPING  # back to 0% while ramping: the candidate keeps its place, serves nothing
        return _write(conn, at=at, actor=actor, reason=reason, action="ramp_set", pct=float(pct), state=to)


def pause(*, at: str, actor: str, reason: str) -> dict:
    """Hold the candidate's share where it is: the rollout stops advancing it (guardrails still apply)."""
    with transaction() as conn:
        cur = _current(conn)
        if _state(cur) not in (SHADOW, RAMPING, AWAITING_DECISION, READY_TO_PROMOTE):
            raise RampError(f"Only a candidate in shadow or ramping (or waiting for a decision) can be paused "
                            f"(state: {_state(cur)}).")
        return _write(conn, at=at, actor=actor, reason=reason, action="ramp_pause", state=PAUSED)


def resume(*, at: str, actor: str, reason: str) -> dict:
    with transaction() as conn:
        cur = _current(conn)
        if _state(cur) != PAUSED:
            raise RampError(f"Only a paused ramp can be resumed (state: {_state(cur)}).")
        return _write(conn, at=at, actor=actor, reason=reason, action="ramp_resume",
                      state=RAMPING if cur.pct > 0 else SHADOW)


def ask(*, at: str, actor: str, reason: str, expect: dict | None = None) -> dict:
    """The evidence stayed inconclusive past its bound: hold where it is and ask a person (extend,
    promote anyway, roll back). Still guarded: a breach rolls back while it waits."""
    with transaction() as conn:
        cur = _current(conn)
        _check_expected(conn, cur, expect)
        if _state(cur) not in (SHADOW, RAMPING):
            raise RampError(f"Only a candidate in shadow or ramping can wait for a decision (state: {_state(cur)}).")
        return _write(conn, at=at, actor=actor, reason=reason, action="ramp_ask", state=AWAITING_DECISION)


def extend(*, at: str, actor: str, reason: str) -> dict:
    """A person's answer to an inconclusive stage: wait for more evidence (the wait's bound starts again;
    the stage keeps the evidence it has)."""
    with transaction() as conn:
        cur = _current(conn)
        if _state(cur) != AWAITING_DECISION:
            raise RampError(f"Only a ramp waiting for a decision can be extended (state: {_state(cur)}).")
        return _write(conn, at=at, actor=actor, reason=reason, action="ramp_extend",
                      state=RAMPING if cur.pct > 0 else SHADOW)


def ready(*, at: str, actor: str, reason: str, expect: dict | None = None) -> dict:
    """Every step passed; promotion is a person's decision (ramp plan ``promotion: person``)."""
    with transaction() as conn:
        cur = _current(conn)
        _check_expected(conn, cur, expect)
        if _state(cur) != RAMPING or cur.pct < 100:
            raise RampError(f"Only a candidate ramping at 100% can be ready to promote (state: {_state(cur)}).")
        return _write(conn, at=at, actor=actor, reason=reason, action="ramp_ready", state=READY_TO_PROMOTE)


def rollback(*, at: str, actor: str, reason: str, expect: dict | None = None, model: bool = False) -> dict:
    """The on-call button. A live candidate goes to 0% at once; after a promotion the previous
    production model (and so its thresholds) comes back. Pressed again after a rollback it refuses (a
    double press must not also undo an older promotion); ``model``: the production model is what the
    person means to roll back, said explicitly (e.g. after a later candidate was rolled back)."""
    with transaction() as conn:
        cur = _current(conn)
        _check_expected(conn, cur, expect)
        state = _state(cur)
        if state in LIVE:
            if model:
                raise RampError(f"A candidate is live ({cur.release_id}, {state} at {cur.pct:g}%): roll it back "
                                "first; the production model is rolled back only when nothing is live.")
            set_tag(conn, "shadow", None, at=at, actor=actor, reason=reason)
            return _write(conn, at=at, actor=actor, reason=reason, action="ramp_rollback", pct=0.0,
                          state=ROLLED_BACK)
        prev = conn.execute(sa.text("SELECT model_id FROM tags WHERE tag = 'previous'")).scalar()
        prod = conn.execute(sa.text("SELECT model_id FROM tags WHERE tag = 'production'")).scalar()
        if state == ROLLED_BACK and not model:
            # pressing the button twice must not also undo an older promotion nobody asked about
            raise RampError(f"Nothing to roll back: the last change ({cur.reason}) already rolled back; "
                            f"production is {prod}.")
        if prev is None:
            raise RampError("Nothing to roll back: no candidate is live and there is no previous production model.")
        set_tag(conn, "production", prev, at=at, actor=actor, reason=f"rollback: {reason}")
        set_tag(conn, "previous", None, at=at, actor=actor, reason=f"rollback: {reason} (was {prod})")
        # the release that promoted the model rolled back now ends rolled back too
        promoted = conn.execute(sa.text("SELECT id FROM releases WHERE candidate_model_id = :m AND status = 'promoted' "
                                        "ORDER BY as_of DESC LIMIT 1"), {"m": prod}).scalar()
        return _write(conn, at=at, actor=actor, reason=reason, action="model_rollback", pct=0.0,
                      state=ROLLED_BACK, candidate_model_id=prod,
                      release_id=promoted or (cur.release_id if cur is not None else None))


def promote(*, at: str, actor: str, reason: str, expect: dict | None = None, anyway: bool = False) -> dict:
    """Make the candidate production. Normally after it served 100% (ramping or paused there, or ready to
    promote); ``anyway``: a person's decision on a ramp waiting for one, at whatever share it reached
    (recorded as such)."""
    with transaction() as conn:
        cur = _current(conn)
        _check_expected(conn, cur, expect)
        state = _state(cur)
        ok = (state in (RAMPING, PAUSED) and cur.pct >= 100) or state == READY_TO_PROMOTE or (
            anyway and state == AWAITING_DECISION)
        if not ok:
            raise RampError(f"Only a candidate ramped to 100% can be promoted (or, promoting anyway, one waiting for "
                            f"a decision); state is {state} at {cur.pct if cur else 0:g}%.")
        prod = conn.execute(sa.text("SELECT model_id FROM tags WHERE tag = 'production'")).scalar()
        set_tag(conn, "previous", prod, at=at, actor=actor, reason=reason)
        set_tag(conn, "production", cur.candidate_model_id, at=at, actor=actor, reason=reason)
        set_tag(conn, "candidate", None, at=at, actor=actor, reason=reason)
        set_tag(conn, "shadow", None, at=at, actor=actor, reason=reason)
        return _write(conn, at=at, actor=actor, reason=reason, action="promote_anyway" if anyway else "promote",
                      state=PROMOTED, pct=100.0)


def stage_started_at() -> str | None:
    """When the current stage (shadow, or the current share) began: the last audited shadow or set."""
    return _last_at(("ramp_set", "ramp_shadow"))


def wait_started_at() -> str | None:
    """Since when the current stage has been waiting for evidence: its start, or the last time a person
    extended or resumed it."""
    return _last_at(("ramp_set", "ramp_shadow", "ramp_extend", "ramp_resume"))


def _last_at(actions: tuple[str, ...]) -> str | None:
    q = (sa.select(audit.c.at).where((audit.c.entity == "ramp") & audit.c.action.in_(actions))
         .order_by(audit.c.id.desc()).limit(1))
    with engine().connect() as conn:
        return conn.execute(q).scalar()


step_started_at = stage_started_at


def production_model_id() -> str | None:
    m = tagged("production")
    return m.id if m else None
