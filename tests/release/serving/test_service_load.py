"""The scoring service keeps answering while slow work goes on beside it: the real app over HTTP on a
loopback port (uvicorn in a thread of this process, so a test can hold one piece of work on purpose,
or `fraudcd serve` in a subprocess), a real SQLite state store and real LightGBM models.

Each test holds something that used to sit on a request's path (the day's risk-feature tables being
prepared, the shadow model, a request's own scoring, a deployment reload) until the test lets it go,
and asserts the order of events: what was answered while it was held. No timed assertions (a
regression shows as a request not answered while the work is held: the client's timeout fails it)."""
from __future__ import annotations

import datetime as dt
import shutil
import threading
import time

import httpx
import numpy as np
import pandas as pd
import pytest

import deployment_world as dw
from release.rollout import ramp
from release.serving.decision_log import read_decision_log

pytestmark = pytest.mark.slow

TOKEN = "a-token-for-the-load-tests-0123"
DAY = dt.date(2026, 1, 20)  # the tiny world's last day: the service's seed day


def body(tx, card, minute=0, day=DAY, amount=20.0, merchant="M000003") -> dict:
    ts = pd.Timestamp(day, tz="UTC") + pd.Timedelta(hours=12, minutes=minute)
    return {"tx_id": tx, "ts": ts.isoformat(), "card_id": card, "card_country": "US", "merchant_id": merchant,
            "merchant_country": "US", "merchant_category": "grocery", "amount": amount}


def ctl(fn, *args, reason="test"):
    return fn(*args, at=dt.datetime.now(dt.timezone.utc).isoformat(), actor="on-call (test)", reason=reason)


class Events:
    """What happened, in order (appended from any thread)."""

    def __init__(self):
        self._lock = threading.Lock()
        self.items: list[tuple] = []

    def add(self, *what) -> None:
        with self._lock:
            self.items.append(what)

    def index(self, *what) -> int:
        with self._lock:
            return self.items.index(what)


class Gate:
    """A hold on one piece of work: ``entered`` once it started, held until ``release()``."""

    def __init__(self):
        self.entered, self._go = threading.Event(), threading.Event()

    def hold(self) -> None:
        self.entered.set()
        assert self._go.wait(60), "the test never released the held work"

    def release(self) -> None:
        self._go.set()


class InProcess:
    """The real app (``create_app`` around a ``ScoringService``) served by uvicorn on a loopback port, in a
    thread of this process, with the protocol `fraudcd serve` gives it (its lifespan starts and stops the
    service as `fraudcd serve` does)."""

    def __init__(self, world: dw.World, **config):
        from release.serving.service import ScoringService, ServiceConfig, create_app

        cfg = ServiceConfig(**{"maturity_days": world.maturity_days, "reload_poll_ms": 50,
                               "decision_log": {"flush_every": 200, "flush_ms": 100},
                               "auth": {"tokens": [{"name": "load test", "roles": ["scoring", "operator"],
                                                    "value": TOKEN}]}, **config})
        self.holder: dict = {}

        def factory():
            self.holder["svc"] = ScoringService(cfg, seed_day=world.day)
            return self.holder["svc"]

        self.server, self.thread, self.port = dw.serve_in_thread(create_app(factory, cfg))
        self.url = f"http://127.0.0.1:{self.port}"
        self.client = httpx.Client(base_url=self.url, timeout=20, headers={"authorization": f"Bearer {TOKEN}"})

    @property
    def svc(self):
        return self.holder["svc"]

    def score(self, b: dict) -> httpx.Response:
        return self.client.post("/score", json=b)

    def state(self) -> dict:
        return self.client.get("/state").json()

    def stop(self) -> None:
        self.client.close()
        self.server.should_exit = True
        self.thread.join(60)


def in_background(fn, *args) -> dict:
    """Run ``fn(*args)`` in a thread; the returned dict gets ``result`` (or ``error``) and ``thread``."""
    out: dict = {}

    def run():
        try:
            out["result"] = fn(*args)
        except BaseException as e:  # noqa: BLE001 - handed to the test
            out["error"] = e

    out["thread"] = threading.Thread(target=run, daemon=True)
    out["thread"].start()
    return out


