"""`fraudcd` commands, the "Airflow" panel of its help. Airflow itself: the demo cycle, `up` and `down`, and the harness's timeout sweeper."""
from __future__ import annotations

import subprocess
from typing import List, Optional

import typer

from release.cli.common import _actor, _fail, _out, console

PANEL = "Airflow"
app = typer.Typer()


def _airflow_home_env():
    from release.orchestration.airflow_env import migrate_airflow_db
    from release.orchestration.demo import cycle_env
    from release.core.settings import paths

    env = cycle_env(paths().home)
    migrate_airflow_db(env)
    return env



@app.command("airflow-sweep", rich_help_panel=PANEL, hidden=True)
def airflow_sweep(parent: int = typer.Option(..., help="stop when this process (the `airflow dags test`) ends"),
                  every: float = typer.Option(1.0, help="seconds between sweeps"),
                  max_seconds: float = typer.Option(3600.0, "--max-seconds", help="stop after this long regardless"),
                  first_after: float = typer.Option(0.0, "--first-after", min=0.0,
                                                    help="seconds before the first sweep (the run's shortest "
                                                         "response timeout)"),
                  ) -> None:
    """The scheduler's human-in-the-loop timeout sweep, run beside `airflow dags test` (which runs no
    scheduler) by the harness, so an unanswered request times out as it would in production."""
    from release.orchestration.hitl import sweep_beside

    sweep_beside(parent, every, max_seconds, first_after)



@app.command(rich_help_panel=PANEL)
def demo(days: int = 150, tx_per_day: int = typer.Option(3000, "--tx-per-day"),
         approver: str = typer.Option("demo-approver (automated demo)", help="recorded as the approver")) -> None:
    """Simulate a world, then run one whole release cycle through Airflow."""
    from release.orchestration.demo import run_demo

    approver = _actor(approver, "--approver")  # the demo's own store is under FRAUDCD_HOME/demo, made by its cycle
    code = run_demo(days=days, tx_per_day=tx_per_day, approver=approver, console=console)
    raise typer.Exit(code)



@app.command("simulate-cycles", rich_help_panel=PANEL)
def simulate_cycles(cycles: int = typer.Option(6, help="biweekly release cycles after the history"),
                    exploration: float = typer.Option(0.25, help="the scoring service's share of would-be blocks "
                                                                  "let through, logged with its propensity; 0: off"),
                    history_days: int = typer.Option(150, "--history-days", help="days before the first cycle, "
                                                     "decided by the legacy rules"),
                    tx_per_day: int = typer.Option(3000, "--tx-per-day"),
                    merchants: int = typer.Option(2000), cards: int = typer.Option(30000),
                    seed: int = typer.Option(7),
                    new_pattern_cycle: int = typer.Option(2, "--new-pattern-cycle",
                                                          help="the cycle whose days first hold the new fraud pattern"),
                    bad_candidate_cycle: Optional[int] = typer.Option(None, "--bad-candidate-cycle",
                                                                      help="this cycle trains a deliberately worse "
                                                                           "candidate (0-based)"),
                    bad_edit_cycle: Optional[int] = typer.Option(None, "--bad-edit-cycle",
                                                                 help="in this cycle the analyst makes a bad threshold "
                                                                      "edit before approving (0-based)"),
                    replay_rate: float = typer.Option(400.0, "--replay-rate", help="requests/s of live traffic"),
                    maturity_days: Optional[int] = typer.Option(None, "--maturity-days"),
                    training_history_days: Optional[int] = typer.Option(None, "--training-history-days"),
                    dispute_median_days: float = typer.Option(25.0, "--dispute-median-days"),
                    dispute_max_days: int = typer.Option(120, "--dispute-max-days"),
                    folder: Optional[str] = typer.Option(None, "--home", help="the run's own data folder, made anew "
                                                         "(default FRAUDCD_HOME/closed-loop)"),
                    compare_with: Optional[List[str]] = typer.Option(None, "--compare-with", help="the --home of an "
                                                                     "earlier run of the same world (e.g. exploration "
                                                                     "0), shown beside this one in the summary")) -> None:
    """Months of biweekly release cycles through Airflow, the world and the pipeline in one loop: each cycle's
    release runs as every release does (shadow and ramp on live traffic through a scoring service), then the model
    that is production decides the world's next 14 days (what it blocks is never labelled). Ends with a summary
    across cycles in the report index (reports/closed-loop.html)."""
    from pathlib import Path

    from pydantic import ValidationError

    from release.core.settings import paths
    from release.orchestration.closed_loop import LoopConfig, run_loop

    try:
        loop = LoopConfig(cycles=cycles, exploration=exploration, history_days=history_days, tx_per_day=tx_per_day,
                          n_merchants=merchants, n_cards=cards, seed=seed, new_pattern_cycle=new_pattern_cycle,
                          bad_candidate_cycle=bad_candidate_cycle, bad_edit_cycle=bad_edit_cycle,
                          replay_rate=replay_rate, maturity_days=maturity_days,
                          training_history_days=training_history_days, dispute_median_days=dispute_median_days,
                          dispute_max_days=dispute_max_days)
    except ValidationError as e:
        _fail("; ".join(f"--{'-'.join(str(x) for x in err['loc']).replace('_', '-')}: {err['msg']}"
                        for err in e.errors()), 2)
    from release.orchestration.closed_loop import earlier_run

    home = Path(folder).resolve() if folder else paths().home / "closed-loop"
    try:
        compare = dict(earlier_run(Path(d).resolve()) for d in compare_with or [])
    except ValueError as e:
        _fail(str(e), 2)
    if any(Path(d).resolve() == home for d in compare_with or []):
        _fail(f"--compare-with {home}: that is this run's own folder, which it makes anew", 2)
    rows = run_loop(loop, home, console=console, compare=compare or None)
    _out(f"summary: {home / 'reports' / 'closed-loop.html'}; rows: {home / 'closed_loop' / 'cycles.json'}")
    failed = [r for r in rows if r.get("error")]
    raise typer.Exit(1 if failed else 0)


