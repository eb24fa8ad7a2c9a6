"""Threshold sets, the human decision on them, and the versioned live thresholds.

A threshold set belongs to one model: per-merchant suggestions plus a global threshold for merchants
without their own. A set starts ``pending``. While it is pending a named person may edit any merchant's
value (the suggestion is kept beside the edit), then decide once: approve all, approve some (merchants
not listed get no threshold of their own, so the set's global threshold applies to them), or reject.
The decision comes from the CLI or from the Airflow human-in-the-loop task (release.orchestration.approval_task);
opt-in automation may approve whole segments first, recorded as automatic.

Nothing changes live until a set is approved: approval writes one version per merchant of the model's
live thresholds (``threshold_versions``). After that, a live edit or a threshold rollback adds versions,
so thresholds roll back on their own, apart from the model. Every change is one transaction with its
audit row (who, when, why, before, after).
"""
from __future__ import annotations

import csv
import io
import json
import math
import re
from collections.abc import Mapping

import numpy as np
import pandas as pd
import sqlalchemy as sa

from release.core.config import shown
from release.state.store import (audit, engine, releases, threshold_items, threshold_sets, threshold_versions,
                           thresholds, transaction, write_audit)

GLOBAL = "__global__"
PENDING, APPROVED, REJECTED, EXPIRED = "pending", "approved", "rejected", "expired"
AUTO_APPROVED, NOT_APPROVED = "auto_approved", "not_approved"
SUPERSEDED = "superseded"  # a pending set a rerun of its release replaced (its rows are kept)
THRESHOLD_RANGE = (0.0, 1.0)  # scores are probabilities: a threshold outside [0, 1] blocks all or nothing
MAX_ERRORS_SHOWN = 20


def auto_actor(after: int) -> str:
    return f"fraudcd-auto (policy: auto-approve a segment after {after} consecutive unedited releases)"


class ApprovalError(ValueError):
    """The action is refused in the set's current state (already decided, nothing to roll back to)."""


class ThresholdInputError(ValueError):
    """The input is wrong (unknown merchant, a value that is not a number in range, a duplicate row).
    ``errors`` lists every problem; nothing was applied."""

    def __init__(self, errors: list[str], what: str = "input"):
        self.errors = errors
        shown = errors[:MAX_ERRORS_SHOWN]
        more = f"\n  ... and {len(errors) - len(shown)} more" if len(errors) > len(shown) else ""
        super().__init__(f"{len(errors)} problem(s) in the {what}; nothing was applied:\n  "
                         + "\n  ".join(shown) + more)


# ---- reading -----------------------------------------------------------------------------------------

def _latest_set(conn, release_id: str):
    return conn.execute(sa.select(threshold_sets).where(threshold_sets.c.release_id == release_id)
                        .order_by(threshold_sets.c.id.desc())).first()


def latest_set(release_id: str) -> dict | None:
    """The release's threshold set (its latest), whatever its status; None if it has none."""
    with engine().connect() as conn:
        r = _latest_set(conn, release_id)
    return dict(r._mapping) if r else None


def _require_set(conn, release_id: str, doing: str):
    r = _latest_set(conn, release_id)
    if r is None:
        raise ApprovalError(f"Release {release_id!r} has no threshold suggestions to {doing}.")
    return r


def set_rows(set_id: int) -> pd.DataFrame:
    with engine().connect() as conn:
        return pd.read_sql(sa.select(thresholds).where(thresholds.c.set_id == set_id), conn)


def set_items(set_id: int) -> pd.DataFrame:
    """Every suggestion of a set with its fate: merchant_id, segment, policy, suggested, proposed (the
    value that goes live on approval: the suggestion or a person's edit), current, support, shrunk,
    reason, edited, outcome."""
    t, i = thresholds, threshold_items
    q = (sa.select(t.c.merchant_id, i.c.segment, i.c.policy, i.c.suggested, t.c.value.label("proposed"),
                   t.c.current_value.label("current"), t.c.support, t.c.shrunk, t.c.reason, i.c.edited, i.c.outcome)
         .select_from(t.outerjoin(i, (i.c.set_id == t.c.set_id) & (i.c.merchant_id == t.c.merchant_id)))
         .where(t.c.set_id == set_id).order_by(t.c.merchant_id))
    with engine().connect() as conn:
        df = pd.read_sql(q, conn)
    df["suggested"] = df["suggested"].fillna(df["proposed"])
    df["edited"] = df["edited"].fillna(False).astype(bool)
    return df


def _latest_versions(conn, model_id: str) -> pd.DataFrame:
    """merchant_id, version, value of the model's highest version per merchant."""
    v = threshold_versions
    top = (sa.select(v.c.merchant_id, sa.func.max(v.c.version).label("mv")).where(v.c.model_id == model_id)
           .group_by(v.c.merchant_id).subquery())
    q = (sa.select(v.c.merchant_id, v.c.version, v.c.value)
         .join(top, (v.c.merchant_id == top.c.merchant_id) & (v.c.version == top.c.mv))
         .where(v.c.model_id == model_id))
    rows = conn.execute(q).all()
    return pd.DataFrame(rows, columns=["merchant_id", "version", "value"])


