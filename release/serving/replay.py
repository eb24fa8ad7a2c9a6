"""The traffic replayer: sends a simulated (or logged) day of transactions through the scoring service
at a chosen rate, in time order, and reports what came back.

    fraudcd replay --day 2026-05-30 --rate 300 --url http://127.0.0.1:8000 [--limit N] [--json]

Open loop: request i is sent at start + i / rate whether or not earlier answers came back (at most
``concurrency`` in flight over as many keep-alive connections; when that many are outstanding the
schedule slips, and the slip is reported). ``--rate 0`` sends as fast as ``concurrency`` allows
(closed loop, for throughput).
Exit codes: 0 every request answered 200; 1 some failed; 2 bad input.

The service wants a bearer token with the ``scoring`` role: ``fraudcd replay`` sends the one in
``FRAUDCD_SCORING_TOKEN`` (the variable the default config/service.yaml reads it from), if set.
"""
from __future__ import annotations

import asyncio
import datetime as dt
import json
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from release.core.io import list_partitions, location, read_parquet_frame

REQUEST_COLUMNS = ["tx_id", "ts", "card_id", "card_country", "merchant_id", "merchant_country",
                   "merchant_category", "amount"]


def day_requests(events: Path, day: dt.date, limit: int | None = None) -> list[dict]:
    """The day's transactions as /score request bodies, in time order."""
    files = list_partitions(location(events) / "transactions", day, day + dt.timedelta(days=1))
    if not files:
        raise FileNotFoundError(f"No transactions for {day} in {location(events) / 'transactions'}.")
    df = pd.concat([read_parquet_frame(f, columns=REQUEST_COLUMNS) for f in files], ignore_index=True)
    df = df.sort_values(["ts", "tx_id"], kind="stable")
    if limit is not None:
        df = df.head(limit)
    ts = pd.to_datetime(df["ts"], utc=True).dt.strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    return [{"tx_id": int(t), "ts": s, "card_id": int(c), "card_country": cc, "merchant_id": m,
             "merchant_country": mc, "merchant_category": cat, "amount": float(a)}
            for t, s, c, cc, m, mc, cat, a in zip(df["tx_id"], ts, df["card_id"], df["card_country"],
                                                  df["merchant_id"], df["merchant_country"],
                                                  df["merchant_category"], df["amount"])]


@dataclass
class Answer:
    tx_id: str
    status: int  # 0: no answer (connection error or timeout)
    sent: float  # seconds since the replay began
    received: float
    body: dict = field(default_factory=dict)

    @property
    def latency_ms(self) -> float:
        return (self.received - self.sent) * 1000


@dataclass
class ReplayResult:
    answers: list[Answer]
    seconds: float
    max_slip_ms: float
    started_wall: float  # time.time() at the start: answers' times are offsets from it

    @property
    def failed(self) -> int:
        return sum(a.status != 200 for a in self.answers)

    def summary(self) -> dict:
        lat = np.array([a.latency_ms for a in self.answers if a.status == 200])
        pct = (lambda q: float(np.percentile(lat, q)) if len(lat) else None)
        return {"sent": len(self.answers), "ok": len(self.answers) - self.failed, "failed": self.failed,
                "statuses": dict(Counter(a.status for a in self.answers)), "seconds": round(self.seconds, 3),
                "throughput_rps": round(len(self.answers) / self.seconds, 1) if self.seconds else None,
                "p50_ms": pct(50), "p90_ms": pct(90), "p99_ms": pct(99), "max_ms": pct(100),
                "max_schedule_slip_ms": round(self.max_slip_ms, 2),
                "served_by": dict(Counter(a.body.get("served_by") for a in self.answers if a.status == 200)),
                "decisions": dict(Counter(a.body.get("decision") for a in self.answers if a.status == 200))}


class _Connection:
    """One keep-alive HTTP/1.1 connection speaking just enough of the protocol to POST JSON and read
    the answer: a lean client, so the load generator takes as little of the machine as it can."""

    def __init__(self, host: str, port: int, timeout_s: float, token: str | None = None):
        self.host, self.port, self.timeout_s = host, port, timeout_s
        self.auth = b"Authorization: Bearer %s\r\n" % token.encode() if token else b""
        self.reader = self.writer = None

    async def post(self, path: str, payload: bytes) -> tuple[int, bytes]:
        if self.writer is None:
            self.reader, self.writer = await asyncio.open_connection(self.host, self.port)
        try:
            self.writer.write(b"POST %s HTTP/1.1\r\nHost: %s\r\n%sContent-Type: application/json\r\n"
                              b"Content-Length: %d\r\n\r\n%s" % (path.encode(), self.host.encode(), self.auth,
                                                                  len(payload), payload))
            head = await asyncio.wait_for(self.reader.readuntil(b"\r\n\r\n"), self.timeout_s)
            status = int(head[9:12])
            length = 0
            for line in head.split(b"\r\n")[1:]:
                if line[:15].lower() == b"content-length:":
                    length = int(line[15:])
            return status, await asyncio.wait_for(self.reader.readexactly(length), self.timeout_s)
        except BaseException:
            self.close()  # a half-read answer leaves the connection unusable
            raise

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
        self.reader = self.writer = None


