"""The scoring service, run for real (`fraudcd serve` on a loopback port) against a real SQLite state
store and real LightGBM models: bad requests, thresholds, shadow, sticky routing, live reloads, restart
mid-ramp, and a rollback under load that loses neither a request nor a decision-log record.

Authentication is on, as shipped: one test token with both roles, read from the environment
(tests/release/serving/test_service_hostile.py refuses every other way in)."""
from __future__ import annotations

import asyncio
import datetime as dt
import threading

import numpy as np
import pandas as pd
import pytest

import deployment_world as dw
from release.rollout import ramp
from release.serving.decision_log import read_decision_log
from release.rollout.ramp import routed_to_candidate
from release.serving.replay import day_requests, replay

pytestmark = pytest.mark.slow


def body(tx, card, minute=0, merchant="M000003", amount=20.0, day=None, **kw) -> dict:
    day = day or dt.date(2026, 1, 20)
    ts = pd.Timestamp(day, tz="UTC") + pd.Timedelta(hours=12, minutes=minute)
    return {"tx_id": tx, "ts": ts.isoformat(), "card_id": card, "card_country": "US", "merchant_id": merchant,
            "merchant_country": "US", "merchant_category": "grocery", "amount": amount, **kw}


def ctl(fn, *args, reason="test"):
    return fn(*args, at=dt.datetime.now(dt.timezone.utc).isoformat(), actor="on-call (test)", reason=reason)


def fresh_shadow(world) -> dict:
    """The candidate in shadow on the shared live service, whatever an earlier test left live (a new
    shadow is refused while a candidate is live: it is rolled back first)."""
    if ramp.current()["state"] in getattr(ramp, "LIVE", (ramp.SHADOW, ramp.RAMPING, ramp.PAUSED)):
        ctl(ramp.rollback, reason="test: start again from production only")
    return ctl(ramp.start_shadow, dw.RELEASE, world.candidate)


TOKEN = "a-test-token-with-both-roles"
AUTH_YAML = "auth:\n  tokens: [{name: test client, roles: [scoring, operator], env: FRAUDCD_TEST_TOKEN}]\n"


def secured(world: dw.World) -> dw.World:
    """The world's service configuration with authentication on: the test token, from the environment."""
    world.config.write_text(world.config.read_text() + AUTH_YAML)
    return world


def server(world: dw.World, env: dict | None = None, **kw) -> dw.Server:
    """`fraudcd serve` with the test token in its environment, and a client that sends it."""
    srv = dw.Server(world, env={"FRAUDCD_TEST_TOKEN": TOKEN, **(env or {})}, **kw)
    srv.client.headers["authorization"] = f"Bearer {TOKEN}"
    return srv


def send(url, bodies, **kw):
    return asyncio.run(replay(url, bodies, token=TOKEN, **kw))


@pytest.fixture(scope="module")
def live(tiny, tiny_events, tiny_snapshot, tmp_path_factory):
    """One running service. Its candidate's approved threshold is 0: it would block everything, so any
    leak of the candidate's decision into a response shows."""
    home = tmp_path_factory.mktemp("live") / "home"
    home.mkdir()
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("FRAUDCD_HOME", str(home))
        world = secured(dw.make_world(home, tiny, tiny_events, tiny_snapshot, candidate_threshold=0.0))
        srv = server(world)
        try:
            yield world, srv
        finally:
            srv.stop()


# ---------------------------------------------------------------- requests