def until(predicate, what: str, timeout_s: float = 30.0):
    """Wait for ``predicate()`` (bounded, so a broken service fails the test instead of hanging it)."""
    deadline = time.monotonic() + timeout_s
    while not (got := predicate()):
        assert time.monotonic() < deadline, f"gave up waiting: {what}"
        time.sleep(0.01)
    return got


def logged(world: dw.World, tx_ids: set[str]) -> pd.DataFrame:
    df = read_decision_log(world.home / "decision_log")
    return df[df["tx_id"].isin(tx_ids)]


@pytest.fixture
def world(home, tiny, tiny_events, tiny_snapshot):
    w = dw.make_world(home, tiny, tiny_events, tiny_snapshot)
    assert w.day == DAY
    return w


# ---------------------------------------------------------------- the day's risk tables, off the request path

def test_a_request_is_answered_while_the_next_days_risk_tables_are_being_prepared(world, monkeypatch):
    """The service prepares the next day's risk-feature tables in the background. While that preparation
    is held: today's requests are answered (200); a request of the next day is answered at once with a
    503 that says why (nothing recorded: not in the history, not in the log); once the tables are ready
    the same request is decided (200, not a retry). The order of events shows nobody waited."""
    import release.data.online_features as of

    events, gate = Events(), Gate()
    tomorrow = DAY + dt.timedelta(days=1)
    real = of.prepare_rates

    def prepare(events_dir, day, *args, **kw):
        if day == tomorrow:
            events.add("preparation started", day)
            gate.hold()
        out = real(events_dir, day, *args, **kw)
        if day == tomorrow:
            events.add("preparation finished", day)
        return out

    monkeypatch.setattr(of, "prepare_rates", prepare)
    srv = InProcess(world)
    try:
        assert srv.state()["features"]["risk_tables"]["ready"].keys() >= {DAY.isoformat()}  # at start-up
        until(gate.entered.is_set, "the preparation of the next day's tables to start")
        for i in range(5):  # today: answered while tomorrow's tables are held
            r = srv.score(body(f"today-{i}", f"card-{i}", minute=i))
            events.add("answered", f"today-{i}", r.status_code)
            assert r.status_code == 200, r.text
        early = body("tomorrow-1", "card-1", day=tomorrow, minute=-715)  # 00:05 of the next day
        r = srv.score(early)
        events.add("answered", "tomorrow-1", r.status_code)
        assert r.status_code == 503 and r.headers["retry-after"] == "1"
        assert f"the risk-feature tables of {tomorrow}" in r.json()["error"]
        assert "being prepared in the background" in r.json()["error"]
        st = srv.state()
        assert st["counters"]["not_ready"] == 1 and tomorrow.isoformat() in st["features"]["risk_tables"]["pending"]
        assert st["request_time"]["now"].startswith(DAY.isoformat())  # the refused request moved no clock
        gate.release()
        until(lambda: tomorrow.isoformat() in srv.state()["features"]["risk_tables"]["ready"],
              "the next day's tables to be ready")
        again = srv.score(early)
        events.add("answered", "tomorrow-1", again.status_code)
        assert again.status_code == 200 and "retry" not in again.json()  # decided now, for the first time
    finally:
        gate.release()
        srv.stop()
    finished = events.index("preparation finished", tomorrow)
    assert events.index("preparation started", tomorrow) < events.index("answered", "today-0", 200)
    assert all(events.index("answered", f"today-{i}", 200) < finished for i in range(5))
    assert events.index("answered", "tomorrow-1", 503) < finished < events.index("answered", "tomorrow-1", 200)
    log = logged(world, {"tomorrow-1"} | {f"today-{i}" for i in range(5)})
    assert len(log) == 6 and log["tx_id"].is_unique  # the 503 left no record; its retry one


