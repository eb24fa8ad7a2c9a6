"""`fraudcd`: one entry point for people and scripts.

Exit codes: 0 ok; 1 a contract failed or the action was refused; 2 bad input (a missing, damaged or
unmigrated state store included).
"""
from __future__ import annotations

import datetime as dt
import json
import re
import subprocess
import sys
from typing import List, Optional

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table
from rich.text import Text

app = typer.Typer(add_completion=False, no_args_is_help=True, help=__doc__)
thresholds_app = typer.Typer(no_args_is_help=True, help="Show, approve, edit, reject, export/import, roll back "
                                                      "per-merchant thresholds.")
ramp_app = typer.Typer(no_args_is_help=True, help="Live ramp controls (status, set, pause, resume, rollback, "
                                                  "promote), the ramp controller (watch) and live decision diffs.")
app.add_typer(thresholds_app, name="thresholds")
app.add_typer(ramp_app, name="ramp")
console = Console()
err = Console(stderr=True)


def _now() -> str:
    """Wall-clock time of a person's action (CLI only; pipeline tasks use their data interval)."""
    return dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")


def _fail(msg: str, code: int) -> None:
    err.print(f"[bold red]error:[/] {escape(msg)}", highlight=False, emoji=False)
    raise typer.Exit(code)


_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f]")


def _plain(text: str) -> str:
    """``text`` with control characters shown as escapes (an ESC sequence in stored data must not drive
    an operator's terminal); newlines and tabs stay."""
    return _CONTROL.sub(lambda m: repr(m.group())[1:-1], text)


def _out(line: str, c: Console | None = None) -> None:
    """Print a line that holds data as it is: no markup, no emoji codes (a merchant may be named
    `[bold red]M1` and a person `--as '[/]'`), no terminal control sequences."""
    (c or console).print(_plain(line), markup=False, emoji=False, highlight=False)


def _note(kind: str, line: str, colour: str = "yellow") -> None:
    """`kind: line` on standard error, the kind coloured, the line as it is."""
    err.print(Text.assemble((f"{kind}:", colour), " ", line), highlight=False)


def _row(t: Table, *cells) -> None:
    """A table row whose cells print as they are (Text is never read as markup); pass a Text to style one."""
    t.add_row(*[c if isinstance(c, Text) else Text("" if c is None else _plain(str(c))) for c in cells])


@app.callback()
def _cli(ctx: typer.Context) -> None:
    from release.state.store import acting

    # every audit row a command writes records that it came from the CLI, and which command
    ctx.with_resource(acting("cli", command=f"fraudcd {ctx.invoked_subcommand}"))


def _store(mode: str) -> None:
    """Check the state store before a command uses it (see release.state.store.open_store): a missing, damaged
    or unmigrated store is bad input (exit 2) with the command that fixes it."""
    from release.state import store

    try:
        store.open_store(mode)
    except store.StoreError as e:
        _fail(str(e), 2)


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
             countries: int = typer.Option(10),
             exploration: float = typer.Option(0.05, help="share of the legacy rules' would-be blocks let through "
                                                         "and logged with their propensity")) -> None:
    """Simulate a world and write its event logs under FRAUDCD_HOME/events."""
    from pydantic import ValidationError
    from rich.progress import Progress

    from release.core.settings import paths
    from simulation.world import WorldConfig, simulate as run

    try:
        cfg = WorldConfig(seed=seed, start=dt.date.fromisoformat(start), days=days, tx_per_day=tx_per_day,
                          n_merchants=merchants, n_cards=cards, n_countries=countries, exploration=exploration)
    except (ValidationError, ValueError) as e:
        _fail(str(e), 2)
    with Progress(console=err, transient=True) as prog:
        t = prog.add_task("simulating days", total=cfg.days)
        totals = run(cfg, paths().events, progress=lambda done, total: prog.update(t, completed=done))
    _out(f"simulated {cfg.days} days from {cfg.start} into {paths().events}: "
         + ", ".join(f"{k} {v:,}" for k, v in totals.items()))


@app.command()
def ingest(mapping: str = typer.Option(..., "--mapping", help="column-mapping YAML (see config/source.example.yaml)"),
           start: Optional[str] = typer.Option(None, help="first day to write (YYYY-MM-DD); default: all"),
           end: Optional[str] = typer.Option(None, help="day after the last day to write (YYYY-MM-DD)"),
           as_json: bool = typer.Option(False, "--json")) -> None:
    """Normalise a team's own transaction log into event logs under FRAUDCD_HOME/events."""
    from release.core.settings import paths
    from release.data.source import SourceError, ingest_source

    try:
        s, e = (dt.date.fromisoformat(d) if d else None for d in (start, end))
        counts = ingest_source(mapping, paths().events, s, e)
    except (SourceError, ValueError) as ex:
        _fail(str(ex), 2)
    if as_json:
        return _emit(counts, True)
    _out(f"ingested {counts['source']} into {counts['events']}: {counts['rows']:,} transactions on "
         f"{counts['days']} days ({counts['first_day']} .. {counts['last_day']}), {counts['blocked']:,} "
         f"blocked, {counts['disputes']:,} disputes; labels: {counts['labels']}")
    for k, v in counts["missing"].items():
        _out(f"  missing {k}: {v}")
    for k, v in counts["filled_nulls"].items():
        _out(f"  {k}: {v:,} empty value(s) filled")
    for n in counts["notes"]:
        _note("note", str(n))
    if counts["labels"] == "none":
        _note("warning", "no labels mapped (dispute_ts or fraud_flag): no disputes written; "
                         "training-set builds will refuse one-class data")


