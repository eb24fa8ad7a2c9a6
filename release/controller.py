"""The live ramp controller: walks the ramp plan on the scoring service's own traffic.

One ``tick`` reads the ramp state and the decision log of the current step (or of the shadow period),
then does at most one thing:

- a guardrail breach (action-rate shift per country, error rate, latency; see ``shadow.online_step_check``)
  rolls the candidate back to 0%, records the step as breached with the sentences that say why, and
  raises an alert;
- a step that saw enough traffic for long enough (``min_rows_per_step``, ``min_seconds_per_step``;
  ``shadow.min_rows``, ``shadow.min_seconds`` for the shadow period) without a breach is recorded as
  passed and the next step of the plan begins;
- after the last step (100%) passes, an alert says the candidate is ready to promote; promotion stays a
  person's decision (``fraudcd ramp promote --as NAME --reason ...``).

A paused ramp is still guarded (a breach rolls it back) but never advanced. Every change goes through
``release.ramp`` with ``expect`` set to the state the decision was made on, so an operator's command
that lands in between wins and the controller's stale decision is dropped, not applied. Running two
controllers is therefore safe, if wasteful.

Runs in the scoring service (``fraudcd serve --controller``) or on its own (``fraudcd ramp watch``).
"""
from __future__ import annotations

import datetime as dt
import json
import logging
import threading

import pandas as pd
import sqlalchemy as sa

from release import ramp
from release.alerts import raise_alert
from release.decision_log import LogReader
from release.shadow import decision_diffs, live_traffic, online_action_rate_verdicts, online_step_check
from release.store import engine, ramp_steps, releases, transaction, verdicts

CONTROLLER = "fraud-cd ramp controller"
log = logging.getLogger(__name__)


def _utc(at: str | None, fallback: dt.datetime) -> dt.datetime:
    if not at:
        return fallback
    t = dt.datetime.fromisoformat(at)
    return t if t.tzinfo else t.replace(tzinfo=dt.timezone.utc)


def _step_no(plan: ramp.RampPlan, pct: float) -> int:
    return plan.steps.index(pct) + 1 if pct in plan.steps else 0


def _next_step(plan: ramp.RampPlan, pct: float) -> float | None:
    return next((s for s in plan.steps if s > pct), None)


def _passed_since(release_id: str, pct: float, since: dt.datetime) -> bool:
    """Whether this share already passed since it began (the controller records a step once)."""
    with engine().connect() as conn:
        rows = conn.execute(sa.select(ramp_steps.c.at).where(
            (ramp_steps.c.release_id == release_id) & (ramp_steps.c.pct == pct)
            & (ramp_steps.c.outcome == "passed"))).scalars().all()
    return any(_utc(a, since) >= since for a in rows)


def _record(release_id: str, stage: str, step: int, pct: float, outcome: str | None, details: dict, vs,
            at: str) -> None:
    """The step's outcome (ramp steps table, read by the report and `fraudcd ramp status`) and its
    verdicts (replacing earlier verdicts of the same contracts for this release)."""
    names = sorted({v.contract for v in vs})
    with transaction() as conn:
        if outcome is not None:
            conn.execute(ramp_steps.insert().values(
                release_id=release_id, step=step, pct=pct, outcome=outcome, rows=details["rows"],
                candidate_rows=details["candidate_rows"], details_json=json.dumps(details, default=str), at=at))
        if names:
            conn.execute(verdicts.delete().where((verdicts.c.release_id == release_id) & (verdicts.c.stage == stage)
                                                 & verdicts.c.contract.in_(names)))
            conn.execute(verdicts.insert(), [{"release_id": release_id, "stage": stage, **v.as_dict()} for v in vs])


def _stop_release(release_id: str, reason: str, at: str) -> None:
    with transaction() as conn:
        conn.execute(releases.update().where(releases.c.id == release_id).values(
            status="rolled_back", stop_reason=reason, updated_at=at))


def step_traffic(state: dict, since: dt.datetime, reader: LogReader) -> pd.DataFrame:
    """Decision-log rows of the current step: this release, this share, served since the step began."""
    df = reader.read(since=since - dt.timedelta(seconds=1))
    keep = (df["release_id"] == state["release_id"]) & (df["ramp_pct"] == float(state["pct"])) & \
           (df["served_at"] >= pd.Timestamp(since))
    return df[keep]


