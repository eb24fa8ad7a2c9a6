"""A release as the state store holds it, read in one place: the release row (``get_release``), and the
release view a report is written from (``release_view``: its verdicts, threshold set, ramp steps, waivers and
the audit rows about it). Used by every room above state; nothing else queries these tables for a report."""
from __future__ import annotations

import json

import sqlalchemy as sa

from release.state.approvals import APPROVED, latest_set, live_changes
from release.state.overrides import overrides_for
from release.state.store import audit, engine, ramp_steps, releases, threshold_sets, transaction, verdicts


def get_release(release_id: str) -> dict:
    with engine().connect() as conn:
        r = conn.execute(sa.select(releases).where(releases.c.id == release_id)).first()
    if r is None:
        raise KeyError(f"No release {release_id!r} in the state store.")
    return dict(r._mapping)


def release_verdicts(release_id: str) -> list[dict]:
    with engine().connect() as conn:
        rows = conn.execute(sa.select(verdicts).where(verdicts.c.release_id == release_id).order_by(verdicts.c.id))
        return [dict(r._mapping) for r in rows]


def ramp_step_log(release_id: str) -> list[dict]:
    with engine().connect() as conn:
        rows = conn.execute(sa.select(ramp_steps).where(ramp_steps.c.release_id == release_id)
                            .order_by(ramp_steps.c.id))
        return [dict(r._mapping) for r in rows]


def releases_newest_first() -> list[dict]:
    with engine().connect() as conn:
        return [dict(r._mapping) for r in conn.execute(sa.select(releases).order_by(releases.c.as_of.desc()))]


def record_report(release_id: str, path: str) -> None:
    """Where the release's report was written (a pointer, not a decision: not audited)."""
    with transaction() as conn:
        conn.execute(releases.update().where(releases.c.id == release_id).values(report_path=path))


def _json(text: str | None) -> dict:
    d = json.loads(text) if text else None
    return d if isinstance(d, dict) else {}


def _trail(conn, rel: dict, set_ids: list[int]) -> list[dict]:
    """The audit rows about the release, by what they are about (never by text that happens to match): the
    release's own rows (status, waivers), its threshold sets, its candidate model (registration, threshold
    rollbacks, tag moves to or from it), and the deployment's changes while this release was live."""
    rid, cand = rel["id"], rel.get("candidate_model_id")
    own = {f"release:{rid}", *(f"thresholds:{i}" for i in set_ids)}
    if cand:
        own |= {f"model:{cand}", f"thresholds:model:{cand}"}
    rows = conn.execute(sa.select(audit).where(audit.c.entity.in_(sorted(own)) | (audit.c.entity == "ramp")
                                               | audit.c.entity.like("tag:%")).order_by(audit.c.id))
    out = []
    for r in rows:
        t = dict(r._mapping)
        if t["entity"] == "ramp":
            keep = _json(t["after_json"]).get("release_id") == rid
        elif t["entity"].startswith("tag:"):
            keep = bool(cand) and cand in (_json(t["after_json"]).get("model_id"), _json(t["before_json"]).get("model_id"))
        else:
            keep = True
        if keep:
            out.append(t)
    return out


def release_view(release_id: str) -> dict:
    """Everything the state store holds about one release: ``release`` (its row), ``verdicts`` (in order),
    ``threshold_set`` (its latest, or None), ``live_changes`` (of its thresholds once approved: edits and
    rollbacks), ``ramp_steps``, ``overrides`` and ``trail`` (the audit rows about it, oldest first). Each part is
    read by the function that reads it everywhere else."""
    rel = get_release(release_id)
    with engine().connect() as conn:
        set_ids = [r.id for r in conn.execute(sa.select(threshold_sets.c.id)
                                              .where(threshold_sets.c.release_id == release_id))]
        trail = _trail(conn, rel, set_ids)
    tset = latest_set(release_id)
    live = live_changes(tset["id"], tset["model_id"]) if tset and tset["status"] == APPROVED else []
    return {"release": rel, "verdicts": release_verdicts(release_id), "threshold_set": tset, "live_changes": live,
            "ramp_steps": ramp_step_log(release_id), "overrides": overrides_for(release_id), "trail": trail}
