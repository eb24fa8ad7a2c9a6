"""Threshold sets and the human decision on them.

A threshold set belongs to one model: per-merchant thresholds plus a global one for merchants without
their own. A set starts ``pending``; a named person approves or rejects it with a reason (CLI, or the
Airflow task that waits for the decision). A model's live thresholds are its latest approved set, so
rolling back a model restores its thresholds with it. Nothing changes live until approved, and every
decision is audited.
"""
from __future__ import annotations

import pandas as pd
import sqlalchemy as sa

from release.store import engine, releases, threshold_sets, thresholds, transaction, write_audit

GLOBAL = "__global__"
PENDING, APPROVED, REJECTED = "pending", "approved", "rejected"


class ApprovalError(ValueError):
    pass


def create_set(model_id: str, release_id: str | None, suggestions: pd.DataFrame, global_threshold: float, *,
               at: str, actor: str, reason: str, status: str = PENDING, automatic: bool = False) -> int:
    """Record a threshold set (idempotent per release and model: a rerun replaces the pending set)."""
    with transaction() as conn:
        if release_id is not None:
            old = conn.execute(sa.select(threshold_sets.c.id, threshold_sets.c.status).where(
                (threshold_sets.c.release_id == release_id) & (threshold_sets.c.model_id == model_id))).first()
            if old is not None:
                if old.status != PENDING:
                    return old.id  # already decided: a rerun must not undo a person's decision
                conn.execute(thresholds.delete().where(thresholds.c.set_id == old.id))
                conn.execute(threshold_sets.delete().where(threshold_sets.c.id == old.id))
        set_id = conn.execute(threshold_sets.insert().values(
            model_id=model_id, release_id=release_id, status=status, global_threshold=float(global_threshold),
            created_at=at, decided_by=actor if status != PENDING else None,
            decided_at=at if status != PENDING else None, reason=reason if status != PENDING else None,
            automatic=automatic)).inserted_primary_key[0]
        if len(suggestions):
            rows = pd.DataFrame({
                "set_id": set_id,
                "merchant_id": suggestions["merchant_id"].astype(str),
                "value": suggestions["suggested_threshold"].astype(float),
                "current_value": suggestions.get("current_threshold", pd.Series(float("nan"), index=suggestions.index)).astype(float),
                "support": suggestions.get("support", pd.Series(0, index=suggestions.index)).astype(int),
                "shrunk": suggestions.get("shrunk", pd.Series(False, index=suggestions.index)).astype(bool),
                "reason": suggestions.get("reason", pd.Series("", index=suggestions.index)).astype(str),
            })
            rows["current_value"] = rows["current_value"].astype(object).where(rows["current_value"].notna(), None)
            conn.execute(thresholds.insert(), rows.to_dict("records"))
        write_audit(conn, at=at, actor=actor, action="create_threshold_set", entity=f"thresholds:{set_id}",
                    after={"model_id": model_id, "release_id": release_id, "status": status,
                           "merchants": int(len(suggestions)), "global_threshold": float(global_threshold)},
                    reason=reason)
    return int(set_id)


def pending_set(release_id: str) -> dict | None:
    with engine().connect() as conn:
        r = conn.execute(sa.select(threshold_sets).where(threshold_sets.c.release_id == release_id)
                         .order_by(threshold_sets.c.id.desc())).first()
    return dict(r._mapping) if r else None


def decide(release_id: str, decision: str, *, actor: str, reason: str, at: str) -> dict:
    """Approve or reject the release's pending threshold set. Exactly one decision per set."""
    if decision not in (APPROVED, REJECTED):
        raise ApprovalError(f"decision must be '{APPROVED}' or '{REJECTED}'; got {decision!r}.")
    with transaction() as conn:
        r = conn.execute(sa.select(threshold_sets).where(threshold_sets.c.release_id == release_id)
                         .order_by(threshold_sets.c.id.desc())).first()
        if r is None:
            raise ApprovalError(f"Release {release_id!r} has no threshold suggestions to decide on.")
        if r.status != PENDING:
            raise ApprovalError(f"The thresholds of release {release_id} were already {r.status} by {r.decided_by} "
                                f"at {r.decided_at}; nothing changed.")
        conn.execute(threshold_sets.update().where(threshold_sets.c.id == r.id).values(
            status=decision, decided_by=actor, decided_at=at, reason=reason))
        write_audit(conn, at=at, actor=actor, action=f"thresholds_{decision}", entity=f"thresholds:{r.id}",
                    before={"status": PENDING}, after={"status": decision, "release_id": release_id,
                                                       "model_id": r.model_id}, reason=reason)
        conn.execute(releases.update().where(releases.c.id == release_id).values(updated_at=at))
    return {"set_id": r.id, "status": decision}


def live_thresholds(model_id: str) -> tuple[float, pd.Series] | None:
    """The model's latest approved set: (global threshold, per-merchant thresholds), or None."""
    with engine().connect() as conn:
        s = conn.execute(sa.select(threshold_sets).where(
            (threshold_sets.c.model_id == model_id) & (threshold_sets.c.status == APPROVED))
            .order_by(threshold_sets.c.id.desc())).first()
        if s is None:
            return None
        rows = conn.execute(sa.select(thresholds.c.merchant_id, thresholds.c.value)
                            .where(thresholds.c.set_id == s.id)).all()
    per = pd.Series({r.merchant_id: r.value for r in rows}, dtype=float)
    return float(s.global_threshold), per


def set_rows(set_id: int) -> pd.DataFrame:
    with engine().connect() as conn:
        return pd.read_sql(sa.select(thresholds).where(thresholds.c.set_id == set_id), conn)
