"""`fraudcd ramp ...`: the live rollout's controls, the ramp controller (watch) and live decision diffs."""
from __future__ import annotations

import json
from typing import Optional

import typer
from rich.table import Table
from rich.text import Text

from release.cli.common import (_actor, _actor_or_login, _airflow_identity, _emit, _fail, _now, _out,
                                _reason_given, _row, _store, _verdict_table, console)

ramp_app = typer.Typer(no_args_is_help=True, help="Live ramp controls (status, set, pause, resume, rollback, "
                                                  "promote), the ramp controller (watch) and live decision diffs.")


def _ramp_line(r: dict) -> str:
    return (f"ramp: {r['state']} at {r['pct']:g}% - release {r['release_id'] or '-'}, candidate "
            f"{r['candidate_model_id'] or '-'}; last change by {r['updated_by'] or '-'}: {r['reason'] or '-'}")


@ramp_app.command("status")
def ramp_status(as_json: bool = typer.Option(False, "--json")) -> None:
    """The ramp's state and share, who changed it last and why, and each step's guardrail outcome."""
    from release.rollout import ramp
    from release.state import registry

    from release.state.releases import ramp_step_log

    _store("read")
    r = ramp.current()
    steps = ramp_step_log(r["release_id"]) if r["release_id"] else []
    prod = registry.tagged("production")
    if as_json:
        return _emit({**r, "production_model_id": prod.id if prod else None, "step_started_at": ramp.stage_started_at(), "wait_started_at": ramp.wait_started_at(),
                      "steps": steps}, True)
    _out(_ramp_line(r))
    _out(f"production: {prod.id if prod else '-'}")
    if steps:
        t = Table(title="ramp steps")
        for c in ("step", "share of cards", "transactions", "on the candidate", "outcome", "at", "why"):
            t.add_column(c)
        for st in steps:
            colour = {"passed": "green", "inconclusive": "yellow"}.get(st["outcome"], "red")
            d = json.loads(st["details_json"])
            why = "; ".join(d.get("breaches") or (d.get("missing", []) if st["outcome"] == "inconclusive" else []))
            _row(t, st["step"], f"{st['pct']:g}%", f"{st['rows']:,}", f"{st['candidate_rows']:,}",
                 Text(str(st["outcome"]), style=colour), st["at"], why)
        console.print(t)


def _ramp_change(fn, as_json: bool, done: str, answer: str | None = None, **kw) -> None:
    """Run one ramp control (one audited transaction); refusals exit 1 with the reason. ``answer``: the
    rollout question's option this decision is; if the release DAG's rollout task waits for one,
    it is answered with it (through Airflow's REST API as the caller's Airflow user when Airflow runs for
    real; its response handler in the `dags test` harness), so the DAG goes on."""
    from release.rollout import ramp

    if answer:
        _airflow_identity()
    before = ramp.current()
    try:
        out = fn(at=_now(), **kw)
    except ramp.RampError as e:
        _fail(str(e), 1)
    except ValueError as e:  # e.g. an empty actor or reason, refused by the audit
        _fail(str(e), 2)
    note = _answer_rollout(before["release_id"], answer, kw.get("actor", ""), kw.get("reason", "")) \
        if answer and before["release_id"] else ""
    if as_json:
        return _emit({**out, "airflow": note}, True)
    _out(f"{done}. " + _ramp_line(out))
    if note:
        _out(note)


def _answer_rollout(release: str, option: str, who: str, why: str) -> str:
    """Answer the release's waiting rollout question in Airflow, if there is one."""
    from release.orchestration import hitl

    try:
        r = hitl.respond(release, option, user=who, reason=why, task_id=hitl.ROLLOUT_TASK_ID)
    except Exception as e:  # noqa: BLE001 - the state store decision stands without Airflow
        return (f"warning: the decision is recorded, but answering the waiting Airflow task failed "
                f"({type(e).__name__}: {e})")
    if r is None:
        return ""
    return f"answered Airflow task {r['dag_id']}.{r['task_id']} (run {r['run_id']}) as {r['responded_by']}: {option}"




@ramp_app.command("set")
def ramp_set(pct: float = typer.Argument(..., help="share of cards routed to the candidate, in [0, 100]"),
             actor: Optional[str] = typer.Option(None, "--as", help="who (recorded)"),
             reason: str = typer.Option(..., help="why (recorded)"),
             as_json: bool = typer.Option(False, "--json")) -> None:
    """Route PCT% of cards (sticky by card) to the candidate. A paused ramp stays paused."""
    from release.rollout import ramp

    if not 0 <= pct <= 100:
        _fail(f"PCT must be a percentage in [0, 100]; got {pct:g}", 2)
    who, why = _actor(actor), _reason_given(reason)
    _store("write")
    _ramp_change(ramp.set_pct, as_json, f"ramp set to {pct:g}%", pct=pct, actor=who, reason=why)


@ramp_app.command("pause")
def ramp_pause(reason: str = typer.Option(..., help="why (recorded)"),
               actor: Optional[str] = typer.Option(None, "--as", help="who (recorded); default: your login"),
               as_json: bool = typer.Option(False, "--json")) -> None:
    """Hold the candidate's share where it is: no automatic step, guardrails still watch."""
    from release.rollout import ramp

    why = _reason_given(reason)
    _store("write")
    _ramp_change(ramp.pause, as_json, "ramp paused", actor=_actor_or_login(actor), reason=why)


