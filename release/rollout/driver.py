"""The live rollout: the candidate in the running scoring service, judged on its own decision log.

``deploy`` puts a release's candidate into shadow in the service (through the one state machine,
``release.rollout.ramp`` / ``release.state.status``). ``advance`` then looks at the evidence of the current stage once
and does at most one thing; the release DAG's rollout task calls it between timer deferrals (no worker held while it
waits), and ``fraudcd ramp watch`` can call it where there is no Airflow:

- a guardrail breach rolls the candidate back to 0% at once (first, before anything else is written),
  records the stage as breached with the sentences that say why, and raises an alert;
- a stage whose guardrails were all judged and held, on at least ``min_candidate_rows`` of the candidate's
  decisions covering ``min_event_seconds`` of transaction time (and ``min_seconds`` of wall clock), passes:
  the next step begins, or after the last step the promotion policy applies (``automatic``: promoted;
  ``person``: ready_to_promote, and an alert asks for `fraudcd ramp promote`);
- otherwise the stage waits; past ``max_wait_seconds`` (wall clock since it began or a person extended it)
  an inconclusive stage is recorded as such, the rollout waits for a decision (``awaiting_decision``) and
  an alert asks a person: `fraudcd ramp extend`, `fraudcd ramp promote --anyway`, or `fraudcd ramp rollback`.
  It never passes unjudged.

A paused ramp, or one waiting for a person, is still guarded (a breach rolls it back) but never advanced.
Every change passes the version it was decided on, so an operator's command that lands in between wins
and the stale decision is dropped (``conflict``), never applied.
"""
from __future__ import annotations

import datetime as dt
import functools
import json
import logging
import threading

import numpy as np
import pandas as pd
import sqlalchemy as sa

from release.rollout import ramp
from release.rollout.decisions import EXTEND, PROMOTE, ROLL_BACK
from release.state.alerts import raise_alert
from release.serving.decision_log import LogReader, process_reader
from release.state.status import LIVE, Status
from release.state.store import engine, ramp_steps, releases, transaction, verdicts

ROLLOUT = "fraud-cd rollout"
log = logging.getLogger(__name__)

# what ``advance`` did: the DAG's rollout task finishes on a terminal outcome and keeps waiting otherwise
NONE, WAITING, ADVANCED, ROLLED_BACK, ASKED, READY, PROMOTED, CONFLICT = (
    "none", "waiting", "advanced", "rolled_back", "asked", "ready_to_promote", "promoted", "conflict")


def _utc(at: str | None, fallback: dt.datetime) -> dt.datetime:
    if not at:
        return fallback
    t = dt.datetime.fromisoformat(at)
    return t if t.tzinfo else t.replace(tzinfo=dt.timezone.utc)


def _step_no(plan: ramp.RampPlan, pct: float) -> int:
    return plan.steps.index(pct) + 1 if pct in plan.steps else 0


def _next_step(plan: ramp.RampPlan, pct: float) -> float | None:
    return next((s for s in plan.steps if s > pct), None)


def deploy(release_id: str, model_id: str, *, at: str, actor: str = ROLLOUT, reason: str | None = None) -> dict:
    """Put the release's candidate into shadow in the running service. Idempotent: a rerun while the
    release is already live (or finished) changes nothing and returns the state."""
    st = ramp.current()
    if st["release_id"] == release_id and (st["state"] in LIVE or st["state"] in (Status.PROMOTED,
                                                                                  Status.ROLLED_BACK)):
        return st
    return ramp.start_shadow(release_id, model_id, at=at, actor=actor,
                             reason=reason or f"{release_id}: approved and backtested; shadowing the candidate "
                                              "in the scoring service")


def _segments(release_id: str | None, model_id: str | None) -> dict[str, str] | None:
    """merchant -> segment for the approved items of the release's threshold set (for the candidate). Every
    other merchant gets the global threshold online and is "not in the approved set" in the guardrail."""
    if not release_id or not model_id:
        return None
    from release.state import approvals
    from release.rollout.guardrails import approved_segments

    s = approvals.latest_set(release_id)
    if s is None or s["model_id"] != model_id:
        return None
    return approved_segments(approvals.set_items(s["id"]))