@pytest.mark.parametrize("change, field, problem", [
    ({"amount": None}, "amount", "Field required"),
    ({"amount": "twelve"}, "amount", "valid number"),
    ({"amount": "12.5"}, "amount", "not a string or a boolean"),
    ({"amount": True}, "amount", "not a string or a boolean"),
    ({"ts": "2200-01-01T00:00:00Z"}, "ts", "must be within 1 day before and 1 day after the service's clock"),
    ({"tx_id": "x" * 129}, "tx_id", "1 to 128 characters"),
    ({"amount": -5}, "amount", "greater than 0"),
    ({"ts": "2026-01-20T12:00:00"}, "ts", "timezone"),
    ({"ts": "yesterday"}, "ts", "datetime"),
    ({"card_id": [1, 2]}, "card_id", "a string or an integer id"),
    ({"tx_id": True}, "tx_id", "a string or an integer id"),
    ({"merchant_id": ""}, "merchant_id", "at least 1 character"),
    ({"ammount": 5}, "ammount", "Extra inputs are not permitted"),
])
def test_a_bad_request_gets_422_naming_the_field(live, change, field, problem):
    _, srv = live
    b = body("bad-1", 1)
    for k, v in change.items():
        if v is None:
            b.pop(k)
        else:
            b[k] = v
    r = srv.score(b)
    assert r.status_code == 422
    out = r.json()
    named = [f for f in out["fields"] if f["field"].split(".")[0] == field]
    assert named and problem in named[0]["problem"], out
    assert out["error"].startswith(f"Bad request: {field}") or f"; {field}" in out["error"]


def test_a_body_that_is_not_json_gets_422_saying_so(live):
    _, srv = live
    r = srv.client.post("/score", content=b"{amount: 5", headers={"content-type": "application/json"})
    assert r.status_code == 422 and r.json()["error"].startswith("Bad request: (body): not valid JSON (")


def test_an_unknown_merchant_is_scored_with_the_global_threshold(live):
    world, srv = live
    st = srv.state()["deployment"]
    r = srv.score(body("unknown-m-1", 5, merchant="M-NEVER-SEEN", merchant_category="new category"))
    assert r.status_code == 200
    out = r.json()
    assert out["threshold_source"] == "global" and out["threshold"] == st["production"]["global_threshold"]
    assert out["decision"] in ("allow", "block") and out["model_id"] == world.production
    own = srv.score(body("known-m-1", 5, merchant="M000002")).json()
    assert (own["threshold_source"], own["threshold"]) == ("merchant", 0.9)


def test_a_retried_transaction_gets_the_same_answer(live):
    _, srv = live
    first = srv.score(body("retry-1", 7, amount=300.0)).json()
    again = srv.score(body("retry-1", 7, amount=300.0)).json()
    assert again.pop("retry") is True and again == first


def test_a_reused_tx_id_with_another_body_is_a_conflict_and_logged_once(live):
    """Issue 16, item 2: the second transaction under a used id was answered with the first one's
    decision and never scored nor logged. Now it is a 409 saying so; the first answer stands, and the
    log holds the id once."""
    world, srv = live
    first = srv.score(body("reuse-1", 8, amount=30.0))
    other = srv.score(body("reuse-1", 9, amount=4000.0))
    assert first.status_code == 200 and other.status_code == 409
    assert other.json()["error"].startswith("Conflict: tx_id 'reuse-1' was already scored with another body")
    assert other.json()["first_answer"]["decision"] == first.json()["decision"]
    again = srv.score(body("reuse-1", 8, amount=30.0))
    assert again.status_code == 200 and again.json()["retry"] is True
    import time

    time.sleep(0.5)  # three flush periods: a second record would be written by now
    log = wait_for_log(world, {"reuse-1"})
    assert len(log) == 1 and (log["card_id"] == "8").all() and (log["amount"] == 30.0).all()
    assert srv.state()["counters"]["conflicts"] >= 1


def test_requests_without_the_token_are_refused_and_the_probe_is_open(live):
    _, srv = live
    import httpx

    assert httpx.post(srv.url + "/score", json=body("no-token-1", 1)).status_code == 401
    for path in ("/state", "/docs", "/openapi.json"):
        assert httpx.get(srv.url + path).status_code == 401, path
        assert srv.client.get(path).status_code == 200, path
    assert httpx.get(srv.url + "/healthz").json()["ok"] is True


# ---------------------------------------------------------------- shadow, routing, reloads

