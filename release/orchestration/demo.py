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

from release.core.settings import waits
from release.orchestration.airflow_env import airflow_bin, airflow_env, migrate_airflow_db

DAG_TIMEOUT_S = 900
APPROVAL_WAIT_S = 600
DECISION_WAIT_S = 120


def _fraudcd() -> str:
    return str(Path(sys.executable).with_name("fraudcd"))


def _stage(console: Console, msg: str, t0: float) -> None:
    console.print(f"[bold cyan][{time.monotonic() - t0:6.1f}s][/] {escape(str(msg))}")


FAILED_MARKERS = ("Task failed with exception", "up_for_retry")


class CycleFailed(RuntimeError):
    """A DAG run of the cycle failed; the message names the DAG and its log."""


def run_dag(dag_id: str, logical_date: str, env: dict, log: Path, timeout_s: int = DAG_TIMEOUT_S,
            approver: str | None = None, release_id: str | None = None, conf: dict | None = None,
            console: Console | None = None, answer: Callable[[], bool] | None = None,
            watch: Callable[[], None] | None = None) -> None:
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
        # so an unanswered approval times out as it would in production. No request can be past its deadline
        # before the shortest response timeout of the run's tasks: the sweep starts then, and a run that is
        # over by then (or whose timeout comes first) has no sweep at all
        w = waits(env)
        first = min(w.approval_s, w.decision_s)
        sweeper = subprocess.Popen([sys.executable, "-m", "release.cli.main", "airflow-sweep", "--parent",
                                    str(proc.pid), "--max-seconds", str(timeout_s + 60), "--first-after",
                                    str(first)], env=env, stdout=subprocess.DEVNULL, stderr=out) \
            if dag_id == "release" and first < timeout_s else None
        deadline = time.monotonic() + timeout_s
        answered = answer is None
        problem = None
        parked = False
        with open(log, errors="replace") as follow:  # read only what was appended since the last look
            tail = ""
            while proc.poll() is None:
                tail = tail[-200:] + follow.read()  # keep a little overlap: a marker may straddle two reads
                parked = parked or APPROVAL_PARKED in tail
                if time.monotonic() > deadline:
                    problem = f"did not finish in {timeout_s}s"
                elif any(m in tail for m in FAILED_MARKERS):
                    problem = "a task failed"
                if problem:
                    proc.kill()
                    proc.wait()
                    break
                if not answered and parked and _pending_set(env, release_id) is not False:
                    answered = answer()
                if watch is not None:  # e.g. an operator acting during the rollout (tests, drills)
                    watch()
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


def _pending_set(env: dict, release_id: str) -> bool | None:
    """Whether the state store holds the release's pending threshold set, read in this process when it
    shares the harness's state store (cycle_env points both at one home); None when it does not."""
    if any(env.get(k) != os.environ.get(k) for k in ("FRAUDCD_HOME", "FRAUDCD_STATE_URL")):
        return None
    from release.state import approvals

    try:
        s = approvals.latest_set(release_id)
    except Exception:  # noqa: BLE001 - no store yet, or busy for a moment: ask Airflow instead
        return None
    return s is not None and s["status"] == approvals.PENDING


# What `airflow dags test` logs every second while the approval task is parked in AWAITING_INPUT (Airflow 3.3's
# dag.test loop, airflow.sdk.definitions.dag): the harness answers once it reads this in the run's own log. (It
# asked Airflow's models in a child process every 2 s before: an Airflow import each time, minutes of CPU over
# the test suite.) The CLI that answers finds the waiting request itself, and says so when there is none.
APPROVAL_PARKED = "Waiting for Human-in-the-loop input for tasks: ['approve_thresholds']"


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


# ---- live traffic: the scoring service and a replayer ---------------------------------------------------

