"""A small live deployment for the scoring-service tests: the tiny world's event logs in a fresh
FRAUDCD_HOME, two real LightGBM models trained on the tiny snapshot (production and candidate) with
approved thresholds, and helpers to run the real service (`fraudcd serve`) on a loopback port."""
from __future__ import annotations

import contextlib
import datetime as dt
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import httpx
import numpy as np
import pandas as pd

from release.data.features import FEATURE_COLUMNS
from release.core.settings import PROJECT_ROOT

AT = "2026-01-20T00:00:00+00:00"
RELEASE = "rel-live-test"


@dataclass
class World:
    home: Path
    day: dt.date  # the day the tests replay: the service's seed day
    maturity_days: int
    production: str
    candidate: str
    config: Path  # the service YAML of the tests


_TRAINED: dict[tuple, str] = {}


def train(snapshot, seed: int, rounds: int, leaves: int) -> str:
    """A LightGBM model on every feature, trained once per session (one thread: OpenMP spinning on a
    busy 2-core machine makes two threads many times slower)."""
    from release.modeling.training import Workflow, train_model

    key = (snapshot.hash, seed, rounds, leaves)
    if key not in _TRAINED:
        wf = Workflow(name=f"live-{seed}", features=list(FEATURE_COLUMNS), categorical_features=["category_code"],
                      eval_days=3, seed=seed, num_boost_round=rounds,
                      lightgbm={"num_leaves": leaves, "min_data_in_leaf": 20, "learning_rate": 0.1,
                                "bagging_fraction": 0.8, "bagging_freq": 1, "num_threads": 1})
        _TRAINED[key] = train_model(snapshot.data, wf)[0]
    return _TRAINED[key]


def register(text: str, name: str, snapshot_hash: str, features=None) -> str:
    from release.state.registry import register_model

    return register_model(text, workflow={"name": name}, features=list(features or FEATURE_COLUMNS),
                          snapshot_hash=snapshot_hash, code_version="test", metrics={}, at=AT, actor="test").id


def approve(model_id: str, global_threshold: float, per_merchant: dict | None = None, release_id=None) -> None:
    from release.state import approvals

    per = per_merchant or {}
    sugg = pd.DataFrame({"merchant_id": list(per), "suggested_threshold": list(per.values())})
    approvals.create_set(model_id, release_id, sugg, global_threshold, at=AT, actor="risk analyst (test)",
                         reason="approved for the live tests", status=approvals.APPROVED)


def make_world(home: Path, tiny, tiny_events: Path, tiny_snapshot, candidate_threshold: float | None = None) -> World:
    """Production and candidate models with approved thresholds, production tagged, nothing ramping."""
    from release.state.registry import move_tag

    shutil.copytree(tiny_events, home / "events")
    prod = register(train(tiny_snapshot, seed=7, rounds=30, leaves=7), "live-prod", tiny_snapshot.hash)
    cand = register(train(tiny_snapshot, seed=11, rounds=40, leaves=15), "live-cand", tiny_snapshot.hash)
    move_tag("production", prod, at=AT, actor="test", reason="initial production model")
    day = tiny.cfg.start + dt.timedelta(days=tiny.cfg.days - 1)
    scored = pd.read_parquet(tiny_snapshot.data)
    from release.state.registry import get_model

    # thresholds that block about 3% of traffic; two merchants get their own
    def q(model_id):
        m = get_model(model_id)
        s = m.booster().predict(scored[m.features].astype(float), num_threads=1)
        return float(np.quantile(s, 0.97))

    approve(prod, q(prod), {"M000001": 0.5, "M000002": 0.9})
    approve(cand, candidate_threshold if candidate_threshold is not None else q(cand), {"M000001": 0.4},
            release_id=RELEASE)
    config = home / "service.yaml"
    config.write_text(f"maturity_days: {tiny.maturity_days}\nreload_poll_ms: 50\n"
                      "decision_log: {flush_every: 200, flush_ms: 100}\n")
    return World(home=home, day=day, maturity_days=tiny.maturity_days, production=prod, candidate=cand,
                 config=config)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def serve_in_thread(app):
    """``app`` served as `fraudcd serve` serves it (uvicorn with the service's own protocol answering POST
    /score, ``app.score_protocol``) on a loopback port, in a thread of this process, once started:
    (server, thread, port). Stop it with ``server.should_exit = True`` and ``thread.join()``."""
    import uvicorn

    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", access_log=False,
                                           http=app.score_protocol))
    thread = threading.Thread(target=server.run, name="uvicorn (test)", daemon=True)
    thread.start()
    deadline = time.monotonic() + 60
    while not server.started:
        assert thread.is_alive() and time.monotonic() < deadline, "the service did not start"
        time.sleep(0.02)
    return server, thread, port


@contextlib.contextmanager
def over_http(app):
    """``serve_in_thread(app)``, and an HTTP client of it; stopped on leaving."""
    server, thread, port = serve_in_thread(app)
    try:
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=30) as client:
            yield client
    finally:
        server.should_exit = True
        thread.join(60)


class Server:
    """`fraudcd serve` in a subprocess on a loopback port; stopped with SIGTERM (a graceful stop)."""

    def __init__(self, world: World, controller: bool = False, env: dict | None = None):
        self.world, self.port = world, free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        cmd = [sys.executable, "-m", "release.cli.main", "serve", "--port", str(self.port), "--seed-day",
               world.day.isoformat(), "--config", str(world.config)]
        if controller:
            cmd.append("--controller")
        self.log = open(world.home / f"serve-{self.port}.log", "w")
        env = {**os.environ, "FRAUDCD_HOME": str(world.home), **(env or {})}
        self.proc = subprocess.Popen(cmd, cwd=PROJECT_ROOT, env=env, stdout=self.log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 60
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(f"the service exited with {self.proc.returncode}: {self.output()}")
            try:
                if httpx.get(self.url + "/healthz", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"the service did not start in 60 s: {self.output()}")
            time.sleep(0.1)
        self.client = httpx.Client(base_url=self.url, timeout=10)

    def output(self) -> str:
        if not self.log.closed:
            self.log.flush()
        return (self.world.home / f"serve-{self.port}.log").read_text()

    def state(self) -> dict:
        return self.client.get("/state").json()

    def score(self, body: dict) -> httpx.Response:
        return self.client.post("/score", json=body)

    def wait_for_version(self, version: int, timeout_s: float = 5.0) -> dict:
        """Until the service serves deployment ``version`` (bounded, so a broken reload fails the test)."""
        deadline = time.monotonic() + timeout_s
        while True:
            st = self.state()
            if st["deployment"]["version"] >= version:
                return st
            if time.monotonic() > deadline:
                raise AssertionError(f"the service still serves v{st['deployment']['version']}, not v{version}")
            time.sleep(0.02)

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        if hasattr(self, "client"):
            self.client.close()
        self.log.close()
        return self.proc.returncode


def audit_version() -> int:
    from release.state.store import audit_log

    return audit_log()[-1]["id"]
