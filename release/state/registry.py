"""The model registry: immutable model ids over LightGBM text files, and tags that move only through
audited calls.

A model's id is derived from the SHA-256 of its text, so an id can never point at different bytes:
registering the same bytes again returns the same id, and a file whose bytes no longer match its id
is refused on load.
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

import sqlalchemy as sa

from release.core.io import atomic_write_text
from release.core.settings import paths
from release.state.store import engine, models, tag_history, tags, transaction, write_audit

TAGS = ("production", "candidate", "shadow", "previous")


class RegistryError(ValueError):
    pass


@dataclass(frozen=True)
class Model:
    id: str
    sha256: str
    path: Path
    workflow: str
    features: list[str]
    snapshot_hash: str
    code_version: str
    metrics: dict
    created_at: str
    created_by: str

    def text(self) -> str:
        text = self.path.read_text()
        if hashlib.sha256(text.encode()).hexdigest() != self.sha256:
            raise RegistryError(f"Model {self.id}: the bytes at {self.path} do not match the registered hash.")
        return text

    def booster(self):
        return load_booster(self.text())


def _row_to_model(r) -> Model:
    return Model(id=r.id, sha256=r.sha256, path=Path(r.path), workflow=r.workflow,
                 features=json.loads(r.features_json), snapshot_hash=r.snapshot_hash,
                 code_version=r.code_version, metrics=json.loads(r.metrics_json),
                 created_at=r.created_at, created_by=r.created_by)


def register_model(text: str, *, workflow: dict, features: list[str], snapshot_hash: str, code_version: str,
                   metrics: dict, at: str, actor: str) -> Model:
    sha = hashlib.sha256(text.encode()).hexdigest()
    model_id = f"m-{sha[:16]}"
    existing = get_model(model_id, missing_ok=True)
    if existing is not None:
        return existing
    path = paths().models / f"{sha}.txt"
    if not path.exists():
        atomic_write_text(text, path)
    with transaction() as conn:
        conn.execute(models.insert().values(
            id=model_id, sha256=sha, path=str(path), workflow=workflow["name"],
            workflow_json=json.dumps(workflow, sort_keys=True), snapshot_hash=snapshot_hash,
            code_version=code_version, features_json=json.dumps(features), metrics_json=json.dumps(metrics),
            created_at=at, created_by=actor))
        write_audit(conn, at=at, actor=actor, action="register_model", entity=f"model:{model_id}",
                    after={"sha256": sha, "workflow": workflow["name"], "snapshot": snapshot_hash},
                    reason=f"trained by workflow {workflow['name']} on snapshot {snapshot_hash[:12]}")
    return get_model(model_id)


def get_model(model_id: str, missing_ok: bool = False) -> Model | None:
    with engine().connect() as conn:
        r = conn.execute(sa.select(models).where(models.c.id == model_id)).first()
    if r is None:
        if missing_ok:
            return None
        raise RegistryError(f"No model with id {model_id!r} in the registry.")
    return _row_to_model(r)


def tagged(tag: str) -> Model | None:
    if tag not in TAGS:
        raise RegistryError(f"Unknown tag {tag!r}; allowed: {', '.join(TAGS)}.")
    with engine().connect() as conn:
        r = conn.execute(sa.select(tags.c.model_id).where(tags.c.tag == tag)).first()
    return get_model(r.model_id) if r else None


def set_tag(conn, tag: str, model_id: str | None, *, at: str, actor: str, reason: str) -> None:
    """Move a tag inside the caller's transaction, with history and an audit row."""
    if tag not in TAGS:
        raise RegistryError(f"Unknown tag {tag!r}; allowed: {', '.join(TAGS)}.")
    prev = conn.execute(sa.select(tags.c.model_id).where(tags.c.tag == tag)).scalar()
    if prev == model_id:
        return
    conn.execute(tags.delete().where(tags.c.tag == tag))
    if model_id is not None:
        conn.execute(tags.insert().values(tag=tag, model_id=model_id, since=at, actor=actor))
    conn.execute(tag_history.insert().values(tag=tag, model_id=model_id, previous_model_id=prev, at=at,
                                             actor=actor, reason=reason))
    write_audit(conn, at=at, actor=actor, action="move_tag", entity=f"tag:{tag}", before={"model_id": prev},
                after={"model_id": model_id}, reason=reason)


def move_tag(tag: str, model_id: str | None, *, at: str, actor: str, reason: str) -> None:
    with transaction() as conn:
        set_tag(conn, tag, model_id, at=at, actor=actor, reason=reason)


def tag_log() -> list[dict]:
    with engine().connect() as conn:
        return [dict(r._mapping) for r in conn.execute(sa.select(tag_history).order_by(tag_history.c.id))]


def load_booster(model_text: str):
    """A registered model's text as a LightGBM booster (the one way a model is loaded; no pickle)."""
    import lightgbm as lgb

    return lgb.Booster(model_str=model_text)
