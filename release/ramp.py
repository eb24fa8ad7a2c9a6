"""Ramp state and the controls on it: one row of deployment state (candidate, share of traffic, state)
changed only by serialized, audited transactions.

States: idle -> shadow -> ramping (pct 1..100) -> promoted; any of shadow/ramping/paused -> rolled_back.
"""
from __future__ import annotations

import numpy as np
import pandas as pd
import sqlalchemy as sa
from pydantic import BaseModel, ConfigDict, Field, field_validator

from release.config import load_yaml_model
from release.registry import set_tag, tagged
from release.store import engine, ramp_state, transaction, write_audit

IDLE, SHADOW, RAMPING, PAUSED, ROLLED_BACK, PROMOTED = "idle", "shadow", "ramping", "paused", "rolled_back", "promoted"


class RampError(ValueError):
    pass


class ShiftGuardrail(BaseModel):
    model_config = ConfigDict(extra="forbid")
    max_relative_shift: float = Field(gt=0, le=1)
    min_absolute_shift: float = Field(0.0, ge=0, le=1)
    min_support: int = Field(300, ge=1)
    confidence: float = Field(0.95, gt=0.5, lt=1)


class Guardrails(BaseModel):
    model_config = ConfigDict(extra="forbid")
    action_rate_shift: ShiftGuardrail


class ShadowPlan(BaseModel):
    model_config = ConfigDict(extra="forbid")
    days: int = Field(7, ge=1, le=60)


class RampPlan(BaseModel):
    """The ramp plan YAML. Field names are the YAML keys."""

    model_config = ConfigDict(extra="forbid")
    steps: list[float] = Field(min_length=1)
    min_rows_per_step: int = Field(200, ge=1)
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
    # pandas' hash_array is SipHash with a fixed key: stable across processes and machines, vectorised
    return (pd.util.hash_array(ids) % np.uint64(10000)).astype(np.int64)


def routed_to_candidate(card_ids, pct: float) -> np.ndarray:
    return card_bucket(card_ids) < round(pct * 100)


def current() -> dict:
    with engine().connect() as conn:
        r = conn.execute(sa.select(ramp_state).where(ramp_state.c.id == 1)).first()
    if r is None:
        return {"release_id": None, "candidate_model_id": None, "pct": 0.0, "state": IDLE, "updated_at": None,
                "updated_by": None, "reason": None}
    return dict(r._mapping)


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
    return new


def start_shadow(release_id: str, model_id: str, *, at: str, actor: str, reason: str) -> dict:
    with transaction() as conn:
        set_tag(conn, "shadow", model_id, at=at, actor=actor, reason=reason)
        return _write(conn, at=at, actor=actor, reason=reason, action="ramp_shadow", release_id=release_id,
                      candidate_model_id=model_id, pct=0.0, state=SHADOW)


def set_pct(pct: float, *, at: str, actor: str, reason: str) -> dict:
    if not 0 <= pct <= 100:
        raise RampError(f"A ramp share must be a percentage in [0, 100]; got {pct}.")
    with transaction() as conn:
        cur = conn.execute(sa.select(ramp_state).where(ramp_state.c.id == 1)).first()
        if cur is None or cur.state not in (SHADOW, RAMPING, PAUSED):
            raise RampError(f"No candidate is in shadow or ramping (state: {cur.state if cur else IDLE}); "
                            "nothing to ramp.")
        return _write(conn, at=at, actor=actor, reason=reason, action="ramp_set", pct=float(pct), state=RAMPING)


def rollback(*, at: str, actor: str, reason: str) -> dict:
    """The on-call button. A candidate in shadow or ramp goes to 0% at once; after a promotion the
    previous production model (and so its thresholds) comes back."""
    with transaction() as conn:
        cur = conn.execute(sa.select(ramp_state).where(ramp_state.c.id == 1)).first()
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
        if cur is None or cur.state != RAMPING or cur.pct < 100:
            raise RampError(f"Only a candidate ramped to 100% can be promoted; state is "
                            f"{cur.state if cur else IDLE} at {cur.pct if cur else 0:g}%.")
        prod = conn.execute(sa.text("SELECT model_id FROM tags WHERE tag = 'production'")).scalar()
        set_tag(conn, "previous", prod, at=at, actor=actor, reason=reason)
        set_tag(conn, "production", cur.candidate_model_id, at=at, actor=actor, reason=reason)
        set_tag(conn, "candidate", None, at=at, actor=actor, reason=reason)
        set_tag(conn, "shadow", None, at=at, actor=actor, reason=reason)
        return _write(conn, at=at, actor=actor, reason=reason, action="promote", state=PROMOTED)


def production_model_id() -> str | None:
    m = tagged("production")
    return m.id if m else None
