"""Benchmark: the scoring service on this machine, over loopback.

Builds a simulated world (seeded), trains two models with the shipped default workflow (production and
candidate, real size: 300 rounds, 15 leaves, every feature), approves thresholds, starts
`fraudcd serve` in a subprocess, then replays one simulated day per phase through it with the
replayer (release.serving.replay's lean keep-alive client, in this process: the load generator shares the two
cores with the service):

1. baseline: ``booster.predict`` on one row, in this process (what scoring costs without a service);
2. shadow off: production only, at ``--rate`` requests/s (open loop);
3. steady, shadow on: the candidate scores every request beside production (in the shadow worker), at
   ``--rate``; its baseline is the trivial endpoint (``GET /healthz``) of the same server at the same
   rate and with the same client, measured just before (the machine's and the stack's share);
4. burst: requests arrive in bursts of ``--burst`` at once (a burst every ``burst / rate`` seconds, so
   the same mean rate), shadow on; baseline: the same bursts of ``GET /healthz``. The first burst is
   reported apart (with ``--burst-client replay`` it opens the connections). The bursts' client is a leaner
   one (``lean_bursts``: a protocol per connection, each request's bytes built before the phase, no task
   or timeout per request): replay's client spends about 105 us of CPU a request, and on two shared cores
   a burst's later answers waited for it (its own stamping, and the core it took from the service);
5. busy neighbour: the steady phase again while another process spins on one core (pinned) for the
   whole phase, and its ``/healthz`` baseline under the same neighbour;
6. throughput: shadow on, as fast as ``--concurrency`` requests in flight allow (closed loop);
7. rollback under load: half the cards on the candidate at ``--rate``; a quarter of the way through
   the day an operator runs `fraudcd ramp rollback` (a real subprocess). Measured: when the change committed
   (this process polls the store's version every 2 ms), when the first answer decided on the new
   version (production only) came back to the client and when the service decided it, when it last
   let the candidate decide, and how many requests failed. Its baseline: the same reload with the
   service idle (the ramp share set to 50% before the phase: commit to /state showing it).

Every phase sends its day's first transaction alone first (the first request of a day: the day's
risk-feature tables are prepared in the background before the day begins, so it should cost what any
request costs) and reports it apart.

The service's CPU per request (its event loop and its other threads, from /proc) is reported for the
burst and throughput phases: times the burst size, it is about what a burst takes before its last answer,
the service's Python work being serial under one GIL. So is each burst's last answer (its median and worst
over the bursts): with a burst's worth of answers in each, a p99 over the phase is about the worst bursts'.

Latency: client-side (send to answer, HTTP included, on the load generator's clock) and server-side:
``Server-Timing`` (the service's own measure from a request's arrival in the app to its answer, the
wait for the scoring pool included) and the decision log's ``latency_ms`` (the decision itself:
features, model, record). Machines here are shared and noisy: every figure is also given as a ratio
against a baseline measured in the same run (the trivial endpoint at the same load, the phase with
shadow off, raw predict, the idle reload). Targets (``--rate 1000``): steady p99 <= 5 ms client- and
server-side, rollback obeyed <= 1 s with 0 failed requests, burst of 100 client p99 <= 20 ms. A JSON
summary with each target, its figure, its baseline and ratio, and whether it was met, is printed last.

Authentication is on, as shipped (a bearer token with both roles, generated for the run and handed to
the service in its environment): the measured latency includes checking it.

    .venv/bin/python benchmarks/bench_service.py [--rate 1000] [--home DIR] [--json]
"""
from __future__ import annotations

import argparse
import asyncio
import collections
import contextlib
import datetime as dt
import json
import os
import secrets
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import pandas as pd

PROJECT_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(PROJECT_ROOT))
AT = "2026-03-01T00:00:00+00:00"
WHO = "bench (automated)"
TOKEN = secrets.token_urlsafe(32)  # this run's bearer token (scoring and operator)
PHASE_DAYS = 7  # days replayed after the seed day: a warm-up, then one per phase that scores


def load() -> str:
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