@app.command(rich_help_panel=PANEL)
def up(port: Optional[int] = typer.Option(None, envvar="FRAUDCD_AIRFLOW_PORT",
                                          help="the API server's and UI's port on 127.0.0.1; default: the "
                                               "running one's, else 8080"),
       timeout: float = typer.Option(180.0, help="seconds to wait until every component is healthy"),
       paused: bool = typer.Option(False, "--paused", help="leave the DAGs paused (a person unpauses them)"),
       service_port: Optional[int] = typer.Option(None, "--service-port", envvar="FRAUDCD_SERVICE_PORT",
                                                  help="the scoring service's port on 127.0.0.1; default: the "
                                                       "running one's, else 8000"),
       executor: str = typer.Option("local", help="local (tasks run beside the scheduler) or celery (a Redis "
                                                  "broker and Celery workers; metadata database and state store "
                                                  "on PostgreSQL)"),
       workers: Optional[int] = typer.Option(None, help="with --executor celery: how many Celery workers to start "
                                                        "on this machine (default 2)"),
       redis_port: Optional[int] = typer.Option(None, "--redis-port", help="with --executor celery: the port of "
                                                "the redis-server started as the broker (default 6379)"),
       store: Optional[str] = typer.Option(None, "--store", help="postgres (a PostgreSQL server of the data folder's "
                                           "own, from the pgserver wheel) or sqlite, for Airflow's metadata and the "
                                           "state store; default: the data folder's earlier choice, else postgres. "
                                           "A SQLite state store moves into PostgreSQL; never back")) -> None:
    """Run Airflow for real: migrate its database, start the API server, scheduler, DAG processor and
    triggerer in the background (logs and pidfiles in FRAUDCD_HOME/airflow/run), wait until
    /api/v2/monitor/health says all are healthy, unpause the DAGs; then the scoring service (`fraudcd serve`),
    once the event logs hold transactions to seed it. Already up: says so. Stop: `fraudcd down`.

    `--executor celery --workers 2`: the same DAGs on the CeleryExecutor, with a redis-server as the broker and
    two `airflow celery worker` processes (README, "Past one machine").

    Stores: Airflow's metadata and the state store in a local PostgreSQL (the pgserver wheel; data in
    FRAUDCD_HOME/postgres), or SQLite files with `--store sqlite`; the choice is recorded in
    FRAUDCD_HOME/stores.json for every process and shell (release/core/local_postgres.py)."""
    from release.orchestration.airflow_up import UpError, up as start

    try:
        start(port=port, timeout_s=timeout, paused=paused, say=lambda line: _out(line), service_port=service_port,
              executor=executor, workers=workers, redis_port=redis_port, store=store)
    except UpError as e:
        _fail(str(e), e.code)
    except subprocess.CalledProcessError as e:
        _fail(f"`airflow db migrate` failed: {(e.stderr or '').strip()[-2000:]}", 1)



@app.command(rich_help_panel=PANEL)
def down(timeout: float = typer.Option(30.0, help="seconds each component gets to stop before SIGKILL")) -> None:
    """Stop what `fraudcd up` started (SIGTERM, then SIGKILL after --timeout). Nothing running: says so."""
    from release.orchestration.airflow_up import UpError, down as stop

    try:
        stop(timeout_s=timeout, say=lambda line: _out(line))
    except UpError as e:
        _fail(str(e), e.code)