def live_thresholds(model_id: str) -> tuple[float, pd.Series] | None:
    """The model's live thresholds: (global threshold, per-merchant thresholds), or None when nothing
    was ever approved for it."""
    with engine().connect() as conn:
        latest = _latest_versions(conn, model_id)
        if latest.empty:  # a state store written before thresholds were versioned: its latest approved set
            s = conn.execute(sa.select(threshold_sets).where(
                (threshold_sets.c.model_id == model_id) & (threshold_sets.c.status == APPROVED))
                .order_by(threshold_sets.c.id.desc())).first()
            if s is None:
                return None
            rows = conn.execute(sa.select(thresholds.c.merchant_id, thresholds.c.value)
                                .where(thresholds.c.set_id == s.id)).all()
            return float(s.global_threshold), pd.Series({r.merchant_id: r.value for r in rows}, dtype=float)
    g = latest.loc[latest["merchant_id"] == GLOBAL, "value"]
    if g.empty or pd.isna(g.iloc[0]):
        return None
    per = latest[(latest["merchant_id"] != GLOBAL) & latest["value"].notna()]
    return float(g.iloc[0]), pd.Series(per["value"].to_numpy(dtype=float), index=per["merchant_id"].to_numpy())


def history(model_id: str, merchant_id: str | None = None) -> pd.DataFrame:
    """Every version of the model's live thresholds (one merchant's, or all), oldest first."""
    q = sa.select(threshold_versions).where(threshold_versions.c.model_id == model_id)
    if merchant_id is not None:
        q = q.where(threshold_versions.c.merchant_id == merchant_id)
    with engine().connect() as conn:
        return pd.read_sql(q.order_by(threshold_versions.c.id), conn)


def live_changes(set_id: int, model_id: str) -> list[dict]:
    """The changes of a model's live thresholds after its set went live (approved, or created approved), oldest
    first, from the audit log: a person's live edits of the set (``edit``: with the judgement that let it
    through) and threshold rollbacks of the model. Each: at, actor, action, reason, change_id, merchants
    {id: {before, after}}, judgement."""
    entity = f"thresholds:{set_id}"
    with engine().connect() as conn:
        live_from = conn.execute(sa.select(sa.func.max(audit.c.id)).where(
            (audit.c.entity == entity) & audit.c.action.in_(["create_threshold_set", "thresholds_approved",
                                                             "thresholds_auto_approved"]))).scalar() or 0
        rows = conn.execute(sa.select(audit).where(
            (audit.c.id > live_from)
            & (((audit.c.action == "thresholds_live_edit") & (audit.c.entity == entity))
               | ((audit.c.action == "thresholds_rollback") & (audit.c.entity == f"thresholds:model:{model_id}"))))
            .order_by(audit.c.id)).all()
    out = []
    for r in rows:
        before, after = json.loads(r.before_json or "{}"), json.loads(r.after_json or "{}")
        out.append({"at": r.at, "actor": r.actor, "action": r.action, "reason": r.reason,
                    "change_id": after.get("_change_id"), "undoes": after.get("_undoes"),
                    "judgement": after.get("_judgement"),
                    "merchants": {m: {"before": before.get(m), "after": x} for m, x in after.items()
                                  if m not in _CHANGE_KEYS}})
    return out


# what a live change's audit row holds beside its merchants (a merchant id is any text, "_x" too: these are named)
_CHANGE_KEYS = frozenset({"_release_id", "_model_id", "_source", "_change_id", "_judgement", "_undoes"})


# ---- validation ----------------------------------------------------------------------------------------

def parse_threshold(raw) -> tuple[float | None, str | None]:
    """(value, None) or (None, what is wrong): a threshold must be a finite number in [0, 1]."""
    lo, hi = THRESHOLD_RANGE
    text = str(raw).strip() if raw is not None else ""
    if text == "":
        return None, f"is empty; expected a number in [{lo:g}, {hi:g}]"
    try:
        x = float(text)
    except ValueError:
        return None, f"{shown(text)} is not a number; expected a number in [{lo:g}, {hi:g}]"
    if not math.isfinite(x) or not lo <= x <= hi:
        return None, f"{text if len(text) <= 40 else shown(text)} is out of range; expected a number in [{lo:g}, {hi:g}]"
    return x, None


def validate_edits(edits: Mapping[str, object], known: set[str], release_id: str) -> dict[str, float]:
    """Edits as merchant -> value, checked against the set's merchants; every problem at once."""
    errors, out = [], {}
    for m, raw in edits.items():
        if m not in known:
            errors.append(f"merchant {shown(m)} is not among the {len(known):,} suggestions of {release_id}")
            continue
        x, problem = parse_threshold(raw)
        if problem:
            errors.append(f"merchant {shown(m)}: threshold {problem}")
        else:
            out[m] = x
    if errors:
        raise ThresholdInputError(errors, "edits")
    return out


# ---- writing ---------------------------------------------------------------------------------------------

def _write_versions(conn, model_id: str, rows: pd.DataFrame, *, set_id: int | None, at: str) -> int:
    """Append one version per row (merchant_id, value, change, automatic, actor, reason). Returns the
    change id that groups them."""
    latest = _latest_versions(conn, model_id).set_index("merchant_id")
    change_id = (conn.execute(sa.select(sa.func.max(threshold_versions.c.change_id))).scalar() or 0) + 1
    prev_v = rows["merchant_id"].map(latest["version"]) if len(latest) else pd.Series(np.nan, index=rows.index)
    prev_val = rows["merchant_id"].map(latest["value"]) if len(latest) else pd.Series(np.nan, index=rows.index)
    out = pd.DataFrame({
        "model_id": model_id, "merchant_id": rows["merchant_id"].astype(str),
        "version": (prev_v.fillna(0).astype(int) + 1).to_numpy(),
        "value": rows["value"].astype(float), "previous_value": prev_val.astype(float),
        "set_id": set_id, "change_id": change_id, "change": rows["change"].astype(str),
        "automatic": rows["automatic"].astype(bool), "at": at, "actor": rows["actor"].astype(str),
        "reason": rows["reason"].astype(str),
    })
    for c in ("value", "previous_value"):
        out[c] = out[c].astype(object).where(out[c].notna(), None)
    if len(out):
        conn.execute(threshold_versions.insert(), out.to_dict("records"))
    return change_id