def build(home: Path, days: int, tx_per_day: int) -> dict:
    """World, snapshot, two registered models with approved thresholds, production tagged."""
    from release.state import approvals, registry
    from release.core.pipeline import pipeline
    from release.core.settings import config_dir
    from release.modeling.training import load_workflow, train_model
    from release.data.training_set import build_training_set
    from simulation.world import WorldConfig, simulate

    cfg = WorldConfig(days=days, tx_per_day=tx_per_day, dispute_median_days=2.0, dispute_max_days=5)
    seed_day = cfg.start + dt.timedelta(days=days - PHASE_DAYS)  # the days left to replay
    assert days - PHASE_DAYS + 1 >= pipeline().features.lookback_days, "the service seeds lookback_days of history"
    marker = home / "world.json"
    if marker.exists():
        known = json.loads(marker.read_text())
        if known["cfg"] == json.loads(cfg.model_dump_json()) and known.get("phase_days") == PHASE_DAYS:
            return known
    if home.exists():
        shutil.rmtree(home)
    home.mkdir(parents=True)
    t = time.perf_counter()
    simulate(cfg, home / "events")
    print(f"  simulated {days} days x ~{tx_per_day:,} tx/day in {time.perf_counter() - t:.1f}s", file=sys.stderr)
    snap = build_training_set(home / "events", home / "snapshots", seed_day, maturity_days=5, history_days=40)
    wf = load_workflow(config_dir() / "workflows" / "default.yaml")
    ids = {}
    for role, seed in (("production", 7), ("candidate", 11)):
        w = wf.model_copy(update={"seed": seed, "lightgbm": {**wf.lightgbm, "num_threads": 1}})
        text, _ = train_model(snap.data, w)
        m = registry.register_model(text, workflow=w.model_dump(), features=w.features, snapshot_hash=snap.hash,
                                    code_version="bench", metrics={}, at=AT, actor=WHO)
        s = m.booster().predict(pd.read_parquet(snap.data)[m.features].astype(float), num_threads=1)
        approvals.create_set(m.id, None, pd.DataFrame(columns=["merchant_id", "suggested_threshold"]),
                             float(np.quantile(s, 0.985)), at=AT, actor=WHO, reason="bench thresholds",
                             status=approvals.APPROVED)
        ids[role] = m.id
    registry.move_tag("production", ids["production"], at=AT, actor=WHO, reason="bench production model")
    info = {"cfg": json.loads(cfg.model_dump_json()), "phase_days": PHASE_DAYS, "seed_day": seed_day.isoformat(),
            **ids}
    marker.write_text(json.dumps(info))
    return info


def thread_cpu(pid: int) -> dict[int, float]:
    """CPU seconds (user + system) of each thread of process ``pid`` so far (Linux /proc)."""
    tick = os.sysconf("SC_CLK_TCK")
    out = {}
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            fields = (task / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:  # the thread ended meanwhile
            continue
        out[int(task.name)] = (int(fields[11]) + int(fields[12])) / tick
    return out


def cpu_per_request(pid: int, before: dict[int, float], requests: int) -> dict:
    """The service's CPU per request over a phase, in us: its event loop (the main thread) and the rest (the
    scoring pool, the shadow worker, the decision log's writers). One process under one GIL: their Python
    work is serial, so a burst of N takes about N x this before its last answer (less the part that runs
    beside it: kernel time, fsyncs)."""
    after = thread_cpu(pid)
    loop = after.get(pid, 0) - before.get(pid, 0)
    rest = sum(v - before.get(t, 0) for t, v in after.items() if t != pid)
    return {"event_loop_us": round(loop / requests * 1e6, 1), "other_threads_us": round(rest / requests * 1e6, 1),
            "total_us": round((loop + rest) / requests * 1e6, 1)}


def raw_predict_us(model_id: str, features: pd.DataFrame, n: int = 3000) -> np.ndarray:
    from release.state.registry import get_model

    m = get_model(model_id)
    b = m.booster()
    rows = features[m.features].astype(float).to_numpy()
    out = np.empty(n)
    for i in range(n):
        row = rows[i % len(rows)][None, :]
        t = time.perf_counter()
        b.predict(row, num_threads=1)
        out[i] = (time.perf_counter() - t) * 1e6
    return out


class Service:
    def __init__(self, home: Path, seed_day: str, port: int, durability: str = "write", scoring_threads: int = 1):
        self.url = f"http://127.0.0.1:{port}"
        cfg = home / "service.yaml"
        cfg.write_text(f"maturity_days: 5\ndecision_log: {{durability: {durability}}}\n"
                       f"scoring_threads: {scoring_threads}\nauth:\n  tokens: "
                       "[{name: bench, roles: [scoring, operator], env: FRAUDCD_BENCH_TOKEN}]\n")
        env = {**os.environ, "FRAUDCD_HOME": str(home), "FRAUDCD_BENCH_TOKEN": TOKEN}
        self.log = open(home / "serve.log", "w")
        self.proc = subprocess.Popen([sys.executable, "-m", "release.cli.main", "serve", "--port", str(port),
                                      "--seed-day", seed_day, "--config", str(cfg)], cwd=PROJECT_ROOT, env=env,
                                     stdout=self.log, stderr=subprocess.STDOUT)
        import httpx

        deadline = time.monotonic() + 120
        while True:
            try:
                if httpx.get(self.url + "/healthz", timeout=1).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"the service did not start; see {home / 'serve.log'}")
            time.sleep(0.1)

    def state(self) -> dict:
        import httpx

        return httpx.get(self.url + "/state", timeout=5, headers={"authorization": f"Bearer {TOKEN}"}).json()

    def tables_ready(self, day: dt.date, timeout_s: float = 120) -> None:
        """Until the service's risk tables of ``day`` are ready (prepared in its background thread)."""
        deadline = time.monotonic() + timeout_s
        while day.isoformat() not in self.state()["features"]["risk_tables"]["ready"]:
            if time.monotonic() > deadline:
                raise RuntimeError(f"the risk tables of {day} were not ready after {timeout_s} s")
            time.sleep(0.02)

    def wait_for(self, version: int) -> float:
        """Until /state shows ``version``; returns when (time.time())."""
        while self.state()["deployment"]["version"] < version:
            time.sleep(0.002)
        return time.time()

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(timeout=60)
        self.log.close()


