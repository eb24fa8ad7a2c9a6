"""Alembic migrations of the state store (see release.state.store.migrate)."""