def test_shadow_never_changes_the_returned_decision(live):
    world, srv = live
    v = fresh_shadow(world)["version"]
    srv.wait_for_version(v)
    bodies = [body(f"shadow-{i}", 1000 + i % 150, minute=i % 600, amount=5.0 + 37 * (i % 13)) for i in range(300)]
    answers = send(srv.url, bodies, rate=0, concurrency=8).answers
    assert {a.status for a in answers} == {200}
    assert {a.body["served_by"] for a in answers} == {"production"}
    log = wait_for_log(world, {a.tx_id for a in answers})
    log = log.set_index("tx_id").loc[[a.tx_id for a in answers]]
    assert (log["shadow"] == "scored").all() and log["candidate_score"].notna().all()
    assert log["candidate_block"].all()  # the candidate (threshold 0) would block every one ...
    got = np.array([a.body["decision"] for a in answers])
    assert (got == "allow").sum() > 250  # ... yet what came back is production's decision
    expected = np.where(log["production_block"] & ~log["explored"], "block", "allow")
    np.testing.assert_array_equal(got, expected)
    np.testing.assert_allclose([a.body["score"] for a in answers], log["production_score"])


def wait_for_log(world, tx_ids: set[str], timeout_s: float = 10.0) -> pd.DataFrame:
    """Decision-log records of these transactions, once all are written (bounded wait)."""
    import time

    deadline = time.monotonic() + timeout_s
    while True:
        df = read_decision_log(world.home / "decision_log")
        df = df[df["tx_id"].isin(tx_ids)]
        if len(df) == len(tx_ids) or time.monotonic() > deadline:
            return df
        time.sleep(0.05)


def test_routing_is_sticky_by_card_at_every_ramp_step(live):
    world, srv = live
    fresh_shadow(world)
    cards = [f"card-{k}" for k in range(300)]
    on_candidate = {}
    for step, pct in enumerate([1, 5, 25, 50, 100]):
        v = ctl(ramp.set_pct, pct)["version"]
        assert srv.wait_for_version(v)["deployment"]["pct"] == pct
        # every card in the step, a third of them twice at different times: a card must see one model
        bodies = [body(f"route-{pct}-{r}-{c}", c, minute=step * 60 + r)
                  for r in range(2) for c in cards[:300 - 200 * r]]
        answers = send(srv.url, bodies, rate=0, concurrency=8).answers
        served = pd.DataFrame({"card": [b["card_id"] for b in bodies],
                               "candidate": [a.body["served_by"] == "candidate" for a in answers]})
        assert (served.groupby("card")["candidate"].nunique() == 1).all(), f"a card saw two models at {pct}%"
        now = served.groupby("card")["candidate"].first()
        expected = routed_to_candidate(np.array(now.index), pct)
        np.testing.assert_array_equal(now.to_numpy(), expected)  # the same bucket function as the replayed ramp
        assert now.mean() == pytest.approx(pct / 100, abs=0.09)  # 300 cards: 3 binomial standard errors
        for card, was in on_candidate.items():
            assert now[card] or not was, f"{card} left the candidate when the share grew to {pct}%"
        on_candidate = now.to_dict()
    assert all(on_candidate.values())


def test_a_state_change_reaches_the_service_without_a_restart(live):
    world, srv = live
    before = srv.state()
    fresh_shadow(world)
    v = ctl(ramp.set_pct, 100)["version"]
    st = srv.wait_for_version(v)
    assert st["counters"]["started_at"] == before["counters"]["started_at"]  # the same process
    assert st["deployment"]["state"] == "ramping" and st["deployment"]["candidate"]["model_id"] == world.candidate
    assert srv.score(body("reload-1", 3)).json()["served_by"] == "candidate"
    v = ctl(ramp.rollback)["version"]
    st = srv.wait_for_version(v)
    assert st["deployment"]["candidate"] is None and st["deployment"]["shadow"] is False
    out = srv.score(body("reload-2", 3)).json()
    assert out["served_by"] == "production" and out["deployment_version"] == v


# ---------------------------------------------------------------- restart and rollback under load