def create_set(model_id: str, release_id: str | None, suggestions: pd.DataFrame, global_threshold: float, *,
               at: str, actor: str, reason: str, status: str = PENDING, automatic: bool = False) -> int:
    """Record a threshold set (idempotent per release and model: a rerun never undoes a decided set). A
    rerun while the release's set is still pending supersedes it: a person's edits carry over to the new
    set where the same model still suggests a threshold for that merchant; every other edit is dropped,
    and each one, carried or dropped, is named in the audit (who edited, when, the values). A set created
    approved (the bootstrap incumbent's) goes live at once."""
    with transaction() as conn:
        superseded = []
        if release_id is not None:
            earlier = conn.execute(sa.select(threshold_sets.c.id, threshold_sets.c.model_id, threshold_sets.c.status,
                                             threshold_sets.c.release_id)
                                   .where(threshold_sets.c.release_id == release_id)
                                   .order_by(threshold_sets.c.id.desc())).all()
            decided = [r for r in earlier if r.model_id == model_id and r.status not in (PENDING, SUPERSEDED)]
            if decided:
                return decided[0].id  # already decided: a rerun must not undo a person's decision
            superseded = [r for r in earlier if r.status == PENDING]
        set_id = conn.execute(threshold_sets.insert().values(
            model_id=model_id, release_id=release_id, status=status, global_threshold=float(global_threshold),
            created_at=at, decided_by=actor if status != PENDING else None,
            decided_at=at if status != PENDING else None, reason=reason if status != PENDING else None,
            automatic=automatic)).inserted_primary_key[0]
        s = suggestions
        col = lambda name, default: s[name] if name in s else pd.Series(default, index=s.index)  # noqa: E731
        if len(s):
            rows = pd.DataFrame({
                "set_id": set_id, "merchant_id": s["merchant_id"].astype(str),
                "value": s["suggested_threshold"].astype(float),
                "current_value": col("current_threshold", np.nan).astype(float),
                "support": col("support", 0).astype(int), "shrunk": col("shrunk", False).astype(bool),
                "reason": col("reason", "").astype(str),
            })
            rows["current_value"] = rows["current_value"].astype(object).where(rows["current_value"].notna(), None)
            conn.execute(thresholds.insert(), rows.to_dict("records"))
            outcome = PENDING if status == PENDING else (AUTO_APPROVED if automatic else status)
            conn.execute(threshold_items.insert(), pd.DataFrame({
                "set_id": set_id, "merchant_id": rows["merchant_id"], "segment": col("segment", "all").astype(str),
                "policy": col("policy", "keep_block_rate").astype(str), "suggested": rows["value"],
                "edited": False, "outcome": outcome}).to_dict("records"))
        write_audit(conn, at=at, actor=actor, action="create_threshold_set", entity=f"thresholds:{set_id}",
                    after={"model_id": model_id, "release_id": release_id, "status": status,
                           "merchants": int(len(s)), "global_threshold": float(global_threshold)},
                    reason=reason)
        for old in superseded:
            _supersede(conn, old, set_id, model_id, at=at, actor=actor)
        if status == APPROVED:
            live = pd.DataFrame({"merchant_id": [GLOBAL] + list(s["merchant_id"].astype(str)),
                                 "value": [float(global_threshold)] + list(s["suggested_threshold"].astype(float))})
            live["change"], live["automatic"], live["actor"], live["reason"] = (
                AUTO_APPROVED if automatic else APPROVED, automatic, actor, reason)
            _write_versions(conn, model_id, live, set_id=set_id, at=at)
    return int(set_id)


def _edit_authors(conn, set_id: int) -> dict[str, dict]:
    """merchant -> who made the standing edit of a pending set (edited_by, edited_at, edit_reason), from
    its audit rows: a person's edit, or one carried over from a set a rerun superseded."""
    rows = conn.execute(sa.select(audit.c.actor, audit.c.at, audit.c.action, audit.c.reason, audit.c.after_json)
                        .where((audit.c.entity == f"thresholds:{set_id}")
                               & audit.c.action.in_(["thresholds_edited", "thresholds_edits_carried_over"]))
                        .order_by(audit.c.id)).all()
    out = {}
    for r in rows:
        for m, v in json.loads(r.after_json or "{}").items():
            if r.action == "thresholds_edited" and not m.startswith("_"):
                out[m] = {"edited_by": r.actor, "edited_at": r.at, "edit_reason": r.reason}
            elif r.action == "thresholds_edits_carried_over" and isinstance(v, dict):
                out[m] = {k: v.get(k) for k in ("edited_by", "edited_at", "edit_reason")}
    return out


