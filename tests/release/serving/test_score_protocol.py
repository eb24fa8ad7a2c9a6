"""The service's own HTTP protocol for POST /score (release.serving.service.score_protocol), over a real loopback
socket, as `fraudcd serve` runs it: what uvicorn's ASGI path guaranteed must still hold when /score no longer
takes it. Answers on one connection come back in the order their requests were sent (pipelined requests,
/score mixed with other routes, refusals among them), ``Expect: 100-continue`` is honoured, HTTP/1.0 and
``Connection: close`` close the connection after the answer, a malformed request is a 400, an oversized
chunked body is refused and the connection goes on. The table of hostile inputs runs over this protocol too
(test_service_hostile.py, its ``http`` transport)."""
from __future__ import annotations

import datetime as dt
import json
import socket
import time

import pandas as pd
import pytest

import deployment_world as dw

pytestmark = pytest.mark.slow

TOKEN = "a-token-for-the-protocol-tests-0123"


def body(tx, minute=0, **kw) -> bytes:
    ts = pd.Timestamp(dt.date(2026, 1, 20), tz="UTC") + pd.Timedelta(hours=12, minutes=minute)
    b = {"tx_id": tx, "ts": ts.isoformat(), "card_id": 7, "card_country": "US", "merchant_id": "M000003",
         "merchant_country": "US", "merchant_category": "grocery", "amount": 20.0, **kw}
    return json.dumps(b).encode()


def post(payload: bytes, token: str | None = TOKEN, version: str = "1.1", extra: str = "") -> bytes:
    auth = f"Authorization: Bearer {token}\r\n" if token else ""
    return (f"POST /score HTTP/{version}\r\nHost: t\r\nContent-Type: application/json\r\n{auth}"
            f"Content-Length: {len(payload)}\r\n{extra}\r\n").encode() + payload


GET_HEALTHZ = b"GET /healthz HTTP/1.1\r\nHost: t\r\n\r\n"


class Conn:
    """A raw keep-alive connection that reads whole answers (status, headers, JSON body) one at a time."""

    def __init__(self, port: int):
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=30)
        self.buf = b""

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def _fill(self) -> bool:
        chunk = self.sock.recv(65536)
        self.buf += chunk
        return bool(chunk)

    def answer(self) -> tuple[int, dict, dict | None]:
        while b"\r\n\r\n" not in self.buf:
            assert self._fill(), f"the connection closed before an answer: {self.buf!r}"
        head, self.buf = self.buf.split(b"\r\n\r\n", 1)
        lines = head.decode("latin-1").split("\r\n")
        status = int(lines[0].split(" ")[1])
        headers = {k.lower(): v.strip() for k, v in (line.split(":", 1) for line in lines[1:])}
        n = int(headers.get("content-length", 0))
        while len(self.buf) < n:
            assert self._fill(), "the connection closed inside an answer"
        raw, self.buf = self.buf[:n], self.buf[n:]
        return status, headers, (json.loads(raw) if raw and "json" in headers.get("content-type", "") else None)

    def closed(self) -> bool:
        """True once the server has closed the connection (after what was read)."""
        return not self.buf and not self._fill()

    def close(self) -> None:
        self.sock.close()


@pytest.fixture(scope="module")
def port(tiny, tiny_events, tiny_snapshot, tmp_path_factory):
    from release.serving.service import ScoringService, create_app, load_service_config

    home = tmp_path_factory.mktemp("protocol") / "home"
    home.mkdir()
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("FRAUDCD_HOME", str(home))
        world = dw.make_world(home, tiny, tiny_events, tiny_snapshot)
        world.config.write_text(world.config.read_text() + "auth:\n  tokens:\n    - {name: till (test), roles: "
                                f"[scoring, operator], value: {TOKEN}}}\n")
        cfg = load_service_config(world.config)
        with dw.over_http(create_app(lambda: ScoringService(cfg, seed_day=world.day), cfg)) as client:
            yield int(client.base_url.port)


def test_pipelined_requests_are_answered_in_the_order_they_were_sent(port):
    """Five requests in one write: /score, a refused /score, /healthz (uvicorn's own path), /score, the first
    again (a retry). Each answer is the one of its request, in order, on one connection that stays open."""
    c = Conn(port)
    c.send(post(body("pipe-1")) + post(body("pipe-x"), token=None) + GET_HEALTHZ + post(body("pipe-2", minute=1))
           + post(body("pipe-1")))
    answers = [c.answer() for _ in range(5)]
    assert [a[0] for a in answers] == [200, 401, 200, 200, 200], answers
    assert answers[0][2]["tx_id"] == "pipe-1" and "retry" not in answers[0][2]
    assert "no bearer token" in answers[1][2]["error"] and answers[1][1]["www-authenticate"].startswith("Bearer")
    assert answers[2][2]["ok"] is True and "tx_id" not in answers[2][2]
    assert answers[3][2]["tx_id"] == "pipe-2"
    assert answers[4][2] == {**answers[0][2], "retry": True}
    for status, headers, _ in answers:
        assert headers["content-type"] == "application/json"
        assert float(headers["server-timing"].split("dur=")[1]) >= 0
    c.send(post(body("pipe-3", minute=2)))  # still open, still answering
    assert c.answer()[2]["tx_id"] == "pipe-3"
    c.close()


def test_a_score_behind_another_route_in_flight_waits_its_turn(port):
    """/state (uvicorn's ASGI path) then two /score in one write: the answers keep that order."""
    c = Conn(port)
    state = f"GET /state HTTP/1.1\r\nHost: t\r\nAuthorization: Bearer {TOKEN}\r\n\r\n".encode()
    c.send(state + post(body("after-1", minute=3)) + post(body("after-2", minute=4)))
    first, second, third = c.answer(), c.answer(), c.answer()
    assert first[0] == 200 and "deployment" in first[2]
    assert (second[2]["tx_id"], third[2]["tx_id"]) == ("after-1", "after-2")
    c.close()


