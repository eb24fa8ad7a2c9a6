"""`fraudcd` commands, the "Models and releases" panel of its help. Train a model, run a release, read its verdicts, waive or roll back."""
from __future__ import annotations

import datetime as dt
from typing import Optional

import typer
from rich.table import Table
from rich.text import Text

from release.cli.common import (_actor, _actor_or_login, _emit, _fail, _now, _out, _reason_given, _row, _store,
                                _verdict_summary, _verdict_table, console, err)
from release.cli.airflow import _airflow_home_env

PANEL = "Models and releases"
app = typer.Typer()


@app.command(rich_help_panel=PANEL)
def train(workflow: str = typer.Option(..., "--workflow", help="training workflow YAML (see config/workflows)"),
          actor: str = typer.Option(..., "--as", help="who asks for the model (audited)"),
          reason: str = typer.Option(..., help="why (audited)"),
          as_json: bool = typer.Option(False, "--json")) -> None:
    """Train a workflow on the snapshot it selects and register the model (not tagged: nothing moves)."""
    from release.core.config import ConfigError
    from release.orchestration.cycle import train_workflow

    who, why = _actor(actor), _reason_given(reason)
    _store("create")  # the first model registered may start the store
    try:
        model = train_workflow(workflow, actor=who, reason=why, at=_now())
    except (ConfigError, FileNotFoundError, ValueError) as e:
        _fail(str(e), 2)
    out = {"model_id": model.id, "workflow": model.workflow, "snapshot": model.snapshot_hash,
           "code_version": model.code_version, "metrics": model.metrics}
    if as_json:
        return _emit(out, True)
    t = Table(title=Text(f"model {model.id}"))
    t.add_column("field")
    t.add_column("value")
    for k in ("workflow", "snapshot", "code_version"):
        _row(t, k, out[k])
    for k, v in model.metrics.get("training", {}).items():
        if k not in ("features", "filters"):
            _row(t, k, v)
    console.print(t)



@app.command("release", rich_help_panel=PANEL)
def release_run(as_of: str = typer.Option(..., "--as-of", help="the release's date, YYYY-MM-DD"),
                workflow: Optional[str] = typer.Option(None, help="training workflow YAML; default: the pipeline "
                                                                  "configuration's workflow"),
                approve_as: Optional[str] = typer.Option(
                    None, "--approve-as", help="approve the suggested thresholds unedited as this named person "
                                               "when asked (scripts, benchmarks); otherwise a person approves "
                                               "with `fraudcd thresholds approve` or in the Airflow UI"),
                replay_days: int = typer.Option(0, "--replay-days", help="once approved, start a scoring service "
                                                "and replay this many days of the event logs from the release "
                                                "date through it as the live traffic of shadow and ramp (a "
                                                "historical log); 0: the rollout waits for a running service's "
                                                "traffic (`make up`)"),
                replay_rate: float = typer.Option(200.0, "--replay-rate", help="requests per second replayed")
                ) -> None:
    """Run one release for a date through Airflow: the `training_set` DAG, then the `release` DAG
    (snapshot, candidate, evaluation, contracts, threshold suggestions, approval, re-judgement, report,
    shadow, ramp). It waits at the approval until a person answers (bounded by
    FRAUDCD_APPROVAL_TIMEOUT_S). Exit 1 when the release stopped or a DAG run failed."""
    from pathlib import Path

    from release.orchestration.cycle import get_release
    from release.orchestration.demo import CycleFailed, LiveTraffic, run_cycle
    from release.core.settings import paths
    from release.state.status import Status

    try:
        day = dt.date.fromisoformat(as_of)
    except ValueError as e:
        _fail(f"--as-of: {e}", 2)
    if workflow is not None and not Path(workflow).exists():
        _fail(f"--workflow: no such file {workflow}", 2)
    if approve_as is not None:
        approve_as = _actor(approve_as, "--approve-as")
    if replay_days < 0 or replay_rate <= 0:
        _fail(f"--replay-days must be >= 0 and --replay-rate > 0; got {replay_days} and {replay_rate:g}", 2)
    _store("create")
    env = _airflow_home_env()
    rid = f"rel-{day.isoformat()}"
    if approve_as is None:
        _out(f"The release waits for a person: `fraudcd thresholds show --release {rid}`, then "
             f"`fraudcd thresholds approve --release {rid} --reason ...` (or edit/reject), or the Airflow "
             "UI's Required actions.", err)
    live = LiveTraffic(env, day, replay_days, paths().home / "logs" / f"serve-{day}.log", rate=replay_rate) \
        if replay_days else None
    try:
        rid = run_cycle(day, env, paths().home / "logs", approve_as,
                        workflow=str(Path(workflow).resolve()) if workflow else None, console=console, live=live)
    except CycleFailed as e:
        _fail(str(e), 1)
    rel = get_release(rid)
    _out(f"release {rid}: {rel['status']}" + (f" ({rel['stop_reason']})" if rel.get("stop_reason") else ""))
    if rel.get("report_path"):
        _out(f"report: {rel['report_path']}")
    raise typer.Exit(1 if rel["status"] == Status.STOPPED else 0)


