"""`fraudcd`: one entry point for people and scripts.

Exit codes: 0 ok; 1 a contract failed or the action was refused; 2 bad input.
"""
from __future__ import annotations

import datetime as dt
import getpass
import json
import sys
from typing import Optional

import typer
from rich.console import Console
from rich.table import Table

app = typer.Typer(add_completion=False, no_args_is_help=True, help=__doc__)
thresholds_app = typer.Typer(no_args_is_help=True, help="Show, approve or reject suggested per-merchant thresholds.")
ramp_app = typer.Typer(no_args_is_help=True, help="Ramp controls.")
app.add_typer(thresholds_app, name="thresholds")
app.add_typer(ramp_app, name="ramp")
console = Console()
err = Console(stderr=True)


def _now() -> str:
    """Wall-clock time of a person's action (CLI only; pipeline tasks use their data interval)."""
    return dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")


def _fail(msg: str, code: int) -> None:
    err.print(f"[bold red]error:[/] {msg}")
    raise typer.Exit(code)


def _emit(obj, as_json: bool, table: Table | None = None) -> None:
    if as_json:
        sys.stdout.write(json.dumps(obj, indent=2, default=str) + "\n")
    elif table is not None:
        console.print(table)


@app.command()
def simulate(days: int = typer.Option(150, help="days of history"),
             tx_per_day: int = typer.Option(3000, "--tx-per-day", help="mean transactions per day"),
             seed: int = typer.Option(7), start: str = typer.Option("2026-01-01", help="first day (YYYY-MM-DD)"),
             merchants: int = typer.Option(2000), cards: int = typer.Option(30000),
             countries: int = typer.Option(10)) -> None:
    """Simulate a world and write its event logs under FRAUDCD_HOME/events."""
    from pydantic import ValidationError
    from rich.progress import Progress

    from release.settings import paths
    from simulation.world import WorldConfig, simulate as run

    try:
        cfg = WorldConfig(seed=seed, start=dt.date.fromisoformat(start), days=days, tx_per_day=tx_per_day,
                          n_merchants=merchants, n_cards=cards, n_countries=countries)
    except (ValidationError, ValueError) as e:
        _fail(str(e), 2)
    with Progress(console=err, transient=True) as prog:
        t = prog.add_task("simulating days", total=cfg.days)
        totals = run(cfg, paths().events, progress=lambda done, total: prog.update(t, completed=done))
    console.print(f"simulated {cfg.days} days from {cfg.start} into {paths().events}: "
                  + ", ".join(f"{k} {v:,}" for k, v in totals.items()))


@app.command()
def ingest(mapping: str = typer.Option(..., "--mapping", help="column-mapping YAML (see config/source.example.yaml)"),
           start: Optional[str] = typer.Option(None, help="first day to write (YYYY-MM-DD); default: all"),
           end: Optional[str] = typer.Option(None, help="day after the last day to write (YYYY-MM-DD)"),
           as_json: bool = typer.Option(False, "--json")) -> None:
    """Normalise a team's own transaction log into event logs under FRAUDCD_HOME/events."""
    from release.settings import paths
    from release.source import SourceError, ingest_source

    try:
        s, e = (dt.date.fromisoformat(d) if d else None for d in (start, end))
        counts = ingest_source(mapping, paths().events, s, e)
    except (SourceError, ValueError) as ex:
        _fail(str(ex), 2)
    if as_json:
        return _emit(counts, True)
    console.print(f"ingested {counts['source']} into {counts['events']}: {counts['rows']:,} transactions on "
                  f"{counts['days']} days ({counts['first_day']} .. {counts['last_day']}), {counts['blocked']:,} "
                  f"blocked, {counts['disputes']:,} disputes; labels: {counts['labels']}")
    for k, v in counts["missing"].items():
        console.print(f"  missing {k}: {v}")
    for k, v in counts["filled_nulls"].items():
        console.print(f"  {k}: {v:,} empty value(s) filled")
    for n in counts["notes"]:
        err.print(f"[yellow]note:[/] {n}")
    if counts["labels"] == "none":
        err.print("[yellow]warning:[/] no labels mapped (dispute_ts or fraud_flag): no disputes written; "
                  "training-set builds will refuse one-class data")


@app.command("training-set")
def training_set(as_of: str = typer.Option(..., help="YYYY-MM-DD"), maturity_days: int = 60) -> None:
    """Build (or find) the training-set snapshot as of a date."""
    from release.cycle import build_snapshot
    from release.training_set import DataContractError

    try:
        h = build_snapshot(as_of, maturity_days=maturity_days)
    except (ValueError, FileNotFoundError) as e:
        _fail(str(e), 1 if isinstance(e, DataContractError) else 2)
    console.print(h)


