"""The scoring service against hostile and careless clients: one table of input -> expected status and
message, covering what issue 16 found (a year-2200 time, a reused tx_id with another body, no
authentication, unbounded ids, NaN amounts, non-JSON content types, "12.5" read as an amount) and the
inputs it already refused. The app is the real one (FastAPI, real SQLite state store, real LightGBM
models), driven in-process through Starlette's TestClient with authentication on."""
from __future__ import annotations

import datetime as dt
import json
import subprocess
import sys

import pandas as pd
import pytest

import deployment_world as dw
from release.core.settings import PROJECT_ROOT

pytestmark = pytest.mark.slow

SCORER, OPERATOR = "scorer-token-for-the-hostile-tests", "operator-token-for-the-hostile-tests"
AUTH_YAML = ("auth:\n  tokens:\n"
             "    - {name: pos-terminal (test), roles: [scoring], env: FRAUDCD_TEST_SCORER_TOKEN}\n"
             "    - {name: on-call (test), roles: [operator], env: FRAUDCD_TEST_OPERATOR_TOKEN}\n")
DROP = object()


def body(tx, card=1, minute=0, **kw) -> dict:
    ts = pd.Timestamp(dt.date(2026, 1, 20), tz="UTC") + pd.Timedelta(hours=12, minutes=minute)
    b = {"tx_id": tx, "ts": ts.isoformat(), "card_id": card, "card_country": "US", "merchant_id": "M000003",
         "merchant_country": "US", "merchant_category": "grocery", "amount": 20.0}
    for k, v in kw.items():
        if v is DROP:
            b.pop(k)
        else:
            b[k] = v
    return b


@pytest.fixture(scope="module", params=["asgi", "http"])
def app(request, tiny, tiny_events, tiny_snapshot, tmp_path_factory):
    """The service with authentication on (two tokens read from the environment), seeded on the tiny
    world's last day. ``asgi``: in-process through Starlette's TestClient (the ASGI gate answers POST
    /score); ``http``: over a loopback port as `fraudcd serve` runs it (its own protocol answers POST
    /score). Every case of the table must come out the same both ways."""
    from fastapi.testclient import TestClient

    from release.serving.service import ScoringService, create_app, load_service_config

    home = tmp_path_factory.mktemp(f"hostile-{request.param}") / "home"
    home.mkdir()
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("FRAUDCD_HOME", str(home))
        mp.setenv("FRAUDCD_TEST_SCORER_TOKEN", SCORER)
        mp.setenv("FRAUDCD_TEST_OPERATOR_TOKEN", OPERATOR)
        world = dw.make_world(home, tiny, tiny_events, tiny_snapshot)
        assert world.day == dt.date(2026, 1, 20)  # the bodies above are on the seed day
        world.config.write_text(world.config.read_text() + AUTH_YAML)
        cfg = load_service_config(world.config)
        fastapi_app = create_app(lambda: ScoringService(cfg, seed_day=world.day), cfg)
        with (TestClient(fastapi_app) if request.param == "asgi" else dw.over_http(fastapi_app)) as client:
            yield world, client


def send(client, path="/score", json_body=None, raw=None, headers=None, token=SCORER, method="POST"):
    h = {"content-type": "application/json"}
    if token:
        h["authorization"] = f"Bearer {token}"
    for k, v in (headers or {}).items():
        if v is None:
            h.pop(k, None)
        else:
            h[k] = v
    content = raw if raw is not None else (json.dumps(json_body).encode() if json_body is not None else None)
    if isinstance(content, list):  # chunks: sent chunked (no Content-Length), a new iterator per request
        content = iter(content)
    return client.request(method, path, content=content, headers=h)


def raw_amount(literal: str) -> bytes:
    """A body whose amount is written as-is (NaN, Infinity: JSON extensions Python's parser accepts)."""
    text = json.dumps(body("raw-amount", amount=12345.0))
    return text.replace("12345.0", literal).encode()