STATUS_ALERTS = 10  # the newest alerts `fraudcd status` shows


@app.command(rich_help_panel=PANEL)
def status(as_json: bool = typer.Option(False, "--json")) -> None:
    """Production model, candidate, ramp share, the last release's verdicts and the newest alerts."""
    from release.rollout import ramp
    from release.state import registry
    from release.state.alerts import count_alerts, read_alerts
    from release.orchestration.cycle import latest_release
    from release.state.releases import release_verdicts

    _store("read")
    tags = {t: (m.id if (m := registry.tagged(t)) else None) for t in registry.TAGS}
    r = ramp.current()
    rel = latest_release()
    vs = release_verdicts(rel["id"]) if rel else []
    from release.orchestration.monitoring import latest_summary

    mon = latest_summary()
    alerts, n_alerts = read_alerts(STATUS_ALERTS, newest_first=True), count_alerts()
    obj = {"tags": tags, "ramp": r, "release": rel,
           "verdicts": [{k: v[k] for k in ("stage", "contract", "slice", "verdict", "sentence")} for v in vs],
           "monitoring": mon, "alerts": alerts, "alerts_total": n_alerts}
    if as_json:
        return _emit(obj, True)
    t = Table(title="fraud-cd status", show_header=False)
    for k, v in tags.items():
        _row(t, k, v or "-")
    _row(t, "ramp", f"{r['state']} at {r['pct']:g}% (release {r['release_id'] or '-'})")
    if rel:
        _row(t, "last release", f"{rel['id']}: {rel['status']}")
        if rel["stop_reason"]:
            _row(t, "why", rel["stop_reason"])
        if rel["report_path"]:
            _row(t, "report", rel["report_path"])
    if vs:
        _row(t, "last verdicts", _verdict_summary(vs))
    if mon:
        _row(t, "monitoring", f"{mon['day']}: " + ", ".join(f"{n} {k}" for k, n in sorted(mon["findings"].items()))
             + "".join(f"\n- {m}" for m in mon["alerts"][:5])
             + (f"\n  ... and {len(mon['alerts']) - 5} more (`fraudcd monitor --day {mon['day']}`)"
                if len(mon["alerts"]) > 5 else ""))
    lines = [f"- {a['at']} {a['severity']} {a['kind']}: {a['message']}" for a in alerts]
    if n_alerts > len(alerts):
        lines.append(f"  ... and {n_alerts - len(alerts)} older (the report index, reports/index.html, lists more)")
    _row(t, "newest alerts", "\n".join(lines) or "none")
    console.print(t)


@app.command(rich_help_panel=PANEL)
def monitor(day: Optional[str] = typer.Option(None, help="the last day of the window, YYYY-MM-DD (default: "
                                                         "yesterday, UTC)"),
            window_days: int = typer.Option(7, "--window-days", help="days of live traffic judged, ending with --day"),
            as_json: bool = typer.Option(False, "--json")) -> None:
    """Watch the deployed model (the monitoring DAG's task, by hand): score and feature drift and each
    country's action rate on the trailing window, and its recall, FPR and precision per cohort week as labels
    mature against what its release promised; keeps the day's findings and raises an alert for each one that
    fires (once per day: a rerun raises none again). Exit 1 when any check of the day alerts."""
    from release.orchestration.monitoring import monitor as run

    if window_days < 1:
        _fail(f"--window-days must be at least 1; got {window_days}", 2)
    try:
        d = dt.date.fromisoformat(day) if day else dt.datetime.now(dt.timezone.utc).date() - dt.timedelta(days=1)
    except ValueError:
        _fail(f"--day must be YYYY-MM-DD; got {day!r}", 2)
    _store("read")
    out = run(d, window_days=window_days)
    if as_json:
        _emit(out, True)
    else:
        _out(f"monitoring {out['day']} (window {out['window'][0]} .. {out['window'][1]}): "
             + (f"model {out['model']}, {out['rows']:,} decisions; "
                + ", ".join(f"{n} {k}" for k, n in sorted(out["findings"].items())) if out["judged"] else out["why"]))
        if "performance_read" in out:
            _out(f"performance as labels mature ({out['performance_read']}):")
        for p in out.get("performance", []):
            _out(f"  week of {p['cohort_week']}: {p['status']:<12} " + _cohort_figures(p))
        for m in out.get("firing", []):
            _out("ALERT " + m)
    if out.get("firing"):
        raise typer.Exit(1)