@functools.lru_cache(maxsize=8)
def _reference_scores(release_id: str | None) -> np.ndarray | None:
    """The candidate's scores on the release's offline judging rows: what its live scores should look like."""
    if not release_id:
        return None
    from analysis.evaluation import Evaluation
    from release.core.settings import paths

    folder = paths().releases / release_id
    try:
        ev = Evaluation.load(folder)
    except Exception:  # noqa: BLE001 - a deployment without a release folder (a model deployed by hand)
        return None
    if ev.judging is None or "candidate_score" not in ev.judging:
        return None
    return ev.judging["candidate_score"].to_numpy(dtype=float)


def stage_traffic(state: dict, since: dt.datetime, reader: LogReader) -> pd.DataFrame:
    """Decision-log rows of the current stage: this release, this share, served since the stage began."""
    df = reader.read(since=since - dt.timedelta(seconds=1))
    keep = (df["release_id"] == state["release_id"]) & (df["ramp_pct"] == float(state["pct"])) & \
           (df["served_at"] >= pd.Timestamp(since))
    return df[keep]


def _record(release_id: str, stage: str, step: int, pct: float, outcome: str | None, details: dict, vs,
            at: str) -> None:
    """The stage's outcome (ramp steps table: report, `fraudcd ramp status`) and its verdicts, replacing
    earlier verdicts of the same contracts for this release and stage (a stage judged again)."""
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


def _judge(traffic: pd.DataFrame, pct: float, plan: ramp.RampPlan, st: dict):
    from release.rollout.guardrails import judge_stage

    return judge_stage(traffic, pct, plan.guardrails, segments=_segments(st["release_id"], st["candidate_model_id"]),
                       reference_scores=_reference_scores(st["release_id"]))