def tick(plan: ramp.RampPlan | None = None, now: dt.datetime | None = None, folder=None,
         reader: LogReader | None = None) -> dict:
    """Check the guardrails once and act. Returns what happened (``action``: none | rolled_back |
    advanced | ready_to_promote | waiting | conflict) and why. A ``reader`` kept across ticks reads
    only the decision-log files written since the last tick."""
    from release.settings import config_dir

    plan = plan or ramp.load_plan(config_dir() / "ramp.yaml")
    now = now or dt.datetime.now(dt.timezone.utc)
    at = now.isoformat(timespec="milliseconds")
    st = ramp.current()
    if st["state"] not in (ramp.SHADOW, ramp.RAMPING, ramp.PAUSED):
        return {"action": "none", "why": f"no candidate is live (state: {st['state']})"}
    since = _utc(ramp.step_started_at(), now)
    elapsed = (now - since).total_seconds()
    traffic = step_traffic(st, since, reader or LogReader(folder))
    rid, pct = st["release_id"], float(st["pct"])
    expect = {"version": st["version"]}
    try:
        if pct == 0:  # the shadow period: the candidate scores beside production, serves nothing
            both = live_traffic(traffic)
            g = plan.guardrails.action_rate_shift
            vs = online_action_rate_verdicts(decision_diffs(both), "live_shadow_country_action_rate_shift",
                                             g.max_relative_shift, g.min_absolute_shift, g.min_support,
                                             g.confidence) if len(both) else []
            failed = [v for v in vs if v.verdict == "fail"]
            details = {"rows": int(len(traffic)), "candidate_rows": 0, "compared_rows": int(len(both)), "pct": 0.0,
                       "breaches": [v.sentence for v in failed]}
            if failed:
                reason = "Stopped in shadow (live traffic): " + " ".join(v.sentence for v in failed)
                return _breach(rid, "shadow", 0, 0.0, details, vs, reason, at, expect)
            if st["state"] == ramp.SHADOW and len(both) >= plan.shadow.min_rows and elapsed >= plan.shadow.min_seconds:
                _record(rid, "shadow", 0, 0.0, None, details, vs, at)
                first = plan.steps[0]
                ramp.set_pct(first, at=at, actor=CONTROLLER, expect=expect,
                             reason=f"{rid}: shadow passed on {len(both):,} live transactions over {elapsed:.0f}s; "
                                    f"ramp step 1 of {len(plan.steps)}")
                return {"action": "advanced", "to": first, "details": details}
            return {"action": "waiting", "why": f"shadow: {len(both):,} of {plan.shadow.min_rows:,} transactions "
                                                f"scored by both, {elapsed:.0f}s of {plan.shadow.min_seconds:g}s"}
        step = _step_no(plan, pct)
        breached, details, vs = online_step_check(traffic, pct, plan)
        if breached:
            reason = f"Guardrail breached at {pct:g}% (live traffic): " + " ".join(details["breaches"])
            return _breach(rid, "ramp", step, pct, details, vs, reason, at, expect)
        enough = len(traffic) >= plan.min_rows_per_step and elapsed >= plan.min_seconds_per_step
        if st["state"] == ramp.PAUSED or not enough:
            why = "paused: guarded, not advanced" if st["state"] == ramp.PAUSED else (
                f"step {pct:g}%: {len(traffic):,} of {plan.min_rows_per_step:,} transactions, "
                f"{elapsed:.0f}s of {plan.min_seconds_per_step:g}s")
            return {"action": "waiting", "why": why}
        if _passed_since(rid, pct, since):
            return {"action": "waiting", "why": f"step {pct:g}% passed; waiting for a person to promote"}
        _record(rid, "ramp", step, pct, "passed", details, vs, at)
        nxt = _next_step(plan, pct)
        if nxt is None:
            raise_alert("ramp_ready_to_promote", f"{rid}: every ramp step passed its guardrails on live traffic; "
                        "promote with `fraudcd ramp promote --as NAME --reason ...`", at=at, severity="warning",
                        details=details)
            return {"action": "ready_to_promote", "details": details}
        ramp.set_pct(nxt, at=at, actor=CONTROLLER, expect=expect,
                     reason=f"{rid}: step {pct:g}% passed its guardrails on {len(traffic):,} live transactions; "
                            f"ramp step {_step_no(plan, nxt)} of {len(plan.steps)}")
        return {"action": "advanced", "to": nxt, "details": details}
    except ramp.RampConflict as e:
        return {"action": "conflict", "why": str(e)}


def _breach(rid: str, stage: str, step: int, pct: float, details: dict, vs, reason: str, at: str,
            expect: dict) -> dict:
    ramp.rollback(at=at, actor=CONTROLLER, reason=reason, expect=expect)  # first: traffic is safe before anything else
    _record(rid, stage, step, pct, "breached", details, vs, at)
    _stop_release(rid, reason, at)
    raise_alert("ramp_guardrail_breach", reason, at=at, details=details)
    return {"action": "rolled_back", "why": reason, "details": details}


class Controller:
    """``tick`` every ``poll_s`` seconds in a background thread until stopped."""

    def __init__(self, poll_s: float = 1.0, plan: ramp.RampPlan | None = None, folder=None):
        self.poll_s, self.plan = poll_s, plan
        self.reader = LogReader(folder)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.last: dict | None = None

    def start(self) -> "Controller":
        self._thread = threading.Thread(target=self._run, name="ramp-controller", daemon=True)
        self._thread.start()
        return self

    def _run(self) -> None:
        while not self._stop.wait(self.poll_s):
            try:
                self.last = tick(self.plan, reader=self.reader)
                if self.last["action"] not in ("none", "waiting"):
                    log.warning("ramp controller: %s", self.last)
            except Exception:  # noqa: BLE001 - a failed check is retried at the next tick
                log.exception("ramp controller: the check failed; retrying at the next tick")

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10)