def _cohort_figures(p: dict) -> str:
    """One cohort week's figures on one line: recall, FPR and precision with their intervals, completeness."""
    def pct(x):
        return "n/a" if x is None else f"{100 * x:.1f}%"

    if p["recall"] is None:
        return p["sentence"].split(": ", 1)[-1]  # not judged yet: why, and from when
    rates = ", ".join(f"{name} {pct(p[m])} ({pct(p[m + '_lo'])}..{pct(p[m + '_hi'])})"
                      for m, name in (("recall", "recall"), ("fpr", "FPR"), ("precision", "precision")))
    return (rates + f" at {100 * p['level']:.2f}%; completeness {pct(p['completeness'])}"
            + ("" if p["promised_recall"] is None else
               f"; promised recall {pct(p['promised_recall'])} (alert under {pct(p['alert_below'])})"))


@app.command(rich_help_panel=PANEL)
def verdicts(release: str, as_json: bool = typer.Option(False, "--json")) -> None:
    """Every verdict of a release, with the sentence that explains it. Exit 1 if a gate failed."""
    from contracts.base import FAIL
    from release.state.releases import get_release, release_verdicts

    _store("read")
    try:
        rel = get_release(release)
    except KeyError as e:
        _fail(str(e.args[0]), 2)
    from release.state.overrides import overrides_for

    vs = release_verdicts(release)
    waivers = overrides_for(release)
    waived = {o["contract"] for o in waivers}
    if as_json:
        _emit({"release": rel, "verdicts": vs, "overrides": waivers}, True)
    else:
        _out(f"{release}: {rel['status']}" + (f" - {rel['stop_reason']}" if rel["stop_reason"] else ""))
        for o in waivers:
            console.print(Text.assemble(("override:", "yellow"), f" {o['contract']} waived for this release by "
                                        f"{o['actor']} at {o['at']}: {o['reason']}"), highlight=False)
        _verdict_table(vs)
    if any(v["gate"] and v["verdict"] == FAIL and v["contract"] not in waived for v in vs):
        raise typer.Exit(1)



@app.command(rich_help_panel=PANEL)
def override(release: str = typer.Option(..., help="the release the waiver applies to (only that one)"),
             contract: str = typer.Option(..., help="name of a contract in force"),
             reason: str = typer.Option(..., help="why (recorded, shown in the report)"),
             actor: Optional[str] = typer.Option(None, "--as", help="who (recorded)")) -> None:
    """Waive a failed contract for one release, on the record. Rerun the release for its date to go on."""
    from release.orchestration.cycle import waive_contract
    from release.state.overrides import OverrideError

    who, why = _actor(actor), _reason_given(reason)
    _store("write")
    try:
        o = waive_contract(release, contract, actor=who, reason=why, at=_now())
    except OverrideError as e:
        _fail(str(e), 2)
    _out(f"{o['contract']} waived for {o['release_id']} by {o['actor']}: {o['reason']}")



@app.command(rich_help_panel=PANEL)
def rollback(reason: str = typer.Option(..., help="why (recorded)"),
             actor: Optional[str] = typer.Option(None, "--as", help="who (recorded); default: your login"),
             model: bool = typer.Option(False, "--model", help="roll back the production model to the previous one "
                                                              "(nothing live), even after a candidate was rolled back")
             ) -> None:
    """Roll back: a live candidate goes to 0% at once; after a promotion, the previous model returns."""
    from release.rollout import ramp

    why = _reason_given(reason)
    _store("write")
    who = _actor_or_login(actor)
    try:
        out = ramp.rollback(at=_now(), actor=who, reason=why, model=model)
    except ramp.RampError as e:
        _fail(str(e), 1)
    _out(f"rolled back by {who}: ramp {out['state']} at {out['pct']:g}%")