@app.command()
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


@app.command("training-set")
def training_set(as_of: str = typer.Option(..., help="YYYY-MM-DD"),
                 maturity_days: Optional[int] = typer.Option(
                     None, help="default: labels.maturity_days of the pipeline configuration (config/pipeline.yaml)"),
                 ) -> None:
    """Build (or find) the training-set snapshot as of a date. A maturity other than the configured one
    builds a snapshot of another lineage (its volume check compares only with its own lineage)."""
    from release.orchestration.cycle import build_snapshot
    from release.data.training_set import DataContractError

    try:
        h = build_snapshot(as_of, maturity_days=maturity_days)
    except (ValueError, FileNotFoundError) as e:
        _fail(str(e), 1 if isinstance(e, DataContractError) else 2)
    _out(str(h))


@app.command()
def status(as_json: bool = typer.Option(False, "--json")) -> None:
    """Production model, candidate, ramp share and the last release's verdicts."""
    from release.rollout import ramp
    from release.state import registry
    from release.orchestration.cycle import latest_release, release_verdicts

    _store("read")
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
    console.print(t)


_COLOUR = {"pass": "green", "fail": "red", "insufficient data": "yellow"}


def _verdict_summary(vs: list[dict]) -> Text:
    """One line per stage: counts of each verdict (the detail is `fraudcd verdicts RELEASE`)."""
    out = Text()
    for i, stage in enumerate(dict.fromkeys(v["stage"] for v in vs)):
        counts = {}
        for v in vs:
            if v["stage"] == stage:
                counts[v["verdict"]] = counts.get(v["verdict"], 0) + 1
        out.append(("\n" if i else "") + f"{stage}: ")
        for j, (k, n) in enumerate(counts.items()):
            out.append(", " if j else "")
            out.append(f"{n} {k}", style=_COLOUR.get(k, ""))
    return out


def _verdict_table(vs: list[dict]) -> None:
    """Verdicts grouped by stage and contract, one line per slice with the sentence that explains it."""
    key = None
    for v in vs:
        if (v["stage"], v["contract"]) != key:
            key = (v["stage"], v["contract"])
            gate = "gate" if v["gate"] else "warn only"
            console.print(Text.assemble("\n", (f"{v['stage']} / {v['contract']}", "bold"), f" ({gate})"),
                          highlight=False)
        console.print(Text.assemble("  ", (f"{v['verdict']:>17}", _COLOUR.get(v["verdict"], "")), "  ",
                                    str(v["sentence"])), highlight=False)


@app.command()
def verdicts(release: str, as_json: bool = typer.Option(False, "--json")) -> None:
    """Every verdict of a release, with the sentence that explains it. Exit 1 if a gate failed."""
    from contracts.base import FAIL
    from release.orchestration.cycle import get_release, release_verdicts

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




def _actor(name: Optional[str], option: str = "--as") -> str:
    """A person's stated name: the audit's check (release.state.store.checked_actor), and not a name of
    fraud-cd's own automation (a person's change must not read as the pipeline's)."""
    from release.state.store import automation_name, checked_actor

    if name is None or not name.strip():
        _fail(f"say who you are with {option} NAME (every money-moving change records who made it)", 2)
    try:
        name = checked_actor(name)
    except ValueError as e:
        _fail(f"{option}: {e}", 2)
    if automation_name(name):
        _fail(f"{option} {name!r} is reserved: names beginning with 'fraud-cd' belong to fraud-cd's own automation "
              "(pipeline, bootstrap, ramp controller), so a person's change cannot look like theirs. Give your own "
              "name, e.g. --as 'ana (on-call)'.", 2)
    return name


def _actor_or_login(name: Optional[str]) -> str:
    """The stated name, or the OS login, said out loud (and marked in the audit row) when none is given."""
    from release.state.store import note_context, os_user

    if name is not None:
        return _actor(name)
    login = os_user()
    _note("note", f"no --as given: recorded as {login!r} (your OS login); say who you are with --as NAME")
    note_context(actor_source="os_user")
    return login


def _thresholds_set(release: str) -> dict:
    from release.state import approvals

    s = approvals.latest_set(release)
    if s is None:
        _fail(f"release {release!r} has no threshold suggestions (is the release id right? see `fraudcd status`)", 2)
    return s


def _reason_given(reason: str) -> str:
    """The audit's check of a reason (release.state.store.checked_reason), as a CLI error."""
    from release.state.store import checked_reason

    if not reason or not reason.strip():
        _fail("give a reason with --reason (every money-moving change records why)", 2)
    try:
        return checked_reason(reason, "this change")
    except ValueError as e:
        _fail(f"--reason: {e}", 2)


def _fmt(x, spec: str = ".4f") -> str:
    return "-" if x is None or x != x else format(x, spec)


def _airflow_request(release: str) -> dict | None:
    """The release's approval task waiting in Airflow, if any (None when Airflow cannot be read)."""
    from release.orchestration import hitl

    try:
        return hitl.open_request(release)
    except Exception as e:  # noqa: BLE001 - the state store decision stands without Airflow
        _note("note", f"could not read Airflow's metadata database: {e}")
        return None