# (name, request, expected status, fragment of the "error" message). A request is keyword arguments of
# send(); "first" is a request sent before it (for the reused tx_id cases).
CASES = [
    # ---- item 1: a time far from the service's clock (the clock: the latest accepted, 2026-01-20)
    ("ESC sequence in a merchant id", dict(json_body=body("t-esc", merchant_id="M\x1b[31mX")), 422,
     "merchant_id: must not contain control characters (found '\\x1b' at position 1)"),
    ("NUL in a card id", dict(json_body=body("t-nul", card="c\x00")), 422, "card_id: must not contain control"),
    ("newline in a category", dict(json_body=body("t-nl", merchant_category="gro\ncery")), 422,
     "merchant_category: must not contain control characters"),
    ("year 2200", dict(json_body=body("t-2200", ts="2200-01-01T00:00:00Z")), 422,
     "ts: must be within 1 day before and 1 day after the service's clock"),
    ("year 0001", dict(json_body=body("t-0001", ts="0001-01-01T00:00:00Z")), 422, "ts: must be within 1 day"),
    ("year 0001 east of UTC", dict(json_body=body("t-0001b", ts="0001-01-01T00:00:00+01:00")), 422, "ts: "),
    ("year 9999", dict(json_body=body("t-9999", ts="9999-12-31T23:59:59Z")), 422, "ts: must be within 1 day"),
    ("year 9999 west of UTC", dict(json_body=body("t-9999b", ts="9999-12-31T23:59:59-05:00")), 422, "ts: "),
    ("two days ahead", dict(json_body=body("t-ahead", ts="2026-01-22T00:00:01Z")), 422, "between 2026-01-19"),
    ("a week behind", dict(json_body=body("t-behind", ts="2026-01-13T00:00:00Z")), 422, "ts: must be within"),
    ("epoch seconds", dict(json_body=body("t-epoch", ts=1768910400)), 422,
     "ts: must be an ISO 8601 time with a timezone"),
    ("no timezone (already refused)", dict(json_body=body("t-naive", ts="2026-01-20T12:00:00")), 422, "timezone"),
    ("not a time (already refused)", dict(json_body=body("t-word", ts="yesterday")), 422, "ts: "),
    # ---- item 2: a reused tx_id
    ("same tx_id, same body", dict(first=dict(json_body=body("dup-1")), json_body=body("dup-1")), 200, None),
    ("same tx_id, the card id as a string", dict(first=dict(json_body=body("dup-2", card=5)),
                                                 json_body=body("dup-2", card="5")), 200, None),
    ("same instant in another offset", dict(first=dict(json_body=body("dup-3")),
                                            json_body=body("dup-3", ts="2026-01-20T13:00:00+01:00")), 200, None),
    ("same tx_id, another amount", dict(first=dict(json_body=body("dup-4")), json_body=body("dup-4", amount=999.0)),
     409, "Conflict: tx_id 'dup-4' was already scored with another body"),
    ("same tx_id, another card", dict(first=dict(json_body=body("dup-5")), json_body=body("dup-5", card=2)),
     409, "Resend the same body to get its answer again"),
    # ---- item 3: authentication and bounded sizes
    ("/score without a token", dict(json_body=body("a-1"), token=None), 401, "no bearer token was sent"),
    ("/score with an unknown token", dict(json_body=body("a-2"), token="x" * 40), 401, "not one this service knows"),
    ("/score with Basic auth", dict(json_body=body("a-3"), token=None, headers={"authorization": "Basic dXNlcjpw"}),
     401, "needs a token with the role 'scoring'"),
    ("/score with the operator's token", dict(json_body=body("a-4"), token=OPERATOR), 403,
     "/score needs the role 'scoring'; the token of 'on-call (test)' has ['operator']"),
    ("/state without a token", dict(path="/state", method="GET", token=None), 401, "no bearer token"),
    ("/state with a scoring token", dict(path="/state", method="GET"), 403, "needs the role 'operator'"),
    ("/docs without a token", dict(path="/docs", method="GET", token=None), 401, "role 'operator'"),
    ("/openapi.json without a token", dict(path="/openapi.json", method="GET", token=None), 401, "role 'operator'"),
    ("/redoc with a scoring token", dict(path="/redoc", method="GET"), 403, "role 'operator'"),
    ("/state with the operator's token", dict(path="/state", method="GET", token=OPERATOR), 200, None),
    ("/openapi.json with the operator's token", dict(path="/openapi.json", method="GET", token=OPERATOR), 200, None),
    ("/healthz is open", dict(path="/healthz", method="GET", token=None), 200, None),
    ("tx_id of 129 characters", dict(json_body=body("x" * 129)), 422,
     "tx_id: must be a string of 1 to 128 characters or an integer id; got a string of 129 characters"),
    ("card_id of 10,000 characters", dict(json_body=body("len-2", card="c" * 10_000)), 422,
     "card_id: must be a string of 1 to 128 characters"),
    ("empty tx_id", dict(json_body=body("")), 422, "tx_id: must be a string of 1 to 128 characters"),
    ("tx_id beyond 64 bits", dict(json_body=body(2 ** 70)), 422, "tx_id: an integer id must fit in 64 bits"),
    ("merchant_id of 65 characters", dict(json_body=body("len-3", merchant_id="m" * 65)), 422,
     "merchant_id: String should have at most 64 characters"),
    ("card_country of 4 characters", dict(json_body=body("len-4", card_country="USAX")), 422,
     "card_country: String should have at most 3 characters"),
    ("a 1 MB card_id", dict(json_body=body("big-1", card="c" * 1_000_000)), 413,
     "Request body too large: at most 16,384 bytes"),
    ("a 20 KB body, chunked", dict(raw=[b"{" + b" " * 10_000, b" " * 10_000 + b"}"]), 413,
     "Request body too large"),
    # ---- item 4: amounts that are not numbers, bodies that are not JSON
    ("amount NaN", dict(raw=raw_amount("NaN")), 422, "amount: Input should be a finite number: NaN and Infinity"),
    ("amount Infinity", dict(raw=raw_amount("Infinity")), 422, "amount: Input should be a finite number"),
    ("amount -Infinity", dict(raw=raw_amount("-Infinity")), 422, "amount: Input should be a finite number"),
    ("amount 1e400", dict(raw=raw_amount("1e400")), 422, "amount: Input should be a finite number"),
    ("amount '12.5'", dict(json_body=body("s-1", amount="12.5")), 422,
     "amount: Input should be a valid number: a JSON number in (0, 1e9], not a string or a boolean (got '12.5')"),
    ("amount true", dict(json_body=body("s-2", amount=True)), 422, "not a string or a boolean (got True)"),
    ("text/plain", dict(json_body=body("c-1"), headers={"content-type": "text/plain"}), 422,
     "(body): the Content-Type must be application/json (got 'text/plain')"),
    ("a form", dict(raw=b"tx_id=1&amount=5", headers={"content-type": "application/x-www-form-urlencoded"}), 422,
     "the Content-Type must be application/json"),
    ("no content type", dict(json_body=body("c-2"), headers={"content-type": None}), 422,
     "the Content-Type must be application/json (none was sent)"),
    ("JSON with a charset", dict(json_body=body("c-3"), headers={"content-type": "application/json; charset=utf-8"}),
     200, None),
    ("a JSON list", dict(raw=b"[1, 2]"), 422, "(body): the body must be one JSON object"),
    ("a JSON string", dict(raw=b'"hello"'), 422, "(body): the body must be one JSON object"),
    ("nested 5,000 deep", dict(raw=b"[" * 5000 + b"]" * 5000), 422, "(body): not valid JSON"),
    ("bytes that are not UTF-8", dict(raw=b'{"tx_id": "\xff\xfe"}'), 422, "(body): not valid JSON"),
    # ---- already refused before issue 16
    ("a valid request", dict(json_body=body("ok-1")), 200, None),
    ("amount missing", dict(json_body=body("o-1", amount=DROP)), 422, "amount: Field required"),
    ("amount negative", dict(json_body=body("o-2", amount=-5)), 422, "amount: Input should be greater than 0"),
    ("amount too large", dict(json_body=body("o-3", amount=2e9)), 422, "less than or equal to 1000000000"),
    ("an unknown field", dict(json_body=body("o-4", ammount=5)), 422, "ammount: Extra inputs are not permitted"),
    ("card_id a list", dict(json_body=body("o-5", card=[1, 2])), 422,
     "card_id: Input should be a string or an integer id (got list)"),
    ("tx_id a boolean", dict(json_body=body(True)), 422, "tx_id: Input should be a string or an integer id (got bool)"),
    ("empty merchant_id", dict(json_body=body("o-6", merchant_id="")), 422, "merchant_id: String should have at least"),
    ("broken JSON", dict(raw=b"{amount: 5"), 422, "Bad request: (body): not valid JSON ("),
    ("an empty body", dict(raw=b""), 422, "(body)"),
    ("GET /score", dict(method="GET"), 405, None),
]