# The demo's rollout plan: the shipped one (config/ramp.yaml) is sized for a card network's volume; the demo's
# world has 3,000 transactions a day, so its steps are coarser, its minimums smaller and its waits short, and it
# promotes by policy (the shipped plan asks a person). Everything else (the state machine, the guardrails, the
# evidence read from the service's own decision log) is the same code.
# Its action-rate limits are wider than the shipped ones (30%, 0.3 points): at 3,000 transactions a day over ten
# countries, a country sees a few hundred transactions a day, and an interval on its action-rate change stays wider
# than +-30% for weeks (the first candidate moves several countries by 30-50% against the bootstrap incumbent's
# one global threshold, which the backtest shows). With the shipped limits this rollout stays inconclusive, waits
# its bound and asks a person, whom the demo's person answers by rolling back (see DemoPerson). The demo allows
# +-100% or 1 point, and pools countries and segments below 1,500 of the candidate's transactions (so each stage
# needs that many: its steps start at 25%), so its small world can decide each stage within the days it replays.
DEMO_RAMP = """\
steps: [25, 50, 100]
shadow: {min_candidate_rows: 1500, min_event_seconds: 43200, min_seconds: 0, max_wait_seconds: 90}
step: {min_candidate_rows: 1500, min_event_seconds: 21600, min_seconds: 0, max_wait_seconds: 90}
promotion: automatic
poll_seconds: 2
guardrails:
  action_rate_shift: {max_relative_shift: 1.0, min_absolute_shift: 0.01, min_support: 1500, confidence: 0.95}
  segment_action_rate_shift: {max_relative_shift: 1.0, min_absolute_shift: 0.01, min_support: 1500}
  score_shift: {max_psi: 0.2, min_rows: 500}
  error_rate: {max_rate: 0.01, min_requests: 400}
  latency: {max_p99_ms: 250, min_requests: 400}
backtest: {days: 14}
"""
LIVE_DAYS = 12  # simulated days after the release's date: the live traffic the replayer sends
REPLAY_RATE = 200.0  # requests per second: a simulated day (3,000 transactions) every 15 s