def _answer_airflow(release: str, s: dict, who: str) -> str:
    """Answer the release's waiting Airflow approval task with the decision recorded in the state store,
    through Airflow's own response handler (what the Required actions UI calls)."""
    from release.state import approvals
    from release.orchestration import hitl

    if s["status"] not in (approvals.APPROVED, approvals.REJECTED):
        return ""
    items = approvals.set_items(s["id"])
    some = s["status"] == approvals.APPROVED and (items["outcome"] == approvals.NOT_APPROVED).any()
    option = hitl.REJECT if s["status"] == approvals.REJECTED else hitl.APPROVE_SOME if some else hitl.APPROVE_ALL
    merchants = items.loc[items["outcome"] == approvals.APPROVED, "merchant_id"].tolist() if some else []
    try:
        r = hitl.respond(release, option, user=who, reason=s["reason"] or "", merchants=merchants)
    except Exception as e:  # noqa: BLE001
        return (f"warning: the decision is recorded, but answering the waiting Airflow task failed "
                f"({type(e).__name__}: {e}); run the same command again to retry")
    if r is None:
        return ("no Airflow approval task is waiting for this release; its approve_thresholds task takes the "
                "recorded decision when it runs")
    return f"answered Airflow task {r['dag_id']}.{r['task_id']} (run {r['run_id']}) as {r['responded_by']}: {option}"


@thresholds_app.command("show")
def thresholds_show(release: str = typer.Option(..., help="release id, e.g. rel-2026-05-17"),
                    limit: int = typer.Option(20, help="rows shown, largest merchants first"),
                    merchant: Optional[List[str]] = typer.Option(None, "--merchant", help="only these merchants"),
                    as_json: bool = typer.Option(False, "--json")) -> None:
    """The release's suggested thresholds: current, suggested, expected block rate, recall before/after,
    whether edited, and what became of each; whether Airflow's approval task is waiting."""
    import pandas as pd

    from release.state import approvals
    from release.core.settings import paths

    _store("read")
    s = _thresholds_set(release)
    items = approvals.set_items(s["id"])
    detail = paths().releases / release / "suggestions.parquet"
    if detail.exists():
        extra = pd.read_parquet(detail)
        keep = [c for c in extra.columns if c not in items.columns or c == "merchant_id"]
        items = items.merge(extra[keep], on="merchant_id", how="left")
    if merchant:
        unknown = sorted(set(merchant) - set(items["merchant_id"]))
        if unknown:
            _fail(f"not among the suggestions of {release}: {', '.join(unknown)}", 2)
        items = items[items["merchant_id"].isin(merchant)]
    items = items.sort_values(["support", "merchant_id"], ascending=[False, True])
    live = approvals.live_thresholds(s["model_id"]) if s["status"] == approvals.APPROVED else None
    items["live"] = items["merchant_id"].map(live[1]).fillna(live[0]) if live else float("nan")
    counts = {k: int(v) for k, v in items["outcome"].value_counts().items()}
    req = _airflow_request(release) if s["status"] == approvals.PENDING else None
    if as_json:
        rows = items.astype(object).where(items.notna(), None).to_dict("records")
        return _emit({"set": s, "outcomes": counts, "edited": int(items["edited"].sum()), "airflow_request": req,
                      "thresholds": rows}, True)
    by = f" by {s['decided_by']} at {s['decided_at']} ({s['reason']})" if s["decided_by"] else ""
    console.print(Text.assemble(f"{release}: threshold set {s['id']} for model {s['model_id']}: ",
                                (str(s["status"]), "bold"),
                                f"{by}; global threshold {s['global_threshold']:.4f}; {len(items):,} merchants ("
                                + ", ".join(f"{n:,} {k.replace('_', ' ')}" for k, n in counts.items())
                                + f", {int(items['edited'].sum()):,} edited)"), highlight=False)
    if req:
        _out(f"Airflow: task {req['dag_id']}.{req['task_id']} is waiting for a decision"
             + (f" until {req['deadline']}" if req["deadline"] else ""))
    t = Table()
    for c in ("merchant", "segment", "transactions", "current", "suggested", "block rate now -> expected",
              "recall before -> after", "status", "reason"):
        t.add_column(c)
    for r in items.head(limit).to_dict("records"):
        proposed = _fmt(r["proposed"]) + (f" (edited; suggested {_fmt(r['suggested'])})" if r["edited"] else "")
        if r["live"] == r["live"] and r["live"] != r["proposed"]:
            proposed += f"; live now {_fmt(r['live'])}"
        rate = (f"{_fmt(100 * r.get('incumbent_block_rate', float('nan')), '.2f')}% -> "
                f"{_fmt(100 * r.get('expected_block_rate', float('nan')), '.2f')}%")
        rec = (f"{_fmt(100 * r.get('recall_before', float('nan')), '.0f')}% -> "
               f"{_fmt(100 * r.get('recall_after', float('nan')), '.0f')}% "
               f"[{_fmt(100 * r.get('recall_after_lo', float('nan')), '.0f')}, "
               f"{_fmt(100 * r.get('recall_after_hi', float('nan')), '.0f')}]")
        cur = _fmt(r["current"])
        if cur == "-" and r.get("threshold_in_force") == r.get("threshold_in_force") and "threshold_in_force" in r:
            cur = f"{_fmt(r['threshold_in_force'])} (global)"  # it had none of its own
        _row(t, r["merchant_id"], r["segment"], f"{int(r['support'] or 0):,}", cur, proposed,
             rate, rec, str(r["outcome"]).replace("_", " ") + (" (thin)" if r["shrunk"] else ""), r["reason"])
    console.print(t)
    if len(items) > limit:
        _out(f"... {len(items) - limit:,} more (--limit, --json, or `fraudcd thresholds export`)")