def _supersede(conn, old, new_set_id: int, model_id: str, *, at: str, actor: str) -> None:
    """Close the pending set ``old`` as superseded by ``new_set_id``: carry its edits to the new set where
    the same model suggests a threshold for the merchant, drop the rest, and audit each edit either way."""
    t, i = thresholds, threshold_items
    edited = conn.execute(sa.select(t.c.merchant_id, t.c.value, i.c.suggested)
                          .select_from(t.join(i, (i.c.set_id == t.c.set_id) & (i.c.merchant_id == t.c.merchant_id)))
                          .where((t.c.set_id == old.id) & i.c.edited)).all()
    authors = _edit_authors(conn, old.id)
    new = dict(conn.execute(sa.select(t.c.merchant_id, t.c.value).where(t.c.set_id == new_set_id)).all())
    carried, dropped = {}, {}
    for r in edited:
        who = authors.get(r.merchant_id, {"edited_by": "unknown (no audit row)", "edited_at": None,
                                           "edit_reason": None})
        entry = {**who, "suggested_before": r.suggested, "edited_value": r.value}
        if old.model_id == model_id and r.merchant_id in new:
            carried[r.merchant_id] = {**entry, "suggested_now": new[r.merchant_id], "value": r.value}
        else:
            why = ("the rerun's candidate is another model" if old.model_id != model_id
                   else "the rerun suggests no threshold for this merchant")
            dropped[r.merchant_id] = {**entry, "why": why}
    conn.execute(threshold_sets.update().where(threshold_sets.c.id == old.id).values(
        status=SUPERSEDED, decided_by=actor, decided_at=at, automatic=True,
        reason=f"superseded by threshold set {new_set_id} (a rerun of release {old.release_id})"))
    conn.execute(i.update().where((i.c.set_id == old.id) & (i.c.outcome == PENDING)).values(outcome=SUPERSEDED))
    if carried:
        names = list(carried)
        conn.execute(t.update().where((t.c.set_id == new_set_id) & (t.c.merchant_id == sa.bindparam("m")))
                     .values(value=sa.bindparam("v")), [{"m": m, "v": carried[m]["value"]} for m in names])
        conn.execute(i.update().where((i.c.set_id == new_set_id) & i.c.merchant_id.in_(names)).values(edited=True))
        write_audit(conn, at=at, actor=actor, action="thresholds_edits_carried_over", entity=f"thresholds:{new_set_id}",
                    before={m: carried[m]["suggested_now"] for m in names},
                    after={**carried, "_from_set": old.id, "_release_id": old.release_id},
                    reason=f"{len(names)} edit(s) of superseded set {old.id} kept: "
                           + ", ".join(f"{m} by {carried[m]['edited_by']}" for m in names[:10])
                           + (" ..." if len(names) > 10 else ""))
    write_audit(conn, at=at, actor=actor, action="thresholds_superseded", entity=f"thresholds:{old.id}",
                before={"status": PENDING, "model_id": old.model_id},
                after={"status": SUPERSEDED, "by_set": new_set_id, "release_id": old.release_id, "model_id": model_id,
                       "edits_carried_over": sorted(carried), "edits_dropped": dropped},
                reason=f"release {old.release_id} was rerun; "
                       + (f"{len(dropped)} edit(s) dropped: "
                          + ", ".join(f"{m} by {d['edited_by']} ({d['why']})" for m, d in list(dropped.items())[:10])
                          + (" ..." if len(dropped) > 10 else "")
                          if dropped else "no edit was dropped"))


def live_change(model_id: str, conn=None) -> int:
    """The id of the latest change of the model's live thresholds (0 when none was recorded): what a live edit
    was judged against, checked again when it is applied."""
    q = sa.select(sa.func.max(threshold_versions.c.change_id)).where(threshold_versions.c.model_id == model_id)
    if conn is not None:
        return int(conn.execute(q).scalar() or 0)
    with engine().connect() as c:
        return int(c.execute(q).scalar() or 0)


def edit(release_id: str, edits: Mapping[str, object], *, actor: str, reason: str, at: str,
         source: str = "cli", judgement: dict | None = None) -> dict:
    """Change merchants' thresholds in the release's set. Pending set: the proposal changes (the
    suggestion is kept; the merchant counts as edited; the policy is judged once approved). Approved set:
    a live change, one new version per merchant of the model's thresholds, applied only with its
    ``judgement`` (release.orchestration.live_edits.edit_thresholds: the release's contracts on the policy as
    edited), judged against the live thresholds as they still are (``judgement["change_id"]``), and
    recorded with it in the audit row. Values equal to the current one are not changes."""
    with transaction() as conn:
        return _edit(conn, _require_set(conn, release_id, "edit"), edits, actor=actor, reason=reason, at=at,
                     source=source, judgement=judgement)


def _edit(conn, s, edits: Mapping[str, object], *, actor: str, reason: str, at: str, source: str,
          judgement: dict | None = None) -> dict:
    release_id = s.release_id
    if s.status not in (PENDING, APPROVED):
        raise ApprovalError(f"The thresholds of release {release_id} were {s.status}"
                            + (f" by {s.decided_by} at {s.decided_at}" if s.decided_by else "")
                            + "; they cannot be edited.")
    cur = pd.read_sql(sa.select(thresholds.c.merchant_id, thresholds.c.value)
                      .where(thresholds.c.set_id == s.id), conn).set_index("merchant_id")["value"]
    values = validate_edits(edits, set(cur.index), release_id)
    live = s.status == APPROVED
    if live:
        if judgement is None:
            raise ApprovalError(f"The thresholds of release {release_id} are live: an edit moves money, so the "
                                "release's contracts judge it first (`fraudcd thresholds edit`, "
                                "release.orchestration.live_edits.edit_thresholds). Nothing was applied.")
        now = live_change(s.model_id, conn)
        if now != judgement.get("change_id"):
            raise ApprovalError(f"The live thresholds of model {s.model_id} changed (change {now}) after this edit "
                                f"was judged against change {judgement.get('change_id')}. Nothing was applied: "
                                "run it again, to judge it against what is live now.")
        latest = _latest_versions(conn, s.model_id).set_index("merchant_id")["value"]
        before = {m: (None if pd.isna(latest.get(m, np.nan)) else float(latest[m])) for m in values}
    else:
        before = {m: float(cur[m]) for m in values}
    changed = {m: x for m, x in values.items() if before[m] is None or abs(before[m] - x) > 1e-12}
    change_id = None
    if changed:
        names = list(changed)
        if live:
            rows = pd.DataFrame({"merchant_id": names, "value": [changed[m] for m in names]})
            rows["change"], rows["automatic"], rows["actor"], rows["reason"] = "edited", False, actor, reason
            change_id = _write_versions(conn, s.model_id, rows, set_id=s.id, at=at)
        else:
            conn.execute(thresholds.update().where((thresholds.c.set_id == s.id)
                                                   & (thresholds.c.merchant_id == sa.bindparam("m")))
                         .values(value=sa.bindparam("v")), [{"m": m, "v": changed[m]} for m in names])
        conn.execute(threshold_items.update().where((threshold_items.c.set_id == s.id)
                                                    & threshold_items.c.merchant_id.in_(names)).values(edited=True))
        write_audit(conn, at=at, actor=actor, action="thresholds_live_edit" if live else "thresholds_edited",
                    entity=f"thresholds:{s.id}", before={m: before[m] for m in names},
                    after={**{m: changed[m] for m in names}, "_release_id": release_id, "_model_id": s.model_id,
                           "_source": source, "_change_id": change_id,
                           **({"_judgement": judgement} if live else {})}, reason=reason)
    return {"set_id": s.id, "status": s.status, "live": live, "changed": len(changed),
            "unchanged": len(values) - len(changed), "change_id": change_id,
            "edits": {m: {"before": before[m], "after": x} for m, x in changed.items()},
            "judgement": judgement if live else None}