def test_expect_100_continue_is_honoured_before_the_body_is_sent(port):
    c = Conn(port)
    payload = body("continue-1", minute=5)
    c.send(post(payload, extra="Expect: 100-continue\r\n")[:-len(payload)])
    assert c.answer()[0] == 100  # asked to go on before any body byte was sent
    c.send(payload)
    status, _, out = c.answer()
    assert status == 200 and out["tx_id"] == "continue-1"
    c.close()


@pytest.mark.parametrize("version, extra", [("1.0", ""), ("1.1", "Connection: close\r\n")])
def test_http_1_0_and_connection_close_end_the_connection_after_the_answer(port, version, extra):
    c = Conn(port)
    c.send(post(body(f"close-{version}", minute=6), version=version, extra=extra))
    status, headers, out = c.answer()
    assert status == 200 and out["tx_id"] == f"close-{version}"
    assert headers.get("connection") == "close"
    assert c.closed()
    c.close()


def test_a_malformed_request_is_a_400_and_the_connection_closes(port):
    c = Conn(port)
    c.send(b"POST /score HTTP/1.1\r\nContent-Length: banana\r\n\r\n{}")
    status, _, _ = c.answer()
    assert status == 400
    assert c.closed()
    c.close()


def test_an_oversized_chunked_body_is_refused_and_the_connection_goes_on(port):
    """20 KB in chunks (no Content-Length to refuse it by): a 413 once the limit is passed, the rest of the
    body read and dropped, and the next request on the connection answered."""
    c = Conn(port)
    head = (f"POST /score HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\nAuthorization: Bearer {TOKEN}\r\n"
            "Transfer-Encoding: chunked\r\n\r\n").encode()
    chunk = b" " * 5000
    c.send(head + b"".join(b"%x\r\n%s\r\n" % (len(chunk), chunk) for _ in range(4)) + b"0\r\n\r\n"
           + post(body("after-413", minute=7)))
    status, _, out = c.answer()
    assert status == 413 and "Request body too large" in out["error"]
    status, _, out = c.answer()
    assert status == 200 and out["tx_id"] == "after-413"
    c.close()


def test_many_requests_on_many_connections_each_get_their_own_answer(port):
    """200 requests over 20 connections, sent before any answer is read: every answer names its own tx_id
    (no answer crosses to another connection or request)."""
    conns = [Conn(port) for _ in range(20)]
    for i, c in enumerate(conns):
        c.send(b"".join(post(body(f"many-{i}-{k}", minute=8 + k % 50, card_id=1000 + i)) for k in range(10)))
    for i, c in enumerate(conns):
        got = [c.answer()[2]["tx_id"] for _ in range(10)]
        assert got == [f"many-{i}-{k}" for k in range(10)]
        c.close()


def test_a_client_that_pipelines_and_never_reads_is_no_longer_read(port):
    """A stream of requests pipelined on one connection whose client reads none of the answers, more answers than
    the kernel's buffers hold: once they back up into the service's write buffer, it stops reading the
    connection (what it had already received is still decided), so it neither decides the whole stream nor
    piles its answers up in memory; once the client reads, every answer comes, in order."""
    import gc
    import threading

    import httpx

    def decided() -> int:
        return httpx.get(f"http://127.0.0.1:{port}/state", headers={"authorization": f"Bearer {TOKEN}"},
                         timeout=30).json()["counters"]["requests"]

    before = decided()
    c = Conn.__new__(Conn)
    c.buf, c.sock = b"", socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    c.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)  # before connecting: the window it offers
    c.sock.settimeout(60)
    c.sock.connect(("127.0.0.1", port))
    local = c.sock.getsockname()

    def protocol():
        return [o for o in gc.get_objects() if type(o).__name__ == "ScoreProtocol" and o.transport is not None
                and o.transport.get_extra_info("peername") == local]

    deadline = time.monotonic() + 30
    while not protocol():  # the service accepts the connection on its own loop
        assert time.monotonic() < deadline, "the service never accepted the connection"
        time.sleep(0.01)
    (conn,) = protocol()
    # the service's side of the connection gets a send buffer as small as the kernel allows (a reader on a slow
    # link; autotuned, loopback's can reach tcp_wmem's maximum, megabytes), so that a few thousand answers are
    # more than the kernel's buffers on both sides hold
    server_sock = conn.transport.get_extra_info("socket")
    server_sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
    kernel = (server_sock.getsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF)
              + c.sock.getsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF))
    n = int(1.5 * kernel / 400) + 2000  # an answer is ~450 bytes
    sender = threading.Thread(target=c.send, args=(b"".join(post(body(f"pile-{k}", minute=60 + k % 600,
                                                                      card_id=5000 + k)) for k in range(n)),))
    sender.start()
    seen, still = before, 0
    while still < 10:  # until nothing more is decided for half a second
        time.sleep(0.05)
        now = decided()
        still, seen = (still + 1, seen) if now == seen else (0, now)
    assert 0 < seen - before < n, f"all {n} requests of a client that reads no answer were read and decided"
    buffered = conn.transport.get_write_buffer_size()
    assert conn.flow.read_paused and buffered < 1 << 20, f"{buffered:,} bytes of answers held for an idle reader"
    got = [c.answer()[2]["tx_id"] for _ in range(n)]
    sender.join(60)
    assert got == [f"pile-{k}" for k in range(n)]
    assert decided() - before == n
    c.close()