def respond_in(env: dict, release_id: str, option: str, user: str, reason: str) -> dict | None:
    """Answer the release's rollout question through Airflow's response handler, in a process with ``env``
    (the cycle's Airflow metadata database)."""
    code = ("import json, sys\nfrom release.orchestration import hitl\n"
            "r = hitl.respond(sys.argv[1], sys.argv[2], user=sys.argv[3], reason=sys.argv[4], "
            "task_id=hitl.ROLLOUT_TASK_ID)\nprint(json.dumps(r))")
    out = subprocess.run([sys.executable, "-c", code, release_id, option, user, reason], env=env,
                         capture_output=True, text=True, timeout=120)
    if out.returncode != 0:
        raise CycleFailed(f"answering the rollout question failed: {out.stderr[-2000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def run_notes_in(env: dict, dag_id: str = "release") -> dict[str, str | None]:
    """{run id: note} of the DAG's runs (release.orchestration.run_note.run_notes), read in a process with
    ``env`` (the cycle's Airflow metadata database; this process's Airflow may be set up on another)."""
    code = ("import json, sys\nfrom release.orchestration.run_note import run_notes\n"
            "print(json.dumps(run_notes(sys.argv[1])))")
    out = subprocess.run([sys.executable, "-c", code, dag_id], env=env, capture_output=True, text=True, timeout=120)
    if out.returncode != 0:
        raise CycleFailed(f"reading the DAG runs' notes failed: {out.stderr[-2000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


class DemoPerson:
    """The demo's person during the rollout: if the DAG asks (a stage stayed inconclusive past its bound),
    answer "Roll back" through Airflow's response handler, as the named demo approver. An automated
    approver never promotes on evidence that could not be judged."""

    def __init__(self, release_id: str, approver: str, env: dict, console: Console | None = None, t0: float = 0.0):
        self.release_id, self.approver, self.env, self.console, self.t0 = release_id, approver, env, console, t0
        self.answered: dict | None = None

    def __call__(self) -> None:
        from release.rollout.decisions import ROLL_BACK
        from release.rollout.driver import needs_person

        if self.answered is not None or not needs_person(self.release_id):  # cheap: the state store first
            return
        self.answered = respond_in(self.env, self.release_id, ROLL_BACK, self.approver,
                                   "demo: the rollout's evidence stayed inconclusive; the automated demo approver "
                                   "does not promote on evidence that could not be judged")
        if self.answered is None:  # the question is not written yet: look again at the next tick
            return
        if self.console:
            _stage(self.console, f"the rollout asked a person; answered \"{ROLL_BACK}\" as {self.approver}",
                   self.t0)


def demo_config(home: Path, ramp_yaml: str = DEMO_RAMP) -> Path:
    """The demo's configuration folder: the shipped one, with the demo's rollout plan and a service that
    keeps an event clock (the replayer sends simulated days faster than they passed), accepting a transaction
    up to a day after the last one."""
    from release.core.settings import EMBEDDED_CONFIG

    folder = home / "config"
    if folder.exists():
        shutil.rmtree(folder)
    shutil.copytree(EMBEDDED_CONFIG, folder)
    (folder / "ramp.yaml").write_text(ramp_yaml)
    (folder / "service.yaml").write_text(event_clock((folder / "service.yaml").read_text()))
    return folder


def event_clock(svc: str) -> str:
    """A service configuration (its YAML text) that keeps an event clock, for replayed days: the replayer sends
    them faster than they passed, and a quiet night's transactions are many minutes apart, so a transaction is
    accepted up to a day after the last one. On the wall clock every replayed transaction would be refused."""
    if "  clock: event" in svc and "  max_ahead_seconds: 86400" in svc:
        return svc
    if "  clock: wall" not in svc:
        raise RuntimeError("the service configuration no longer says `clock: wall`; update release/orchestration/demo.py")
    if "  max_ahead_seconds: 300" not in svc:
        raise RuntimeError("the service configuration no longer says `max_ahead_seconds: 300`; update "
                           "release/orchestration/demo.py")
    return svc.replace("  clock: wall", "  clock: event", 1).replace("  max_ahead_seconds: 300",
                                                                      "  max_ahead_seconds: 86400", 1)


class LiveTraffic:
    """`fraudcd serve` in a subprocess (seeded with the history before ``first_day``) and a replayer thread
    that sends the simulated days from ``first_day`` on, in time order, at ``rate`` requests a second, until
    stopped or out of days. The days are the rollout's evidence, and their supply is finite (at 200 requests a
    second a simulated day lasts 15 s), so the replayer holds them whenever the wall clock runs without the
    rollout needing them:
    - with ``rollout_of`` set (a release id), it sends nothing until the deployment carries that release (in
      shadow or later). The service answers from its start, but the re-judgement and the backtest between the
      approval and shadow take from 10 s on a quiet machine to over a minute on a busy one: days sent then
      judged nothing, and a busy run once left the 50% step without the rows it needed (the rollout rolled
      back, 2026-12-02);
    - while the service is down (killed in a drill, until it answers again), as a card network holds traffic
      for a processor that is down: a slow restart does not use up the days the later steps need. What was
      in flight when it went down fails and is counted."""

    def __init__(self, env: dict, first_day: dt.date, days: int, log: Path, rate: float = REPLAY_RATE):
        import secrets
        import socket

        self.env = {**env, "FRAUDCD_SCORING_TOKEN": secrets.token_urlsafe(24),
                    "FRAUDCD_OPERATOR_TOKEN": secrets.token_urlsafe(24)}
        self.first_day, self.days, self.rate, self.log_path = first_day, days, rate, log
        with socket.socket() as sk:
            sk.bind(("127.0.0.1", 0))
            self.port = sk.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self.proc: subprocess.Popen | None = None
        self.sent = self.failed = 0
        self.day_done: dt.date | None = None
        self.rollout_of: str | None = None  # run_cycle's release: the days wait until it is deployed
        self.held_s = 0.0  # wall seconds the replayer waited for the rollout to begin
        self._stop = False
        self._thread = None
        import threading

        self._up = threading.Event()  # set while the service answers (after start_service, until kill_service)

    def start(self) -> "LiveTraffic":
        import threading

        self._log = open(self.log_path, "a")
        self.start_service()
        self._thread = threading.Thread(target=self._replay, name="replayer", daemon=True)
        self._thread.start()
        return self

    def start_service(self) -> None:
        """Start `fraudcd serve` and wait until it answers (after a crash: it recovers its journal first)."""
        import httpx

        from release.core.settings import EMBEDDED_CONFIG

        configured = Path(self.env.get("FRAUDCD_CONFIG") or EMBEDDED_CONFIG) / "service.yaml"
        config = self.log_path.with_suffix(".service.yaml")  # the configured service, on the event clock
        config.write_text(event_clock(configured.read_text()))
        self.proc = subprocess.Popen([_fraudcd(), "serve", "--port", str(self.port), "--seed-day",
                                      self.first_day.isoformat(), "--config", str(config)], env=self.env,
                                     stdout=self._log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 120
        while True:
            if self.proc.poll() is not None:
                raise CycleFailed(f"the scoring service exited with {self.proc.returncode}; see {self.log_path}")
            try:
                if httpx.get(self.url + "/healthz", timeout=1).status_code == 200:
                    self._up.set()
                    return
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                raise CycleFailed(f"the scoring service did not start in 120 s; see {self.log_path}")
            time.sleep(0.2)

    def kill_service(self) -> None:
        """SIGKILL the service (a crash drill): requests fail until it is started again."""
        self._up.clear()
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()

    def _replay(self) -> None:
        import asyncio

        from release.serving.replay import day_requests, replay
        from release.core.settings import paths

        token = self.env["FRAUDCD_SCORING_TOKEN"]
        if not self._wait_for_rollout():
            return
        for i in range(self.days):
            if self._stop:
                return
            day = self.first_day + dt.timedelta(days=i)
            bodies = day_requests(paths().events, day)
            chunk = max(1, int(self.rate * 2))  # in 2-second slices, so a stop is obeyed quickly
            for k in range(0, len(bodies), chunk):
                while not self._up.wait(0.5):  # the service is down: hold the traffic until it answers
                    if self._stop:
                        return
                if self._stop:
                    return
                res = asyncio.run(replay(self.url, bodies[k:k + chunk], rate=self.rate, token=token))
                self.sent += len(res.answers)
                self.failed += res.failed
            self.day_done = day

    def _wait_for_rollout(self) -> bool:
        """Until the deployment carries ``rollout_of`` and the service serves it (its /healthz version is the
        store's since that change); False: stopped first."""
        import httpx

        from release.rollout import ramp
        from release.state.status import IDLE

        t, need = time.monotonic(), None
        try:
            while self.rollout_of is not None and not self._stop:
                if need is None:
                    st = ramp.current()
                    if st["release_id"] == self.rollout_of and st["state"] != IDLE:
                        need = st["version"]
                if need is not None and self._up.is_set():
                    try:
                        if (httpx.get(self.url + "/healthz", timeout=1).json().get("version") or 0) >= need:
                            break
                    except (httpx.HTTPError, ValueError):
                        pass
                time.sleep(0.2)
        finally:
            self.held_s = time.monotonic() - t
        return not self._stop

    def stop(self) -> None:
        self._stop = True
        if self._thread is not None:
            self._thread.join(timeout=30)
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        if getattr(self, "_log", None):
            self._log.close()


def cycle_env(home: Path) -> dict:
    """The environment of one cycle: data, state store and Airflow metadata all under ``home``."""
    os.environ["FRAUDCD_HOME"] = str(home)
    env = airflow_env()
    env["FRAUDCD_HOME"] = str(home)
    env["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"] = f"sqlite:///{home / 'airflow' / 'airflow.db'}"
    env["AIRFLOW__LOGGING__BASE_LOG_FOLDER"] = str(home / "airflow" / "logs")
    env["FRAUDCD_APPROVAL_TIMEOUT_S"] = str(APPROVAL_WAIT_S)
    env["FRAUDCD_DECISION_TIMEOUT_S"] = str(DECISION_WAIT_S)  # a rollout question nobody answers: rolled back
    if (home / "config").is_dir():  # the demo's own configuration (demo_config)
        env["FRAUDCD_CONFIG"] = os.environ["FRAUDCD_CONFIG"] = str(home / "config")
    return env


def _approved(release_id: str) -> bool:
    """The release's thresholds were approved (it is past approval, live or finished after it): production is
    tagged, and the scoring service can start."""
    from release.state.releases import get_release
    from release.state.status import PIPELINE_ORDER, Status

    try:
        status = get_release(release_id)["status"]
    except KeyError:
        return False
    return status != Status.STOPPED and (status not in PIPELINE_ORDER
                                         or PIPELINE_ORDER.index(status) >= PIPELINE_ORDER.index(Status.APPROVED))


def run_cycle(as_of: dt.date, env: dict, logs: Path, approver: str | None, workflow: str | None = None,
              console: Console | None = None, t0: float | None = None, overrides: list[dict] | None = None,
              run: str = "", live: LiveTraffic | None = None, watch: Callable[[], None] | None = None,
              approve: Callable[[str], bool] | None = None) -> str:
    """One release cycle through Airflow: the daily training_set DAG, then the release DAG, answering
    the approval as ``approver`` through the CLI. With ``live``, the scoring service and the replayer start
    once the thresholds are approved (production is tagged by then), and the replayer sends the days once
    the candidate is in shadow, so the release's shadow and ramp run on the traffic the service scores; they
    stop when the DAG run ends. ``approve(release_id)``: a person of the caller's answers the approval instead,
    until it returns True. Returns the release id."""
    t0 = time.monotonic() if t0 is None else t0
    logs.mkdir(parents=True, exist_ok=True)
    day = as_of.isoformat()
    if console:
        _stage(console, f"airflow dags test training_set {day}", t0)
    run_dag("training_set", day, env, logs / f"training_set-{day}{run}.log")
    from release.orchestration.cycle import release_id_for

    rid = release_id_for(as_of)
    if console:
        _stage(console, f"airflow dags test release {day} (waits for approval of {rid})", t0)
    conf = {k: v for k, v in (("workflow", workflow), ("overrides", overrides)) if v}
    answer = None
    if live is not None:  # once approved (by a person, or before this run): start the service and the replay
        live.rollout_of = rid  # the replayed days wait for the candidate's shadow
        inner = watch

        def watch() -> None:
            if live.proc is None and _approved(rid):
                if console:
                    _stage(console, f"approved: starting the scoring service on {live.url}; replaying days "
                                    f"from {live.first_day} at {live.rate:g} requests/s once {rid} is in shadow", t0)
                live.start()
            if inner is not None:
                inner()
    if approve is not None:
        def by_person() -> bool:
            return approve(rid)
        answer = by_person
    try:
        run_dag("release", day, env, logs / f"release-{day}{run}.log", approver=approver, release_id=rid,
                conf=conf or None, console=console, answer=answer, watch=watch)
    finally:
        if live is not None:
            live.stop()
            if console and live.proc is not None:
                _stage(console, f"replayer stopped: {live.sent:,} requests sent ({live.failed:,} not answered 200), "
                                f"last whole day {live.day_done}; held {live.held_s:.0f} s until shadow", t0)
    return rid


# The demo's world is small (3,000 transactions a day): at the default 5% exploration a ten-day judging
# window holds about two explored frauds, too few for any counterfactual figure, and every release would
# (rightly) stop as "insufficient data". It explores a quarter of the would-be blocks instead; the
# exploration budget a deployment needs falls with its volume (README, Evaluation).
DEMO_EXPLORATION = 0.25


def run_demo(days: int = 150, tx_per_day: int = 3000, approver: str = "demo-approver (automated demo)",
             console: Console | None = None) -> int:
    from release.core.settings import paths
    from simulation.world import WorldConfig

    console = console or Console()
    t0 = time.monotonic()
    home = paths().home / "demo"
    # the history the release learns from, then LIVE_DAYS more: the live traffic the replayer sends
    cfg = WorldConfig(days=days + LIVE_DAYS, tx_per_day=tx_per_day, exploration=DEMO_EXPLORATION)
    marker = home / "events" / "world.json"
    keep_events = marker.exists() and json.loads(marker.read_text()) == json.loads(cfg.model_dump_json())
    if home.exists():
        for child in home.iterdir():
            if child.name != "events" or not keep_events:
                shutil.rmtree(child) if child.is_dir() else child.unlink()
    home.mkdir(parents=True, exist_ok=True)
    demo_config(home)
    env = cycle_env(home)
    if keep_events:
        _stage(console, f"world already simulated ({days} + {LIVE_DAYS} live days x ~{tx_per_day:,} tx/day), reusing {home / 'events'}", t0)
    else:
        _stage(console, f"simulating {days} days of history + {LIVE_DAYS} days of live traffic x ~{tx_per_day:,} transactions/day (seeded)", t0)
        r = subprocess.run([_fraudcd(), "simulate", "--days", str(days + LIVE_DAYS), "--tx-per-day", str(tx_per_day),
                            "--exploration", str(DEMO_EXPLORATION)], env=env)
        if r.returncode:
            return r.returncode
        marker.write_text(cfg.model_dump_json())
    _stage(console, "migrating the Airflow metadata database (SQLite)", t0)
    migrate_airflow_db(env)
    try:
        as_of = cfg.start + dt.timedelta(days=days)
        live = LiveTraffic(env, as_of, LIVE_DAYS, home / "logs" / "serve.log")
        from release.orchestration.cycle import release_id_for

        person = DemoPerson(release_id_for(as_of), approver, env, console, t0)
        rid = run_cycle(as_of, env, home / "logs", approver, console=console, t0=t0, live=live, watch=person)
    except CycleFailed as e:
        console.print(f"[red]{escape(str(e))}[/]", highlight=False)
        return 1
    _stage(console, "cycle finished", t0)
    subprocess.run([_fraudcd(), "verdicts", rid], env=env)
    subprocess.run([_fraudcd(), "ramp", "status"], env=env)
    subprocess.run([_fraudcd(), "status"], env=env)
    from release.orchestration.cycle import get_release

    rel = get_release(rid)
    console.print(f"\n[bold]release {escape(str(rid))}: {escape(str(rel['status']))}[/]")
    for run_id, note in sorted(run_notes_in(env).items()):  # what Airflow shows on the run (its note)
        console.print(f"Airflow run {run_id}, its note: {note}", markup=False, highlight=False)
    console.print(f"report: {rel['report_path']}", markup=False, highlight=False)
    console.print(f"index:  {Path(rel['report_path']).parent / 'index.html'}", markup=False, highlight=False)
    console.print(f"(FRAUDCD_HOME={home} .venv/bin/fraudcd status  to look again)", markup=False, highlight=False)
    return 0