def _decide(conn, s, decision: str, *, actor: str, reason: str, at: str, merchants: list[str] | None,
            automatic: bool) -> dict:
    release_id = s.release_id
    items = pd.read_sql(sa.select(threshold_items.c.merchant_id, threshold_items.c.segment,
                                  threshold_items.c.edited, threshold_items.c.outcome)
                        .where(threshold_items.c.set_id == s.id), conn)
    if merchants is not None:
        if decision == REJECTED:
            raise ThresholdInputError(["a rejection applies to the whole set; to leave some merchants out, "
                                       "approve the others with --merchant"], "decision")
        unknown = sorted(set(merchants) - set(items["merchant_id"]))
        if unknown:
            raise ThresholdInputError([f"merchant {m!r} is not among the {len(items):,} suggestions of {release_id}"
                                       for m in unknown], "merchant list")
    pending = items["outcome"] == PENDING
    if decision == REJECTED:
        outcome = pd.Series(REJECTED, index=items.index)
    else:
        chosen = pending if merchants is None else pending & items["merchant_id"].isin(merchants)
        outcome = items["outcome"].where(~pending, np.where(chosen, APPROVED, NOT_APPROVED))
    for o in (APPROVED, NOT_APPROVED, REJECTED):
        names = items.loc[(outcome == o) & (items["outcome"] != o), "merchant_id"].tolist()
        for i in range(0, len(names), 500):
            conn.execute(threshold_items.update().where((threshold_items.c.set_id == s.id)
                                                        & threshold_items.c.merchant_id.in_(names[i:i + 500]))
                         .values(outcome=o))
    conn.execute(threshold_sets.update().where(threshold_sets.c.id == s.id).values(
        status=decision, decided_by=actor, decided_at=at, reason=reason, automatic=automatic))
    counts = {k: int((outcome == k).sum()) for k in (APPROVED, AUTO_APPROVED, NOT_APPROVED)}
    change_id = None
    if decision == APPROVED:
        prop = pd.read_sql(sa.select(thresholds.c.merchant_id, thresholds.c.value)
                           .where(thresholds.c.set_id == s.id), conn).set_index("merchant_id")["value"]
        auto = outcome == AUTO_APPROVED
        who = auto_actor_from_audit(conn, s.id) if auto.any() else actor
        rows = pd.DataFrame({
            "merchant_id": [GLOBAL] + items["merchant_id"].tolist(),
            "value": [float(s.global_threshold)] + list(np.where(outcome == NOT_APPROVED, np.nan,
                                                                 items["merchant_id"].map(prop).to_numpy(dtype=float))),
            "change": [APPROVED] + outcome.tolist(),
            "automatic": [automatic] + list(auto | automatic),
            "actor": [actor] + list(np.where(auto, who, actor)),
        })
        rows["reason"] = reason
        change_id = _write_versions(conn, s.model_id, rows, set_id=s.id, at=at)
    after = {"status": decision, "release_id": release_id, "model_id": s.model_id}
    if decision == APPROVED:
        after.update({**counts, "edited": int(items["edited"].sum()), "change_id": change_id,
                      **({"merchants": sorted(merchants)} if merchants is not None else {})})
    write_audit(conn, at=at, actor=actor, action=f"thresholds_{decision}", entity=f"thresholds:{s.id}",
                before={"status": PENDING}, after=after, reason=reason)
    conn.execute(releases.update().where(releases.c.id == release_id).values(updated_at=at))
    return {"set_id": s.id, "status": decision, **(counts if decision == APPROVED else {}),
            "edited": int(items["edited"].sum()), "change_id": change_id}


def auto_actor_from_audit(conn, set_id: int) -> str:
    """The automation actor that approved items of this set (recorded when it did)."""
    r = conn.execute(sa.select(audit.c.actor).where((audit.c.entity == f"thresholds:{set_id}")
                                                    & (audit.c.action == "thresholds_auto_approved"))
                     .order_by(audit.c.id.desc())).first()
    return r.actor if r else auto_actor(0)


