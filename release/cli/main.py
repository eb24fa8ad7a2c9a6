"""`fraudcd`: one entry point for people and scripts.

Exit codes: 0 ok; 1 a contract failed or the action was refused; 2 bad input (a missing, damaged or
unmigrated state store included).
"""
from __future__ import annotations

import datetime as dt
import json
import subprocess
import sys
from typing import Optional

import typer
from rich.markup import escape
from rich.table import Table
from rich.text import Text

from release.cli.common import (_actor, _actor_or_login, _emit, _fail, _note, _now, _out, _reason_given, _row,
                                _store, _verdict_summary, _verdict_table, console, err)
from release.cli.ramp import ramp_app
from release.cli.thresholds import thresholds_app

app = typer.Typer(add_completion=False, no_args_is_help=True, help=__doc__)
app.add_typer(thresholds_app, name="thresholds")
app.add_typer(ramp_app, name="ramp")

@app.callback()
def _cli(ctx: typer.Context) -> None:
    from release.state.store import acting

    # every audit row a command writes records that it came from the CLI, and which command
    ctx.with_resource(acting("cli", command=f"fraudcd {ctx.invoked_subcommand}"))


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


@app.command("airflow-sweep", hidden=True)
def airflow_sweep(parent: int = typer.Option(..., help="stop when this process (the `airflow dags test`) ends"),
                  every: float = typer.Option(1.0, help="seconds between sweeps"),
                  max_seconds: float = typer.Option(3600.0, "--max-seconds", help="stop after this long regardless"),
                  ) -> None:
    """The scheduler's human-in-the-loop timeout sweep, run beside `airflow dags test` (which runs no
    scheduler) by the harness, so an unanswered request times out as it would in production."""
    from release.orchestration.hitl import sweep_beside

    sweep_beside(parent, every, max_seconds)


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