def _decide(release: str, decision: str, actor: Optional[str], reason: str, merchants: Optional[List[str]] = None,
            as_json: bool = False) -> None:
    from release.state import approvals

    who = _actor(actor)
    why = _reason_given(reason)
    _store("write")
    _thresholds_set(release)
    try:
        out = approvals.decide(release, decision, actor=who, reason=why, at=_now(), merchants=merchants or None)
    except approvals.ThresholdInputError as e:
        _fail(str(e), 2)
    except approvals.ApprovalError as e:
        s = approvals.latest_set(release)
        note = _answer_airflow(release, s, s["decided_by"] or who) if _airflow_request(release) else ""
        _fail(str(e) + (f"\n{note}" if note else ""), 1)
    airflow = _answer_airflow(release, approvals.latest_set(release), who)
    if as_json:
        return _emit({**out, "release": release, "by": who, "airflow": airflow}, True)
    if decision == approvals.APPROVED:
        _out(f"thresholds of {release} approved by {who}: {out['approved']:,} merchants approved"
             + (f" ({out['edited']:,} edited)" if out["edited"] else "")
             + (f", {out['auto_approved']:,} auto-approved" if out["auto_approved"] else "")
             + (f", {out['not_approved']:,} not approved (the global threshold applies to them)"
                if out["not_approved"] else ""))
    else:
        _out(f"thresholds of {release} rejected by {who}: nothing goes live, the release stops")
    _out(airflow)


@thresholds_app.command("approve")
def thresholds_approve(release: str = typer.Option(..., help="release id"),
                       actor: Optional[str] = typer.Option(None, "--as", help="who (recorded)"),
                       reason: str = typer.Option(..., help="why (recorded)"),
                       merchant: Optional[List[str]] = typer.Option(
                           None, "--merchant", help="approve only these (repeat the option); the others get no "
                                                    "threshold of their own: the global one applies"),
                       as_json: bool = typer.Option(False, "--json")) -> None:
    """Approve the release's suggested (or edited) thresholds as NAME: all, or only --merchant ones."""
    _decide(release, "approved", actor, reason, merchant, as_json)


@thresholds_app.command("reject")
def thresholds_reject(release: str = typer.Option(..., help="release id"),
                      actor: Optional[str] = typer.Option(None, "--as", help="who (recorded)"),
                      reason: str = typer.Option(..., help="why (recorded)"),
                      as_json: bool = typer.Option(False, "--json")) -> None:
    """Reject the release's suggested thresholds as NAME; nothing goes live and the release stops."""
    _decide(release, "rejected", actor, reason, None, as_json)


def _edited(release: str, out: dict, who: str, as_json: bool) -> None:
    if as_json:
        return _emit({**out, "release": release, "by": who}, True)
    where = "live (new versions of the model's thresholds)" if out["live"] else "in the pending set"
    _out(f"{out['changed']:,} threshold(s) of {release} changed {where} by {who}"
         + (f"; {out['unchanged']:,} already had that value" if out["unchanged"] else "")
         + (f"; change id {out['change_id']} (`fraudcd thresholds rollback --change {out['change_id']}`)"
            if out["change_id"] else ""))
    for m, e in list(out["edits"].items())[:20]:
        _out(f"  {m}: {_fmt(e['before'])} -> {_fmt(e['after'])}")


@thresholds_app.command("edit")
def thresholds_edit(release: str = typer.Option(..., help="release id"),
                    merchant: List[str] = typer.Option(..., "--merchant", help="merchant id (repeatable)"),
                    threshold: List[str] = typer.Option(..., "--threshold",
                                                        help="its new threshold in [0, 1], one per --merchant"),
                    actor: Optional[str] = typer.Option(None, "--as", help="who (recorded)"),
                    reason: str = typer.Option(..., help="why (recorded)"),
                    as_json: bool = typer.Option(False, "--json")) -> None:
    """Change merchants' thresholds: in a pending set before approval, or live in an approved one."""
    from release.state import approvals

    who = _actor(actor)
    why = _reason_given(reason)
    if len(merchant) != len(threshold):
        _fail(f"give one --threshold per --merchant; got {len(merchant)} merchant(s) and {len(threshold)} "
              "threshold(s)", 2)
    dup = sorted({m for m in merchant if merchant.count(m) > 1})
    if dup:
        _fail(f"each merchant at most once; repeated: {', '.join(dup)}", 2)
    _store("write")
    _thresholds_set(release)
    try:
        out = approvals.edit(release, dict(zip(merchant, threshold)), actor=who, reason=why, at=_now())
    except approvals.ThresholdInputError as e:
        _fail(str(e), 2)
    except approvals.ApprovalError as e:
        _fail(str(e), 1)
    _edited(release, out, who, as_json)