def test_the_days_tables_are_refreshed_when_its_disputes_arrive_late(tiny, tiny_events, tmp_path):
    """The disputes of the day before are the last input of a day's tables. Logged after the tables were
    finished (late ingestion), they are picked up in the background (the partition changed): the
    table becomes the one computed from the complete logs, as offline counts them."""
    from release.data.online_features import OnlineFeatures, epoch_us, merchant_fraud_rates

    events = tmp_path / "events"
    shutil.copytree(tiny_events, events)
    yesterday = events / "disputes" / f"day={DAY - dt.timedelta(days=1)}"
    shutil.move(yesterday, tmp_path / "late")  # not yet ingested when the service starts
    clock = epoch_us(pd.Timestamp(DAY, tz="UTC"))
    online = OnlineFeatures(events, DAY, tiny.maturity_days)
    online.start_preparing(lambda: clock, refresh_s=0.05)
    try:
        before = online.table_nowait(DAY)
        assert before == merchant_fraud_rates(events, DAY, tiny.maturity_days)  # without the late disputes
        shutil.move(tmp_path / "late", yesterday)  # ... ingested now
        until(lambda: online.tables_state()["ready"][DAY.isoformat()].get("refreshes", 0) >= 1,
              "the day's tables to be re-finished")
        after = online.table_nowait(DAY)
    finally:
        online.close()
    assert after == merchant_fraud_rates(events, DAY, tiny.maturity_days) != before


# ---------------------------------------------------------------- shadow scoring, off the answer's path

@pytest.mark.parametrize("queue_size", [10_000, 5])
def test_a_blocked_shadow_candidate_does_not_delay_production_answers(world, monkeypatch, queue_size):
    """The candidate in shadow; its shadow scoring is held (it does not return until the test lets it).
    Every production answer comes back while it is held. Afterwards the log holds each decision once:
    with the candidate's score (or, beyond a full shadow queue, ``shadow = dropped``: never waited for)."""
    from release.serving.service import Scorer

    events, gate = Events(), Gate()
    real = Scorer.score_many

    def score_many(self, fs, shadow=False):
        if shadow and self.model_id == world.candidate:
            gate.hold()
        return real(self, fs, shadow)

    monkeypatch.setattr(Scorer, "score_many", score_many)
    v = ctl(ramp.start_shadow, dw.RELEASE, world.candidate)["version"]
    srv = InProcess(world, shadow_queue=queue_size)
    try:
        assert srv.state()["deployment"]["version"] == v
        first = srv.score(body("shadow-0", "card-0"))
        assert first.status_code == 200
        until(gate.entered.is_set, "the shadow worker to take the candidate's first score")
        answers = [srv.score(body(f"shadow-{i}", f"card-{i}", minute=i)) for i in range(1, 40)]
        events.add("answered all")
        held = srv.state()["counters"]
        events.add("released")
        gate.release()
        tx = {f"shadow-{i}" for i in range(40)}
        until(lambda: len(logged(world, tx)) == 40, "every decision in the log")
    finally:
        gate.release()
        srv.stop()
    assert events.index("answered all") < events.index("released")
    assert {a.status_code for a in answers} == {200}
    assert {a.json()["served_by"] for a in answers} == {"production"}
    assert held["shadow_scored"] == 0  # nothing of the candidate's had come back when they were answered
    log = logged(world, tx)
    assert log["tx_id"].is_unique and log["production_score"].notna().all()
    if queue_size == 10_000:
        assert (log["shadow"] == "scored").all() and log["candidate_score"].notna().all()
    else:  # the queue held 5 (and the worker one batch): the rest were dropped, answered all the same
        counts = log["shadow"].value_counts().to_dict()
        assert counts.get("dropped", 0) >= 40 - 1 - queue_size - 1 and counts.get("scored", 0) >= 1, counts
        assert held["shadow_dropped"] == counts["dropped"]


# ---------------------------------------------------------------- scoring, off the event loop