@pytest.mark.parametrize("name, request_, status, fragment", CASES, ids=[c[0] for c in CASES])
def test_hostile_input_gets_the_status_and_message_in_the_table(app, name, request_, status, fragment):
    _, client = app
    request_ = dict(request_)
    first = request_.pop("first", None)
    if first is not None:
        assert send(client, **first).status_code == 200
    r = send(client, **request_)
    assert r.status_code == status, r.text
    if fragment is not None:
        assert fragment in r.json()["error"], r.json()
    if status == 401:
        assert r.headers["www-authenticate"].startswith("Bearer")
    if status == 422 and "fields" in r.json():  # every 422 names a field, and its echo is JSON and bounded
        assert r.json()["fields"] and len(r.text) < 2000
    if name.startswith("same tx_id, same") or name.startswith("same tx_id, the card") or name.startswith("same inst"):
        assert r.json()["retry"] is True


def test_the_table_covers_every_item_of_the_issue():
    """Item 1 (time), 2 (reused tx_id), 3 (auth, sizes), 4 (amounts, content types): each has a refusal
    in the table, and inputs the service already handled are in it too."""
    statuses = {c[2] for c in CASES}
    assert {401, 403, 409, 413, 422, 200} <= statuses
    text = " ".join(c[0] for c in CASES)
    for word in ("2200", "0001", "9999", "same tx_id", "token", "characters", "NaN", "Infinity", "'12.5'",
                 "true", "text/plain", "already"):
        assert word in text, word