@thresholds_app.command("export")
def thresholds_export(release: str = typer.Option(..., help="release id"),
                      out: str = typer.Option("-", "--out", help="CSV file to write; '-' for standard output")) -> None:
    """Write the release's suggestions as CSV: edit the `threshold` column in a spreadsheet, then import."""
    from pathlib import Path

    from release.state import approvals
    from release.core.io import atomic_write_text

    _store("read")
    _thresholds_set(release)
    text = approvals.export_csv(release)
    if out == "-":
        sys.stdout.write(text)
        return
    atomic_write_text(text, Path(out))
    import csv
    import io

    rows = sum(1 for _ in csv.reader(io.StringIO(text, newline=""))) - 1  # a cell may hold a newline
    _out(f"wrote {rows:,} merchants of {release} to {out}; edit the threshold column, then "
         f"`fraudcd thresholds import --release {release} --file {out} --as NAME --reason ...`", err)


@thresholds_app.command("import")
def thresholds_import(release: str = typer.Option(..., help="release id"),
                      file: str = typer.Option(..., "--file", help="an edited export (CSV)"),
                      actor: Optional[str] = typer.Option(None, "--as", help="who (recorded)"),
                      reason: str = typer.Option(..., help="why (recorded)"),
                      as_json: bool = typer.Option(False, "--json")) -> None:
    """Apply an edited CSV export: every row checked first; any problem and nothing is applied."""
    from pathlib import Path

    from release.state import approvals

    who = _actor(actor)
    why = _reason_given(reason)
    _store("write")
    _thresholds_set(release)
    try:
        # a spreadsheet may add a byte-order mark; newline="" keeps a carriage return inside a quoted cell
        with open(Path(file), encoding="utf-8-sig", newline="") as f:
            text = f.read()
    except (OSError, UnicodeDecodeError) as e:
        _fail(f"cannot read {file}: {e}", 2)
    try:
        out = approvals.import_csv(release, text, actor=who, reason=why, at=_now())
    except approvals.ThresholdInputError as e:
        _fail(f"{file}: {e}", 2)
    except approvals.ApprovalError as e:
        _fail(str(e), 1)
    _edited(release, out, who, as_json)


def _model_or_production(model: Optional[str]) -> str:
    from release.state import registry

    if model:
        return model
    prod = registry.tagged("production")
    if prod is None:
        _fail("no production model; name one with --model", 2)
    return prod.id


@thresholds_app.command("rollback")
def thresholds_rollback(merchant: Optional[List[str]] = typer.Option(
                            None, "--merchant", help="put this merchant's threshold back to before its last change"),
                        change: Optional[int] = typer.Option(None, "--change", help="undo one change (see history)"),
                        model: Optional[str] = typer.Option(None, help="default: the production model"),
                        actor: Optional[str] = typer.Option(None, "--as", help="who (recorded)"),
                        reason: str = typer.Option(..., help="why (recorded)"),
                        as_json: bool = typer.Option(False, "--json")) -> None:
    """Roll back live thresholds (not the model: that is `fraudcd rollback`)."""
    from release.state import approvals

    who = _actor(actor)
    why = _reason_given(reason)
    if bool(merchant) == (change is not None):
        _fail("name the merchants to roll back (--merchant, repeatable) or one --change, not both", 2)
    _store("write")
    mid = _model_or_production(model)
    try:
        out = approvals.rollback(mid, merchants=merchant or None, change_id=change, actor=who, reason=why, at=_now())
    except approvals.ThresholdInputError as e:
        _fail(str(e), 2)
    except approvals.ApprovalError as e:
        _fail(str(e), 1)
    if as_json:
        return _emit(out, True)
    _out(f"thresholds of model {mid} rolled back by {who} (change {out['change_id']}):")
    for m, e in list(out["merchants"].items())[:20]:
        _out(f"  {m}: {_fmt(e['before'])} -> {_fmt(e['after'])}")


@thresholds_app.command("history")
def thresholds_history(merchant: Optional[str] = typer.Option(None, "--merchant", help="one merchant's versions"),
                       model: Optional[str] = typer.Option(None, help="default: the production model"),
                       limit: int = typer.Option(30, help="most recent versions shown"),
                       as_json: bool = typer.Option(False, "--json")) -> None:
    """Every version of a model's live thresholds: who changed what, when, why, and the change id."""
    from release.state import approvals

    _store("read")
    mid = _model_or_production(model)
    h = approvals.history(mid, merchant).tail(limit)
    if as_json:
        return _emit(h.astype(object).where(h.notna(), None).to_dict("records"), True)
    t = Table(title=Text(f"threshold versions of model {mid}"))
    for c in ("change", "merchant", "version", "before", "after", "what"):
        t.add_column(c, no_wrap=True)
    for c in ("at", "who", "why"):
        t.add_column(c)
    for r in h.to_dict("records"):
        _row(t, r["change_id"], r["merchant_id"], r["version"], _fmt(r["previous_value"]), _fmt(r["value"]),
             r["change"] + (" (automatic)" if r["automatic"] else ""), r["at"], r["actor"], r["reason"])
    console.print(t)