@pytest.fixture
def world(home, tiny, tiny_events, tiny_snapshot):
    return secured(dw.make_world(home, tiny, tiny_events, tiny_snapshot))


def offline_scores(world) -> pd.DataFrame:
    """Both models' scores on the replayed day, from the offline features (compute_features)."""
    from release.data.features import compute_features
    from release.state.registry import get_model

    f = compute_features(world.home / "events", world.day, world.day + dt.timedelta(days=1),
                         maturity_days=world.maturity_days)
    out = pd.DataFrame({"tx_id": f["tx_id"].astype(str)})
    for role, mid in (("production", world.production), ("candidate", world.candidate)):
        m = get_model(mid)
        out[role] = m.booster().predict(f[m.features].astype(float), num_threads=1)
    return out.set_index("tx_id")


def test_a_restart_mid_ramp_resumes_the_same_state_and_features(world):
    """Replay a day at 25% with a restart half-way: the restarted service serves the same ramp, routes
    every card as before, and its features continue where they were, so both models' scores on every
    transaction of the day equal the scores on the offline features."""
    ctl(ramp.start_shadow, dw.RELEASE, world.candidate)
    v = ctl(ramp.set_pct, 25)["version"]
    bodies = day_requests(world.home / "events", world.day)
    half = len(bodies) // 2
    first = server(world)
    try:
        assert first.state()["deployment"]["version"] == v
        a1 = send(first.url, bodies[:half], rate=0, concurrency=1).answers  # in time order
    finally:
        first.stop()
    second = server(world)
    try:
        st = second.state()
        assert (st["deployment"]["version"], st["deployment"]["state"], st["deployment"]["pct"]) == (v, "ramping", 25)
        assert st["features"]["resumed_rows"] == half
        # a transaction answered before the restart is answered the same after it
        again = second.score(bodies[0]).json()
        assert again.pop("retry") is True and again == a1[0].body
        a2 = send(second.url, bodies[half:], rate=0, concurrency=1).answers
    finally:
        second.stop()
    answers = a1 + a2
    assert [a.status for a in answers] == [200] * len(bodies)
    cards = np.array([str(b["card_id"]) for b in bodies])
    served = np.array([a.body["served_by"] == "candidate" for a in answers])
    np.testing.assert_array_equal(served, routed_to_candidate(cards, 25))
    log = read_decision_log(world.home / "decision_log").set_index("tx_id")
    assert len(log) == len(bodies) and (log["shadow"] == "scored").all()
    off = offline_scores(world).loc[log.index]
    np.testing.assert_allclose(log["production_score"], off["production"], rtol=1e-9)
    np.testing.assert_allclose(log["candidate_score"], off["candidate"], rtol=1e-9)