def test_a_refused_request_touches_nothing(app):
    """Refused requests (time, size, amount, auth, conflict) leave the history, the clock, the retry cache
    and the decision log as they were: the counters of scored requests and the state do not move."""
    world, client = app
    assert send(client, json_body=body("touch-0", card="touch-card")).status_code == 200
    before = send(client, path="/state", method="GET", token=OPERATOR).json()
    refused = [dict(json_body=body("touch-1", card="touch-card", ts="2200-01-01T00:00:00Z")),
               dict(json_body=body("touch-2", card="touch-card", amount="12.5")),
               dict(raw=raw_amount("NaN")),
               dict(json_body=body("touch-3", card="touch-card"), token=None),
               dict(json_body=body("touch-0", card="touch-card", amount=1.0))]
    assert [send(client, **r).status_code for r in refused] == [422, 422, 422, 401, 409]
    after = send(client, path="/state", method="GET", token=OPERATOR).json()
    assert after["features"] == before["features"] and after["request_time"] == before["request_time"]
    assert after["counters"]["requests"] == before["counters"]["requests"]
    assert after["decision_log"]["appended"] == before["decision_log"]["appended"]
    assert after["counters"]["refused_times"] == before["counters"]["refused_times"] + 1
    assert after["counters"]["conflicts"] == before["counters"]["conflicts"] + 1
    # the tx_ids refused for their content were not remembered: sent right, they are scored
    ok = send(client, json_body=body("touch-1", card="touch-card", minute=1))
    assert ok.status_code == 200 and "retry" not in ok.json()


def test_a_decision_records_who_sent_it(app):
    """The token's name goes with the decision to the decision log (``client``)."""
    import time

    from release.serving.decision_log import COLUMNS, read_decision_log

    assert "client" in COLUMNS
    world, client = app
    assert send(client, json_body=body("who-1", card="who-card")).status_code == 200
    deadline = time.monotonic() + 5
    log = read_decision_log(world.home / "decision_log")
    while not (log["tx_id"] == "who-1").any() and time.monotonic() < deadline:
        time.sleep(0.05)
        log = read_decision_log(world.home / "decision_log")
    assert log.set_index("tx_id").loc["who-1", "client"] == "pos-terminal (test)"


# ---------------------------------------------------------------- the configuration of authentication

@pytest.mark.parametrize("yaml_text, environ, message", [
    ("maturity_days: 5", {}, "auth.tokens[0] ('scoring-client'): the environment variable FRAUDCD_SCORING_TOKEN is not set"),
    ("auth: {enabled: true}", {"FRAUDCD_SCORING_TOKEN": "s" * 20}, "FRAUDCD_OPERATOR_TOKEN is not set"),
    ("auth: {tokens: [{name: a, roles: [scoring], env: T}]}", {"T": "short"},
     "a token must be at least 16 characters without surrounding spaces; got 5 characters"),
    ("auth: {tokens: [{name: a, roles: [scoring], env: T}, {name: b, roles: [operator], env: U}]}",
     {"T": "t" * 20, "U": "t" * 20}, "auth.tokens[1] ('b'): the same token as 'a'"),
    ("auth: {tokens: [{name: a, roles: [operator], env: T}]}", {"T": "t" * 20},
     "no token has the role 'scoring', so nobody could call POST /score"),
])
def test_unusable_tokens_refuse_the_start_saying_which_and_why(tmp_path, yaml_text, environ, message):
    from release.serving.service import AuthError, load_service_config

    f = tmp_path / "service.yaml"
    f.write_text(yaml_text + "\n")
    with pytest.raises(AuthError) as e:
        load_service_config(f).auth.resolve(environ)
    assert message in str(e.value)