# ---- the client: release.serving.replay's, reading Server-Timing, and able to GET the trivial endpoint ----------

def _answer_head(head: bytes) -> tuple[int, int, float | None]:
    """An answer's status, Content-Length and Server-Timing (ms; None if absent), from its head."""
    length, server_ms = 0, None
    for line in head.split(b"\r\n")[1:]:
        low = line[:15].lower()
        if low == b"content-length:":
            length = int(line[15:])
        elif low == b"server-timing: ":
            server_ms = float(line.split(b"dur=")[1])
    return int(head[9:12]), length, server_ms


def _client_class():
    from release.serving import replay as rp

    class Connection(rp._Connection):
        """replay's keep-alive connection (the same request scheduling and latency measure), that also
        reads each answer's ``Server-Timing`` and, for the baselines, sends ``GET /healthz`` instead."""

        server_ms: list = []  # set per phase
        get = False

        async def post(self, path: str, payload: bytes) -> tuple[int, bytes]:
            if self.writer is None:
                self.reader, self.writer = await asyncio.open_connection(self.host, self.port)
            try:
                if self.get:
                    self.writer.write(b"GET /healthz HTTP/1.1\r\nHost: %s\r\n\r\n" % self.host.encode())
                else:
                    self.writer.write(b"POST %s HTTP/1.1\r\nHost: %s\r\n%sContent-Type: application/json\r\n"
                                      b"Content-Length: %d\r\n\r\n%s" % (path.encode(), self.host.encode(),
                                                                          self.auth, len(payload), payload))
                head = await asyncio.wait_for(self.reader.readuntil(b"\r\n\r\n"), self.timeout_s)
                status, length, server_ms = _answer_head(head)
                if server_ms is not None:
                    self.server_ms.append(server_ms)
                return status, await asyncio.wait_for(self.reader.readexactly(length), self.timeout_s)
            except BaseException:
                self.close()
                raise

    return rp, Connection


def send(url: str, bodies: list[dict], rate: float, concurrency: int = 32, on_tick=None, get: bool = False):
    """release.serving.replay.replay with the Server-Timing-reading connection; returns (result, server ms)."""
    rp, conn = _client_class()
    conn.server_ms, conn.get = [], get
    real = rp._Connection
    rp._Connection = conn
    try:
        res = asyncio.run(rp.replay(url, bodies, rate=rate, concurrency=concurrency, on_tick=on_tick, token=TOKEN))
    finally:
        rp._Connection = real
    return res, np.asarray(conn.server_ms, dtype=float)


