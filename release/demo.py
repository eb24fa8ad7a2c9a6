"""`make demo`: simulate a world, then run one whole release cycle through real Airflow.

The demo has its own data folder (``<FRAUDCD_HOME>/demo``), reset on every run except the simulated
event logs, which are kept while the world's configuration is unchanged. Airflow runs in-process via
`airflow dags test`. The threshold approval is answered through the same path a person uses
(`fraudcd thresholds approve`), as an explicitly named demo approver, and every wait is bounded.
"""
from __future__ import annotations

import datetime as dt
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Callable

from rich.console import Console
from rich.markup import escape

from release.airflow_env import airflow_bin, airflow_env, migrate_airflow_db

DAG_TIMEOUT_S = 900
APPROVAL_WAIT_S = 600


def _fraudcd() -> str:
    return str(Path(sys.executable).with_name("fraudcd"))


def _stage(console: Console, msg: str, t0: float) -> None:
    console.print(f"[bold cyan][{time.monotonic() - t0:6.1f}s][/] {escape(str(msg))}")


FAILED_MARKERS = ("Task failed with exception", "up_for_retry")


class CycleFailed(RuntimeError):
    """A DAG run of the cycle failed; the message names the DAG and its log."""


def run_dag(dag_id: str, logical_date: str, env: dict, log: Path, timeout_s: int = DAG_TIMEOUT_S,
            approver: str | None = None, release_id: str | None = None, conf: dict | None = None,
            console: Console | None = None, answer: Callable[[], bool] | None = None) -> None:
    """`airflow dags test DAG DATE` in a subprocess; if ``approver`` is given, approve the release's
    thresholds with the CLI as soon as Airflow's approval task waits for them (or call ``answer``
    then, until it returns True). Bounded: a task failure (which would wait for its retry delay) or the
    timeout stops the run and raises CycleFailed."""
    if answer is None and approver is not None:
        answer = lambda: _try_approve(release_id, approver, env, console)  # noqa: E731
    cmd = [airflow_bin(), "dags", "test", dag_id, logical_date]
    if conf:
        cmd += ["--conf", json.dumps(conf)]
    with open(log, "w") as out:
        proc = subprocess.Popen(cmd, env=env, stdout=out, stderr=subprocess.STDOUT)
        # `dags test` runs no scheduler: run the scheduler's human-in-the-loop timeout sweep beside it,
        # so an unanswered approval times out as it would in production
        sweeper = subprocess.Popen([sys.executable, "-m", "release.hitl", "sweep", "--parent", str(proc.pid),
                                    "--max-seconds", str(timeout_s + 60)], env=env, stdout=subprocess.DEVNULL,
                                   stderr=out) if dag_id == "release" else None
        deadline = time.monotonic() + timeout_s
        answered = answer is None
        problem = None
        with open(log, errors="replace") as follow:  # read only what was appended since the last look
            tail = ""
            while proc.poll() is None:
                tail = tail[-200:] + follow.read()  # keep a little overlap: a marker may straddle two reads
                if time.monotonic() > deadline:
                    problem = f"did not finish in {timeout_s}s"
                elif any(m in tail for m in FAILED_MARKERS):
                    problem = "a task failed"
                if problem:
                    proc.kill()
                    proc.wait()
                    break
                if not answered and approval_waiting(env, release_id):
                    answered = answer()
                time.sleep(0.5)
        if sweeper is not None:
            sweeper.kill()
            sweeper.wait()
    if problem is None and proc.returncode != 0:
        problem = f"exited with {proc.returncode}"
    if problem:
        raise CycleFailed(f"`airflow dags test {dag_id} {logical_date}` {problem}; see {log}\n"
                          + _tail_error(log))


def _tail_error(log: Path, lines: int = 25) -> str:
    text = log.read_text(errors="replace").splitlines()
    idx = next((i for i, line in enumerate(text) if "Traceback" in line), None)
    return "\n".join(text[idx: idx + lines] if idx is not None else text[-lines:])


def approval_waiting(env: dict, release_id: str) -> bool:
    """True while the release DAG's approval task is parked in Airflow waiting for a response (read from
    the harness's SQLite metadata database; the CLI itself goes through Airflow's models)."""
    import sqlite3

    from release.hitl import DAG_ID, TASK_ID

    db = Path(env["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"].removeprefix("sqlite:///"))
    if not db.exists():
        return False
    try:
        with sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=5) as con:
            rows = con.execute(
                "SELECT dr.data_interval_end FROM task_instance ti JOIN hitl_detail h ON h.ti_id = ti.id "
                "JOIN dag_run dr ON dr.dag_id = ti.dag_id AND dr.run_id = ti.run_id "
                "WHERE ti.dag_id = ? AND ti.task_id = ? AND ti.state = 'awaiting_input' AND h.responded_at IS NULL",
                (DAG_ID, TASK_ID)).fetchall()
    except sqlite3.Error:  # locked for a moment, or no tables yet: look again at the next tick
        return False
    return any(f"rel-{str(end)[:10]}" == release_id for (end,) in rows)