async def replay(url: str, bodies: list[dict], rate: float = 0.0, concurrency: int = 32,
                 timeout_s: float = 10.0, on_tick=None, token: str | None = None) -> ReplayResult:
    """Send ``bodies`` to ``url``/score at ``rate`` requests per second (0: as fast as possible), over at
    most ``concurrency`` keep-alive connections. ``on_tick(i, elapsed_s)``, if given, is awaited
    before request i is sent (used to act mid-replay). ``token``: sent as ``Authorization: Bearer``.
    A request that gets no answer (connection
    error, timeout) is recorded with status 0 and not retried."""
    from urllib.parse import urlsplit

    u = urlsplit(url)
    payloads = [json.dumps(b).encode() for b in bodies]
    idle: asyncio.Queue = asyncio.Queue()
    for _ in range(concurrency):
        idle.put_nowait(_Connection(u.hostname or "127.0.0.1", u.port or 80, timeout_s, token))
    answers: list[Answer | None] = [None] * len(bodies)
    t0, wall0 = time.perf_counter(), time.time()
    slip = 0.0

    async def one(i: int, conn: _Connection) -> None:
        sent = time.perf_counter() - t0
        try:
            status, raw = await conn.post("/score", payloads[i])
            payload = json.loads(raw) if raw else {}
        except (OSError, asyncio.IncompleteReadError, asyncio.TimeoutError, ValueError) as e:
            status, payload = 0, {"error": f"{type(e).__name__}: {e}"}
        answers[i] = Answer(str(bodies[i].get("tx_id")), status, sent, time.perf_counter() - t0, payload)
        idle.put_nowait(conn)

    tasks = []
    for i in range(len(bodies)):
        if on_tick is not None:
            await on_tick(i, time.perf_counter() - t0)
        if rate > 0:
            wait = i / rate - (time.perf_counter() - t0)
            if wait > 0:
                await asyncio.sleep(wait)
        conn = await idle.get()
        if rate > 0:
            slip = max(slip, (time.perf_counter() - t0) - i / rate)
        tasks.append(asyncio.create_task(one(i, conn)))
    await asyncio.gather(*tasks)
    while not idle.empty():
        idle.get_nowait().close()
    return ReplayResult(answers=[a for a in answers if a is not None], seconds=time.perf_counter() - t0,
                        max_slip_ms=slip * 1000, started_wall=wall0)


def replay_command(day: str, rate: float = 300.0, url: str = "http://127.0.0.1:8000", limit: int | None = None,
                   concurrency: int = 32, as_json: bool = False) -> None:
    """Send a day of transactions from the event logs through the scoring service."""
    import typer

    from release.core.settings import paths, scoring_token

    try:
        d = dt.date.fromisoformat(day)
        if rate < 0 or concurrency < 1:
            raise ValueError(f"--rate must be >= 0 and --concurrency >= 1; got {rate:g} and {concurrency}")
        bodies = day_requests(paths().events, d, limit)
    except (ValueError, FileNotFoundError) as e:
        typer.echo(f"error: {e}", err=True)
        raise typer.Exit(2) from None
    res = asyncio.run(replay(url, bodies, rate=rate, concurrency=concurrency, token=scoring_token()))
    s = res.summary()
    if as_json:
        typer.echo(json.dumps(s, indent=2))
    else:
        def ms(v: float | None) -> str:
            return "n/a" if v is None else f"{v:.2f} ms"

        typer.echo(f"replayed {s['sent']:,} transactions of {day} in {s['seconds']:.1f}s "
                   f"({s['throughput_rps']} req/s): {s['ok']:,} ok, {s['failed']:,} failed; latency p50 "
                   f"{ms(s['p50_ms'])}, p99 {ms(s['p99_ms'])}; served by {s['served_by']}; "
                   f"decisions {s['decisions']}; schedule slipped at most {ms(s['max_schedule_slip_ms'])}")
        if res.failed == len(res.answers):
            typer.echo(f"error: no request was answered; is the scoring service running at {url}?", err=True)
    raise typer.Exit(1 if res.failed else 0)