def decide(release_id: str, decision: str, *, actor: str, reason: str, at: str,
           merchants: list[str] | None = None, automatic: bool = False,
           edits: Mapping[str, object] | None = None) -> dict:
    """Approve (all, or only ``merchants``) or reject the release's pending set, after applying
    ``edits`` (merchant -> value) to it, all in one transaction. Exactly one decision per set.
    Merchants left out of an approval get no threshold of their own: the global one applies."""
    if decision not in (APPROVED, REJECTED):
        raise ApprovalError(f"decision must be '{APPROVED}' or '{REJECTED}'; got {decision!r}.")
    with transaction() as conn:
        s = _require_set(conn, release_id, "decide on")
        if s.status != PENDING:
            raise ApprovalError(f"The thresholds of release {release_id} were already {s.status}"
                                + (f" by {s.decided_by} at {s.decided_at}" if s.decided_by else "")
                                + "; nothing changed.")
        edited = None
        if edits:
            edited = _edit(conn, s, edits, actor=actor, reason=reason, at=at, source="decision")
        out = _decide(conn, s, decision, actor=actor, reason=reason, at=at, merchants=merchants,
                      automatic=automatic)
        return {**out, "edits": edited["edits"]} if edited else out


def expire(release_id: str, *, actor: str, reason: str, at: str) -> dict:
    """Nobody decided in time: the set is closed undecided (nothing goes live) and the fact recorded."""
    with transaction() as conn:
        s = _require_set(conn, release_id, "expire")
        if s.status != PENDING:
            return {"set_id": s.id, "status": s.status}
        conn.execute(threshold_sets.update().where(threshold_sets.c.id == s.id).values(
            status=EXPIRED, decided_by=actor, decided_at=at, reason=reason, automatic=True))
        conn.execute(threshold_items.update().where((threshold_items.c.set_id == s.id)
                                                    & (threshold_items.c.outcome == PENDING)).values(outcome=EXPIRED))
        write_audit(conn, at=at, actor=actor, action="thresholds_expired", entity=f"thresholds:{s.id}",
                    before={"status": PENDING}, after={"status": EXPIRED, "release_id": release_id,
                                                       "model_id": s.model_id}, reason=reason)
    return {"set_id": s.id, "status": EXPIRED}


def auto_approve_segments(release_id: str, segments: list[str], *, after: int, at: str) -> dict:
    """Mark the pending suggestions of ``segments`` approved by the automation (opt-in; see
    readiness()). If nothing else is left pending, the set is approved, as automatic."""
    actor = auto_actor(after)
    with transaction() as conn:
        s = _require_set(conn, release_id, "auto-approve")
        if s.status != PENDING or not segments:
            return {"set_id": s.id, "status": s.status, "auto_approved": 0, "segments": []}
        res = conn.execute(threshold_items.update().where(
            (threshold_items.c.set_id == s.id) & (threshold_items.c.outcome == PENDING)
            & threshold_items.c.segment.in_(segments)).values(outcome=AUTO_APPROVED))
        n = res.rowcount
        reason = (f"segments {', '.join(sorted(segments))}: the last {after} releases' suggestions were all "
                  "accepted unedited")
        write_audit(conn, at=at, actor=actor, action="thresholds_auto_approved", entity=f"thresholds:{s.id}",
                    before={"status": PENDING}, after={"release_id": release_id, "model_id": s.model_id,
                                                       "segments": sorted(segments), "merchants": n},
                    reason=reason)
        left = conn.execute(sa.select(sa.func.count()).select_from(threshold_items).where(
            (threshold_items.c.set_id == s.id) & (threshold_items.c.outcome == PENDING))).scalar()
        status = PENDING
        if left == 0:
            _decide(conn, s, APPROVED, actor=actor, reason=reason, at=at, merchants=None, automatic=True)
            status = APPROVED
    return {"set_id": s.id, "status": status, "auto_approved": n, "segments": sorted(segments)}


def rollback(model_id: str, *, actor: str, reason: str, at: str, merchants: list[str] | None = None,
             change_id: int | None = None) -> dict:
    """Put merchants' live thresholds back to what they were before their last change (``merchants``), or
    undo one change (``change_id``: every merchant it touched, provided none changed since). Adds
    versions; the model is untouched (model rollback is `fraudcd rollback`)."""
    if (merchants is None) == (change_id is None):
        raise ThresholdInputError(["name the merchants to roll back or one change id, not both and not neither"],
                                  "rollback")
    with transaction() as conn:
        v = threshold_versions
        hist = pd.read_sql(sa.select(v.c.merchant_id, v.c.version, v.c.value, v.c.previous_value, v.c.change_id)
                           .where(v.c.model_id == model_id), conn)
        if hist.empty:
            raise ApprovalError(f"Model {model_id!r} has no approved thresholds; nothing to roll back.")
        latest = hist.sort_values("version").groupby("merchant_id").tail(1).set_index("merchant_id")
        if change_id is not None:
            undone = hist[hist["change_id"] == change_id].set_index("merchant_id")
            if undone.empty:
                raise ThresholdInputError([f"change {change_id} changed no threshold of model {model_id}"], "rollback")
            names = undone.index.tolist()
            now, set_to = latest.loc[names, "value"], undone["value"]
            since = [m for m in names if not (now[m] == set_to[m] or (pd.isna(now[m]) and pd.isna(set_to[m])))]
            if since:  # undo only what still stands as the change left it
                raise ApprovalError(f"Cannot undo change {change_id}: {len(since)} merchant(s) changed since "
                                    f"({', '.join(sorted(since)[:10])}); roll those back first.")
        else:
            unknown = sorted(set(merchants) - set(latest.index))
            if unknown:
                raise ThresholdInputError([f"merchant {m!r} has no threshold for model {model_id}" for m in unknown],
                                          "rollback")
            names = list(dict.fromkeys(merchants))
            undone = latest.loc[names]
        first = [m for m in names if undone.loc[m, "version"] <= 1]  # nothing before it for this model
        if first:
            raise ApprovalError(f"Nothing to roll back to for {', '.join(sorted(first)[:10])}"
                                + (f" and {len(first) - 10} more" if len(first) > 10 else "")
                                + f": their threshold was the first approved for model {model_id}. "
                                  "To go back further, roll back the model (`fraudcd rollback`).")
        target = undone.loc[names, "previous_value"]
        rows = pd.DataFrame({"merchant_id": names, "value": target.to_numpy(dtype=float)})
        rows["change"], rows["automatic"], rows["actor"], rows["reason"] = "rollback", False, actor, reason
        new_change = _write_versions(conn, model_id, rows, set_id=None, at=at)
        before = {m: (None if pd.isna(latest.loc[m, "value"]) else float(latest.loc[m, "value"])) for m in names}
        after = {m: (None if pd.isna(x) else float(x)) for m, x in zip(names, target)}
        write_audit(conn, at=at, actor=actor, action="thresholds_rollback", entity=f"thresholds:model:{model_id}",
                    before=before, after={**after, "_change_id": new_change, "_undoes": change_id}, reason=reason)
    return {"model_id": model_id, "change_id": new_change, "undoes": change_id,
            "merchants": {m: {"before": before[m], "after": after[m]} for m in names}}


