"""A release as the state store holds it: one read, used by every room above state."""
from __future__ import annotations

import sqlalchemy as sa

from release.state.store import engine, releases


def get_release(release_id: str) -> dict:
    with engine().connect() as conn:
        r = conn.execute(sa.select(releases).where(releases.c.id == release_id)).first()
    if r is None:
        raise KeyError(f"No release {release_id!r} in the state store.")
    return dict(r._mapping)