@pytest.mark.parametrize("threads", [1, 2])
def test_a_request_held_in_scoring_does_not_hold_the_event_loop(world, monkeypatch, threads):
    """One request's model call is held. The event loop goes on answering (/healthz, /state); with two
    scoring threads another request is decided meanwhile, and a copy of the held request (the same
    tx_id and body, sent at the same time) waits for the first decision and gets it: decided once."""
    from release.serving.service import Scorer

    events, gate = Events(), Gate()
    held_amount = 777.25
    real = Scorer.score

    def score(self, f, shadow=False):
        if not shadow and f["amount"] == held_amount:
            events.add("scoring held")
            gate.hold()
        return real(self, f, shadow)

    monkeypatch.setattr(Scorer, "score", score)
    srv = InProcess(world, scoring_threads=threads)
    held_body = body("held-1", "card-held", amount=held_amount)
    try:
        held = in_background(srv.score, held_body)
        until(gate.entered.is_set, "the held request to reach its model")
        assert srv.client.get("/healthz").json()["ok"] is True
        events.add("healthz answered")
        assert srv.state()["scoring"]["in_flight"] == 1
        events.add("state answered")
        if threads > 1:
            other = srv.score(body("other-1", "card-other", minute=1))
            assert other.status_code == 200
            events.add("other answered")
            copy = in_background(srv.score, held_body)
            until(lambda: srv.state()["scoring"]["in_flight"] == 2, "the copy to be in the scoring pool")
        events.add("released")
        gate.release()
        held["thread"].join(30)
        first = held["result"]
        if threads > 1:
            copy["thread"].join(30)
            again = copy["result"]
        tx = {"held-1"} | ({"other-1"} if threads > 1 else set())
        until(lambda: len(logged(world, tx)) == len(tx), "the decisions in the log")
        counters = srv.state()["counters"]
    finally:
        gate.release()
        srv.stop()
    released = events.index("released")
    assert events.index("scoring held") < events.index("healthz answered") < released
    assert events.index("state answered") < released
    assert first.status_code == 200 and "retry" not in first.json()
    if threads > 1:
        assert events.index("other answered") < released
        copied = again.json()
        assert again.status_code == 200 and copied.pop("retry") is True and copied == first.json()
        assert counters["requests"] == 2 and counters["retries"] == 1  # the copy was not decided again
    assert logged(world, {"held-1"})["tx_id"].tolist() == ["held-1"]


def test_a_slow_deployment_reload_does_not_hold_answers(world, monkeypatch):
    """A change lands in the state store and the service's reload of it is held (loading the new
    deployment does not return): requests are answered meanwhile, on the deployment already loaded;
    once the load finishes the new version serves."""
    from release.serving.service import DeploymentLoader

    events, gate = Events(), Gate()
    real = DeploymentLoader.load
    srv = InProcess(world)
    try:
        start = srv.state()["deployment"]["version"]

        def load(self):
            if threading.current_thread().name == "deployment-watcher":
                gate.hold()
            return real(self)

        monkeypatch.setattr(DeploymentLoader, "load", load)
        v = ctl(ramp.start_shadow, dw.RELEASE, world.candidate)["version"]
        until(gate.entered.is_set, "the watcher to start loading the new deployment")
        during = [srv.score(body(f"reload-{i}", f"card-{i}", minute=i)) for i in range(10)]
        events.add("answered during the load")
        events.add("released")
        gate.release()
        until(lambda: srv.state()["deployment"]["version"] == v, "the new deployment to be served")
        after = srv.score(body("reload-after", "card-after", minute=30))
    finally:
        gate.release()
        srv.stop()
    assert events.index("answered during the load") < events.index("released")
    assert {a.status_code for a in during} == {200}
    assert {a.json()["deployment_version"] for a in during} == {start}
    assert after.json()["deployment_version"] == v
    log = logged(world, {"reload-after"})
    assert log["shadow"].tolist() == ["scored"]  # the new deployment: the candidate in shadow


# ---------------------------------------------------------------- a rollback, obeyed by the running service

