"""Alembic environment: runs on the connection release.state.store.migrate hands over (no alembic.ini)."""
from __future__ import annotations

from alembic import context

from release.state.store import VERSION_TABLE, metadata

context.configure(connection=context.config.attributes["connection"], target_metadata=metadata,
                  version_table=VERSION_TABLE, render_as_batch=True)
with context.begin_transaction():
    context.run_migrations()