# ---- CSV round trip ---------------------------------------------------------------------------------------

CSV_COLUMNS = ["merchant_id", "segment", "policy", "support", "shrunk", "current_threshold",
               "suggested_threshold", "threshold", "reason"]
# A spreadsheet runs a cell that starts with one of these as a formula (CSV injection). Export puts a
# single quote before such a cell (OWASP's advice) unless it is a plain number ("-0.5" is a number, not
# a formula, and stays one); import removes exactly that quote. A cell that already starts with a quote
# followed by one of these (or another quote) gets a quote too, so the escaping undoes exactly.
FORMULA_START = ("=", "+", "-", "@", "\t", "\r")
_PLAIN_NUMBER = re.compile(r"[+-]?(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?")


def escape_cell(text: str) -> str:
    """The cell as written to an export: formula-like text gets a leading single quote."""
    if (text.startswith(FORMULA_START) and not _PLAIN_NUMBER.fullmatch(text)) or \
            (text.startswith("'") and text[1:2] in (*FORMULA_START, "'")):
        return "'" + text
    return text


def unescape_cell(text: str) -> str:
    """The inverse of escape_cell: a leading quote before a formula character (or a quote) goes."""
    return text[1:] if text.startswith("'") and text[1:2] in (*FORMULA_START, "'") else text


def _cell(v) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return ""
    if isinstance(v, (bool, np.bool_)):
        return str(bool(v))
    if isinstance(v, (float, np.floating)):
        return repr(float(v))  # full precision: an untouched row imports as unchanged
    if isinstance(v, (int, np.integer)):
        return str(int(v))
    return escape_cell(str(v))


def export_csv(release_id: str) -> str:
    """The release's suggestions as CSV for a spreadsheet: edit the ``threshold`` column (only), then
    import. Full float precision, so untouched rows import as unchanged; formula-like text is escaped
    (see FORMULA_START), so opening the file cannot run anything."""
    s = latest_set(release_id)
    if s is None:
        raise ApprovalError(f"Release {release_id!r} has no threshold suggestions to export.")
    items = set_items(s["id"])
    out = pd.DataFrame({"merchant_id": items["merchant_id"], "segment": items["segment"].fillna("all"),
                        "policy": items["policy"].fillna(""), "support": items["support"].fillna(0).astype(int),
                        "shrunk": items["shrunk"].fillna(False).astype(bool), "current_threshold": items["current"],
                        "suggested_threshold": items["suggested"], "threshold": items["proposed"],
                        "reason": items["reason"].fillna("")})
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\r\n")  # RFC 4180; and a cell holding a CR is quoted
    w.writerow(CSV_COLUMNS)
    w.writerows([_cell(v) for v in row] for row in out[CSV_COLUMNS].itertuples(index=False, name=None))
    return buf.getvalue()


def _csv_rows(reader):
    """(spreadsheet row number, cells) of a csv.reader; a file the csv module cannot read (a cell past
    its size limit, a broken quote) becomes a ThresholdInputError naming the row."""
    i = 1
    while True:
        i += 1
        try:
            row = next(reader)
        except StopIteration:
            return
        except csv.Error as e:
            limit = csv.field_size_limit()
            why = (f"a cell is longer than {limit:,} characters; no merchant id or threshold is that long"
                   if "field limit" in str(e) else f"not readable as CSV ({e})")
            raise ThresholdInputError([f"row {i}: {why}"], "CSV") from None
        yield i, row


