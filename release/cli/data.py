"""`fraudcd` commands, the "Data" panel of its help. Event logs and training sets: simulate or ingest a log, build and backfill snapshots."""
from __future__ import annotations

import datetime as dt
from typing import Optional

import typer

from release.cli.common import _emit, _fail, _note, _out, _store, err
from release.cli.airflow import _airflow_home_env

PANEL = "Data"
app = typer.Typer()


@app.command(rich_help_panel=PANEL)
def simulate(days: int = typer.Option(150, help="days of history"),
             tx_per_day: int = typer.Option(3000, "--tx-per-day", help="mean transactions per day"),
             seed: int = typer.Option(7), start: str = typer.Option("2026-01-01", help="first day (YYYY-MM-DD)"),
             merchants: int = typer.Option(2000), cards: int = typer.Option(30000),
             countries: int = typer.Option(10),
             exploration: float = typer.Option(0.05, help="share of the legacy rules' would-be blocks let through "
                                                         "and logged with their propensity")) -> None:
    """Simulate a world and write its event logs under FRAUDCD_HOME/events (a local folder: with FRAUDCD_EVENTS_URL
    set it refuses and writes nothing)."""
    from pydantic import ValidationError
    from rich.progress import Progress

    from release.core.io import local_events
    from release.core.settings import paths
    from simulation.world import WorldConfig, simulate as run

    try:
        cfg = WorldConfig(seed=seed, start=dt.date.fromisoformat(start), days=days, tx_per_day=tx_per_day,
                          n_merchants=merchants, n_cards=cards, n_countries=countries, exploration=exploration)
    except (ValidationError, ValueError) as e:
        _fail(str(e), 2)
    events = local_events(paths().events, "fraudcd simulate")  # a URL: refused (exit 2) before any work
    with Progress(console=err, transient=True) as prog:
        t = prog.add_task("simulating days", total=cfg.days)
        totals = run(cfg, events, progress=lambda done, total: prog.update(t, completed=done))
    _out(f"simulated {cfg.days} days from {cfg.start} into {events}: "
         + ", ".join(f"{k} {v:,}" for k, v in totals.items()))



@app.command(rich_help_panel=PANEL)
def ingest(mapping: str = typer.Option(..., "--mapping", help="column-mapping YAML (see config/source.example.yaml)"),
           start: Optional[str] = typer.Option(None, help="first day to write (YYYY-MM-DD); default: all"),
           end: Optional[str] = typer.Option(None, help="day after the last day to write (YYYY-MM-DD)"),
           as_json: bool = typer.Option(False, "--json")) -> None:
    """Normalise a team's own transaction log into event logs under FRAUDCD_HOME/events (a local folder: with
    FRAUDCD_EVENTS_URL set it refuses and writes nothing)."""
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



@app.command("training-set", rich_help_panel=PANEL)
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



@app.command("handbook-log", rich_help_panel=PANEL)
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



@app.command(rich_help_panel=PANEL)
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

