"""Alerts: something a person must look at (a guardrail rolled a candidate back, a ramp is ready to promote,
thresholds await approval, a release ended: shipped, stopped or rolled back; a monitored day found drift).

Each alert is one row of the state store's ``alerts`` table (release.state.store; migration 0006 moved the
``alerts.jsonl`` of earlier versions there), written in its own transaction. Once it committed, it is logged
at ERROR, WARNING or INFO level by its severity and, when ``FRAUDCD_ALERT_WEBHOOK`` is set, POSTed there as
JSON (best effort, two-second timeout: a slow pager must not hold up a rollback, which has already
happened). An alert is its own record: it moves nothing, so it writes no audit row.

``notify_once`` is for what a release (or a monitored day) announces once: the row carries its key, and the
database refuses a second alert of the same kind and key, whichever task run, rerun or racing process
reaches it first (one row, one log line, one POST). ``fraudcd status`` shows the newest alerts and the
report index lists them.
"""
from __future__ import annotations

import json
import logging

import sqlalchemy as sa

from release.core.settings import alert_webhook
from release.state.store import alerts, engine, transaction

log = logging.getLogger("fraudcd.alerts")

SEVERITIES = {"error": logging.ERROR, "warning": logging.WARNING, "info": logging.INFO}


def _row(kind: str, message: str, at: str, severity: str, details: dict, once_key: str | None) -> dict:
    """The table row of an alert, checked first (a refused row is an error here, not a lost alert later)."""
    if severity not in SEVERITIES:
        raise ValueError(f"Alert severity {severity!r} is not one of {sorted(SEVERITIES)}.")
    for name, value in (("kind", kind), ("at", at)):
        limit = alerts.c[name].type.length
        if not isinstance(value, str) or not value.strip() or len(value) > limit:
            raise ValueError(f"An alert's {name} must be text of 1 to {limit} characters. Got {value!r} instead.")
    if not isinstance(message, str):
        raise ValueError(f"An alert's message must be text. Got {type(message).__name__} instead.")
    rid = details.get("release_id")
    return dict(at=at, kind=kind, severity=severity, message=message,
                details_json=json.dumps(details, sort_keys=True, default=str),
                release_id=rid if isinstance(rid, str) and len(rid) <= alerts.c.release_id.type.length else None,
                once_key=once_key)


def _alert(row) -> dict:
    """An alert as callers know it: at, kind, severity, message and details (a dict)."""
    return {"at": row["at"], "kind": row["kind"], "severity": row["severity"], "message": row["message"],
            "details": json.loads(row["details_json"])}


def _announce(alert: dict) -> None:
    """The log line and the webhook of an alert already committed."""
    log.log(SEVERITIES[alert["severity"]], "ALERT %s: %s", alert["kind"], alert["message"])
    hook = alert_webhook()
    if hook:
        try:
            import httpx

            httpx.post(hook, json=alert, timeout=2.0)
        except Exception:  # noqa: BLE001 - the alert is in the store and in the log already
            log.exception("alert webhook %s failed", hook)


def raise_alert(kind: str, message: str, *, at: str, severity: str = "error", details: dict | None = None) -> dict:
    """Record an alert (``at``: the wall clock, ISO), then log it and POST it to the webhook; return it."""
    row = _row(kind, message, at, severity, details or {}, None)
    with transaction() as conn:
        conn.execute(alerts.insert().values(**row))
    alert = _alert(row)
    _announce(alert)
    return alert


def _insert_once(conn):
    """An INSERT the database turns into nothing when the kind and once_key are there already."""
    dialect = conn.dialect.name
    if dialect == "sqlite":
        from sqlalchemy.dialects.sqlite import insert
    elif dialect == "postgresql":
        from sqlalchemy.dialects.postgresql import insert
    else:
        raise NotImplementedError(f"notify_once on {dialect} is not written yet; the state store supports SQLite "
                                  "and PostgreSQL.")
    return insert(alerts).on_conflict_do_nothing(index_elements=["kind", "once_key"])


def notify_once(kind: str, release_id: str, message: str, *, at: str, severity: str = "info",
                details: dict | None = None, key_field: str = "release_id") -> dict | None:
    """``raise_alert`` unless an alert of ``kind`` for ``release_id`` was raised already (then None): what a
    release announces once, whichever task run (or rerun, or racing process) reaches it first. ``key_field``:
    the details field the key is kept in (another key than a release: monitoring's day, check and slice).
    The key is the alert's once_key: one insert, which the database refuses for a kind and key it holds."""
    if not isinstance(release_id, str) or not release_id:
        raise ValueError(f"notify_once needs a key (text) to announce {kind!r} once. Got {release_id!r} instead.")
    row = _row(kind, message, at, severity, {**(details or {}), key_field: release_id}, release_id)
    with transaction() as conn:
        if conn.execute(_insert_once(conn).values(**row).returning(alerts.c.id)).scalar_one_or_none() is None:
            return None
    alert = _alert(row)
    _announce(alert)
    return alert


def read_alerts(limit: int | None = None, *, newest_first: bool = False, release_id: str | None = None) -> list[dict]:
    """The alerts in the order they were raised, oldest first (``newest_first``: the other way); ``limit``:
    only the newest ``limit``; ``release_id``: only those whose details name that release."""
    if limit is not None and (not isinstance(limit, int) or limit < 0):
        raise ValueError(f"The 'limit' parameter of read_alerts must be None or an int >= 0. Got {limit!r} instead.")
    q = sa.select(alerts).order_by(alerts.c.id.desc())
    if release_id is not None:
        q = q.where(alerts.c.release_id == release_id)
    if limit is not None:
        q = q.limit(limit)
    with engine().connect() as conn:
        rows = [_alert(r._mapping) for r in conn.execute(q)]
    return rows if newest_first else rows[::-1]


def count_alerts() -> int:
    """How many alerts the store holds."""
    with engine().connect() as conn:
        return conn.execute(sa.select(sa.func.count()).select_from(alerts)).scalar_one()