def test_a_year_2200_request_cannot_empty_the_history_over_a_restart(world):
    """Issue 16, item 1: one request dated 2200 made pruning drop every card's history on the next
    restart (counts read 0, a block became an allow). Now the request is a 422 that touches nothing, and
    a decision log that already holds such a row (written by an older version) is resumed without it:
    after the restart the card's features and score are what they were."""
    bodies = day_requests(world.home / "events", world.day)
    card = max({b["card_id"] for b in bodies}, key=[b["card_id"] for b in bodies].count)
    mine = [b for b in bodies if b["card_id"] == card]
    later = {**mine[-1], "tx_id": "probe-after", "ts": (pd.Timestamp(mine[-1]["ts"]) + pd.Timedelta(minutes=1)).isoformat()}
    srv = server(world)
    try:
        assert {a.status for a in send(srv.url, bodies, rate=0, concurrency=1).answers} == {200}
        poison = {**mine[0], "tx_id": "poison-2200", "ts": "2200-01-01T00:00:00Z"}
        r = srv.score(poison)
        assert r.status_code == 422 and "ts: must be within" in r.json()["error"]
    finally:
        srv.stop()
    # an older version had accepted and logged one: the row is in the log when the service restarts
    from release.serving.decision_log import DecisionLog

    log = read_decision_log(world.home / "decision_log")
    assert "poison-2200" not in set(log["tx_id"])
    row = log.set_index("tx_id").loc[str(mine[0]["tx_id"])]  # the poison's body, as it was logged
    row = {k: None if pd.isna(v) else v for k, v in row.items()}
    old = DecisionLog(world.home / "decision_log")
    old.append({**row, "tx_id": "poison-2200", "request_id": "poison-2200",
                "ts": pd.Timestamp("2200-01-01", tz="UTC")})
    old.flush()
    srv = server(world)
    try:
        st = srv.state()
        assert st["features"]["resumed_rows"] == len(bodies) and st["features"]["refused_on_resume"] == 1
        out = srv.score(later).json()
        assert srv.score(poison).json()["retry"] is True  # answered once, so its answer stands; not in the history
    finally:
        srv.stop()
    # the same probe through a service that never saw the poison: the same score
    import shutil

    shutil.rmtree(world.home / "decision_log")
    srv = server(world)
    try:
        assert send(srv.url, bodies, rate=0, concurrency=1).failed == 0
        clean = srv.score(later).json()
    finally:
        srv.stop()
    assert out["score"] == pytest.approx(clean["score"], rel=1e-12) and out["decision"] == clean["decision"]


def test_a_rollback_under_load_loses_no_request_and_no_record(world):
    """Traffic at ~150 requests/s with half the cards on the candidate; on-call rolls back half-way.
    Every request is answered 200, every answer given on the new deployment version comes from
    production, and after a graceful stop the decision log holds every request exactly once."""
    ctl(ramp.start_shadow, dw.RELEASE, world.candidate)
    ctl(ramp.set_pct, 50)
    bodies = day_requests(world.home / "events", world.day)
    srv = server(world)
    rolled = {}
    try:
        async def on_tick(i, elapsed):
            if i == len(bodies) // 2:
                # from another thread, as a separate operator would: the event loop keeps sending
                t = threading.Thread(target=lambda: rolled.update(ctl(ramp.rollback, reason="load drill")))
                t.start()
                await asyncio.get_running_loop().run_in_executor(None, t.join)

        res = send(srv.url, bodies, rate=150, concurrency=16, on_tick=on_tick)
    finally:
        code = srv.stop()
    assert code in (0, -15), srv.output()  # uvicorn re-raises SIGTERM after its graceful shutdown
    assert res.failed == 0 and len(res.answers) == len(bodies)
    v = rolled["version"]
    after = [a for a in res.answers if a.body["deployment_version"] >= v]
    before = [a for a in res.answers if a.body["deployment_version"] < v]
    assert after and before and {a.body["served_by"] for a in before} == {"production", "candidate"}
    assert {a.body["served_by"] for a in after} == {"production"}
    assert after[-1].body["served_by"] == "production"
    log = read_decision_log(world.home / "decision_log")
    assert sorted(log["tx_id"]) == sorted(str(b["tx_id"]) for b in bodies)
    assert log["request_id"].is_unique
    # the log says which deployment decided each one, as the answers did
    by_tx = log.set_index("tx_id")
    assert all(by_tx.loc[a.tx_id, "served_by"] == a.body["served_by"] for a in res.answers)


