"""Ramp state and the controls on it: one row of deployment state (candidate, share of traffic, state)
changed only by serialized, audited transactions.

States: idle -> shadow -> ramping (pct 1..100) -> promoted; any of shadow/ramping/paused -> rolled_back.
Paused holds the candidate's share where it is (the controller does not advance it) until resumed.

Every control runs in one transaction (SQLite: BEGIN IMMEDIATE, so two operators are serialized) that
writes the new state and its audit row together. A caller that decided on what it read earlier (the
ramp controller) passes ``expect``: the change is refused if the state moved in between.
"""
from __future__ import annotations

import numpy as np
import pandas as pd
import sqlalchemy as sa
from pydantic import BaseModel, ConfigDict, Field, field_validator

from release.config import load_yaml_model
from release.registry import set_tag, tagged
from release.store import audit, engine, ramp_state, transaction, write_audit

IDLE, SHADOW, RAMPING, PAUSED, ROLLED_BACK, PROMOTED = "idle", "shadow", "ramping", "paused", "rolled_back", "promoted"


class RampError(ValueError):
    pass


class ShiftGuardrail(BaseModel):
    model_config = ConfigDict(extra="forbid")
    max_relative_shift: float = Field(gt=0, le=1)
    min_absolute_shift: float = Field(0.0, ge=0, le=1)
    min_support: int = Field(300, ge=1)
    confidence: float = Field(0.95, gt=0.5, lt=1)


class ErrorRateGuardrail(BaseModel):
    """Share of the candidate's requests that failed to score (the service then falls back to production)."""

    model_config = ConfigDict(extra="forbid")
    max_rate: float = Field(ge=0, le=1)
    min_requests: int = Field(100, ge=1)


class LatencyGuardrail(BaseModel):
    """Server-side p99 latency of the requests the candidate served."""

    model_config = ConfigDict(extra="forbid")
    max_p99_ms: float = Field(gt=0)
    min_requests: int = Field(100, ge=1)


class Guardrails(BaseModel):
    model_config = ConfigDict(extra="forbid")
    action_rate_shift: ShiftGuardrail
    error_rate: ErrorRateGuardrail | None = None  # live traffic only (the scoring service's decision log)
    latency: LatencyGuardrail | None = None  # live traffic only


class ShadowPlan(BaseModel):
    model_config = ConfigDict(extra="forbid")
    days: int = Field(7, ge=1, le=60)  # replayed traffic (the release cycle)
    min_seconds: float = Field(0, ge=0)  # live: the shortest shadow period before the first step
    min_rows: int = Field(1000, ge=1)  # live: shadow-scored transactions needed before the first step


class RampPlan(BaseModel):
    """The ramp plan YAML. Field names are the YAML keys."""

    model_config = ConfigDict(extra="forbid")
    steps: list[float] = Field(min_length=1)
    min_rows_per_step: int = Field(200, ge=1)
    min_seconds_per_step: float = Field(0, ge=0)  # live: a step lasts at least this long (and min_rows_per_step)
    guardrails: Guardrails
    shadow: ShadowPlan = ShadowPlan()
    ramp_days: int = Field(7, ge=1, le=60)

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
    before = conn.execute(sa.select(ramp_state).where(ramp_state.c.id == 1)).first()
    before_d = dict(before._mapping) if before else None
    new = {**(before_d or {"release_id": None, "candidate_model_id": None, "pct": 0.0, "state": IDLE}), **values,
           "id": 1, "updated_at": at, "updated_by": actor, "reason": reason}
    if before is None:
        conn.execute(ramp_state.insert().values(**new))
    else:
        conn.execute(ramp_state.update().where(ramp_state.c.id == 1).values(**new))
    write_audit(conn, at=at, actor=actor, action=action, entity="ramp",
                before={k: before_d[k] for k in ("release_id", "candidate_model_id", "pct", "state")} if before_d else None,
                after={k: new[k] for k in ("release_id", "candidate_model_id", "pct", "state")}, reason=reason)
    return {**new, "version": _version(conn)}


def start_shadow(release_id: str, model_id: str, *, at: str, actor: str, reason: str) -> dict:
    with transaction() as conn:
        set_tag(conn, "shadow", model_id, at=at, actor=actor, reason=reason)
        return _write(conn, at=at, actor=actor, reason=reason, action="ramp_shadow", release_id=release_id,
                      candidate_model_id=model_id, pct=0.0, state=SHADOW)


def _current(conn):
    return conn.execute(sa.select(ramp_state).where(ramp_state.c.id == 1)).first()