def advance(release_id: str | None = None, plan: ramp.RampPlan | None = None, now: dt.datetime | None = None,
            reader: LogReader | None = None) -> dict:
    """Look at the current stage's evidence once and act. Returns ``action`` (none | waiting | advanced |
    rolled_back | asked | ready_to_promote | promoted | conflict), ``state`` (the deployment's state after
    it) and why. With ``release_id``, acts only on that release's rollout (``none`` once it is not live)."""
    from release.core.pipeline import ramp_file

    plan = plan or ramp.load_plan(ramp_file())
    now = now or dt.datetime.now(dt.timezone.utc)
    at = now.isoformat(timespec="milliseconds")
    st = ramp.current()
    if st["state"] not in LIVE or (release_id is not None and st["release_id"] != release_id):
        why = (f"no candidate is live (state: {st['state']})" if st["state"] not in LIVE
               else f"{release_id} is not the live release ({st['release_id']} is)")
        return {"action": NONE, "state": str(st["state"]), "why": why}
    since = _utc(ramp.stage_started_at(), now)
    waited = (now - _utc(ramp.wait_started_at(), now)).total_seconds()
    elapsed = (now - since).total_seconds()
    traffic = stage_traffic(st, since, reader or process_reader())
    rid, pct, state = st["release_id"], float(st["pct"]), st["state"]
    expect = {"version": st["version"]}
    shadow = pct == 0
    stage, ev = ("shadow", plan.shadow) if shadow else ("ramp", plan.step)
    step = 0 if shadow else _step_no(plan, pct)
    name = "shadow" if shadow else f"step {pct:g}%"
    j = _judge(traffic, pct, plan, st)
    details = {**j.details, "pct": pct, "stage_seconds": round(elapsed, 1), "waited_seconds": round(waited, 1)}
    try:
        if j.status == "breach":
            reason = (f"{rid}: guardrail breached in {name} (live traffic): " + " ".join(j.details["breaches"]))
            ramp.rollback(at=at, actor=ROLLOUT, reason=reason[:2000], expect=expect)  # traffic safe first
            _record(rid, stage, step, pct, "breached", details, j.verdicts, at)
            raise_alert("ramp_guardrail_breach", reason, at=at, details={**details, "release_id": rid})
            return {"action": ROLLED_BACK, "state": str(Status.ROLLED_BACK), "why": reason, "details": details}
        if state in (Status.PAUSED, Status.AWAITING_DECISION, Status.READY_TO_PROMOTE):
            return {"action": WAITING, "state": str(state), "why": f"{state}: guarded, not advanced; a person "
                                                                    "decides", "details": details}
        rows = int(details.get("candidate_rows", 0))
        span = float(j.details.get("span_seconds") or 0.0)
        details["event_seconds"] = round(span, 1)
        short = []
        if rows < ev.min_candidate_rows:
            short.append(f"{rows:,} of {ev.min_candidate_rows:,} candidate decisions")
        if span < ev.min_event_seconds:
            short.append(f"{span / 3600:.1f} of {ev.min_event_seconds / 3600:g} hours of transaction time")
        if elapsed < ev.min_seconds:
            short.append(f"{elapsed:.0f} of {ev.min_seconds:g} seconds of wall clock")
        missing = short + list(j.details.get("missing", []))
        details["missing"] = missing
        if j.status == "pass" and not short:
            _record(rid, stage, step, pct, "passed", details, j.verdicts, at)
            nxt = plan.steps[0] if shadow else _next_step(plan, pct)
            if nxt is not None:
                ramp.set_pct(nxt, at=at, actor=ROLLOUT, expect=expect,
                             reason=f"{rid}: {name} passed its guardrails on {rows:,} candidate decisions over "
                                    f"{span / 3600:.1f} h of transaction time; ramp step {_step_no(plan, nxt)} "
                                    f"of {len(plan.steps)}")
                return {"action": ADVANCED, "state": str(Status.RAMPING), "to": nxt, "details": details}
            if plan.promotion == "automatic":
                ramp.promote(at=at, actor=ROLLOUT, expect=expect,
                             reason=f"{rid}: every stage passed its guardrails on live traffic; promoted by the "
                                    "ramp plan's policy (promotion: automatic)")
                return {"action": PROMOTED, "state": str(Status.PROMOTED), "details": details}
            ramp.ready(at=at, actor=ROLLOUT, expect=expect,
                       reason=f"{rid}: every stage passed its guardrails on live traffic; a person promotes "
                              "(promotion: person)")
            raise_alert("ramp_ready_to_promote", f"{rid}: every stage passed its guardrails on live traffic; "
                        "promote with `fraudcd ramp promote --as NAME --reason ...` (or roll back)", at=at,
                        severity="warning", details={**details, "release_id": rid})
            return {"action": READY, "state": str(Status.READY_TO_PROMOTE), "details": details}
        if waited >= ev.max_wait_seconds:
            reason = (f"{rid}: {name} stayed inconclusive for {waited / 3600:.1f} h (bound "
                      f"{ev.max_wait_seconds / 3600:g} h): " + "; ".join(missing or ["not every guardrail judged"])
                      + ". Waiting for a person: extend, promote anyway, or roll back.")
            ramp.ask(at=at, actor=ROLLOUT, reason=reason[:2000], expect=expect)
            _record(rid, stage, step, pct, "inconclusive", details, j.verdicts, at)
            raise_alert("ramp_inconclusive", reason, at=at, severity="warning", details={**details, "release_id": rid})
            return {"action": ASKED, "state": str(Status.AWAITING_DECISION), "why": reason, "details": details}
        return {"action": WAITING, "state": str(state),
                "why": f"{name}: " + ("; ".join(missing) if missing else "evidence inconclusive"),
                "details": details}
    except ramp.RampConflict as e:
        return {"action": CONFLICT, "state": str(ramp.current()["state"]), "why": str(e)}


def release_status(release_id: str) -> str | None:
    with engine().connect() as conn:
        return conn.execute(sa.select(releases.c.status).where(releases.c.id == release_id)).scalar()