@app.command()
def status(as_json: bool = typer.Option(False, "--json")) -> None:
    """Production model, candidate, ramp share and the last release's verdicts."""
    from release import ramp, registry
    from release.cycle import latest_release, release_verdicts

    tags = {t: (m.id if (m := registry.tagged(t)) else None) for t in registry.TAGS}
    r = ramp.current()
    rel = latest_release()
    vs = release_verdicts(rel["id"]) if rel else []
    obj = {"tags": tags, "ramp": r, "release": rel,
           "verdicts": [{k: v[k] for k in ("stage", "contract", "slice", "verdict", "sentence")} for v in vs]}
    if as_json:
        return _emit(obj, True)
    t = Table(title="fraud-cd status", show_header=False)
    for k, v in tags.items():
        t.add_row(k, v or "-")
    t.add_row("ramp", f"{r['state']} at {r['pct']:g}% (release {r['release_id'] or '-'})")
    if rel:
        t.add_row("last release", f"{rel['id']}: {rel['status']}")
        if rel["stop_reason"]:
            t.add_row("why", rel["stop_reason"])
        if rel["report_path"]:
            t.add_row("report", rel["report_path"])
    if vs:
        t.add_row("last verdicts", _verdict_summary(vs))
    console.print(t)


_COLOUR = {"pass": "green", "fail": "red", "insufficient data": "yellow"}


def _verdict_summary(vs: list[dict]) -> str:
    """One line per stage: counts of each verdict (the detail is `fraudcd verdicts RELEASE`)."""
    lines = []
    for stage in dict.fromkeys(v["stage"] for v in vs):
        counts = {}
        for v in vs:
            if v["stage"] == stage:
                counts[v["verdict"]] = counts.get(v["verdict"], 0) + 1
        lines.append(f"{stage}: " + ", ".join(f"[{_COLOUR[k]}]{n} {k}[/]" for k, n in counts.items()))
    return "\n".join(lines)


def _verdict_table(vs: list[dict]) -> None:
    """Verdicts grouped by stage and contract, one line per slice with the sentence that explains it."""
    key = None
    for v in vs:
        if (v["stage"], v["contract"]) != key:
            key = (v["stage"], v["contract"])
            gate = "gate" if v["gate"] else "warn only"
            console.print(f"\n[bold]{v['stage']} / {v['contract']}[/] ({gate})")
        console.print(f"  [{_COLOUR[v['verdict']]}]{v['verdict']:>17}[/]  {v['sentence']}", highlight=False)


@app.command()
def verdicts(release: str, as_json: bool = typer.Option(False, "--json")) -> None:
    """Every verdict of a release, with the sentence that explains it. Exit 1 if a gate failed."""
    from release.cycle import get_release, release_verdicts

    try:
        rel = get_release(release)
    except KeyError as e:
        _fail(str(e.args[0]), 2)
    from release.overrides import overrides_for

    vs = release_verdicts(release)
    waivers = overrides_for(release)
    waived = {o["contract"] for o in waivers}
    if as_json:
        _emit({"release": rel, "verdicts": vs, "overrides": waivers}, True)
    else:
        console.print(f"{release}: {rel['status']}" + (f" - {rel['stop_reason']}" if rel["stop_reason"] else ""),
                      highlight=False)
        for o in waivers:
            console.print(f"[yellow]override:[/] {o['contract']} waived for this release by {o['actor']} at "
                          f"{o['at']}: {o['reason']}", highlight=False)
        _verdict_table(vs)
    if any(v["gate"] and v["verdict"] == "fail" and v["contract"] not in waived for v in vs):
        raise typer.Exit(1)


def _actor(name: Optional[str]) -> str:
    if name is None or not name.strip():
        _fail("say who you are with --as NAME (every money-moving change records who made it)", 2)
    return name.strip()


@thresholds_app.command("show")
def thresholds_show(release: str = typer.Option(...), limit: int = 20,
                    as_json: bool = typer.Option(False, "--json")) -> None:
    from release import approvals

    s = approvals.pending_set(release)
    if s is None:
        _fail(f"release {release!r} has no threshold suggestions", 2)
    rows = approvals.set_rows(s["id"]).sort_values("support", ascending=False)
    if as_json:
        return _emit({"set": s, "thresholds": rows.to_dict("records")}, True)
    console.print(f"threshold set {s['id']} for model {s['model_id']}: [bold]{s['status']}[/]"
                  + (f" by {s['decided_by']} ({s['reason']})" if s["decided_by"] else ""))
    t = Table()
    for c in ("merchant", "transactions", "current", "suggested", "shrunk", "reason"):
        t.add_column(c)
    for r in rows.head(limit).itertuples():
        cur = "-" if r.current_value is None or r.current_value != r.current_value else f"{r.current_value:.4f}"
        t.add_row(r.merchant_id, f"{r.support:,}", cur, f"{r.value:.4f}", "yes" if r.shrunk else "", r.reason)
    console.print(t)