@ramp_app.command("resume")
def ramp_resume(actor: Optional[str] = typer.Option(None, "--as", help="who (recorded)"),
                reason: str = typer.Option(..., help="why (recorded)"),
                as_json: bool = typer.Option(False, "--json")) -> None:
    """Let the ramp controller advance the paused ramp again."""
    from release.rollout import ramp

    who, why = _actor(actor), _reason_given(reason)
    _store("write")
    _ramp_change(ramp.resume, as_json, "ramp resumed", actor=who, reason=why)


@ramp_app.command("rollback")
def ramp_rollback(reason: str = typer.Option(..., help="why (recorded)"),
                  actor: Optional[str] = typer.Option(None, "--as", help="who (recorded); default: your login"),
                  as_json: bool = typer.Option(False, "--json")) -> None:
    """The candidate goes to 0% at once (after a promotion: the previous model and its thresholds return)."""
    from release.rollout import ramp

    why = _reason_given(reason)
    _store("write")
    _ramp_change(ramp.rollback, as_json, "rolled back", answer="Roll back", actor=_actor_or_login(actor), reason=why)


@ramp_app.command("promote")
def ramp_promote(actor: Optional[str] = typer.Option(None, "--as", help="who (recorded)"),
                 reason: str = typer.Option(..., help="why (recorded)"),
                 anyway: bool = typer.Option(False, "--anyway",
                                             help="a rollout waiting for a decision (inconclusive evidence): "
                                                  "promote it at the share it reached, on the record"),
                 as_json: bool = typer.Option(False, "--json")) -> None:
    """Make the candidate production (after every step passed, or --anyway on a rollout waiting for a
    decision); the old production model is kept as previous."""
    from release.rollout import ramp

    who, why = _actor(actor), _reason_given(reason)
    _store("write")
    _ramp_change(ramp.promote, as_json, "promoted anyway" if anyway else "promoted", answer="Promote", actor=who,
                 reason=why, anyway=anyway)


@ramp_app.command("extend")
def ramp_extend(actor: Optional[str] = typer.Option(None, "--as", help="who (recorded)"),
                reason: str = typer.Option(..., help="why (recorded)"),
                as_json: bool = typer.Option(False, "--json")) -> None:
    """A rollout waiting for a decision (its evidence stayed inconclusive past the bound): wait for more
    traffic; the stage keeps what it has and its wait starts again."""
    from release.rollout import ramp

    who, why = _actor(actor), _reason_given(reason)
    _store("write")
    _ramp_change(ramp.extend, as_json, "rollout extended", answer="Extend the wait", actor=who, reason=why)


@ramp_app.command("watch")
def ramp_watch(once: bool = typer.Option(False, "--once", help="check once and exit"),
               every: float = typer.Option(1.0, help="seconds between checks"),
               as_json: bool = typer.Option(False, "--json")) -> None:
    """The ramp controller: check the guardrails on live traffic (the decision log) and advance or roll back."""
    import time

    from release.rollout.controller import tick
    from release.serving.decision_log import LogReader

    _store("write")
    reader = LogReader()  # across checks: reads only the decision-log files written since the last one
    while True:
        out = tick(reader=reader)
        if as_json:
            _emit(out, True)
        else:
            _out(f"{_now()} {out['action']}: {out.get('why') or out.get('to', '')}")
        if once:
            return
        time.sleep(every)


@ramp_app.command("diffs")
def ramp_diffs(release: Optional[str] = typer.Option(None, help="default: the release on the ramp now"),
               as_json: bool = typer.Option(False, "--json")) -> None:
    """Shadow analysis of live traffic: where production and candidate disagree, how often and in money,
    per country and category, and the online action-rate contract per country. Exit 1 if it fails."""
    from contracts.base import FAIL
    from release.rollout import ramp
    from release.serving.decision_log import read_decision_log
    from release.rollout.shadow import decision_diffs, live_traffic, online_action_rate_verdicts
    from release.core.pipeline import ramp_file

    _store("read")
    rid = release or ramp.current()["release_id"]
    if rid is None:
        _fail("no release is on the ramp; name one with --release", 2)
    logged = read_decision_log()
    traffic = live_traffic(logged[logged["release_id"] == rid])
    if traffic.empty:
        _fail(f"the decision log has no request of {rid} scored by both models", 1)
    diffs = decision_diffs(traffic, slices=("country", "category"))
    g = ramp.load_plan(ramp_file()).guardrails.action_rate_shift
    vs = online_action_rate_verdicts(diffs, "live_country_action_rate_shift", g.max_relative_shift,
                                     g.min_absolute_shift, g.min_support, g.confidence)
    if as_json:
        _emit({"release_id": rid, "diffs": diffs.to_dict("records"), "verdicts": [v.as_dict() for v in vs]}, True)
    else:
        t = Table(title=Text(f"{rid}: decisions of production vs candidate on {len(traffic):,} live transactions"))
        for c in ("slice", "transactions", "production blocks", "candidate blocks", "disagree", "only-candidate $",
                  "only-production $"):
            t.add_column(c)
        for r in diffs.itertuples():
            _row(t, f"{r.slice_type}: {r.slice}", f"{r.transactions:,}", f"{r.production_action_rate:.2%}",
                 f"{r.candidate_action_rate:.2%}", f"{r.disagreement_rate:.2%}",
                 f"{r.only_candidate_blocks_amount:,.0f}", f"{r.only_production_blocks_amount:,.0f}")
        console.print(t)
        _verdict_table([{"stage": "live", **v.as_dict()} for v in vs])
    if any(v.verdict == FAIL for v in vs):
        raise typer.Exit(1)