@thresholds_app.command("readiness")
def thresholds_readiness(as_json: bool = typer.Option(False, "--json")) -> None:
    """Automation readiness per merchant segment: the share of suggestions accepted unedited over the
    last releases, the streak of unedited releases, and whether opt-in auto-approval would fire."""
    from analysis.thresholds import load_threshold_config
    from release.state import approvals

    _store("read")
    auto = load_threshold_config().automation
    r = approvals.readiness(auto.readiness_releases, auto.auto_approve.after_unedited_releases)
    ready = set(approvals.segments_ready(r, auto.auto_approve))
    r["auto_approve"] = [("on: approves next release" if s in ready else "on: not yet") if auto.auto_approve.enabled
                         else "off" for s in r["segment"]]
    if as_json:
        return _emit({"auto_approve": auto.auto_approve.model_dump(), "readiness_releases": auto.readiness_releases,
                      "segments": r.to_dict("records")}, True)
    t = Table(title=f"automation readiness (last {auto.readiness_releases} releases; auto-approve after "
                    f"{auto.auto_approve.after_unedited_releases} unedited, "
                    f"{'enabled' if auto.auto_approve.enabled else 'off'})")
    for c in ("segment", "releases", "suggestions", "accepted unedited", "streak", "auto-approve"):
        t.add_column(c)
    for x in r.to_dict("records"):
        _row(t, x["segment"], x["releases"], f"{x['suggestions']:,}",
             f"{x['accepted_unedited']:,} ({_fmt(100 * x['share_unedited'], '.0f')}%)", x["streak"], x["auto_approve"])
    console.print(t)


@app.command()
def db(to: Optional[str] = typer.Option(None, help="move the schema to this revision: head, or an older one "
                                                    "(not below the append-only revision 0002)"),
       create: bool = typer.Option(False, "--create", help="start a new, empty store where none is (a missing or "
                                                           "empty file); an existing store is left as it is"),
       actor: Optional[str] = typer.Option(None, "--as", help="who (recorded); needed to go back a revision"),
       reason: Optional[str] = typer.Option(None, help="why (recorded); needed to go back a revision")) -> None:
    """The state store's schema revision (Alembic), or move it with --to, or start a store with --create.
    Nothing else creates or migrates a store, except the commands that start one (train, release,
    backfill, demo: a new store only). Every move is written to the audit log."""
    from release.state import store

    try:
        rev = store.store_revision()
    except store.StoreError as e:
        _fail(str(e), 2)
    if rev is None and not create:
        _fail(str(store.missing_store()), 2)
    if create and rev is None:
        who = _actor_or_login(actor)
        _, rev = store.create_store(actor=who, reason=_reason_given(reason) if reason else "new state store")
        _out(f"created a new state store at {store.where()} (schema revision {rev}), recorded as {who}")
    if to is not None:
        try:
            target = store.migration_target(to)
        except ValueError as e:
            _fail(str(e), 2)
        revs = store.revisions()
        down = rev in revs and revs.index(target) < revs.index(rev)
        who = _actor(actor) if down else _actor_or_login(actor)
        why = _reason_given(reason or "") if down else (reason or "").strip() or f"schema upgrade to {target}"
        try:
            rev = store.migrate(store.writer_engine(), to, actor=who, reason=why)
        except ValueError as e:
            _fail(str(e), 2)
        except Exception as e:  # noqa: BLE001 - Alembic's own errors, said in one line
            _fail(f"Cannot migrate the state store to {to!r}: {type(e).__name__}: {e}", 2)
    head = store.head_revision()
    behind = "" if rev == head else f" (this fraud-cd reads and writes {head}: run `fraudcd db --to head`)"
    _out(f"state store {store.where()}: schema revision {rev}{behind}")


@app.command()
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


@app.command()
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


def _ramp_line(r: dict) -> str:
    return (f"ramp: {r['state']} at {r['pct']:g}% - release {r['release_id'] or '-'}, candidate "
            f"{r['candidate_model_id'] or '-'}; last change by {r['updated_by'] or '-'}: {r['reason'] or '-'}")