class Watcher:
    """``advance`` every ``poll_s`` seconds in a background thread until stopped (`fraudcd serve
    --controller`, `fraudcd ramp watch`: a deployment without Airflow)."""

    def __init__(self, poll_s: float = 1.0, plan: ramp.RampPlan | None = None, folder=None):
        self.poll_s, self.plan = poll_s, plan
        self.reader = LogReader(folder)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.last: dict | None = None

    def start(self) -> "Watcher":
        self._thread = threading.Thread(target=self._run, name="rollout-watcher", daemon=True)
        self._thread.start()
        return self

    def _run(self) -> None:
        while not self._stop.wait(self.poll_s):
            try:
                self.last = advance(plan=self.plan, reader=self.reader)
                if self.last["action"] not in (NONE, WAITING):
                    log.warning("rollout: %s", self.last)
            except Exception:  # noqa: BLE001 - a failed check is retried at the next tick
                log.exception("rollout: the check failed; retrying at the next tick")

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10)


# ---- a person's decision -------------------------------------------------------------------------------

def needs_person(release_id: str) -> bool:
    """The release's rollout waits for a person: inconclusive past its bound, or ready to promote."""
    st = ramp.current()
    return st["release_id"] == release_id and st["state"] in (Status.AWAITING_DECISION, Status.READY_TO_PROMOTE)


def decision_summary(release_id: str) -> str:
    """What a person sees in the Airflow form (Markdown): where the rollout stands and what evidence is missing."""
    st = ramp.current()
    with engine().connect() as conn:
        last = conn.execute(sa.select(ramp_steps).where(ramp_steps.c.release_id == release_id)
                            .order_by(ramp_steps.c.id.desc()).limit(1)).first()
    d = json.loads(last.details_json) if last is not None else {}
    stage = "shadow" if float(st["pct"]) == 0 else f"{float(st['pct']):g}% of cards"
    lines = [f"**{release_id}**: candidate `{st['candidate_model_id']}` at **{stage}**, state "
             f"**{st['state']}**.", "", f"Last change by {st['updated_by']}: {st['reason']}", ""]
    if d.get("missing"):
        lines += ["Evidence still missing:", ""] + [f"- {m}" for m in d["missing"]] + [""]
    lines += [f"*{EXTEND}*: wait for more traffic (the stage keeps its evidence). *Promote*: make the "
              "candidate production now, on the record. *Roll back*: the incumbent keeps serving. From a terminal: "
              "`fraudcd ramp extend | promote [--anyway] | rollback --reason ...`.", "",
              "Asked again after an extension, the UI still shows this first text (Airflow keeps a request's "
              "first text): `fraudcd ramp status` and the rollout's alert say where it stands now."]
    return "\n".join(lines)



def apply_decision(release_id: str, option: str, *, actor: str, reason: str, airflow_user: str | None = None,
                   at: str | None = None) -> dict:
    """A person's answer (Airflow form or terminal) through the state machine."""
    from release.state.store import acting, utc_now

    at = at or utc_now()
    st = ramp.current()
    if st["release_id"] != release_id:
        raise ramp.RampError(f"{release_id} is not the live release ({st['release_id']} is).")
    from release.core.dates import as_date, at_of
    from release.state.releases import get_release
    from release.state.store import logical_date

    try:
        day = at_of(as_date(get_release(release_id)["as_of"]))
    except KeyError:  # a deployment without a release row
        day = None
    with logical_date(day), acting(None, **({"airflow_user": airflow_user} if airflow_user else {})):
        if option == EXTEND:
            return ramp.extend(at=at, actor=actor, reason=reason)
        if option == PROMOTE:
            return ramp.promote(at=at, actor=actor, reason=reason, anyway=st["state"] == Status.AWAITING_DECISION)
        if option == ROLL_BACK:
            return ramp.rollback(at=at, actor=actor, reason=reason)
    raise ValueError(f"Unknown decision {option!r}; expected one of {EXTEND!r}, {PROMOTE!r}, {ROLL_BACK!r}.")
