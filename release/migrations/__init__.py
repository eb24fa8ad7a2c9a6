"""Alembic migrations of the state store (see release.store.migrate)."""