@ramp_app.command("status")
def ramp_status(as_json: bool = typer.Option(False, "--json")) -> None:
    """The ramp's state and share, who changed it last and why, and each step's guardrail outcome."""
    from release.rollout import ramp
    from release.state import registry

    from release.orchestration.cycle import ramp_step_log

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
    it is answered with it (through Airflow's own response handler), so the DAG goes on."""
    from release.rollout import ramp

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
    from release.core.settings import config_dir

    _store("read")
    rid = release or ramp.current()["release_id"]
    if rid is None:
        _fail("no release is on the ramp; name one with --release", 2)
    logged = read_decision_log()
    traffic = live_traffic(logged[logged["release_id"] == rid])
    if traffic.empty:
        _fail(f"the decision log has no request of {rid} scored by both models", 1)
    diffs = decision_diffs(traffic, slices=("country", "category"))
    g = ramp.load_plan(config_dir() / "ramp.yaml").guardrails.action_rate_shift
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


@app.command()
def serve(host: str = typer.Option("127.0.0.1", help="address to listen on"),
          port: int = typer.Option(8000, help="port to listen on"),
          seed_day: Optional[str] = typer.Option(None, "--seed-day", help="YYYY-MM-DD: card and merchant history "
                                                 "is read from the event logs before this day (default: the day "
                                                 "after the last one logged)"),
          controller: bool = typer.Option(False, "--controller/--no-controller",
                                          help="also run the ramp controller (guardrails, automatic steps)"),
          config: Optional[str] = typer.Option(None, help="service YAML (default: config/service.yaml)")) -> None:
    """The scoring service: POST /score answers allow or block; GET /state shows the deployment it serves."""
    from pathlib import Path

    from release.core.config import ConfigError
    from release.serving.service import load_service_config, serve as run

    try:
        day = dt.date.fromisoformat(seed_day) if seed_day else None
        load_service_config(Path(config) if config else None)
    except (ValueError, ConfigError) as e:
        _fail(str(e), 2)
    if not 0 < port < 65536:
        _fail(f"--port must be in [1, 65535]; got {port}", 2)
    _store("write")
    run(host=host, port=port, seed_day=day, controller=controller, config=Path(config) if config else None)


@app.command()
def replay(day: str = typer.Option(..., help="the day to replay, YYYY-MM-DD"),
           rate: float = typer.Option(300.0, help="requests per second (0: as fast as possible)"),
           url: str = typer.Option("http://127.0.0.1:8000", help="the scoring service"),
           limit: Optional[int] = typer.Option(None, help="send at most this many transactions"),
           concurrency: int = typer.Option(32, help="requests in flight at most"),
           as_json: bool = typer.Option(False, "--json")) -> None:
    """Send a day of transactions from the event logs through the scoring service (exit 1 if any failed)."""
    from release.serving.replay import replay_command

    replay_command(day, rate=rate, url=url, limit=limit, concurrency=concurrency, as_json=as_json)


@app.command()
def audit(limit: int = 30, as_json: bool = typer.Option(False, "--json")) -> None:
    """The append-only audit log: who, when, what, why, before and after."""
    from release.state.store import audit_log

    _store("read")
    rows = audit_log(limit=limit)
    if as_json:
        return _emit(rows, True)
    t = Table(title="audit log")
    for c in ("at", "actor", "os user / via", "action", "entity", "reason"):
        t.add_column(c)
    for r in rows:
        via = f"{r['os_user'] or '-'} / {r['via'] or '-'}"
        airflow = json.loads(r["context_json"] or "{}").get("airflow")
        if airflow:
            via += f" ({airflow.get('dag_id', '?')}.{airflow.get('task_id', '?')})"
        what = r["action"] + (f" (data date {r['logical_date'][:10]})" if r["logical_date"] else "")
        _row(t, r["at"], r["actor"], via, what, r["entity"], r["reason"])
    console.print(t)


@app.command("handbook-log")
def handbook_log(out: str = typer.Option(..., "--out", help="CSV file to write"),
                 customers: int = typer.Option(5000, help="customers"),
                 terminals: int = typer.Option(10000, help="terminals"),
                 days: int = typer.Option(183, help="days from --start"),
                 start: str = typer.Option("2018-04-01", help="first day, YYYY-MM-DD"),
                 seed: int = typer.Option(0, help="seed"),
                 hostile_ids: bool = typer.Option(False, "--hostile-ids", help="ids with commas, quotes, unicode")) -> None:
    """Write a public-style transaction log (the Fraud Detection Handbook's simulator: customer and terminal
    ids, amounts, a fraud flag and nothing else) to try fraud-cd on data it was not built around."""
    from pathlib import Path

    from simulation.handbook import generate, write_log

    try:
        dt.date.fromisoformat(start)
        df = generate(n_customers=customers, n_terminals=terminals, start=start, n_days=days, seed=seed,
                      hostile_ids=hostile_ids)
    except ValueError as e:
        _fail(str(e), 2)
    path = write_log(df, Path(out))
    _out(f"wrote {len(df):,} transactions ({int(df['TX_FRAUD'].sum()):,} frauds) of "
         f"{df['TX_DATETIME'].min():%Y-%m-%d} .. {df['TX_DATETIME'].max():%Y-%m-%d} to {path}")


def _airflow_home_env():
    from release.orchestration.airflow_env import migrate_airflow_db
    from release.orchestration.demo import cycle_env
    from release.core.settings import paths

    env = cycle_env(paths().home)
    migrate_airflow_db(env)
    return env


@app.command()
def backfill(start: str = typer.Option(..., help="first as-of date, YYYY-MM-DD"),
             end: str = typer.Option(..., help="last as-of date, YYYY-MM-DD (included)"),
             every: Optional[int] = typer.Option(None, help="days between builds; default: the training_set "
                                                            "DAG's cadence (config/pipeline.yaml)")) -> None:
    """Build the training-set snapshots of past dates through Airflow: one `training_set` DAG run per date
    (ingesting the run's days from the configured source first), so a new user's history has the
    snapshots the daily DAG would have built. Reruns find the snapshots already there."""
    from release.orchestration.demo import CycleFailed, run_dag
    from release.core.pipeline import pipeline
    from release.core.settings import paths

    try:
        first, last = dt.date.fromisoformat(start), dt.date.fromisoformat(end)
    except ValueError as e:
        _fail(f"--start/--end: {e}", 2)
    step = every or pipeline().schedule.training_set.every_days
    if last < first or step < 1:
        _fail(f"--end ({last}) must not be before --start ({first}), and --every must be >= 1", 2)
    _store("create")
    env = _airflow_home_env()
    logs = paths().home / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    d = first
    while d <= last:
        try:
            run_dag("training_set", d.isoformat(), env, logs / f"training_set-{d}.log")
        except CycleFailed as e:
            _fail(str(e), 1)
        _out(f"training_set {d}: built")
        d += dt.timedelta(days=step)


@app.command("release")
def release_run(as_of: str = typer.Option(..., "--as-of", help="the release's date, YYYY-MM-DD"),
                workflow: Optional[str] = typer.Option(None, help="training workflow YAML; default: the pipeline "
                                                                  "configuration's workflow"),
                approve_as: Optional[str] = typer.Option(
                    None, "--approve-as", help="approve the suggested thresholds unedited as this named person "
                                               "when asked (scripts, benchmarks); otherwise a person approves "
                                               "with `fraudcd thresholds approve` or in the Airflow UI")) -> None:
    """Run one release for a date through Airflow: the `training_set` DAG, then the `release` DAG
    (snapshot, candidate, evaluation, contracts, threshold suggestions, approval, re-judgement, report,
    shadow, ramp). It waits at the approval until a person answers (bounded by
    FRAUDCD_APPROVAL_TIMEOUT_S). Exit 1 when the release stopped or a DAG run failed."""
    from pathlib import Path

    from release.orchestration.cycle import get_release
    from release.orchestration.demo import CycleFailed, run_cycle
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
    _store("create")
    env = _airflow_home_env()
    rid = f"rel-{day.isoformat()}"
    if approve_as is None:
        _out(f"The release waits for a person: `fraudcd thresholds show --release {rid}`, then "
             f"`fraudcd thresholds approve --release {rid} --reason ...` (or edit/reject), or the Airflow "
             "UI's Required actions.", err)
    try:
        rid = run_cycle(day, env, paths().home / "logs", approve_as,
                        workflow=str(Path(workflow).resolve()) if workflow else None, console=console)
    except CycleFailed as e:
        _fail(str(e), 1)
    rel = get_release(rid)
    _out(f"release {rid}: {rel['status']}" + (f" ({rel['stop_reason']})" if rel.get("stop_reason") else ""))
    if rel.get("report_path"):
        _out(f"report: {rel['report_path']}")
    raise typer.Exit(1 if rel["status"] == Status.STOPPED else 0)


@app.command()
def demo(days: int = 150, tx_per_day: int = typer.Option(3000, "--tx-per-day"),
         approver: str = typer.Option("demo-approver (automated demo)", help="recorded as the approver")) -> None:
    """Simulate a world, then run one whole release cycle through Airflow."""
    from release.orchestration.demo import run_demo

    approver = _actor(approver, "--approver")  # the demo's own store is under FRAUDCD_HOME/demo, made by its cycle
    code = run_demo(days=days, tx_per_day=tx_per_day, approver=approver, console=console)
    raise typer.Exit(code)


@app.command()
def up(port: Optional[int] = typer.Option(None, envvar="FRAUDCD_AIRFLOW_PORT",
                                          help="the API server's and UI's port on 127.0.0.1; default: the "
                                               "running one's, else 8080"),
       timeout: float = typer.Option(180.0, help="seconds to wait until every component is healthy"),
       paused: bool = typer.Option(False, "--paused", help="leave the DAGs paused (a person unpauses them)")) -> None:
    """Run Airflow for real: migrate its database, start the API server, scheduler, DAG processor and
    triggerer in the background (logs and pidfiles in FRAUDCD_HOME/airflow/run), wait until
    /api/v2/monitor/health says all are healthy, unpause the DAGs. Already up: says so. Stop: `fraudcd down`."""
    from release.orchestration.airflow_up import UpError, up as start

    try:
        start(port=port, timeout_s=timeout, paused=paused, say=lambda line: _out(line))
    except UpError as e:
        _fail(str(e), e.code)
    except subprocess.CalledProcessError as e:
        _fail(f"`airflow db migrate` failed: {(e.stderr or '').strip()[-2000:]}", 1)


@app.command()
def down(timeout: float = typer.Option(30.0, help="seconds each component gets to stop before SIGKILL")) -> None:
    """Stop what `fraudcd up` started (SIGTERM, then SIGKILL after --timeout). Nothing running: says so."""
    from release.orchestration.airflow_up import UpError, down as stop

    try:
        stop(timeout_s=timeout, say=lambda line: _out(line))
    except UpError as e:
        _fail(str(e), e.code)


def main() -> None:
    from sqlalchemy import exc as sa_exc

    from release.core.config import ConfigError
    from release.core.io import apply_umask
    from release.state.store import StoreError

    apply_umask()  # one permission policy for everything this process writes (release/core/io.py)
    try:
        app()
    except (StoreError, ConfigError) as e:  # a broken store or configuration: said, not a traceback
        err.print(f"[bold red]error:[/] {escape(str(e))}", highlight=False)
        sys.exit(2)
    except sa_exc.DBAPIError as e:  # the database itself: busy (retry) or damaged (nothing was changed)
        from release.core.settings import state_url

        text = str(getattr(e, "orig", e))
        if "locked" in text or "busy" in text:
            err.print(f"[bold red]error:[/] the state store is busy: another change held it for 30 s ({escape(text)}); "
                      "nothing was changed, try again", highlight=False)
            sys.exit(1)
        err.print(f"[bold red]error:[/] the state store at {escape(state_url())} is damaged or unreadable "
                  f"({escape(text)}); nothing was changed. Restore it from a backup (SQLite: `PRAGMA "
                  "integrity_check` says where)", highlight=False)
        sys.exit(2)


if __name__ == "__main__":
    main()