def bursts(url: str, bodies: list[dict], size: int, every_s: float, get: bool = False):
    """``size`` requests at once, every ``every_s`` seconds, over ``size`` keep-alive connections."""
    async def on_tick(i, elapsed):
        if i and i % size == 0:
            wait = (i // size) * every_s - elapsed
            if wait > 0:
                await asyncio.sleep(wait)
    return send(url, bodies, rate=0, concurrency=size, on_tick=on_tick, get=get)


class _LeanConnection(asyncio.Protocol):
    """One keep-alive connection of the lean burst client: it writes a request prepared beforehand (its
    bytes built before the phase) and reads the answer in ``data_received``, stamping its arrival first;
    no task, stream or timeout per request. The answer's body is kept as bytes (parsed after the phase)."""

    def __init__(self, done):
        self.transport, self.buf, self.pending, self.done = None, bytearray(), collections.deque(), done

    def connection_made(self, transport) -> None:
        self.transport = transport

    def send(self, i: int, raw: bytes) -> None:
        now = time.perf_counter()
        if self.transport.is_closing():  # the connection was lost: this request fails (status 0), as replay's
            self.done(i, 0, now, now, None, b"")
            return
        self.pending.append((i, now))
        self.transport.write(raw)

    def give_up(self) -> None:
        """The answers still owed fail (status 0), and the connection is closed (a late answer would be
        taken for the next request's)."""
        self.transport.close()
        self.connection_lost(None)

    def data_received(self, data: bytes) -> None:
        now = time.perf_counter()
        self.buf += data
        while True:
            end = self.buf.find(b"\r\n\r\n")
            if end < 0:
                return
            status, length, server_ms = _answer_head(bytes(self.buf[:end]))
            if len(self.buf) < end + 4 + length:
                return
            body = bytes(self.buf[end + 4:end + 4 + length])
            del self.buf[:end + 4 + length]
            i, sent = self.pending.popleft()
            self.done(i, status, sent, now, server_ms, body)

    def connection_lost(self, exc) -> None:
        while self.pending:
            i, sent = self.pending.popleft()
            self.done(i, 0, sent, time.perf_counter(), None, b"")


def lean_bursts(url: str, bodies: list[dict], size: int, every_s: float, get: bool = False, timeout_s: float = 30.0):
    """``bursts`` with a lean client: ``size`` requests written at once, every ``every_s`` seconds (or as
    soon as the previous burst is all answered, if later), over ``size`` keep-alive connections opened
    before the first burst. What it saves against replay's client (a task, an asyncio stream and two
    timeouts per request, the answer parsed on arrival) is the load generator's own CPU, which on these two
    shared cores delays the service and, on one loop, the stamping of a burst's later answers. Returns
    (replay.ReplayResult, Server-Timing ms in answer order) as ``bursts`` does."""
    from urllib.parse import urlsplit

    from release.serving.replay import Answer, ReplayResult

    u = urlsplit(url)
    host = u.hostname or "127.0.0.1"
    if get:  # the trivial endpoint, for the baseline
        raw = [b"GET /healthz HTTP/1.1\r\nHost: %s\r\n\r\n" % host.encode()] * len(bodies)
    else:
        raw = [b"POST /score HTTP/1.1\r\nHost: %s\r\nAuthorization: Bearer %s\r\nContent-Type: application/json"
               b"\r\nContent-Length: %d\r\n\r\n%s" % (host.encode(), TOKEN.encode(), len(p), p)
               for p in (json.dumps(b).encode() for b in bodies)]
    got: list = [None] * len(bodies)
    server_ms: list = []

    async def main():
        loop = asyncio.get_running_loop()
        state = {"left": 0, "event": None}

        def done(i, status, sent, received, sms, body):
            got[i] = (status, sent, received, body)
            if sms is not None:
                server_ms.append(sms)
            state["left"] -= 1
            if state["left"] == 0:
                state["event"].set()

        conns = [(await loop.create_connection(lambda: _LeanConnection(done), host, u.port or 80))[1]
                 for _ in range(size)]
        t0, wall0 = time.perf_counter(), time.time()
        try:
            for k in range(0, len(raw), size):
                wait = (k // size) * every_s - (time.perf_counter() - t0)
                if wait > 0:
                    await asyncio.sleep(wait)
                burst = range(k, min(k + size, len(raw)))
                state["left"], state["event"] = len(burst), asyncio.Event()
                for c, i in zip(conns, burst):
                    c.send(i, raw[i])
                if state["left"] > 0:
                    try:
                        await asyncio.wait_for(state["event"].wait(), timeout_s)
                    except asyncio.TimeoutError:  # a stall: what is owed fails, and the phase stops there
                        sys.stderr.write(f"lean_bursts: {state['left']} answers not back after {timeout_s:g} s; "
                                         "they and the requests not sent yet count as failed (status 0)\n")
                        for c in conns:
                            c.give_up()
                        break
        finally:
            for c in conns:
                c.transport.close()
        return t0, time.perf_counter() - t0, wall0

    t0, seconds, wall0 = asyncio.run(main())  # answers' times: seconds since t0, as replay's
    answers = [Answer(str(b.get("tx_id")), g[0], g[1] - t0, g[2] - t0, json.loads(g[3]) if g[3] else {})
               if g is not None else Answer(str(b.get("tx_id")), 0, seconds, seconds)
               for b, g in zip(bodies, got)]
    return ReplayResult(answers=answers, seconds=seconds, max_slip_ms=0.0, started_wall=wall0), \
        np.asarray(server_ms, dtype=float)


@contextlib.contextmanager
def busy_neighbour(cpu: int):
    """Another process spinning on core ``cpu`` for as long as the block runs."""
    proc = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    try:
        os.sched_setaffinity(proc.pid, {cpu})
        yield proc
    finally:
        proc.kill()
        proc.wait()


def pct(a, q) -> float | None:
    a = np.asarray(a, dtype=float)
    return float(np.percentile(a, q)) if len(a) else None


def client_figures(res, server_ms: np.ndarray, skip: int = 0) -> dict:
    """Client-side figures of a replay (its first ``skip`` answers left out) and Server-Timing's."""
    answers = res.answers[skip:]
    lat = np.array([a.latency_ms for a in answers if a.status == 200])
    span = (max(a.received for a in answers) - min(a.sent for a in answers)) if answers else 0
    return {"requests": len(answers), "failed": sum(a.status != 200 for a in answers),
            "throughput_rps": round(len(answers) / span, 1) if span else None,
            "client_p50_ms": pct(lat, 50), "client_p99_ms": pct(lat, 99), "client_max_ms": pct(lat, 100),
            "server_timing_p50_ms": pct(server_ms[skip:], 50), "server_timing_p99_ms": pct(server_ms[skip:], 99),
            "max_schedule_slip_ms": round(res.max_slip_ms, 2)}


def last_answers(answers: list, size: int) -> dict:
    """Each burst's slowest answer, from its first request sent (client clock): its median over the bursts and
    the worst. With ``size`` answers a burst, a p99 over the phase is about its worst bursts' last answers."""
    last = [max(a.received for a in answers[k:k + size]) - min(a.sent for a in answers[k:k + size])
            for k in range(0, len(answers) - size + 1, size)]
    return {"bursts": len(last), "p50": pct(np.asarray(last) * 1000, 50), "max": pct(np.asarray(last) * 1000, 100)}


def phase_figures(res, server_ms, log: pd.DataFrame, skip: int = 0) -> dict:
    out = client_figures(res, server_ms, skip)
    mine = log[log["tx_id"].isin({a.tx_id for a in res.answers[skip:]})]
    out.update({"decision_p50_ms": pct(mine["latency_ms"], 50), "decision_p99_ms": pct(mine["latency_ms"], 99),
                "shadow": mine["shadow"].value_counts().to_dict()})
    return out


def ratio(a, b) -> float | None:
    return None if a is None or not b else a / b


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--rate", type=float, default=1000.0, help="requests per second in the open-loop phases")
    ap.add_argument("--concurrency", type=int, default=16, help="in flight at most (throughput phase)")
    ap.add_argument("--burst", type=int, default=100, help="requests sent at once in the burst phase")
    ap.add_argument("--days", type=int, default=68)
    ap.add_argument("--warm-up", type=int, default=1000, help="requests sent (and not counted) before the phases")
    ap.add_argument("--tx-per-day", type=int, default=3000)
    ap.add_argument("--home", type=Path, default=None, help="reuse a world here (default: a temp folder)")
    ap.add_argument("--port", type=int, default=8765)
    ap.add_argument("--json", action="store_true", help="print every figure as JSON (the summary is always printed)")
    ap.add_argument("--durability", choices=["write", "fsync"], default="write",
                    help="what an answer waits for: its decision-log journal line written, or fsynced")
    ap.add_argument("--scoring-threads", type=int, default=1, help="the service's scoring_threads")
    ap.add_argument("--neighbour-cpu", type=int, default=0, help="the core the busy neighbour spins on")
    ap.add_argument("--burst-client", choices=["lean", "replay"], default="lean",
                    help="the burst phase's client: lean (a protocol per connection, requests built beforehand) or "
                         "replay's (a task, a stream and two timeouts a request, as the other phases)")
    ap.add_argument("--client-loop", choices=["uvloop", "asyncio"], default="uvloop",
                    help="the load generator's event loop (uvloop: less of the client's own time in the figures)")
    args = ap.parse_args()
    if args.client_loop == "uvloop":
        import uvloop

        uvloop.install()

    home = (args.home or Path(tempfile.mkdtemp(prefix="fraudcd-bench-service-")) / "home").resolve()
    os.environ["FRAUDCD_HOME"] = str(home)
    from release.rollout import ramp
    from release.serving.decision_log import read_decision_log
    from release.data.features import compute_features
    from release.serving.replay import day_requests

    print(f"load average before: {load()}", file=sys.stderr)
    info = build(home, args.days, args.tx_per_day)
    day0 = dt.date.fromisoformat(info["seed_day"])
    warm_day, *days = [day0 + dt.timedelta(days=i) for i in range(PHASE_DAYS)]
    # a clean deployment state for every run on a reused world
    shutil.rmtree(home / "decision_log", ignore_errors=True)
    if ramp.current()["state"] in getattr(ramp, "LIVE", (ramp.SHADOW, ramp.RAMPING, ramp.PAUSED)):
        ramp.rollback(at=AT, actor=WHO, reason="bench: start from production only")

    feats = compute_features(home / "events", warm_day, warm_day + dt.timedelta(days=1), maturity_days=5)
    raw = raw_predict_us(info["production"], feats)
    out = {"machine": {"cpus": os.cpu_count(), "load_before": load()}, "rate": args.rate,
           "client_loop": args.client_loop, "scoring_threads": args.scoring_threads,
           "raw_predict_us": {"p50": pct(raw, 50), "p99": pct(raw, 99)}}

    svc = Service(home, info["seed_day"], args.port, args.durability, args.scoring_threads)
    results: dict[str, tuple] = {}
    try:
        rollover_ms = []

        def first_of(day):
            """The day's first transaction alone (its day's risk tables were prepared ahead: it should cost
            what any request costs; timed apart). A simulated day lasts seconds here, a real one 24 h: the
            phase starts once the service has prepared the next day's tables in the background, as it
            would have long before a real day ends (how long each took is reported)."""
            bodies = day_requests(home / "events", day)
            first, _ = send(svc.url, bodies[:1], rate=0, concurrency=1)
            rollover_ms.append(first.answers[0].latency_ms)
            svc.tables_ready(day + dt.timedelta(days=1))
            return bodies[1:]

        def run(day, rate, concurrency=32, on_tick=None):
            """``first_of(day)``, then the rest of the day at ``rate``."""
            return send(svc.url, first_of(day), rate=rate, concurrency=concurrency, on_tick=on_tick)

        def healthz(n, rate, concurrency=32):
            return send(svc.url, [{"tx_id": f"h{i}"} for i in range(n)], rate=rate, concurrency=concurrency, get=True)

        n_day = len(day_requests(home / "events", days[0])) - 1
        print("  warm-up", file=sys.stderr)  # first requests, caches, connections: not counted
        send(svc.url, day_requests(home / "events", warm_day, args.warm_up), rate=args.rate)
        svc.tables_ready(days[0])
        healthz(500, args.rate)
        print("  phase: shadow off", file=sys.stderr)
        results["shadow_off"] = run(days[0], args.rate)
        v = ramp.start_shadow("rel-bench", info["candidate"], at=AT, actor=WHO, reason="bench: shadow on")["version"]
        svc.wait_for(v)
        print("  phase: steady, shadow on (and its /healthz baseline)", file=sys.stderr)
        results["stack_baseline"] = healthz(n_day, args.rate)
        results["shadow_on"] = run(days[1], args.rate)
        print(f"  phase: bursts of {args.burst} (and their /healthz baseline)", file=sys.stderr)
        every = args.burst / args.rate
        burst_client = lean_bursts if args.burst_client == "lean" else bursts
        results["burst_baseline"] = burst_client(svc.url, [{"tx_id": f"b{i}"} for i in range(n_day)], args.burst,
                                                 every, get=True)
        burst_day = first_of(days[2])  # the next day's tables are prepared before the phase's CPU is counted
        cpu0, client0 = thread_cpu(svc.proc.pid), time.process_time()
        results["burst"] = burst_client(svc.url, burst_day, args.burst, every)
        burst_client_us = (time.process_time() - client0) / max(1, len(results["burst"][0].answers)) * 1e6
        cpu = {"burst": cpu_per_request(svc.proc.pid, cpu0, len(results["burst"][0].answers))}
        print(f"  phase: busy neighbour on core {args.neighbour_cpu} (and its /healthz baseline)", file=sys.stderr)
        with busy_neighbour(args.neighbour_cpu):
            time.sleep(0.5)
            results["neighbour_baseline"] = healthz(n_day, args.rate)
            results["busy_neighbour"] = run(days[3], args.rate)
        print("  phase: throughput", file=sys.stderr)
        throughput_day = first_of(days[4])
        cpu0 = thread_cpu(svc.proc.pid)
        results["throughput_shadow_on"] = send(svc.url, throughput_day, rate=0, concurrency=args.concurrency)
        cpu["throughput"] = cpu_per_request(svc.proc.pid, cpu0, len(results["throughput_shadow_on"][0].answers))
        set_at = time.time()
        v50 = ramp.set_pct(50, at=AT, actor=WHO, reason="bench: half the cards")["version"]
        idle_reload_s = svc.wait_for(v50) - set_at  # the baseline: the same reload, the service idle

        print("  phase: rollback under load", file=sys.stderr)
        marks = {}

        def operator():
            before = ramp.current()["version"]
            marks["cli_start"] = time.time()
            proc = subprocess.Popen([str(Path(sys.executable).with_name("fraudcd")), "ramp", "rollback", "--as", WHO,
                                     "--reason", "bench: rollback under load"], env=os.environ.copy(),
                                    stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
            while ramp.current()["version"] == before:  # when the change is committed, to ~2 ms
                time.sleep(0.002)
                if proc.poll() is not None and ramp.current()["version"] == before:
                    marks["error"] = proc.stderr.read().decode()[-2000:]
                    return
            marks["committed"] = time.time()
            marks["version"] = ramp.current()["version"]
            proc.wait()
            marks["cli_end"] = time.time()

        op = threading.Thread(target=operator)

        async def on_tick(i, elapsed):
            if i == n_day // 4:  # the command itself takes a second or two to start (Python, imports)
                op.start()

        results["rollback_under_load"] = run(days[5], args.rate, on_tick=on_tick)
        op.join()
        final = svc.state()
    finally:
        svc.stop()  # graceful: every decision is in the log after this
    if "error" in marks:
        raise RuntimeError(f"`fraudcd ramp rollback` failed: {marks['error']}")
    log = read_decision_log(home / "decision_log")
    skip_burst = args.burst  # the first burst opens the connections: reported apart
    for key in ("shadow_off", "shadow_on", "busy_neighbour", "throughput_shadow_on", "rollback_under_load"):
        out[key] = phase_figures(*results[key], log)
    out["burst"] = phase_figures(*results["burst"], log, skip=skip_burst)
    out["burst"]["first_burst_client_p99_ms"] = pct([a.latency_ms for a in results["burst"][0].answers[:skip_burst]], 99)
    out["burst"]["last_answer_ms"] = last_answers(results["burst"][0].answers[skip_burst:], args.burst)
    out["burst"]["client"] = {"kind": args.burst_client, "cpu_us_per_request": round(burst_client_us, 1)}
    for key in ("stack_baseline", "neighbour_baseline"):
        out[key] = client_figures(*results[key])
    out["burst_baseline"] = client_figures(*results["burst_baseline"], skip=skip_burst)

    rb = results["rollback_under_load"][0]
    rbl = log[log["tx_id"].isin({a.tx_id for a in rb.answers})]
    served = (rbl["served_at"] - pd.Timestamp(0, tz="UTC")).dt.total_seconds()
    committed, version = marks["committed"], marks["version"]
    new = served[rbl["deployment_version"] >= version]
    cand = served[rbl["served_by"] == "candidate"]
    received = [(rb.started_wall + a.received, a) for a in rb.answers if a.status == 200]
    new_answers = sorted(t for t, a in received if a.body.get("deployment_version", 0) >= version)
    first_new = new_answers[0] if new_answers else None
    out["rollback_under_load"].update({
        "cli_command_s": marks["cli_end"] - marks["cli_start"],
        "commit_after_cli_start_s": committed - marks["cli_start"],
        "first_production_only_answer_after_commit_s": None if first_new is None else first_new - committed,
        "first_decision_on_new_version_after_commit_s": float(new.min() - committed) if len(new) else None,
        "last_candidate_decision_after_commit_s": float(cand.max() - committed) if len(cand) else None,
        "candidate_decisions_after_commit": int((cand > committed).sum()),
        "candidate_answers_after_first_production_only_answer": sum(
            1 for t, a in received if first_new is not None and t > first_new and a.body.get("served_by") == "candidate"),
        "idle_reload_s": idle_reload_s,
        "lost_log_records": len({a.tx_id for a in rb.answers} - set(rbl["tx_id"])),
        "state_after": final["deployment"]["state"],
    })
    out["decision_log"] = {"records": len(log), "all_requests": sum(
        len(results[k][0].answers) for k in ("shadow_off", "shadow_on", "burst", "busy_neighbour",
                                              "throughput_shadow_on", "rollback_under_load"))
        + len(rollover_ms) + min(args.warm_up, len(day_requests(home / "events", warm_day)))}
    out["first_request_of_a_day_ms"] = rollover_ms
    out["service_cpu_per_request"] = cpu
    out["service_state_after"] = {"counters": final["counters"], "risk_tables": final["features"]["risk_tables"]}
    out["risk_table_seconds"] = {d: t.get("seconds") for d, t in final["features"]["risk_tables"]["ready"].items()}
    o, n = out["shadow_off"], out["shadow_on"]
    out["ratios"] = {
        "shadow_on_vs_off_client_p50": ratio(n["client_p50_ms"], o["client_p50_ms"]),
        "shadow_on_vs_off_client_p99": ratio(n["client_p99_ms"], o["client_p99_ms"]),
        "shadow_added_server_timing_p50_ms": n["server_timing_p50_ms"] - o["server_timing_p50_ms"],
        "service_decision_p50_vs_raw_predict_p50": o["decision_p50_ms"] * 1000 / out["raw_predict_us"]["p50"],
        "service_client_p50_vs_raw_predict_p50": o["client_p50_ms"] * 1000 / out["raw_predict_us"]["p50"],
    }
    out["machine"]["load_after"] = load()

    q, b, nb = out["rollback_under_load"], out["burst"], out["busy_neighbour"]
    sb, bb, nbb = out["stack_baseline"], out["burst_baseline"], out["neighbour_baseline"]

    def target(value, limit, baseline=None, what=""):
        return {"value": value, "target": limit, "met": value is not None and value <= limit,
                "baseline": baseline, "ratio": ratio(value, baseline), "baseline_is": what}

    summary = {
        "rate": args.rate, "load": [out["machine"]["load_before"], out["machine"]["load_after"]],
        "steady_client_p99_ms": target(n["client_p99_ms"], 5.0, sb["client_p99_ms"],
                                       "GET /healthz p99, same rate and client, just before"),
        "steady_server_p99_ms": target(n["server_timing_p99_ms"], 5.0, o["server_timing_p99_ms"],
                                       "the same phase with shadow off (Server-Timing p99)"),
        "steady_decision_p99_ms": target(n["decision_p99_ms"], 5.0, out["raw_predict_us"]["p99"] / 1000,
                                         "raw booster.predict p99, one row, no service"),
        "steady_throughput_rps": {"value": n["throughput_rps"], "asked": args.rate,
                                  "ratio": ratio(n["throughput_rps"], args.rate)},
        "rollback_obeyed_s": target(q["first_production_only_answer_after_commit_s"], 1.0, q["idle_reload_s"],
                                    "the same reload with the service idle (commit to /state)"),
        "rollback_failed_requests": {"value": q["failed"], "target": 0, "met": q["failed"] == 0,
                                     "of": q["requests"], "ratio": q["failed"] / max(1, q["requests"])},
        "burst_client_p99_ms": target(b["client_p99_ms"], 20.0, bb["client_p99_ms"],
                                      f"bursts of {args.burst} GET /healthz, same client"),
        "burst_client": b["client"],
        "burst_last_answer_ms": {**b["last_answer_ms"],
                                 "is": "each burst's last answer after its first request was sent (client)"},
        "burst_server_p99_ms": {"value": b["server_timing_p99_ms"], "baseline": bb["server_timing_p99_ms"],
                                "ratio": ratio(b["server_timing_p99_ms"], bb["server_timing_p99_ms"])},
        "burst_service_cpu_us_per_request": {
            **cpu["burst"], "serial_ms": round(cpu["burst"]["total_us"] * args.burst / 1000, 1),
            "serial_is": f"{args.burst} x the service's CPU per request: about what a burst takes before its last "
                         "answer, its Python work being serial under one GIL (its kernel time and fsyncs are not)"},
        "neighbour_client_p99_ms": {"value": nb["client_p99_ms"], "baseline": nbb["client_p99_ms"],
                                    "ratio": ratio(nb["client_p99_ms"], nbb["client_p99_ms"]),
                                    "vs_steady_without_neighbour": ratio(nb["client_p99_ms"], n["client_p99_ms"]),
                                    "baseline_is": "GET /healthz p99 under the same neighbour"},
        "neighbour_server_p99_ms": {"value": nb["server_timing_p99_ms"], "baseline": n["server_timing_p99_ms"],
                                    "ratio": ratio(nb["server_timing_p99_ms"], n["server_timing_p99_ms"]),
                                    "baseline_is": "the steady phase without the neighbour (Server-Timing p99)"},
        "first_request_of_a_day_ms": {"value": max(rollover_ms), "baseline": n["client_p50_ms"],
                                      "ratio": ratio(max(rollover_ms), n["client_p50_ms"]),
                                      "baseline_is": "steady client p50"},
        "not_ready_503": final["counters"].get("not_ready"),
        "risk_table_preparation_s": out["risk_table_seconds"],
    }
    out["summary"] = summary
    if args.json:
        print(json.dumps(out, indent=2, default=str))
        return 0
    print(f"\nscoring service on {os.cpu_count()} cores, loopback; load average {out['machine']['load_before']} "
          f"-> {out['machine']['load_after']}; client loop {args.client_loop}; scoring_threads {args.scoring_threads}")
    print(f"raw booster.predict, one row: p50 {out['raw_predict_us']['p50']:.0f} us, "
          f"p99 {out['raw_predict_us']['p99']:.0f} us (baseline)")
    print(f"{'phase':<30}{'req':>6}{'fail':>5}{'req/s':>8}{'client p50':>11}{'p99':>8}{'server p50':>11}{'p99':>8}"
          f"{'decision p99':>13}  shadow")

    def f2(x, w=6, d=2):
        return f"{x:>{w}.{d}f}" if x is not None else f"{'-':>{w}}"

    for name, key in (("shadow off", "shadow_off"), ("/healthz at the rate", "stack_baseline"),
                      ("steady, shadow on", "shadow_on"), (f"/healthz bursts of {args.burst}", "burst_baseline"),
                      (f"bursts of {args.burst}, shadow on", "burst"), ("/healthz, busy neighbour", "neighbour_baseline"),
                      ("busy neighbour, shadow on", "busy_neighbour"), ("throughput (shadow on)", "throughput_shadow_on"),
                      ("rollback under load", "rollback_under_load")):
        f = out[key]
        print(f"{name:<30}{f['requests']:>6}{f['failed']:>5}{f['throughput_rps'] or 0:>8.0f}{f2(f['client_p50_ms'], 9)}ms"
              f"{f2(f['client_p99_ms'])}ms{f2(f['server_timing_p50_ms'], 9)}ms{f2(f['server_timing_p99_ms'])}ms"
              f"{f2(f.get('decision_p99_ms'), 11)}ms  {f.get('shadow', '')}")
    print(f"rollback under load: `fraudcd ramp rollback` took {q['cli_command_s']:.2f}s (committed "
          f"{q['commit_after_cli_start_s']:.2f}s after it started); the first production-only answer came back "
          f"{q['first_production_only_answer_after_commit_s']:.3f}s after the commit (idle reload: "
          f"{q['idle_reload_s']:.3f}s), the candidate's last decision was "
          f"{q['last_candidate_decision_after_commit_s']:+.3f}s ({q['candidate_decisions_after_commit']} decisions "
          f"after the commit); {q['failed']} failed requests, {q['lost_log_records']} lost log records")
    print("first request of each day: " + ", ".join(f"{x:.1f}" for x in rollover_ms) + " ms; risk tables prepared "
          "in the background in " + ", ".join(f"{s}s" for s in out["risk_table_seconds"].values()))
    la = b["last_answer_ms"]
    print(f"bursts of {args.burst}: the last answer of a burst came {la['p50']:.1f} ms after its first request was "
          f"sent (median of {la['bursts']} bursts), {la['max']:.1f} ms in the worst; the {b['client']['kind']} client "
          f"used {b['client']['cpu_us_per_request']:.0f} us of CPU a request")
    for phase, c in cpu.items():
        print(f"service CPU per request ({phase}): event loop {c['event_loop_us']:.0f} us, other threads "
              f"{c['other_threads_us']:.0f} us, total {c['total_us']:.0f} us")
    print(f"decision log: {out['decision_log']['records']:,} records for {out['decision_log']['all_requests']:,} "
          "requests")
    print(json.dumps({"summary": summary}, indent=2, default=str))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