def read_csv_edits(text: str, known: set[str], release_id: str) -> dict[str, float]:
    """merchant -> threshold from an edited export. Ids are taken exactly as written (no trimming: " M1 "
    is not M1); export's formula escaping is undone. Every problem is reported with its spreadsheet row
    (the header is row 1), column and value; any problem and nothing is returned."""
    reader = csv.reader(io.StringIO(text.removeprefix("\ufeff")))  # a spreadsheet's byte-order mark
    try:
        header = [h.strip() for h in next(reader)]
    except StopIteration:
        raise ThresholdInputError(["the file is empty; expected a header row with merchant_id and threshold"], "CSV")
    except csv.Error as e:
        raise ThresholdInputError([f"row 1 (header): not readable as CSV ({e})"], "CSV") from None
    missing = [c for c in ("merchant_id", "threshold") if c not in header]
    if missing:
        raise ThresholdInputError([f"row 1 (header): no {', '.join(repr(c) for c in missing)} column; expected "
                                   f"columns merchant_id and threshold (others are ignored); got "
                                   f"{', '.join(shown(h, 40) for h in header[:20])}"], "CSV")
    mi, ti = header.index("merchant_id"), header.index("threshold")
    errors, out, first_row = [], {}, {}
    for i, row in _csv_rows(reader):
        if not any(row):
            continue  # a blank line
        if len(row) != len(header):
            errors.append(f"row {i}: {len(row)} cells; expected {len(header)} like the header")
            continue
        m, raw = unescape_cell(row[mi]), unescape_cell(row[ti])
        if not m:
            errors.append(f"row {i}, column merchant_id: empty; expected a merchant id of {release_id}")
            continue
        if m not in known:
            hint = ("; ids are taken exactly as written, and this one has spaces around it"
                    if m.strip() in known else "")
            errors.append(f"row {i}, column merchant_id: {shown(m)} is not among the {len(known):,} suggestions of "
                          f"{release_id}{hint}")
            continue
        if m in first_row:
            errors.append(f"row {i}, column merchant_id: {m!r} appears again (first at row {first_row[m]}); "
                          "each merchant at most once")
            continue
        first_row[m] = i
        x, problem = parse_threshold(raw)
        if problem:
            errors.append(f"row {i}, column threshold: {problem}")
        else:
            out[m] = x
    if errors:
        raise ThresholdInputError(errors, "CSV")
    return out


def csv_edits(release_id: str, text: str) -> dict[str, float]:
    """merchant -> threshold of an edited export (its text) of the release's set, all of it checked
    (read_csv_edits)."""
    s = latest_set(release_id)
    if s is None:
        raise ApprovalError(f"Release {release_id!r} has no threshold suggestions to import into.")
    return read_csv_edits(text, set(set_rows(s["id"])["merchant_id"]), release_id)


def import_csv(release_id: str, text: str, *, actor: str, reason: str, at: str) -> dict:
    """Apply an edited export (its text) to a pending set: validate all of it, then change every row whose
    threshold differs, in one transaction. Into an approved set it is a live edit, judged first:
    release.orchestration.live_edits.edit_thresholds with ``csv_edits``, as `fraudcd thresholds import` does."""
    return edit(release_id, csv_edits(release_id, text), actor=actor, reason=reason, at=at, source="csv")


# ---- automation readiness -------------------------------------------------------------------------------

def readiness(releases_window: int = 6, streak_window: int = 4, before_set_id: int | None = None) -> pd.DataFrame:
    """Per merchant segment, over the last ``releases_window`` decided releases: how many suggestions a
    person reviewed, the share accepted unedited, and the streak of most recent releases in which the
    segment's suggestions were all accepted unedited (looking back ``streak_window`` releases at least).
    Suggestions the automation approved and nobody touched are not a person's review: they count
    neither way. A rejected release breaks every streak it touches."""
    look = max(releases_window, streak_window)
    q = (sa.select(threshold_sets.c.id).where(threshold_sets.c.release_id.is_not(None)
                                             & threshold_sets.c.status.in_([APPROVED, REJECTED])))
    if before_set_id is not None:
        q = q.where(threshold_sets.c.id < before_set_id)
    cols = ["segment", "releases", "suggestions", "accepted_unedited", "share_unedited", "streak"]
    with engine().connect() as conn:
        ids = [r.id for r in conn.execute(q.order_by(threshold_sets.c.id.desc()).limit(look))]
        if not ids:
            return pd.DataFrame(columns=cols)
        items = pd.read_sql(sa.select(threshold_items.c.set_id, threshold_items.c.segment, threshold_items.c.edited,
                                      threshold_items.c.outcome).where(threshold_items.c.set_id.in_(ids)), conn)
    if items.empty:
        return pd.DataFrame(columns=cols)
    items["edited"] = items["edited"].astype(bool)
    reviewed = items[~((items["outcome"] == AUTO_APPROVED) & ~items["edited"])].copy()
    reviewed["unedited"] = reviewed["outcome"].isin([APPROVED, AUTO_APPROVED]) & ~reviewed["edited"]
    recent = reviewed[reviewed["set_id"].isin(ids[:releases_window])]
    g = recent.groupby("segment")
    out = pd.DataFrame({"releases": g["set_id"].nunique(), "suggestions": g.size(),
                        "accepted_unedited": g["unedited"].sum().astype(int)})
    out["share_unedited"] = out["accepted_unedited"] / out["suggestions"]
    per = (reviewed.groupby(["segment", "set_id"])["unedited"].all().reset_index()
           .sort_values(["segment", "set_id"], ascending=[True, False]))
    per["run"] = per["unedited"].astype(int).groupby(per["segment"]).cumprod()
    streak = per.groupby("segment")["run"].sum().astype(int)
    out = out.reindex(out.index.union(streak.index))
    out["streak"] = streak.reindex(out.index).fillna(0).astype(int)
    out[["releases", "suggestions", "accepted_unedited"]] = out[["releases", "suggestions",
                                                                 "accepted_unedited"]].fillna(0).astype(int)
    return out.reset_index(names="segment")[cols]


def segments_ready(ready: pd.DataFrame, auto) -> list[str]:
    """The segments the opt-in auto-approval may approve: none unless enabled; else those whose streak
    reached ``after_unedited_releases`` (and, if listed, only the listed segments)."""
    if not auto.enabled or ready.empty:
        return []
    ok = ready[ready["streak"] >= auto.after_unedited_releases]["segment"].tolist()
    return sorted(s for s in ok if not auto.segments or s in auto.segments)