def test_a_rollback_in_the_store_is_obeyed_by_the_running_service(world):
    """`fraudcd serve` with every card on the candidate; a client sends one request after another; the
    rollback is written to the state store (as `fraudcd ramp rollback` does). The service moves to the
    new version without a restart; from its first answer on that version, every answer is production's,
    and no request failed."""
    world.config.write_text(world.config.read_text() + "auth:\n  tokens: [{name: load test, roles: [scoring, "
                            "operator], env: FRAUDCD_LOAD_TOKEN}]\n")
    ctl(ramp.start_shadow, dw.RELEASE, world.candidate)
    ctl(ramp.set_pct, 100)
    srv = dw.Server(world, env={"FRAUDCD_LOAD_TOKEN": TOKEN})
    srv.client.headers["authorization"] = f"Bearer {TOKEN}"
    answers: list[tuple[int, dict]] = []
    stop = threading.Event()

    def sender():
        with httpx.Client(base_url=srv.url, timeout=20, headers={"authorization": f"Bearer {TOKEN}"}) as c:
            i = 0
            while not stop.is_set() or i < 20:
                r = c.post("/score", json=body(f"rb-{i}", f"card-{i % 97}", minute=i % 600))
                answers.append((r.status_code, r.json()))
                i += 1

    t = threading.Thread(target=sender, daemon=True)
    try:
        start = srv.state()["deployment"]["version"]
        t.start()
        until(lambda: len(answers) >= 20, "answers before the rollback")
        v = ctl(ramp.rollback, reason="drill: rollback under traffic")["version"]
        st = srv.wait_for_version(v, timeout_s=30)
        n_at_obeyed = len(answers)
        until(lambda: len(answers) >= n_at_obeyed + 20, "answers after the rollback")
        stop.set()
        t.join(30)
    finally:
        stop.set()
        code = srv.stop()
    assert code in (0, -15), srv.output()
    assert st["deployment"]["state"] == "rolled_back" and st["deployment"]["candidate"] is None
    assert {c for c, _ in answers} == {200}
    versions = [a["deployment_version"] for _, a in answers]
    first_new = next(i for i, x in enumerate(versions) if x >= v)
    assert {a["served_by"] for _, a in answers[:first_new]} == {"candidate"}
    assert versions[0] == start
    assert all(x >= v for x in versions[first_new:])  # one request after another: no old version after
    assert {a["served_by"] for _, a in answers[first_new:]} == {"production"}
    assert len(answers) - first_new >= 20


def test_exact_clock_tables_count_the_disputes_of_the_day_itself_as_they_are_logged(tiny, tiny_events, tmp_path):
    """A risk feature on the exact clock counts a dispute from the moment it arrived, so the day's own
    disputes partition is an input of the day's table: logged while the service runs, it is picked up in
    the background, and every transaction of the day then gets the rate offline computes from the complete
    logs (before, the rates that need those disputes differ)."""
    from release.core.pipeline import Features, RiskFeature
    from release.data.features import compute_features
    from release.data.online_features import OnlineFeatures, epoch_us

    spec = Features(risk=[RiskFeature(rate="x_rate", count="x_tx", window_days=3, prior_tx=2.0, delay_days=1,
                                      clock="exact")])
    events = tmp_path / "events"
    shutil.copytree(tiny_events, events)
    today = events / "disputes" / f"day={DAY}"
    shutil.move(today, tmp_path / "late")
    offline = compute_features(events, DAY, DAY + dt.timedelta(days=1), maturity_days=tiny.maturity_days,
                               features=spec)
    shutil.move(tmp_path / "late", today)
    complete = compute_features(events, DAY, DAY + dt.timedelta(days=1), maturity_days=tiny.maturity_days,
                                features=spec)
    shutil.move(today, tmp_path / "late")
    clock = epoch_us(pd.Timestamp(DAY, tz="UTC"))
    online = OnlineFeatures(events, DAY, tiny.maturity_days, features=spec)
    online.start_preparing(lambda: clock, refresh_s=0.05)

    def rates():
        (table,) = online.table_nowait(DAY)
        return np.array([table.at(m, epoch_us(t))[0] for m, t in zip(complete["merchant_id"], complete["ts"])])

    try:
        before = rates()
        shutil.move(tmp_path / "late", today)  # the day's disputes, logged now
        until(lambda: online.tables_state()["ready"][DAY.isoformat()].get("refreshes", 0) >= 1,
              "the day's tables to be re-finished")
        after = rates()
    finally:
        online.close()
    np.testing.assert_allclose(before, offline["x_rate"], rtol=1e-12)
    np.testing.assert_allclose(after, complete["x_rate"], rtol=1e-12)
    assert (~np.isclose(offline["x_rate"], complete["x_rate"], rtol=1e-9)).mean() > 0.2