def test_the_services_own_controller_rolls_a_breaching_candidate_back(world, tmp_path):
    """`fraudcd serve --controller`: the candidate at 50% blocks everything; the service's controller
    sees the action-rate shift in the decision log, rolls back on its own, and the service obeys."""
    import time

    from release.state.alerts import read_alerts
    from release.rollout.controller import CONTROLLER

    dw.approve(world.candidate, 0.0)  # a newer approved set: the candidate blocks everything
    ctl(ramp.start_shadow, dw.RELEASE, world.candidate)
    ctl(ramp.set_pct, 50)
    config = tmp_path / "config"
    config.mkdir()
    (config / "ramp.yaml").write_text(
        "steps: [1, 5, 25, 50, 100]\nstep: {min_candidate_rows: 100000}\n"
        "guardrails:\n  action_rate_shift: {max_relative_shift: 0.3, min_absolute_shift: 0.003, min_support: 20}\n")
    world.config.write_text(world.config.read_text() + "controller_poll_ms: 100\n")
    srv = server(world, controller=True, env={"FRAUDCD_CONFIG": str(config)})
    try:
        res = send(srv.url, day_requests(world.home / "events", world.day), rate=0, concurrency=4)
        assert res.failed == 0 and "candidate" in res.summary()["served_by"]
        deadline = time.monotonic() + 15
        while ramp.current()["state"] != "rolled_back" and time.monotonic() < deadline:
            time.sleep(0.05)
        st = ramp.current()
        assert (st["state"], st["updated_by"]) == ("rolled_back", CONTROLLER), st
        assert "guardrail breached in step 50% (live traffic)" in st["reason"]
        srv.wait_for_version(dw.audit_version())
        after = [srv.score(body(f"after-{i}", f"card-{i}")).json() for i in range(50)]
        assert {a["served_by"] for a in after} == {"production"}
    finally:
        srv.stop()
    assert [a["kind"] for a in read_alerts()] == ["ramp_guardrail_breach"]


def test_a_production_model_it_cannot_score_is_refused_and_the_last_good_one_kept(world):
    """Someone tags a model production that needs a feature the service does not compute: the service
    keeps serving the deployment it has (and counts the refused reload) rather than failing every request."""
    import time

    from release.state.registry import get_model, move_tag
    from release.serving.service import ScoreRequest, ScoringService, ServiceConfig

    svc = ScoringService(ServiceConfig(maturity_days=5, reload_poll_ms=20), seed_day=world.day)
    svc.start()
    try:
        bad = dw.register(get_model(world.production).text() + "\n", "needs-more", "ab" * 32,
                          features=["no_such_feature"])
        dw.approve(bad, 0.5)
        move_tag("production", bad, at=dw.AT, actor="someone (test)", reason="wrong model")
        deadline = time.monotonic() + 5
        while svc.counters.reload_errors == 0 and time.monotonic() < deadline:
            time.sleep(0.02)
        assert svc.counters.reload_errors > 0
        code, out = svc.score(ScoreRequest(**body("after-bad-tag", 1)))
        assert code == 200 and out["model_id"] == world.production
    finally:
        svc.stop()


def test_promotion_then_rollback_switch_model_and_thresholds_live(world):
    """After `ramp promote` the candidate serves everyone with its own thresholds; `fraudcd rollback`
    brings the previous model back with its thresholds, without a restart."""
    from release.state import approvals
    from release.serving.service import ScoreRequest, ScoringService, ServiceConfig

    svc = ScoringService(ServiceConfig(maturity_days=5, reload_poll_ms=20), seed_day=world.day)
    svc.start()

    def served(tx):
        import time

        deadline = time.monotonic() + 5
        while svc.deployment.version < dw.audit_version() and time.monotonic() < deadline:
            time.sleep(0.01)
        return svc.score(ScoreRequest(**body(tx, "card-9", merchant="M000001")))[1]

    try:
        prod_t = approvals.live_thresholds(world.production)[1]["M000001"]
        cand_t = approvals.live_thresholds(world.candidate)[1]["M000001"]
        assert prod_t != cand_t
        assert (served("p-0")["model_id"], served("p-1")["threshold"]) == (world.production, prod_t)
        ctl(ramp.start_shadow, dw.RELEASE, world.candidate)
        ctl(ramp.set_pct, 100)
        ctl(ramp.promote, reason="every step passed")
        out = served("p-2")
        assert (out["model_id"], out["served_by"], out["threshold"]) == (world.candidate, "production", cand_t)
        ctl(ramp.rollback, reason="chargebacks up after promotion")
        out = served("p-3")
        assert (out["model_id"], out["threshold"]) == (world.production, prod_t)
    finally:
        svc.stop()
