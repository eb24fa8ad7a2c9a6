"""Overrides: a named person waives a failed release contract for one release, with a written reason.

An override names one release and one contract in force; it never carries over to another release.
It is recorded in the state store and the audit log in one transaction, and shown in the report. The
release then goes on when its contracts are checked again (rerun the release for the same date).
"""
from __future__ import annotations

import sqlalchemy as sa

from release.state.store import checked_reason, engine, overrides, releases, transaction, write_audit


class OverrideError(ValueError):
    pass


def add_override(release_id: str, contract: str, *, actor: str, reason: str, at: str,
                 known_contracts: list[str]) -> dict:
    if contract not in known_contracts:
        raise OverrideError(f"Unknown contract {contract!r}; the contracts that judge this release are: "
                            f"{', '.join(known_contracts)}.")
    try:
        reason = checked_reason(reason, f"waiving {contract} for {release_id}")
    except ValueError as e:
        raise OverrideError(str(e)) from None
    with transaction() as conn:
        if conn.execute(sa.select(releases.c.id).where(releases.c.id == release_id)).first() is None:
            raise OverrideError(f"No release {release_id!r} in the state store.")
        prior = conn.execute(sa.select(overrides).where((overrides.c.release_id == release_id)
                                                        & (overrides.c.contract == contract))).first()
        if prior is not None:
            raise OverrideError(f"{contract} was already waived for {release_id} by {prior.actor} at {prior.at}.")
        conn.execute(overrides.insert().values(release_id=release_id, contract=contract, actor=actor,
                                               reason=reason, at=at))
        write_audit(conn, at=at, actor=actor, action="contract_waived", entity=f"release:{release_id}",
                    before=None, after={"contract": contract, "release_id": release_id}, reason=reason)
    return {"release_id": release_id, "contract": contract, "actor": actor, "reason": reason, "at": at}


def overrides_for(release_id: str) -> list[dict]:
    with engine().connect() as conn:
        rows = conn.execute(sa.select(overrides).where(overrides.c.release_id == release_id)
                            .order_by(overrides.c.id))
        return [dict(r._mapping) for r in rows]


def waived_contracts(release_id: str) -> set[str]:
    """Names of the contracts waived for this release."""
    return {o["contract"] for o in overrides_for(release_id)}