def _try_approve(release_id: str, approver: str, env: dict, console: Console | None) -> bool:
    """Approve as the named demo approver through the CLI, which records the decision and answers the
    waiting approval task through Airflow's response handler."""
    cmd = [_fraudcd(), "thresholds", "approve", "--release", release_id, "--as", approver,
           "--reason", "demo run: suggestions approved unedited by the automated demo approver"]
    r = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=120)
    if console:
        console.print(f"  approval requested; ran `fraudcd thresholds approve --release {release_id} --as "
                      f"\"{approver}\"`: {r.stdout.strip() or r.stderr.strip()}", markup=False, highlight=False)
    return r.returncode == 0


def cycle_env(home: Path) -> dict:
    """The environment of one cycle: data, state store and Airflow metadata all under ``home``."""
    os.environ["FRAUDCD_HOME"] = str(home)
    env = airflow_env()
    env["FRAUDCD_HOME"] = str(home)
    env["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"] = f"sqlite:///{home / 'airflow' / 'airflow.db'}"
    env["AIRFLOW__LOGGING__BASE_LOG_FOLDER"] = str(home / "airflow" / "logs")
    env["FRAUDCD_APPROVAL_TIMEOUT_S"] = str(APPROVAL_WAIT_S)
    return env


def run_cycle(as_of: dt.date, env: dict, logs: Path, approver: str | None, workflow: str | None = None,
              console: Console | None = None, t0: float | None = None, overrides: list[dict] | None = None,
              run: str = "") -> str:
    """One release cycle through Airflow: the daily training_set DAG, then the release DAG, answering
    the approval as ``approver`` through the CLI. Returns the release id."""
    t0 = time.monotonic() if t0 is None else t0
    logs.mkdir(parents=True, exist_ok=True)
    day = as_of.isoformat()
    if console:
        _stage(console, f"airflow dags test training_set {day}", t0)
    run_dag("training_set", day, env, logs / f"training_set-{day}{run}.log")
    from release.cycle import release_id_for

    rid = release_id_for(as_of)
    if console:
        _stage(console, f"airflow dags test release {day} (waits for approval of {rid})", t0)
    conf = {k: v for k, v in (("workflow", workflow), ("overrides", overrides)) if v}
    run_dag("release", day, env, logs / f"release-{day}{run}.log", approver=approver, release_id=rid,
            conf=conf or None, console=console)
    return rid


# The demo's world is small (3,000 transactions a day): at the default 5% exploration a ten-day judging
# window holds about two explored frauds, too few for any counterfactual figure, and every release would
# (rightly) stop as "insufficient data". It explores a quarter of the would-be blocks instead; the
# exploration budget a deployment needs falls with its volume (README, Evaluation).
DEMO_EXPLORATION = 0.25


def run_demo(days: int = 150, tx_per_day: int = 3000, approver: str = "demo-approver (automated demo)",
             console: Console | None = None) -> int:
    from release.settings import paths
    from simulation.world import WorldConfig

    console = console or Console()
    t0 = time.monotonic()
    home = paths().home / "demo"
    cfg = WorldConfig(days=days, tx_per_day=tx_per_day, exploration=DEMO_EXPLORATION)
    marker = home / "events" / "world.json"
    keep_events = marker.exists() and json.loads(marker.read_text()) == json.loads(cfg.model_dump_json())
    if home.exists():
        for child in home.iterdir():
            if child.name != "events" or not keep_events:
                shutil.rmtree(child) if child.is_dir() else child.unlink()
    home.mkdir(parents=True, exist_ok=True)
    env = cycle_env(home)
    if keep_events:
        _stage(console, f"world already simulated ({days} days x ~{tx_per_day:,} tx/day), reusing {home / 'events'}", t0)
    else:
        _stage(console, f"simulating {days} days x ~{tx_per_day:,} transactions/day (seeded)", t0)
        r = subprocess.run([_fraudcd(), "simulate", "--days", str(days), "--tx-per-day", str(tx_per_day),
                            "--exploration", str(DEMO_EXPLORATION)], env=env)
        if r.returncode:
            return r.returncode
        marker.write_text(cfg.model_dump_json())
    _stage(console, "migrating the Airflow metadata database (SQLite)", t0)
    migrate_airflow_db(env)
    try:
        rid = run_cycle(cfg.start + dt.timedelta(days=days), env, home / "logs", approver, console=console, t0=t0)
    except CycleFailed as e:
        console.print(f"[red]{escape(str(e))}[/]", highlight=False)
        return 1
    _stage(console, "cycle finished", t0)
    subprocess.run([_fraudcd(), "verdicts", rid], env=env)
    subprocess.run([_fraudcd(), "ramp", "status"], env=env)
    subprocess.run([_fraudcd(), "status"], env=env)
    from release.cycle import get_release

    rel = get_release(rid)
    console.print(f"\n[bold]release {escape(str(rid))}: {escape(str(rel['status']))}[/]")
    console.print(f"report: {rel['report_path']}", markup=False, highlight=False)
    console.print(f"index:  {Path(rel['report_path']).parent / 'index.html'}", markup=False, highlight=False)
    console.print(f"(FRAUDCD_HOME={home} .venv/bin/fraudcd status  to look again)", markup=False, highlight=False)
    return 0
