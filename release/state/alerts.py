"""Alerts: something a person must look at (a guardrail rolled a candidate back, a ramp is ready to promote,
thresholds await approval, a release ended: shipped, stopped or rolled back).

Each alert is one JSON line appended (and fsync'ed) to ``<FRAUDCD_HOME>/alerts.jsonl`` and logged at
ERROR, WARNING or INFO level by its severity; when ``FRAUDCD_ALERT_WEBHOOK`` is set, it is also POSTed
there as JSON (best effort, two-second timeout: a slow pager must not hold up a rollback, which has
already happened). ``notify_once`` is for what a release announces once (a rerun of its task does not
page anyone again).
"""
from __future__ import annotations

import json
import logging
import os
from pathlib import Path

from release.core.settings import alert_webhook, paths

log = logging.getLogger("fraudcd.alerts")


def alerts_file() -> Path:
    return paths().home / "alerts.jsonl"


SEVERITIES = {"error": logging.ERROR, "warning": logging.WARNING, "info": logging.INFO}


def raise_alert(kind: str, message: str, *, at: str, severity: str = "error", details: dict | None = None) -> dict:
    if severity not in SEVERITIES:
        raise ValueError(f"Alert severity {severity!r} is not one of {sorted(SEVERITIES)}.")
    alert = {"at": at, "kind": kind, "severity": severity, "message": message, "details": details or {}}
    path = alerts_file()
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a", encoding="utf-8") as f:
        f.write(json.dumps(alert, sort_keys=True, default=str) + "\n")
        f.flush()
        os.fsync(f.fileno())
    log.log(SEVERITIES[severity], "ALERT %s: %s", kind, message)
    hook = alert_webhook()
    if hook:
        try:
            import httpx

            httpx.post(hook, json=alert, timeout=2.0)
        except Exception:  # noqa: BLE001 - the alert is on disk and in the log already
            log.exception("alert webhook %s failed", hook)
    return alert


def read_alerts() -> list[dict]:
    path = alerts_file()
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def notify_once(kind: str, release_id: str, message: str, *, at: str, severity: str = "info",
                details: dict | None = None, key_field: str = "release_id") -> dict | None:
    """``raise_alert`` unless an alert of ``kind`` for ``release_id`` was raised already (then None): what a
    release announces once, whichever task run (or rerun) reaches it first. ``key_field``: the details field
    the key is kept in (another key than a release: monitoring's day, check and slice)."""
    if any(a["kind"] == kind and a.get("details", {}).get(key_field) == release_id for a in read_alerts()):
        return None
    return raise_alert(kind, message, at=at, severity=severity, details={**(details or {}), key_field: release_id})