@pytest.mark.parametrize("yaml_text, message", [
    ("auth: {enabled: 'off'}", "auth.enabled: Input should be a valid boolean"),
    ("auth: {tokens: [{name: a, roles: [admin], env: T}]}", "auth.tokens.0.roles.0: Input should be 'scoring' or"),
    ("auth: {tokens: [{name: a, roles: [scoring]}]}", "needs exactly one of env"),
    ("request_time: {clock: local}", "request_time.clock: Input should be 'event' or 'wall'"),
    ("request_time: {max_ahead_seconds: 0}", "request_time.max_ahead_seconds: Input should be greater than"),
    ("max_body_bytes: 10", "max_body_bytes: Input should be greater than or equal to 1024"),
])
def test_a_bad_service_configuration_names_the_key(tmp_path, yaml_text, message):
    from release.core.config import ConfigError
    from release.serving.service import load_service_config

    f = tmp_path / "service.yaml"
    f.write_text(yaml_text + "\n")
    with pytest.raises(ConfigError) as e:
        load_service_config(f)
    assert message in str(e.value)


def test_the_shipped_configuration_has_auth_on_with_tokens_from_the_environment():
    from release.serving.service import load_service_config

    cfg = load_service_config(PROJECT_ROOT / "config" / "service.yaml")
    assert cfg.auth.enabled and all(t.env and t.value is None for t in cfg.auth.tokens)
    assert {r for t in cfg.auth.tokens for r in t.roles} == {"scoring", "operator"}


def test_serve_without_the_tokens_in_the_environment_does_not_start(tiny, tiny_events, tiny_snapshot, home,
                                                                     tmp_path):
    """`fraudcd serve` with auth on (the default) and no token in the environment exits 2 naming the
    variable and the file, before it listens."""
    import os

    dw.make_world(home, tiny, tiny_events, tiny_snapshot)
    env = {k: v for k, v in os.environ.items() if k not in ("FRAUDCD_SCORING_TOKEN", "FRAUDCD_OPERATOR_TOKEN")}
    env["FRAUDCD_HOME"] = str(home)
    cfg = tmp_path / "service.yaml"
    cfg.write_text("maturity_days: 5\n")
    r = subprocess.run([sys.executable, "-m", "release.cli.main", "serve", "--port", str(dw.free_port()), "--seed-day",
                        "2026-01-20", "--config", str(cfg)], cwd=PROJECT_ROOT, env=env, capture_output=True,
                       text=True, timeout=60)
    assert r.returncode == 2, r.stderr
    assert "FRAUDCD_SCORING_TOKEN is not set" in r.stderr and str(cfg) in r.stderr


def test_with_auth_off_the_service_warns_and_serves_anyone(tiny, tiny_events, tiny_snapshot, home, caplog):
    from fastapi.testclient import TestClient

    from release.serving.service import ScoringService, ServiceConfig, create_app

    world = dw.make_world(home, tiny, tiny_events, tiny_snapshot)
    cfg = ServiceConfig(maturity_days=5, auth={"enabled": False})
    with caplog.at_level("WARNING", logger="fraudcd.service"):
        with TestClient(create_app(lambda: ScoringService(cfg, seed_day=world.day), cfg)) as client:
            assert client.post("/score", json=body("off-1")).status_code == 200
            assert client.get("/state").status_code == 200
    assert any("authentication is OFF" in r.getMessage() for r in caplog.records)


def test_the_shipped_clock_is_the_wall_and_no_client_can_walk_it(tiny, tiny_events, tiny_snapshot, home):
    """config/service.yaml serves live traffic on the wall clock: forty requests each a day after the
    last (which walk an event clock forward, shutting real traffic out) are all refused, and a request
    at the present time is still served."""
    from release.serving.service import ScoreRequest, ScoringService, load_service_config

    cfg = load_service_config(PROJECT_ROOT / "config" / "service.yaml")
    assert cfg.request_time.clock == "wall" and cfg.request_time.max_ahead_seconds <= 3600
    world = dw.make_world(home, tiny, tiny_events, tiny_snapshot)
    cfg = cfg.model_copy(update={"auth": cfg.auth.model_copy(update={"enabled": False}),
                                 "maturity_days": world.maturity_days})
    svc = ScoringService(cfg, seed_day=world.day)
    svc.start()
    try:
        now = pd.Timestamp.now(tz="UTC")
        walk = [svc.score(ScoreRequest(**body(f"walk-{i}", ts=(now + pd.Timedelta(hours=23.9 * i)).isoformat())))[0]
                for i in range(1, 41)]
        real = svc.score(ScoreRequest(**body("real-1", ts=now.isoformat())))[0]
    finally:
        svc.stop()
    assert walk == [422] * 40 and real == 200