def set_pct(pct: float, *, at: str, actor: str, reason: str, expect: dict | None = None) -> dict:
    """Route ``pct``% of cards to the candidate. A paused ramp stays paused at the new share."""
    if not 0 <= pct <= 100:
        raise RampError(f"A ramp share must be a percentage in [0, 100]; got {pct}.")
    with transaction() as conn:
        cur = _current(conn)
        _check_expected(conn, cur, expect)
        if cur is None or cur.state not in (SHADOW, RAMPING, PAUSED):
            raise RampError(f"No candidate is in shadow or ramping (state: {cur.state if cur else IDLE}); "
                            "nothing to ramp.")
        return _write(conn, at=at, actor=actor, reason=reason, action="ramp_set", pct=float(pct),
                      state=PAUSED if cur.state == PAUSED else RAMPING)


def pause(*, at: str, actor: str, reason: str) -> dict:
    """Hold the candidate's share where it is: the controller stops advancing it (guardrails still apply)."""
    with transaction() as conn:
        cur = _current(conn)
        if cur is None or cur.state not in (SHADOW, RAMPING):
            raise RampError(f"Only a candidate in shadow or ramping can be paused "
                            f"(state: {cur.state if cur else IDLE}).")
        return _write(conn, at=at, actor=actor, reason=reason, action="ramp_pause", state=PAUSED)


def resume(*, at: str, actor: str, reason: str) -> dict:
    with transaction() as conn:
        cur = _current(conn)
        if cur is None or cur.state != PAUSED:
            raise RampError(f"Only a paused ramp can be resumed (state: {cur.state if cur else IDLE}).")
        return _write(conn, at=at, actor=actor, reason=reason, action="ramp_resume",
                      state=RAMPING if cur.pct > 0 else SHADOW)


def rollback(*, at: str, actor: str, reason: str, expect: dict | None = None) -> dict:
    """The on-call button. A candidate in shadow or ramp goes to 0% at once; after a promotion the
    previous production model (and so its thresholds) comes back."""
    with transaction() as conn:
        cur = conn.execute(sa.select(ramp_state).where(ramp_state.c.id == 1)).first()
        _check_expected(conn, cur, expect)
        state = cur.state if cur else IDLE
        if state in (SHADOW, RAMPING, PAUSED):
            set_tag(conn, "shadow", None, at=at, actor=actor, reason=reason)
            return _write(conn, at=at, actor=actor, reason=reason, action="ramp_rollback", pct=0.0,
                          state=ROLLED_BACK)
        prev = conn.execute(sa.text("SELECT model_id FROM tags WHERE tag = 'previous'")).scalar()
        prod = conn.execute(sa.text("SELECT model_id FROM tags WHERE tag = 'production'")).scalar()
        if state == ROLLED_BACK:
            # pressing the button twice must not also undo an older promotion nobody asked about
            raise RampError(f"Nothing to roll back: the last change ({cur.reason}) already rolled back; "
                            f"production is {prod}.")
        if prev is None:
            raise RampError("Nothing to roll back: no candidate is live and there is no previous production model.")
        set_tag(conn, "production", prev, at=at, actor=actor, reason=f"rollback: {reason}")
        set_tag(conn, "previous", None, at=at, actor=actor, reason=f"rollback: {reason} (was {prod})")
        return _write(conn, at=at, actor=actor, reason=reason, action="model_rollback", pct=0.0,
                      state=ROLLED_BACK, candidate_model_id=prod)


def promote(*, at: str, actor: str, reason: str) -> dict:
    with transaction() as conn:
        cur = conn.execute(sa.select(ramp_state).where(ramp_state.c.id == 1)).first()
        if cur is None or cur.state not in (RAMPING, PAUSED) or cur.pct < 100:
            raise RampError(f"Only a candidate ramped to 100% can be promoted; state is "
                            f"{cur.state if cur else IDLE} at {cur.pct if cur else 0:g}%.")
        prod = conn.execute(sa.text("SELECT model_id FROM tags WHERE tag = 'production'")).scalar()
        set_tag(conn, "previous", prod, at=at, actor=actor, reason=reason)
        set_tag(conn, "production", cur.candidate_model_id, at=at, actor=actor, reason=reason)
        set_tag(conn, "candidate", None, at=at, actor=actor, reason=reason)
        set_tag(conn, "shadow", None, at=at, actor=actor, reason=reason)
        return _write(conn, at=at, actor=actor, reason=reason, action="promote", state=PROMOTED)


def step_started_at() -> str | None:
    """When the current share (or shadow) began: the time of the last audited ramp_set or ramp_shadow."""
    q = (sa.select(audit.c.at).where((audit.c.entity == "ramp") & audit.c.action.in_(("ramp_set", "ramp_shadow")))
         .order_by(audit.c.id.desc()).limit(1))
    with engine().connect() as conn:
        return conn.execute(q).scalar()


def production_model_id() -> str | None:
    m = tagged("production")
    return m.id if m else None