def _decide(release: str, decision: str, actor: Optional[str], reason: str) -> None:
    from release import approvals

    who = _actor(actor)
    if not reason.strip():
        _fail("give a reason with --reason", 2)
    try:
        out = approvals.decide(release, decision, actor=who, reason=reason, at=_now())
    except approvals.ApprovalError as e:
        _fail(str(e), 1)
    console.print(f"thresholds of {release} {out['status']} by {who}")


@thresholds_app.command("approve")
def thresholds_approve(release: str = typer.Option(...), actor: Optional[str] = typer.Option(None, "--as"),
                       reason: str = typer.Option(...)) -> None:
    """Approve the release's suggested thresholds as NAME."""
    _decide(release, "approved", actor, reason)


@thresholds_app.command("reject")
def thresholds_reject(release: str = typer.Option(...), actor: Optional[str] = typer.Option(None, "--as"),
                      reason: str = typer.Option(...)) -> None:
    """Reject the release's suggested thresholds as NAME; the release stops."""
    _decide(release, "rejected", actor, reason)


@app.command()
def override(release: str = typer.Option(..., help="the release the waiver applies to (only that one)"),
             contract: str = typer.Option(..., help="name of a contract in force"),
             reason: str = typer.Option(..., help="why (recorded, shown in the report)"),
             actor: Optional[str] = typer.Option(None, "--as", help="who (recorded)")) -> None:
    """Waive a failed contract for one release, on the record. Rerun the release for its date to go on."""
    from release.cycle import waive_contract
    from release.overrides import OverrideError

    who = _actor(actor)
    try:
        o = waive_contract(release, contract, actor=who, reason=reason, at=_now())
    except OverrideError as e:
        _fail(str(e), 2)
    console.print(f"{o['contract']} waived for {o['release_id']} by {o['actor']}: {o['reason']}", highlight=False)


@app.command()
def rollback(reason: str = typer.Option(..., help="why (recorded)"),
             actor: Optional[str] = typer.Option(None, "--as", help="who (recorded); default: your login")) -> None:
    """Roll back: a ramping candidate goes to 0% at once; after a promotion, the previous model returns."""
    from release import ramp

    who = actor or getpass.getuser()
    if not reason.strip():
        _fail("give a reason with --reason", 2)
    try:
        out = ramp.rollback(at=_now(), actor=who, reason=reason)
    except ramp.RampError as e:
        _fail(str(e), 1)
    console.print(f"rolled back by {who}: ramp {out['state']} at {out['pct']:g}%")


@ramp_app.command("status")
def ramp_status(as_json: bool = typer.Option(False, "--json")) -> None:
    from release import ramp

    from release.cycle import ramp_step_log

    r = ramp.current()
    steps = ramp_step_log(r["release_id"]) if r["release_id"] else []
    if as_json:
        return _emit({**r, "steps": steps}, True)
    console.print(f"ramp: {r['state']} at {r['pct']:g}% - release {r['release_id'] or '-'}, candidate "
                  f"{r['candidate_model_id'] or '-'}; last change by {r['updated_by'] or '-'}: {r['reason'] or '-'}",
                  highlight=False)
    for st in steps:
        colour = "green" if st["outcome"] == "passed" else "red"
        console.print(f"  step {st['step']}: {st['pct']:>5g}% of cards, {st['candidate_rows']:,} of {st['rows']:,} "
                      f"transactions on the candidate - [{colour}]{st['outcome']}[/]", highlight=False)


@app.command()
def audit(limit: int = 30, as_json: bool = typer.Option(False, "--json")) -> None:
    """The append-only audit log: who, when, what, why, before and after."""
    from release.store import audit_log

    rows = audit_log(limit=limit)
    if as_json:
        return _emit(rows, True)
    t = Table(title="audit log")
    for c in ("at", "actor", "action", "entity", "reason"):
        t.add_column(c)
    for r in rows:
        t.add_row(r["at"], r["actor"], r["action"], r["entity"], r["reason"])
    console.print(t)


@app.command()
def demo(days: int = 150, tx_per_day: int = typer.Option(3000, "--tx-per-day"),
         approver: str = typer.Option("demo-approver (automated demo)", help="recorded as the approver")) -> None:
    """Simulate a world, then run one whole release cycle through Airflow."""
    from release.demo import run_demo

    code = run_demo(days=days, tx_per_day=tx_per_day, approver=approver, console=console)
    raise typer.Exit(code)


def main() -> None:
    app()


if __name__ == "__main__":
    main()
