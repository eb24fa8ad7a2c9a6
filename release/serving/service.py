"""The scoring service (``fraudcd serve``): scores a transaction and answers allow or block.

How a request is served::

    POST /score {tx_id, ts, card_id, card_country, merchant_id, merchant_country, merchant_category, amount}
      -> point-in-time features (release.data.online_features: in-memory card and merchant history, and the
         day's risk-feature tables, prepared ahead in the background)
      -> route: the card's bucket (release.rollout.ramp.card_bucket) < ramp share -> candidate, else production
      -> the serving model's score >= its threshold for the merchant (merchant's own, else global) -> block,
         unless the seeded exploration draw lets a would-be block through (logged with its propensity)
      -> the decision journaled (release.serving.decision_log: the answer waits for what ``durability`` says)
      <- {decision, model_id, score, threshold, exploration, propensity, ...}
      -> off the critical path: the other model scores the same features in a background worker
         (shadow); then the decision, with both scores, is appended to the decision log.

Where the work runs, so that the event loop only reads requests and writes answers (and no request
waits for work that is not its own):

- the event loop (uvicorn): HTTP, authentication and the body's limits; then it hands the request to
  the scoring pool and goes on reading and answering other requests. ``POST /score`` is read and
  answered by the service's own HTTP protocol (``score_protocol``: uvicorn's httptools protocol, without
  the ASGI cycle for this one route: the same admission check, status, body and headers as the ASGI route,
  the answer's head and body in one write, the answers of a burst back on the loop with one wake-up;
  ~60 us of the loop's time per request here against ~160 us through ASGI). Every other route, and
  ``POST /score`` under another server (a test client), goes through the ASGI gate (``_Gate``) and
  FastAPI. Every answer carries ``Server-Timing: app;dur=<ms>``, the time from its arrival in the app to
  its answer, the wait for the pool included.
- the scoring pool (``scoring_threads``, default 1): a ThreadPoolExecutor of the service's own, with
  ``loop.run_in_executor`` from an ``async`` route rather than a sync route in Starlette's shared
  thread pool: its size is the service's to set (Starlette's pool is shared by every sync route and
  dependency, 40 threads), and the wait for the journal's fsync stays an ``await`` on the loop instead
  of holding a pool thread. It decides a request: parsing and validation of the body, features, the
  serving model (LightGBM's single-row fast path, keeping the GIL for its ~40 us), the journal write,
  the hand-off to the shadow queue.
  What requests share (the retry cache, the event clock, the card and merchant history, counters) is
  read and changed in one step under one lock with no I/O under it; a copy of a request being decided
  in another thread (the same tx_id) waits for that decision. Why one thread by default: the work is
  Python under the GIL, so a second thread adds no CPU, only hand-offs, and one thread decides requests
  in arrival order (a card's history as offline sees it). More threads (up to 32) let a request go past
  another held up in its serving model (a slow candidate on a ramp).
- the shadow worker: the other model's scores, in batches of what is queued within 10 ms (one
  booster call and one wake-up per batch, not per request), then the complete records to the
  decision log; a batch waits for a pause in the answers (at most 50 ms), as the decision log's batch
  files do. Its queue is bounded (``shadow_queue``):
  full, the shadow score is dropped (counted, logged as ``shadow = dropped``), never waited for.
- the risk-table preparer (release.data.online_features): the tables of the service clock's day (before
  the service listens), the day before and the next day (long before it begins), refreshed when their
  last input (the disputes partition of the day before) changes (checked every ``risk_refresh_ms``);
  card and merchant histories are pruned there too, a chunk at a time. A request of a day whose
  tables are not ready (the clock jumped, a preparation failed or is still running) is not kept
  waiting: 503 with the reason and ``Retry-After: 1``, nothing recorded (a client or its stand-in
  processing decides; a retry once they are ready is decided as new). It is not scored on another
  day's tables: the decision log has no column to say so, and a decision on features other than the
  offline definition's would be logged as if it were.
- the deployment watcher: polls the state store's audit log every ``reload_poll_ms`` (every change
  that moves money writes an audit row in the same transaction, so the last audit id is a version
  counter); on a new version it loads a new immutable ``Deployment`` snapshot (production model and
  thresholds, candidate and thresholds, ramp state and share) and swaps the reference. A request reads
  the reference once, so it finishes on the snapshot it started with; no restart, no dropped request.
  Models are loaded once per id (ids are immutable content hashes). A rollback is served within
  ``reload_poll_ms`` plus a load (a few ms) of its commit, whatever the traffic.
- the decision log's journal committer and batch writer (release.serving.decision_log).

A candidate that fails to score a request it was routed (an exception) falls back to production's
decision; the failure is logged and counts toward the error-rate guardrail.

One process: the feature history is in this process's memory (see online_features for what that
means at scale).

What a request must be (anything else is refused before it touches the history, the clock or the log):

- authenticated: ``Authorization: Bearer <token>``, tokens configured under ``auth`` in
  config/service.yaml, each read from the environment variable it names (never written in the file).
  ``POST /score`` needs the ``scoring`` role, ``/state`` and the docs (``/docs``, ``/redoc``,
  ``/openapi.json``) need ``operator``; ``/healthz`` is open. 401 without a known token, 403 without
  the role. Authentication is off only with ``auth: {enabled: false}`` written out, and the service
  then says so in a warning at start. The token's name is recorded with each decision (``client``).
- a JSON object (``Content-Type: application/json``) of at most ``max_body_bytes``; ids of at most
  128 characters (or 64-bit integers); an amount that is a finite JSON number (a string such as
  "12.5" or a boolean is not coerced); every field named, no other field. 422 naming the field, what is
  allowed and what was given.
- timed near the service's clock: ``ts`` within ``request_time`` of it (the latest accepted
  transaction time for replays of simulated days, or this machine's clock; see RequestTimeConfig). A
  year-2200 request is a 422, so it cannot age every card's history out of its windows.
- idempotent on its content: a retried tx_id with the same body gets the first answer again
  (``"retry": true``), is not counted twice in the history and not logged twice; the same tx_id with
  another body is a 409 (the first answer stands). Remembered for the last 200,000 transactions.
"""
from __future__ import annotations

import asyncio
import collections
import contextlib
import contextvars
import ctypes
import gc
import datetime as dt
import hashlib
import json
import logging
import math
import os
import queue
import re
import threading
import time
from collections import OrderedDict
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, Literal, Mapping

import numpy as np
import orjson
import pandas as pd
from pydantic import (AfterValidator, AwareDatetime, BaseModel, BeforeValidator, ConfigDict, Field, PlainValidator,
                      StrictStr, ValidationError, WithJsonSchema, model_validator)
from pydantic_core import PydanticCustomError

from release.core.config import MAX_SHOWN_CHARS, load_yaml_model, shown
from release.data.features import feature_columns
from release.data.training_set import model_settings
from release.data.online_features import DAY, MICROS_PER_S, OnlineFeatures, epoch_us
from release.rollout.ramp import PAUSED, RAMPING, card_bucket

log = logging.getLogger("fraudcd.service")
_EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.timezone.utc)


# ---- configuration ------------------------------------------------------------------------------------

class DecisionLogConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")
    flush_every: int = Field(1000, ge=1)
    flush_ms: int = Field(200, ge=1, le=10_000)
    compact_after_s: float | None = Field(600, ge=0)  # merge batch files older than this; null: never
    # when the decision journal cannot be written (a full disk): refuse with 503, or answer flagged unlogged
    on_failure: Literal["fail_closed", "keep_answering"] = "fail_closed"
    # what an answer waits for: write (the journal line is with the operating system: survives the
    # service being killed) or fsync (on disk: survives power loss too, at tens of ms of p99 here)
    durability: Literal["write", "fsync"] = "write"


class RequestTimeConfig(BaseModel):
    """How far a request's ``ts`` may lie from the service's clock (further: 422, nothing touched).

    ``clock: event``: the service's clock is the latest transaction time it has accepted (at start: the
    seed day's midnight, then the latest time resumed from the decision log); for replays of simulated
    days, whose times are not today's. A request may move it forward by at most ``max_ahead_seconds``
    at a time. ``clock: wall``: this machine's UTC clock; for live traffic (e.g. ``max_ahead_seconds: 300``)."""

    model_config = ConfigDict(extra="forbid")
    clock: Literal["event", "wall"] = "event"
    max_ahead_seconds: int = Field(86_400, ge=1, le=366 * 86_400)
    max_behind_seconds: int = Field(86_400, ge=1, le=366 * 86_400)


SCORING, OPERATOR = "scoring", "operator"
MIN_TOKEN_CHARS = 16


class TokenConfig(BaseModel):
    """One bearer token: who holds it (``name``, recorded as the subject), what it may do (``roles``:
    ``scoring`` calls POST /score; ``operator`` reads /state, /docs and /openapi.json), and where its
    secret is: ``env`` names the environment variable that holds it (the way to configure a real token);
    ``value`` is the token itself, for tests only (never commit a real one)."""

    model_config = ConfigDict(extra="forbid")
    name: str = Field(min_length=1, max_length=64)
    roles: list[Literal["scoring", "operator"]] = Field(min_length=1)
    env: str | None = Field(None, min_length=1, max_length=128)
    value: str | None = Field(None, repr=False)

    @model_validator(mode="after")
    def _one_source(self):
        if (self.env is None) == (self.value is None):
            raise ValueError(f"the token {self.name!r} needs exactly one of env (the name of the environment "
                             "variable holding it) or value (tests only); got "
                             + ("both" if self.env is not None else "neither"))
        return self


def _default_tokens() -> list[TokenConfig]:
    return [TokenConfig(name="scoring-client", roles=[SCORING], env="FRAUDCD_SCORING_TOKEN"),
            TokenConfig(name="operator", roles=[OPERATOR], env="FRAUDCD_OPERATOR_TOKEN")]


class AuthError(ValueError):
    """Authentication is on but its tokens cannot be used (unset variable, too short, duplicated)."""


@dataclass(frozen=True)
class Subject:
    """Who sent a request: the token's name and roles (or the anonymous caller when auth is off)."""

    name: str
    roles: frozenset[str]


ANONYMOUS = Subject("anonymous (auth off)", frozenset({SCORING, OPERATOR}))


class AuthConfig(BaseModel):
    """Bearer tokens (``Authorization: Bearer <token>``). On unless ``enabled: false`` is written out."""

    model_config = ConfigDict(extra="forbid")
    enabled: bool = True
    tokens: list[TokenConfig] = Field(default_factory=_default_tokens)

    def resolve(self, environ: Mapping[str, str] | None = None) -> dict[bytes, Subject] | None:
        """The tokens by their SHA-256 digest (a request's token is hashed and looked up: no comparison
        of secrets), or None when authentication is off. Raises AuthError naming the token and what to do."""
        if not self.enabled:
            return None
        environ = os.environ if environ is None else environ
        off = "or turn authentication off explicitly with `auth: {enabled: false}` (a demo on loopback only)"
        out: dict[bytes, Subject] = {}
        for i, t in enumerate(self.tokens):
            where = f"auth.tokens[{i}] ({t.name!r})"
            secret = t.value if t.value is not None else environ.get(t.env, "")
            if not secret:
                raise AuthError(f"{where}: the environment variable {t.env} is not set or empty. Set it to the token "
                                f"clients send as `Authorization: Bearer <token>`, {off}.")
            if len(secret) < MIN_TOKEN_CHARS or secret != secret.strip():
                raise AuthError(f"{where}: a token must be at least {MIN_TOKEN_CHARS} characters without surrounding "
                                f"spaces; got {len(secret)} characters. Generate one with "
                                "`python -c 'import secrets; print(secrets.token_urlsafe(32))'`.")
            digest = hashlib.sha256(secret.encode()).digest()
            if digest in out:
                raise AuthError(f"{where}: the same token as {out[digest].name!r}; each holder needs its own token "
                                "(the token names who sent a request).")
            out[digest] = Subject(t.name, frozenset(t.roles))
        if not any(SCORING in s.roles for s in out.values()):
            raise AuthError(f"auth.tokens: no token has the role {SCORING!r}, so nobody could call POST /score; "
                            f"got roles {sorted({r for s in out.values() for r in s.roles})}. Add one, {off}.")
        return out


class ServiceConfig(BaseModel):
    """config/service.yaml. Field names are the YAML keys."""

    model_config = ConfigDict(extra="forbid")
    exploration: float = Field(0.05, ge=0, lt=1)  # see config/service.yaml and benchmarks/bench_counterfactual.py
    exploration_seed: int = 7
    reload_poll_ms: int = Field(100, ge=10, le=1000)
    shadow_queue: int = Field(10_000, ge=1)
    decision_log: DecisionLogConfig = DecisionLogConfig()
    controller_poll_ms: int = Field(1000, ge=50)
    maturity_days: int | None = Field(None, ge=1, le=180)  # default: the production model's snapshot's
    request_time: RequestTimeConfig = RequestTimeConfig()
    auth: AuthConfig = AuthConfig()
    max_body_bytes: int = Field(16_384, ge=1024, le=1_048_576)
    # threads that decide requests, off the event loop (see "Where the work runs" above). 1: in arrival
    # order, one at a time; more let a request pass one held up in a slow serving model
    scoring_threads: int = Field(1, ge=1, le=32)
    # how often the risk-feature tables' inputs are checked (a new or changed disputes partition re-finishes
    # the day's table in the background) and the next day's table is looked after
    risk_refresh_ms: int = Field(1000, ge=10, le=600_000)


def load_service_config(path: Path | None = None) -> ServiceConfig:
    from release.core.settings import config_dir

    return load_yaml_model(path or config_dir() / "service.yaml", ServiceConfig)


# ---- the request ----------------------------------------------------------------------------------------

MAX_ID_CHARS = 128
_INT64 = 2 ** 63


_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")


def _no_control(v: str) -> str:
    """Text from a client reaches operators' terminals (``ramp diffs``, ``thresholds show``): no control
    characters (NUL, newline, ESC sequences)."""
    m = _CONTROL.search(v)
    if m:
        raise PydanticCustomError("control_character", "must not contain control characters (found {char} at "
                                  "position {pos})", {"char": repr(m.group()), "pos": m.start()})
    return v


def _ident(v: Any) -> str:
    """An id is a string of 1..MAX_ID_CHARS printable characters or a (64-bit) integer; kept as a string."""
    if isinstance(v, str):
        if 1 <= len(v) <= MAX_ID_CHARS:
            return _no_control(v)
        raise PydanticCustomError("ident_length", "must be a string of 1 to {max} characters or an integer id; "
                                  "got a string of {n} characters", {"max": MAX_ID_CHARS, "n": len(v)})
    if isinstance(v, int) and not isinstance(v, bool):
        if -_INT64 <= v < _INT64:
            return str(v)
        raise PydanticCustomError("ident_range", "an integer id must fit in 64 bits (|id| < 2**63)")
    raise PydanticCustomError("ident_type", "Input should be a string or an integer id (got {kind})",
                              {"kind": type(v).__name__})


Ident = Annotated[str, PlainValidator(_ident),
                  WithJsonSchema({"anyOf": [{"type": "string", "minLength": 1, "maxLength": MAX_ID_CHARS},
                                            {"type": "integer"}], "description": "string or integer id"})]


def _iso_time(v: Any) -> Any:
    """A time is an ISO 8601 string (or a datetime, from Python): a number is not taken as epoch seconds."""
    if isinstance(v, (str, dt.datetime)):
        return v
    raise PydanticCustomError("ts_type", "must be an ISO 8601 time with a timezone, e.g. 2026-03-01T10:00:00Z "
                              "(got {kind}; numbers are not read as epoch seconds)", {"kind": type(v).__name__})


class ScoreRequest(BaseModel):
    """One transaction to score. Unknown fields are refused (a misspelt field is a bug, not a hint);
    nothing is coerced (a string or a boolean is not an amount)."""

    model_config = ConfigDict(extra="forbid")
    tx_id: Ident
    ts: Annotated[AwareDatetime, BeforeValidator(_iso_time)] = Field(
        description="when the transaction happened, with a timezone (ISO 8601)")
    card_id: Ident
    card_country: Annotated[StrictStr, AfterValidator(_no_control)] = Field(min_length=2, max_length=3)
    merchant_id: Annotated[StrictStr, AfterValidator(_no_control)] = Field(min_length=1, max_length=64)
    merchant_country: Annotated[StrictStr, AfterValidator(_no_control)] = Field(min_length=2, max_length=3)
    merchant_category: Annotated[StrictStr, AfterValidator(_no_control)] = Field(min_length=1, max_length=64)
    amount: float = Field(gt=0, le=1e9, allow_inf_nan=False, strict=True,
                          description="a JSON number in (0, 1e9]; a string or a boolean is refused")


# ---- the deployment snapshot --------------------------------------------------------------------------

class SingleRowPredictor:
    """One booster's single-row fast path (LightGBM's ``LGBM_BoosterPredictForMatSingleRowFast``): the
    prediction settings are parsed once, not per call, and the row goes in through a buffer allocated
    once. The same numbers as ``Booster.predict(row, num_threads=1)`` (tested bit for bit), for about
    40 us a row here instead of about 100. A lock guards the buffers (LightGBM serializes the
    single-row predictions of one booster anyway)."""

    def __init__(self, booster: Any, n_features: int):
        from lightgbm.basic import _LIB, _c_str, _safe_call

        self.booster = booster  # the fast configuration points into it: it must live as long
        self._lib, self._check = _LIB, _safe_call
        # called through PyDLL: the GIL is kept for the call (tens of us). Released (ctypes' CDLL), the thread
        # must take it back afterwards from whichever thread got it meanwhile: up to the interpreter's
        # switch interval (5 ms) when the event loop is busy, a hand-off per prediction
        self._fn = _held_gil_lib(_LIB).LGBM_BoosterPredictForMatSingleRowFast
        self._fn.restype = ctypes.c_int
        self._handle = ctypes.c_void_p()
        # normal prediction (probability), from the first iteration, all iterations (Booster.predict's
        # default for a model loaded from text, whose best_iteration is -1), float64 rows, one thread
        _safe_call(_LIB.LGBM_BoosterPredictForMatSingleRowFastInit(
            booster._handle, ctypes.c_int(0), ctypes.c_int(0), ctypes.c_int(-1), ctypes.c_int(1),
            ctypes.c_int32(n_features), _c_str("num_threads=1"), ctypes.byref(self._handle)))
        self._row = np.zeros(n_features, dtype=np.float64)
        self._out = np.zeros(max(1, booster.num_model_per_iteration()), dtype=np.float64)
        self._row_ptr = self._row.ctypes.data_as(ctypes.c_void_p)
        self._out_ptr = self._out.ctypes.data_as(ctypes.POINTER(ctypes.c_double))
        self._len = ctypes.c_int64(0)
        self._lock = threading.Lock()

    def __call__(self, values: list[float]) -> float:
        with self._lock:
            self._row[:] = values
            self._check(self._fn(self._handle, self._row_ptr, ctypes.byref(self._len), self._out_ptr))
            return float(self._out[0])

    def __del__(self):
        handle = getattr(self, "_handle", None)
        if handle is not None and handle.value:
            self._lib.LGBM_FastConfigFree(handle)
            self._handle = None


_PYDLLS: dict[str, Any] = {}


def _held_gil_lib(lib: Any) -> Any:
    """The same shared library, its functions called without releasing the GIL."""
    if lib._name not in _PYDLLS:
        _PYDLLS[lib._name] = ctypes.PyDLL(lib._name)
    return _PYDLLS[lib._name]


def single_row_predictor(booster: Any, n_features: int) -> SingleRowPredictor | None:
    """The fast path for ``booster``, or None where this LightGBM has none (``Booster.predict`` then)."""
    try:
        return SingleRowPredictor(booster, n_features)
    except Exception:  # noqa: BLE001 - an older LightGBM: the plain predict is correct, only slower
        log.warning("LightGBM's single-row fast path is not available; scoring with Booster.predict",
                    exc_info=True)
        return None


@dataclass(frozen=True)
class Scorer:
    """One model with its live thresholds. Two boosters: the request path's and the shadow worker's,
    so the request threads and the shadow worker never wait for each other; each with its single-row
    fast path."""

    model_id: str
    features: tuple[str, ...]
    booster: Any
    shadow_booster: Any
    global_threshold: float
    per_merchant: Mapping[str, float]
    predict: Any = None  # SingleRowPredictor of booster (None: booster.predict)
    shadow_predict: Any = None  # ... of shadow_booster

    def threshold(self, merchant_id: str) -> tuple[float, str]:
        t = self.per_merchant.get(merchant_id)
        return (t, "merchant") if t is not None else (self.global_threshold, "global")

    def score_many(self, fs: list[dict[str, float]], shadow: bool = False) -> list[float]:
        """Scores of several rows: one call to the booster (a few rows: one at a time, the fast path)."""
        if len(fs) < 4:
            return [self.score(f, shadow) for f in fs]
        rows = np.array([[f[n] for n in self.features] for f in fs], dtype=np.float64)
        return (self.shadow_booster if shadow else self.booster).predict(rows, num_threads=1).tolist()

    def score(self, f: dict[str, float], shadow: bool = False) -> float:
        values = [f[n] for n in self.features]
        fast = self.shadow_predict if shadow else self.predict
        if fast is not None:
            return fast(values)
        row = np.array([values], dtype=np.float64)
        # one thread: OpenMP start-up costs milliseconds on a single row
        return float((self.shadow_booster if shadow else self.booster).predict(row, num_threads=1)[0])


@dataclass(frozen=True)
class Deployment:
    version: int
    state: str
    pct: float
    release_id: str | None
    production: Scorer | None
    candidate: Scorer | None
    loaded_at: str
    problems: tuple[str, ...] = ()

    def routed(self, card_id: str) -> bool:
        """Sticky by card: the same bucket function as the replayed ramp (release.rollout.ramp.card_bucket)."""
        if self.candidate is None or self.state not in (RAMPING, PAUSED) or self.pct <= 0:
            return False
        return bool(card_bucket(np.array([card_id], dtype=object))[0] < round(self.pct * 100))

    def summary(self) -> dict:
        def s(x: Scorer | None):
            return None if x is None else {"model_id": x.model_id, "global_threshold": x.global_threshold,
                                           "merchant_thresholds": len(x.per_merchant)}
        return {"version": self.version, "state": self.state, "pct": self.pct, "release_id": self.release_id,
                "production": s(self.production), "candidate": s(self.candidate),
                "shadow": self.candidate is not None, "loaded_at": self.loaded_at, "problems": list(self.problems)}


@dataclass(slots=True)  # not frozen: a frozen dataclass sets each field through object.__setattr__ (us a request)
class _Admitted:
    """A request admitted for a decision (ScoringService._admit): its transaction is in the history now."""

    d: Deployment
    req: Any
    client: str | None
    t0: float
    tx_id: str
    ts_us: int
    card: str
    merchant: str
    known: bool
    f: dict
    fp: bytes
    claim: tuple | None


class DeploymentRefused(ValueError):
    """The deployment state in the store cannot be served (e.g. production needs an unknown feature)."""


class DeploymentLoader:
    """Reads the deployment state from the state store; keeps loaded boosters by (immutable) model id."""

    def __init__(self):
        self._models: dict[str, tuple[tuple[str, ...], Any, Any, Any, Any]] = {}

    def version(self) -> int:
        """The last audit id, read without taking the store's write lock (a plain autocommit read)."""
        from release.state.store import engine

        raw = engine().raw_connection()
        try:
            cur = raw.cursor()
            cur.execute("SELECT max(id) FROM audit")
            v = cur.fetchone()[0]
            cur.close()
            raw.rollback()
        finally:
            raw.close()
        return int(v or 0)

    def _scorer(self, model, thresholds) -> Scorer:
        if model.id not in self._models:
            text = model.text()
            from release.state.registry import load_booster

            b1, b2 = load_booster(text), load_booster(text)
            n = len(model.features)
            self._models[model.id] = (tuple(model.features), b1, b2, single_row_predictor(b1, n),
                                      single_row_predictor(b2, n))
        feats, b1, b2, p1, p2 = self._models[model.id]
        g, per = thresholds
        return Scorer(model_id=model.id, features=feats, booster=b1, shadow_booster=b2, global_threshold=float(g),
                      per_merchant={str(k): float(v) for k, v in per.items()}, predict=p1, shadow_predict=p2)

    def load(self) -> Deployment:
        from release.state import approvals, registry
        from release.rollout import ramp

        version = self.version()  # first: a change landing during the load is picked up by the next poll
        st = ramp.current()
        problems = []
        prod_model = registry.tagged("production")
        production = None
        allowed = feature_columns(model_settings(prod_model.snapshot_hash)[0]) if prod_model is not None else []
        if prod_model is None:
            problems.append("no production model is tagged in the registry")
        elif [f for f in prod_model.features if f not in allowed]:
            # refuse the snapshot: the watcher keeps serving the last good one (at start: no start)
            unknown = [f for f in prod_model.features if f not in allowed]
            raise DeploymentRefused(f"The production model {prod_model.id} needs features the service does not "
                                    f"compute: {unknown}; allowed: {allowed}.")
        else:
            live = approvals.live_thresholds(prod_model.id)
            if live is None:
                problems.append(f"the production model {prod_model.id} has no approved thresholds")
            else:
                production = self._scorer(prod_model, live)
        candidate = None
        if st["state"] in (ramp.SHADOW, ramp.RAMPING, ramp.PAUSED) and st["candidate_model_id"]:
            live = approvals.live_thresholds(st["candidate_model_id"])
            if live is None:
                problems.append(f"the candidate {st['candidate_model_id']} has no approved thresholds: not scored")
            else:
                candidate = self._scorer(registry.get_model(st["candidate_model_id"]), live)
        return Deployment(version=version, state=st["state"], pct=float(st["pct"]), release_id=st["release_id"],
                          production=production, candidate=candidate,
                          loaded_at=dt.datetime.now(dt.timezone.utc).isoformat(timespec="milliseconds"),
                          problems=tuple(problems))


# ---- the service --------------------------------------------------------------------------------------

@dataclass
class Counters:
    requests: int = 0
    retries: int = 0
    served_by_candidate: int = 0
    shadow_scored: int = 0
    shadow_dropped: int = 0
    shadow_errors: int = 0
    candidate_errors: int = 0
    reloads: int = 0
    reload_errors: int = 0
    conflicts: int = 0  # a reused tx_id with another body (409)
    refused_times: int = 0  # a ts too far from the service's clock (422)
    not_ready: int = 0  # the day's risk-feature tables were not ready yet (503, nothing touched)
    started_at: str = field(default_factory=lambda: dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"))


SHADOW_BATCH = 256  # shadow scores taken from the queue and scored together at most
SHADOW_LINGER_S = 0.01  # ... gathered for this long after the first of a batch
_ASK = object()  # acknowledged(): ask the journal what the answer waits for


def _explore_draw(seed: int, tx_id: str) -> float:
    """A uniform draw in [0, 1) that depends only on the seed and the transaction id."""
    h = hashlib.blake2b(f"{seed}:{tx_id}".encode(), digest_size=8).digest()
    return int.from_bytes(h, "big") / 2.0 ** 64


def _fingerprint(ts_us: int, card_id: str, card_country: str, merchant_id: str, merchant_country: str,
                 merchant_category: str, amount: float) -> bytes:
    """What a transaction is, apart from its id: a retry must match it exactly (the same instant, ids,
    countries, category and amount; 7 and "7" are the same id, "Z" and "+00:00" the same time)."""
    key = repr((int(ts_us), str(card_id), str(card_country), str(merchant_id), str(merchant_country),
                str(merchant_category), float(amount)))
    return hashlib.blake2b(key.encode(), digest_size=16).digest()


def _iso(us: int) -> str:
    return (_EPOCH + dt.timedelta(microseconds=us)).isoformat().replace("+00:00", "Z")


def _span(seconds: int) -> str:
    for unit, n in (("day", 86_400), ("hour", 3600), ("minute", 60)):
        if seconds % n == 0:
            k = seconds // n
            return f"{k} {unit}{'s' if k != 1 else ''}"
    return f"{seconds} seconds"


def _bad(field_name: str, problem: str, got: Any) -> dict:
    """A 422 body in the shape of the request validation errors."""
    return {"error": f"Bad request: {field_name}: {problem} (got {shown(got)})",
            "fields": [{"field": field_name, "problem": problem, "got": _json_safe(got)}]}


def _json_safe(v: Any) -> Any:
    """A value echoed back in an error: as it was if JSON can carry it and it is short, else its repr, cut."""
    if v is None or isinstance(v, bool) or isinstance(v, int) and abs(v) < 2 ** 53:
        return v
    if isinstance(v, float) and math.isfinite(v):
        return v
    if isinstance(v, str) and len(v) <= MAX_SHOWN_CHARS:
        return v
    return shown(v)


def default_seed_day(events: Path) -> dt.date:
    """The day after the last day of transactions in the event logs (the service continues from there)."""
    from release.core.io import location, partition_days

    days = partition_days(location(events) / "transactions")
    if not days:
        raise FileNotFoundError(f"No transactions in {location(events) / 'transactions'}: the service seeds its card "
                                "and merchant history from the event logs. Simulate or ingest some first.")
    return days[-1] + dt.timedelta(days=1)


class ScoringService:
    """Everything behind the HTTP routes: deployment snapshot, features, shadow worker, decision log
    (``log_folder``: its folder, default FRAUDCD_HOME/decision_log; the closed loop's world decides its days
    with a log of its own, release/orchestration/closed_loop.py)."""

    def __init__(self, config: ServiceConfig | None = None, seed_day: dt.date | None = None,
                 controller: bool = False, log_folder: Path | None = None):
        from release.serving.decision_log import DecisionLog
        from release.core.settings import paths

        self.config = config or load_service_config()
        self.events = paths().events
        self.seed_day = seed_day or default_seed_day(self.events)
        self.loader = DeploymentLoader()
        self.deployment = self.loader.load()
        self.counters = Counters()
        self.log = DecisionLog(log_folder, flush_every=self.config.decision_log.flush_every,
                               flush_ms=self.config.decision_log.flush_ms,
                               compact_after_s=self.config.decision_log.compact_after_s,
                               on_failure=self.config.decision_log.on_failure,
                               durability=self.config.decision_log.durability, busy=self.answering)
        self.log.recover()  # after a hard stop: journaled decisions no batch file holds, before reading the log
        self.features = OnlineFeatures(self.events, self.seed_day, *self._feature_settings())
        self._seen: OrderedDict[str, tuple[bytes, dict]] = OrderedDict()  # tx_id -> (body fingerprint, answer)
        self._undo: dict[str, tuple] = {}  # request id -> what to forget if its journal fsync fails (fail_closed)
        rt = self.config.request_time
        self._ahead_us = rt.max_ahead_seconds * MICROS_PER_S
        self._behind_us = rt.max_behind_seconds * MICROS_PER_S
        self._event_clock_us = epoch_us(pd.Timestamp(self.seed_day, tz="UTC"))  # clock: event (see _now_us)
        self.refused_on_resume = 0
        self.resumed_rows = self._resume_from_log()
        self._queue: queue.Queue = queue.Queue(maxsize=self.config.shadow_queue)
        # requests are decided in the scoring pool (start()); what they share is changed under this lock:
        # the retry cache, the event clock, the card and merchant history, the counters
        self._lock = threading.Lock()
        self._claims: dict[str, tuple[bytes, Future]] = {}  # tx_id -> (fingerprint, its answer) while deciding
        self.pool: ThreadPoolExecutor | None = None
        self.in_flight = 0  # requests handed to the pool and not yet back (the event loop's count)
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._controller = None
        self._want_controller = controller

    def _feature_settings(self):
        """(label maturity, feature settings) of the production model's snapshot: live features are
        computed as its training rows were. The service configuration may override the maturity."""
        from release.state import registry

        prod = registry.tagged("production")
        features, maturity = model_settings(prod.snapshot_hash if prod else None)
        if self.config.maturity_days is not None:
            maturity = self.config.maturity_days
        return maturity, features

    def answering(self) -> bool:
        """Requests handed to the scoring pool and not yet answered: work behind the answers waits."""
        return self.in_flight > 0

    def _resume_from_log(self) -> int:
        """After a restart: the transactions this service already scored (on or after the seed day) go
        back into the feature history, and their answers into the retry cache. Each is held to the request
        time bound a request meets now, in time order (the event clock moves as it did): a row an older
        version accepted outside it (e.g. a year-2200 time) keeps its cached answer but stays out of the
        history, with a warning."""
        from release.serving.decision_log import read_decision_log

        df = read_decision_log(self.log.folder)
        if df.empty:
            return 0
        df = df[df["ts"] >= pd.Timestamp(self.seed_day, tz="UTC")].drop_duplicates("tx_id", keep="first")
        df = df.sort_values("ts", kind="stable")
        ts_us = pd.to_datetime(df["ts"], utc=True).astype("datetime64[us, UTC]").astype("int64").to_numpy()
        keep = np.ones(len(df), dtype=bool)
        for i, t in enumerate(ts_us.tolist()):
            if self._time_problem(t, behind=False) is None:  # a logged time long past is history, not a problem
                self._advance_clock(t)
            else:
                keep[i] = False
        self.refused_on_resume = int((~keep).sum())
        if self.refused_on_resume:
            bad = df.loc[~keep, "ts"]
            log.warning("resuming from %s: %d logged transaction(s) lie outside the request time bound "
                        "(%s .. %s) and stay out of the feature history", self.log.folder, self.refused_on_resume,
                        bad.min(), bad.max())
        self.features.add_many(df.loc[keep, ["ts", "card_id", "merchant_id", "amount"]])
        for r, t in zip(df.itertuples(index=False), ts_us.tolist()):
            self._remember(r.tx_id, _fingerprint(t, r.card_id, r.card_country, r.merchant_id, r.merchant_country,
                                                 r.merchant_category, r.amount), self._response(r._asdict()))
        return int(keep.sum())

    def _remember(self, tx_id: str, fingerprint: bytes, response: dict) -> None:
        self._seen[tx_id] = (fingerprint, response)
        if len(self._seen) > 200_000:
            self._seen.popitem(last=False)

    # ---- the request time bound -----------------------------------------------------------------------

    def _now_us(self) -> int:
        if self.config.request_time.clock == "wall":
            return time.time_ns() // 1000
        return self._event_clock_us

    def _advance_clock(self, ts_us: int) -> None:
        if ts_us > self._event_clock_us:
            if ts_us // DAY != self._event_clock_us // DAY:  # a new day: its next day's tables, at once
                self.features.wake()
            self._event_clock_us = ts_us

    def _time_problem(self, ts_us: int, behind: bool = True) -> str | None:
        """None if ``ts_us`` is within the configured bound of the service's clock, else why not."""
        now = self._now_us()
        if (not behind or now - self._behind_us <= ts_us) and ts_us <= now + self._ahead_us:
            return None
        rt = self.config.request_time
        clock = ("this machine's UTC clock" if rt.clock == "wall" else
                 "the latest transaction time accepted")
        return (f"must be within {_span(rt.max_behind_seconds)} before and {_span(rt.max_ahead_seconds)} after "
                f"the service's clock ({clock}, {_iso(now)}; request_time in the service configuration): between "
                f"{_iso(now - self._behind_us)} and {_iso(now + self._ahead_us)}")

    @staticmethod
    def _response(rec: dict) -> dict:
        return {"request_id": rec["request_id"], "tx_id": rec["tx_id"], "decision": rec["action"],
                "model_id": rec["model_id"], "served_by": rec["served_by"], "score": rec["score"],
                "threshold": rec["threshold"], "threshold_source": rec["threshold_source"],
                "exploration": bool(rec["explored"]), "propensity": rec["propensity"],
                "deployment_version": int(rec["deployment_version"])}

    # ---- lifecycle ----------------------------------------------------------------------------------

    def start(self) -> None:
        """The scoring pool, the risk-feature tables (the clock's day now, before the service listens; the
        others in the background), the decision log's writers, the deployment watcher, the shadow worker."""
        self.pool = ThreadPoolExecutor(max_workers=self.config.scoring_threads, thread_name_prefix="scoring")
        self.features.start_preparing(self._now_us, behind_days=1, refresh_s=self.config.risk_refresh_ms / 1000)
        self.log.start()
        for target, name in ((self._watch, "deployment-watcher"), (self._shadow_worker, "shadow-worker")):
            t = threading.Thread(target=target, name=name, daemon=True)
            t.start()
            self._threads.append(t)
        if self._want_controller:
            from release.rollout.controller import Controller

            self._controller = Controller(poll_s=self.config.controller_poll_ms / 1000).start()

    def stop(self) -> None:
        """Finish the shadow scores already queued, then write every decision still buffered."""
        if self._controller is not None:
            self._controller.stop()
        if self.pool is not None:
            self.pool.shutdown(wait=True)  # the requests already handed over are decided (and logged)
        self._stop.set()
        self._queue.put(None)
        for t in self._threads:
            t.join(timeout=30)
        self.features.close()
        self.log.close()

    def _watch(self) -> None:
        poll = self.config.reload_poll_ms / 1000
        refused = None  # a version whose snapshot was refused: not retried until the next change
        while not self._stop.wait(poll):
            try:
                v = self.loader.version()
                if v != self.deployment.version and v != refused:
                    new = self.loader.load()
                    old, self.deployment = self.deployment, new  # one reference swap
                    self.counters.reloads += 1
                    log.warning("deployment v%s -> v%s: %s at %g%%, production %s, candidate %s", old.version,
                                new.version, new.state, new.pct, new.production and new.production.model_id,
                                new.candidate and new.candidate.model_id)
            except DeploymentRefused:
                refused = v
                self.counters.reload_errors += 1
                log.exception("the deployment state of version %s cannot be served; still serving version %s",
                              v, self.deployment.version)
            except Exception:  # noqa: BLE001 - keep serving the last good snapshot; retry at the next poll
                self.counters.reload_errors += 1
                log.exception("reloading the deployment state failed; still serving version %s",
                              self.deployment.version)

    def _shadow_worker(self) -> None:
        """The other model's scores, behind the answers: what is queued is taken together (up to
        SHADOW_BATCH, gathered for SHADOW_LINGER_S after the first: a wake-up per batch, not per request,
        so the worker takes the GIL and a core from the answers' threads ten times less often at 1000
        requests/s) and scored in one call per model (the same numbers as one row at a time), then
        appended to the decision log. A failing batch is scored again row by row, so each row's failure is
        its own. The batch waits while answers are in flight (a burst), at most BACKGROUND_PATIENCE_S:
        shadow scores do not take the GIL from answers being decided."""
        from release.serving.decision_log import BACKGROUND_PATIENCE_S, wait_while

        while True:
            batch = [self._queue.get()]
            if batch[0] is not None and self._queue.qsize() < SHADOW_BATCH:
                time.sleep(SHADOW_LINGER_S)
            if batch[0] is not None:  # never while answers are in flight (a burst), within a bound
                wait_while(self.answering, BACKGROUND_PATIENCE_S)
            while len(batch) < SHADOW_BATCH:
                try:
                    batch.append(self._queue.get_nowait())
                except queue.Empty:
                    break
            groups: dict[int, list] = {}
            for item in batch:
                if item is not None:
                    groups.setdefault(id(item[2]), []).append(item)
            for items in groups.values():
                scorer = items[0][2]
                try:
                    scores = scorer.score_many([f for _, f, _, _ in items], shadow=True)
                except Exception:  # noqa: BLE001 - one at a time: each row gets its own outcome
                    scores = None
                for k, (rec, f, _, role) in enumerate(items):
                    try:
                        s = scores[k] if scores is not None else scorer.score(f, shadow=True)
                        t, _ = scorer.threshold(rec["merchant_id"])
                        rec[f"{role}_score"], rec[f"{role}_threshold"], rec[f"{role}_block"] = s, t, s >= t
                        rec["shadow"] = "scored"
                        self.counters.shadow_scored += 1
                    except Exception as e:  # noqa: BLE001 - the decision stands; the failure is on the record
                        rec["shadow"] = "error"
                        self.counters.shadow_errors += 1
                        if role == "candidate":
                            rec["candidate_error"] = f"{type(e).__name__}: {e}"
                    self.log.append(rec)
            if any(item is None for item in batch):
                return

    # ---- one request --------------------------------------------------------------------------------

    def score(self, req: ScoreRequest, client: str | None = None) -> tuple[int, dict]:
        """(HTTP status, body). 200: the answer (a retry of the same body gets the first answer again);
        409: the tx_id was scored with another body; 422: ts too far from the service's clock; 503: no
        production model, or the risk-feature tables of the transaction's day are not ready yet. Only a
        200 that is not a retry touches the history, the clock or the log. ``client``: who sent it (the
        token's name), recorded with the decision. Raises what deciding it raised (a production model that
        fails to score: the transaction is taken back out of the history, so a retry counts it once)."""
        (outcome,) = self.score_many([(req, client)])
        if isinstance(outcome, BaseException):
            raise outcome
        return outcome

    def score_many(self, items: list[tuple[ScoreRequest, str | None]]) -> list:
        """``score`` of each (request, client), in order, as one at a time would: the (status, body) of each, or
        the exception deciding it raised. Runs in the scoring pool (any thread): what requests share is read
        and changed under the service's lock (no I/O under it); the models and the journal write come after.

        The requests are taken in runs: each request of a run is admitted in turn (retries, the time bound,
        the feature tables, its features from the history, which it joins), then the serving model scores the
        run's rows in one call (its trees stay in the CPU's cache: a row costs a fraction of a lone one's), then
        each decision is recorded in turn. A run ends before a tx_id already in it, so that copy is a retry of
        the first, as one at a time. One difference: a decision the journal refuses (fail_closed), or a row no
        model could score (a 500), leaves the history after the rest of its run was admitted (the later rows of
        the run counted it), as a refused fsync does (durability: fsync)."""
        out: list = [None] * len(items)
        i = 0
        while i < len(items):
            run, waits, names = [], [], set()
            while i < len(items) and items[i][0].tx_id not in names:
                req, client = items[i]
                names.add(req.tx_id)
                try:
                    kind, got = self._admit(req, client)
                except Exception as e:  # noqa: BLE001 - this request's outcome; the run goes on
                    kind, got = "answer", e
                if kind == "answer":
                    out[i] = got
                elif kind == "wait":
                    waits.append((i, got))
                else:
                    run.append((i, got))
                i += 1
            for k, outcome in zip((k for k, _ in run), self._decide_run([ctx for _, ctx in run])):
                out[k] = outcome
            for k, (fp, tx_id, deciding) in waits:  # copies decided in another thread (scoring_threads > 1)
                try:
                    out[k] = self._after_wait(fp, tx_id, deciding)
                except Exception as e:  # noqa: BLE001
                    out[k] = e
        return out

    def _admit(self, req: ScoreRequest, client: str | None) -> tuple[str, Any]:
        """One request, under the service's lock: ("answer", (status, body)) if it is answered without a decision
        (a retry, a conflict, a refusal), ("wait", ...) if a copy of it is being decided in another thread, or
        ("decide", _Admitted): its features, with the transaction now in the card's and merchant's history."""
        t0 = time.perf_counter()
        d = self.deployment  # read once: this request finishes on this snapshot
        if d.production is None:
            return "answer", (503, {"error": "Not serving: " + "; ".join(d.problems)})
        tx_id = req.tx_id
        ts_us = epoch_us(req.ts)
        card, merchant = req.card_id, req.merchant_id
        fp = _fingerprint(ts_us, card, req.card_country, merchant, req.merchant_country, req.merchant_category,
                          req.amount)
        claim = None
        with self._lock:
            again = self._seen.get(tx_id)
            deciding = self._claims.get(tx_id) if again is None else None
            if again is None and deciding is None:
                problem = self._time_problem(ts_us)
                if problem is not None:
                    self.counters.refused_times += 1
                    return "answer", (422, _bad("ts", problem, req.ts.isoformat()))
                day = dt.date(1970, 1, 1) + dt.timedelta(microseconds=ts_us)
                tables = self.features.table_nowait(day)  # never waits while the background preparer runs
                if tables is None:
                    self.counters.not_ready += 1
                    return "answer", (503, {"error": "Not serving this transaction yet: "
                                                     + self.features.not_ready_reason(day) + ". Nothing was "
                                                     "recorded; send it again.", "retry_after_s": 1})
                self.counters.requests += 1
                known = self.features.knows_merchant(merchant)
                f = self.features.features_and_add(ts_us, card, req.card_country, merchant, req.merchant_country,
                                                   req.merchant_category, req.amount, tables=tables)
                self._advance_clock(ts_us)
                if self.config.scoring_threads > 1:  # a copy of this request in another thread waits for it
                    claim = self._claims[tx_id] = (fp, Future())
            elif again is not None:
                return "answer", self._again_locked(fp, tx_id, again)
        if deciding is not None:  # the same tx_id is being decided in another thread
            return "wait", (fp, tx_id, deciding)
        return "decide", _Admitted(d, req, client, t0, tx_id, ts_us, card, merchant, known, f, fp, claim)

    def _again_locked(self, fp: bytes, tx_id: str, again: tuple[bytes, dict]) -> tuple[int, dict]:
        """A tx_id already decided: its first answer again (a retry), or 409 if the body differs."""
        if again[0] != fp:
            self.counters.conflicts += 1
            first = again[1]
            return 409, {"error": f"Conflict: tx_id {shown(tx_id)} was already scored with another body (a "
                                  "different time, card, merchant, country, category or amount); a tx_id names "
                                  "one transaction. Resend the same body to get its answer again, or give "
                                  "this transaction its own tx_id.",
                         "tx_id": tx_id, "first_answer": {k: first[k] for k in ("decision", "deployment_version")}}
        self.counters.retries += 1
        return 200, {**again[1], "retry": True}

    def _after_wait(self, fp: bytes, tx_id: str, deciding: tuple[bytes, Future]) -> tuple[int, dict]:
        """A copy of a request another thread was deciding: once decided there, answered as a retry of it."""
        try:
            code, first = deciding[1].result(timeout=30)
        except Exception:  # noqa: BLE001 - it failed: this copy is not decided either
            return 503, {"error": f"Not serving: the first request with tx_id {shown(tx_id)}, sent at the same "
                                  "time, failed; send it again.", "retry_after_s": 1}
        if code != 200:
            return code, first
        with self._lock:
            return self._again_locked(fp, tx_id, (deciding[0], first))

    def _decide_run(self, run: list["_Admitted"]) -> list:
        """The decisions of admitted requests, in order: (200, answer), or the exception deciding one raised.
        Each row is scored by its serving model, the rows of one model in one call; a candidate that fails
        on a row leaves that row to production (recorded as the candidate's error)."""
        serving = [(a.d.candidate, "candidate") if a.d.routed(a.card) else (a.d.production, "production")
                   for a in run]
        scores: list = [None] * len(run)
        groups: dict[int, list[int]] = {}
        for k, (model, _) in enumerate(serving):
            groups.setdefault(id(model), []).append(k)
        for rows in groups.values():
            model = serving[rows[0]][0]
            try:
                for k, s in zip(rows, model.score_many([run[k].f for k in rows])):
                    scores[k] = s
            except Exception:  # noqa: BLE001 - one at a time: each row gets its own outcome
                for k in rows:
                    try:
                        scores[k] = model.score(run[k].f)
                    except Exception as e:  # noqa: BLE001
                        scores[k] = e
        out = []
        for a, (model, role), s in zip(run, serving, scores):
            scored = False
            try:
                candidate_error = None
                if isinstance(s, BaseException):
                    if role == "production":
                        raise s
                    candidate_error = f"{type(s).__name__}: {s}"
                    model, role, s = a.d.production, "production", a.d.production.score(a.f)
                scored = True
                response, refused = self._record(a, model, role, s, candidate_error)
            except BaseException as e:
                with self._lock:
                    if not scored:  # no decision was given (a 500): a retry must not find it in its own history
                        self.features.forget(a.ts_us, a.card, a.merchant, a.req.amount)
                    if a.claim is not None:
                        self._claims.pop(a.tx_id, None)
                if a.claim is not None:
                    a.claim[1].set_exception(e)
                out.append(e)
                continue
            if a.claim is not None:  # a copy waiting for this decision: its answer, or (refused by the log) none
                if refused:
                    a.claim[1].set_exception(OSError("the decision log refused the first request's decision"))
                else:
                    a.claim[1].set_result((200, response))
            out.append((200, response))
        return out

    def _record(self, a: "_Admitted", serving: Scorer, role: str, s: float,
                candidate_error: str | None) -> tuple[dict, bool]:
        """The decision on score ``s`` of ``serving`` (its ``role``), journaled (the answer's durability), the
        other model handed to the shadow worker; remembered for retries. Outside the service's lock. Returns
        the answer and whether the journal refused it at once (fail_closed: acknowledged() makes it a 503)."""
        d, req, tx_id, merchant = a.d, a.req, a.tx_id, a.merchant
        routed = role == "candidate" or candidate_error is not None
        other, other_role = ((None, "production") if candidate_error is not None else
                             (d.production, "production") if role == "candidate" else (d.candidate, "candidate"))
        t, source = serving.threshold(merchant)
        would_block = s >= t
        explored = bool(would_block and _explore_draw(self.config.exploration_seed, tx_id) < self.config.exploration)
        propensity = (self.config.exploration if explored else
                      (1 - self.config.exploration) if would_block else 1.0)
        action = "block" if would_block and not explored else "allow"
        rec = {
            "request_id": tx_id, "tx_id": tx_id, "ts": req.ts, "served_at": dt.datetime.now(dt.timezone.utc),
            "card_id": a.card, "card_country": req.card_country, "merchant_id": merchant,
            "merchant_country": req.merchant_country, "merchant_category": req.merchant_category,
            "amount": req.amount, "known_merchant": a.known or source == "merchant",
            "deployment_version": d.version, "release_id": d.release_id, "ramp_state": d.state,
            "ramp_pct": d.pct, "routed": routed, "served_by": role, "model_id": serving.model_id, "score": s,
            "threshold": t, "threshold_source": source, "action": action, "explored": explored,
            "propensity": propensity,
            f"{role}_model_id": serving.model_id, f"{role}_score": s, f"{role}_threshold": t,
            f"{role}_block": would_block,
            "shadow": "none", "candidate_error": candidate_error, "client": a.client,
        }
        if d.candidate is not None:
            rec["candidate_model_id"] = d.candidate.model_id
        rec["production_model_id"] = d.production.model_id
        response = self._response(rec)
        rec["latency_ms"] = (time.perf_counter() - a.t0) * 1000
        ack = self.log.journal(rec)  # the HTTP answer waits until it is durable (acknowledged())
        refused = False
        if self.log.on_failure == "fail_closed":
            if not ack.done():  # durability fsync: the outcome comes later; acknowledged() may take it back
                self._undo[tx_id] = (a.ts_us, a.card, merchant, req.amount)
            elif ack.exception() is not None:  # refused (503): the transaction was never decided
                refused = True
        dropped = False
        if other is not None:
            try:  # never waits: a full queue drops the shadow score (counted, logged as such)
                self._queue.put_nowait((rec, a.f, other, other_role))
            except queue.Full:
                rec["shadow"] = "dropped"
                dropped = True
                self.log.append(rec)
        else:
            self.log.append(rec)
        with self._lock:
            if refused:
                self.features.forget(a.ts_us, a.card, merchant, req.amount)
            if role == "candidate":
                self.counters.served_by_candidate += 1
            if candidate_error is not None:
                self.counters.candidate_errors += 1
            if dropped:
                self.counters.shadow_dropped += 1
            self._remember(tx_id, a.fp, response)
            self._claims.pop(tx_id, None)
        return response, refused

    def decide(self, req: ScoreRequest, client: str | None = None) -> tuple[int, dict, Future | None]:
        """``score``, and what its answer still waits for (run in the scoring pool): the journal's
        acknowledgement while it is pending (durability fsync) or once it failed; None when the decision
        is already as durable as configured (durability write: the journal line is written). Asking the
        journal here, not on the event loop, keeps its lock off the loop."""
        code, body = self.score(req, client)
        return code, body, self._pending(code, body)

    def _pending(self, code: int, body: dict) -> Future | None:
        return self.log.durable(body["request_id"]) if code == 200 and "request_id" in body else None

    def decide_body(self, body: bytes, client: str | None = None) -> tuple[int, dict, Future | None]:
        """POST /score's body: parsed and validated (a 422 saying why not, nothing touched), then ``decide``d.
        Run in the scoring pool, so the event loop neither parses nor validates."""
        (outcome,) = self.decide_bodies([(body, client)])
        if isinstance(outcome, BaseException):
            raise outcome
        return outcome

    def decide_bodies(self, items: list[tuple[bytes, str | None]]) -> list:
        """``decide_body`` of each (body, client), in order, the valid ones decided together (``score_many``):
        the (status, body, what the answer waits for) of each, or the exception deciding it raised."""
        parsed = [_parse_score(body) for body, _ in items]
        decided = iter(self.score_many([(p, client) for p, (_, client) in zip(parsed, items)
                                        if not isinstance(p, dict)]))
        out: list = []
        for p in parsed:
            if isinstance(p, dict):
                out.append((422, p, None))
                continue
            outcome = next(decided)
            out.append(outcome if isinstance(outcome, BaseException) else (*outcome, self._pending(*outcome)))
        return out

    def settle(self, code: int, body: dict) -> tuple[int, dict]:
        """``acknowledged`` of an answer that waits for nothing (``decide`` found it as durable as configured)."""
        if code == 200 and "request_id" in body:
            self._undo.pop(body["request_id"], None)
        return code, body

    async def acknowledged(self, code: int, body: dict, pending: Future | None | object = _ASK) -> tuple[int, dict]:
        """The answer once its decision is on disk (release.serving.decision_log): unchanged; or, if the journal
        failed, 503 (``on_failure: fail_closed``) or the answer flagged ``"logged": false`` (keep_answering).
        ``pending``: what ``decide`` found the answer waits for (default: asked of the journal here)."""
        if pending is _ASK:
            pending = self.log.durable(body["request_id"]) if code == 200 and "request_id" in body else None
        if pending is None:
            return self.settle(code, body)
        try:
            await asyncio.wrap_future(pending)
            self._undo.pop(body["request_id"], None)
        except OSError as e:
            if self.log.on_failure == "keep_answering":
                return 200, {**body, "logged": False}
            with self._lock:  # held for microseconds by the scoring threads (no I/O under it)
                self._seen.pop(body["tx_id"], None)  # not given: a retry is decided afresh ...
                undo = self._undo.pop(body["request_id"], None)
                if undo is not None:  # ... and does not find itself in its own card's history
                    self.features.forget(*undo)
            return 503, {"error": f"Not serving: the decision log cannot be written ({type(e).__name__}: {e}); "
                                  "decision_log.on_failure is fail_closed, so no decision is given unlogged."}
        return code, body

    def state(self) -> dict:
        c = self.counters
        return {"deployment": self.deployment.summary(),
                "features": {"seed_day": self.seed_day.isoformat(), "seeded_rows": self.features.seeded_rows,
                             "resumed_rows": self.resumed_rows, "refused_on_resume": self.refused_on_resume,
                             "cards": self.features.cards, "maturity_days": self.features.maturity_days,
                             "risk_tables": self.features.tables_state()},
                "scoring": {"threads": self.config.scoring_threads, "in_flight": self.in_flight},
                "request_time": {**self.config.request_time.model_dump(), "now": _iso(self._now_us())},
                "counters": {**c.__dict__, "shadow_queue": self._queue.qsize()},
                "decision_log": {"folder": str(self.log.folder), "appended": self.log.appended,
                                 "written": self.log.written, "pending": self.log.pending, "files": self.log.files,
                                 **self.log.health()},
                "controller": None if self._controller is None else self._controller.last}


# ---- HTTP ----------------------------------------------------------------------------------------------

_PROBLEMS = {  # pydantic's words for some errors, made to say what is allowed
    ("amount", "float_type"): "Input should be a valid number: a JSON number in (0, 1e9], not a string or a boolean",
    ("amount", "finite_number"): "Input should be a finite number: NaN and Infinity are not amounts",
}


def _field_errors(exc) -> list[dict]:
    out = []
    for e in exc.errors():
        if e.get("type") == "json_invalid":
            pos = e.get("loc", ("body", "?"))[-1]
            why = e.get("ctx", {}).get("error", "decode error")
            out.append({"field": "(body)", "problem": f"not valid JSON ({why} at character {pos})", "got": None})
            continue
        loc = [str(p) for p in e.get("loc", ()) if p != "body"]
        field = loc[0] if loc else "(body)"
        if any(d["field"] == field for d in out):  # one line per field
            continue
        problem = _PROBLEMS.get((field, e.get("type")), e.get("msg", ""))
        if field == "(body)" and e.get("type") in ("model_attributes_type", "dict_type", "model_type"):
            problem = "the body must be one JSON object with the transaction's fields"
        got = e.get("input") if e.get("type") != "missing" else None
        out.append({"field": field, "problem": problem, "got": _json_safe(got)})
    return out


def _error_body(fields: list[dict]) -> dict:
    msg = "; ".join(f"{f['field']}: {f['problem']}" + (f" (got {shown(f['got'])})" if f["got"] is not None else "")
                    for f in fields)
    return {"error": f"Bad request: {msg}", "fields": fields}


_SUBJECT: contextvars.ContextVar[str | None] = contextvars.ContextVar("fraudcd_subject", default=None)


class _Gate:
    """ASGI middleware in front of every route: authentication, then the body size limit and content type.

    - ``/healthz`` is open (liveness probes); ``POST /score`` needs a token with the ``scoring`` role;
      everything else (``/state``, ``/docs``, ``/redoc``, ``/openapi.json``) needs ``operator``. No
      token or an unknown one: 401; a token without the role: 403. The subject (the token's name) is
      handed to the route in a context variable.
    - A body longer than ``max_body_bytes``: 413, before it is parsed.
    - ``/score`` takes ``application/json`` only: anything else is a 422 saying so.
    - ``POST /score`` itself is answered here (``score``: parse, validate, decide in the scoring pool),
      not by FastAPI's request machinery: the same parsing, validation and error bodies as the FastAPI
      route (``_parse_score``), without FastAPI's dependency and routing machinery (~100 us of the
      event loop's time per request here). Everything else goes on to FastAPI.
    Pure ASGI (no BaseHTTPMiddleware): a dictionary lookup and a hash per request."""

    OPEN = frozenset({"/healthz"})  # a probe reads ok and the deployment version, nothing else

    def __init__(self, app, tokens: dict[bytes, Subject] | None, max_body_bytes: int, score=None):
        self.app, self.tokens, self.max_body, self.score = app, tokens, max_body_bytes, score

    def admit(self, path: str, method: str, headers: dict) -> tuple[Subject | None, tuple | None]:
        """Who sent a request to ``path`` (``headers``: lower-cased names to values) and whether it may go on:
        (subject, None), or (None or the subject, (status, body, extra headers)) to answer at once. The one
        check of the ASGI gate and of the scoring protocol (ScoreProtocol)."""
        need = SCORING if path == "/score" else OPERATOR
        if self.tokens is None:
            subject = ANONYMOUS
        else:
            auth = headers.get(b"authorization", b"")
            scheme, _, token = auth.partition(b" ")
            subject = (self.tokens.get(hashlib.sha256(token.strip()).digest())
                       if scheme.lower() == b"bearer" and token.strip() else None)
            if subject is None:
                why = "no bearer token was sent" if not auth else "the bearer token is not one this service knows"
                return None, (401, {"error": f"Unauthorized: {why}. {path} needs a token with the role {need!r}: "
                                             "`Authorization: Bearer <token>`."},
                              [(b"www-authenticate", b'Bearer realm="fraud-cd"')])
            if need not in subject.roles:
                return None, (403, {"error": f"Forbidden: {path} needs the role {need!r}; the token of "
                                             f"{subject.name!r} has {sorted(subject.roles)}."}, None)
        if method != "POST":
            return subject, None
        length = headers.get(b"content-length")
        if length is not None and (not length.isdigit() or int(length) > self.max_body):
            return subject, (413, {"error": f"Request body too large: at most {self.max_body:,} bytes "
                                            f"(max_body_bytes); Content-Length says {shown(length.decode('latin-1'))}."},
                             None)
        if path == "/score":
            ctype = headers.get(b"content-type", b"").split(b";")[0].strip().lower()
            if ctype != b"application/json":
                got = ctype.decode("latin-1") or None
                return subject, (422, _error_body([{
                    "field": "(body)", "got": _json_safe(got),
                    "problem": "the Content-Type must be application/json" + ("" if got else " (none was sent)")}]),
                    None)
        return subject, None

    def too_large(self) -> tuple:
        return 413, {"error": f"Request body too large: at most {self.max_body:,} bytes (max_body_bytes)."}, None

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        send = _timed(send, time.perf_counter())
        if scope["path"] in self.OPEN:
            return await self.app(scope, receive, send)
        path = scope["path"]
        subject, refusal = self.admit(path, scope["method"], dict(scope["headers"]))  # a repeated header: the last
        if refusal is not None:
            return await _send_json(send, *refusal)
        _SUBJECT.set(subject.name)  # the route runs in this task: it reads who sent the request
        if scope["method"] != "POST":
            return await self.app(scope, receive, send)
        chunks, size = [], 0
        while True:  # read the whole body (bounded) before any route sees it
            msg = await receive()
            if msg["type"] == "http.disconnect":
                return
            chunk = msg.get("body", b"")
            size += len(chunk)
            if size > self.max_body:
                return await _send_json(send, *self.too_large())
            chunks.append(chunk)
            if not msg.get("more_body"):
                break
        body, given = b"".join(chunks), False
        if path == "/score" and self.score is not None:
            return await self.score(body, subject.name, send)

        async def replayed():
            nonlocal given
            if not given:
                given = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        return await self.app(scope, replayed, send)


class _Errors:
    """Validation errors in the shape of FastAPI's RequestValidationError (``errors()``)."""

    def __init__(self, errors: list[dict]):
        self._errors = errors

    def errors(self) -> list[dict]:
        return self._errors


def _validation_body(exc) -> dict:
    try:
        return _error_body(_field_errors(exc))
    except Exception:  # noqa: BLE001 - the handler of a bad request must not fail itself
        log.exception("describing a bad request failed")
        return {"error": "Bad request: the body does not validate (and describing why failed; see the "
                         "service log)", "fields": []}


_UNPARSABLE = {"field": "(body)", "got": None,
               "problem": "not valid JSON (it could not be parsed: not UTF-8, or nested too deeply)"}


def _parse_score(body: bytes) -> ScoreRequest | dict:
    """The request, or the 422 body saying why not: what FastAPI does with a JSON body for a route taking
    one model (an empty body is a missing one; ``json.loads`` on the bytes; a JSON error names its
    position; anything else that breaks parsing, e.g. bytes that are not UTF-8 or nesting too deep, is
    its 400, which this service answers as a 422), then the model's own validation."""
    if not body:
        return _validation_body(_Errors([{"type": "missing", "loc": ("body",), "msg": "Field required",
                                          "input": None}]))
    try:
        obj = json.loads(body)
    except json.JSONDecodeError as e:
        return _validation_body(_Errors([{"type": "json_invalid", "loc": ("body", e.pos), "msg": "JSON decode error",
                                          "input": {}, "ctx": {"error": e.msg}}]))
    except Exception:  # noqa: BLE001 - FastAPI: 400 "There was an error parsing the body"
        return _error_body([dict(_UNPARSABLE)])
    try:
        return ScoreRequest.model_validate(obj, from_attributes=True)
    except ValidationError as e:
        return _validation_body(_Errors([{**err, "loc": ("body", *err.get("loc", ()))}
                                         for err in e.errors(include_url=False)]))


def _timed(send, t_in: float):
    """``send`` that adds ``Server-Timing: app;dur=<ms>`` to the answer: the time from the request's arrival
    in the app (its head read, before authentication) to the answer's start, queueing for the scoring
    pool included; what a client's own clock adds on top is the network and the server's I/O."""
    async def timed(msg):
        if msg["type"] == "http.response.start":
            dur = (time.perf_counter() - t_in) * 1000
            msg = {**msg, "headers": [*msg.get("headers", ()), (b"server-timing", b"app;dur=%.3f" % dur)]}
        await send(msg)
    return timed


def _retry_after(code: int, out: dict) -> list | None:
    return [(b"retry-after", str(out["retry_after_s"]).encode())] if code == 503 and "retry_after_s" in out else None


class _Mailbox:
    """Answers decided in the scoring pool, handed to the event loop: one wake-up of the loop for all that
    are waiting (``put`` from any thread), not one per answer as ``run_in_executor`` costs."""

    def __init__(self, loop: asyncio.AbstractEventLoop):
        self.loop, self.items, self.scheduled = loop, collections.deque(), False

    def put(self, item) -> None:
        self.items.append(item)
        if not self.scheduled:
            self.scheduled = True
            self.loop.call_soon_threadsafe(self.drain)

    def drain(self) -> None:
        self.scheduled = False  # before taking: an item put from now on schedules another drain
        while self.items:
            protocol, slot, outcome = self.items.popleft()
            try:
                protocol.decided(slot, outcome)
            except Exception:  # noqa: BLE001 - one answer's failure must not hold up the others in the mailbox
                log.exception("answering POST /score failed")


_RUN = 32  # requests read together decided as one run at most: their answers go out before the next run's


class _Intake:
    """The POST /score requests read in one turn of the event loop, handed to the scoring pool as one task
    (``add`` on the loop): the loop reads a burst without the scoring thread taking the GIL from it after
    each request, and the pool wakes once per turn, not once per request. They are decided in arrival order, in
    runs of _RUN at most (ScoringService.score_many), each run's answers handed back before the next is decided."""

    def __init__(self, loop: asyncio.AbstractEventLoop, holder: dict):
        self.loop, self.holder, self.items, self.scheduled = loop, holder, [], False

    def add(self, protocol, slot: "_Owed", body: bytes) -> None:
        self.items.append((protocol, slot, body))
        if not self.scheduled:
            self.scheduled = True
            self.loop.call_soon(self.hand_over)

    def hand_over(self) -> None:
        self.scheduled = False
        items, self.items = self.items, []
        svc = self.holder["svc"]
        try:
            svc.pool.submit(self.decide_all, svc, items)
        except RuntimeError:  # the pool is shut down: the service is stopping
            for protocol, slot, _ in items:
                protocol.stopping(slot)

    def decide_all(self, svc: "ScoringService", items: list) -> None:
        """In the scoring pool: the requests decided in order, _RUN at a time (``decide_bodies``: the serving
        model scores a run's rows in one call), each run's outcomes (or what deciding them raised) to the
        mailbox before the next run is decided."""
        mailbox = self.holder["mailbox"]
        for k in range(0, len(items), _RUN):
            run = items[k:k + _RUN]
            try:
                outcomes = svc.decide_bodies([(body, slot.client) for _, slot, body in run])
            except Exception as e:  # noqa: BLE001 - the loop answers them with a 500
                outcomes = [e] * len(run)
            for (protocol, slot, _), outcome in zip(run, outcomes):
                mailbox.put((protocol, slot, outcome))


_OWED_AT_MOST = 8  # answers a connection may owe (pipelined requests) before it is no longer read


@dataclass(eq=False)
class _Owed:
    """A POST /score on one connection: read, then decided, then its answer written (in arrival order)."""

    t_in: float
    keep_alive: bool
    client: str | None = None
    body: bytearray = field(default_factory=bytearray)
    refused: bool = False  # answered before its body was read (401, 403, 413, 422): the rest is discarded
    data: bytes | None = None  # the answer, once known


def score_protocol(gate: "_Gate", holder: dict) -> type:
    """uvicorn's HTTP/1.1 protocol (httptools), answering ``POST /score`` itself: the gate's admission check
    (``_Gate.admit``), the body read within ``max_body_bytes``, the decision in the scoring pool
    (``decide_body``: parsing and validation there too), the answer written in one write with the same
    status, body and headers as the ASGI route. What it saves per request is uvicorn's ASGI cycle (a task,
    the scope, the messages and their wrappers) and one of the two writes (head and body); the answers of a
    burst come back to the loop with one wake-up (_Mailbox). Everything else (``/healthz``, ``/state``, the
    docs, a ``/score`` behind an ASGI request still in progress on a pipelined connection, upgrades) is
    uvicorn's own path. Answers on one connection leave in the order their requests came (pipelining): a
    request behind answers still owed waits in uvicorn's own pipeline until they are written."""
    import httptools
    from uvicorn.protocols.http.httptools_impl import STATUS_LINE, HttpToolsProtocol

    class ScoreProtocol(HttpToolsProtocol):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            self.reading: _Owed | None = None  # the POST /score whose body is being read
            self.owed: collections.deque[_Owed] = collections.deque()
            self.close_when_done = False

        def on_message_begin(self) -> None:
            super().on_message_begin()
            self.reading = None

        def on_headers_complete(self) -> None:
            parser = self.parser
            if (parser.get_method() == b"POST" and not self.pipeline and self.limit_concurrency is None
                    and not self.root_path and (self.owed or self.cycle is None or self.cycle.response_complete)
                    and not parser.should_upgrade() and httptools.parse_url(self.url).path == b"/score"):
                slot = _Owed(time.perf_counter(), parser.get_http_version() != "1.0" and parser.should_keep_alive())
                self.owed.append(slot)
                self.reading = slot
                subject, refusal = gate.admit("/score", "POST", dict(self.headers))
                if refusal is not None:
                    slot.refused = True
                    self.answer(slot, *refusal)
                else:
                    slot.client = subject.name
                    if self.expect_100_continue:
                        self.transport.write(b"HTTP/1.1 100 Continue\r\n\r\n")
                return
            if self.owed:  # uvicorn queues this request (its pipeline) until the answers owed are written
                self.cycle = _STILL_OWED
            super().on_headers_complete()

        def on_body(self, body: bytes) -> None:
            slot = self.reading
            if slot is None:
                return super().on_body(body)
            if slot.refused:
                return
            slot.body += body
            if len(slot.body) > gate.max_body:
                slot.refused = True
                slot.body = bytearray()
                self.answer(slot, *gate.too_large())

        def on_message_complete(self) -> None:
            slot = self.reading
            if slot is None:
                return super().on_message_complete()
            self.reading = None
            if slot.refused:
                return
            body, slot.body = bytes(slot.body), bytearray()
            holder["svc"].in_flight += 1
            # a connection that owes _OWED_AT_MOST answers, or whose answers fill the transport's write buffer
            # (the client does not read them), is not read until that passes (what was already received is
            # still parsed; read_if_due): a client that pipelines and never reads cannot make answers pile up.
            # The usual client, one request at a time, is never paused: that costs two system calls a request
            if self.flow.write_paused or self.answers_owed() >= _OWED_AT_MOST:
                self.flow.pause_reading()
            holder["intake"].add(self, slot, body)

        def answers_owed(self) -> int:
            """Requests read whole and not answered yet (not the one whose body is still coming: reading must
            go on for it to be answered)."""
            return len(self.owed) - (1 if self.owed and self.owed[-1] is self.reading else 0)

        def decided(self, slot: _Owed, outcome) -> None:
            """On the loop: the scoring pool's outcome for ``slot`` (decide_body's, or what it raised)."""
            svc = holder["svc"]
            svc.in_flight -= 1
            if isinstance(outcome, BaseException):  # answered as the ASGI route's failure would be
                log.error("POST /score failed", exc_info=outcome)
                return self.answer(slot, 500, {"error": "Internal Server Error"})
            code, out, pending = outcome
            if pending is None:
                code, out = svc.settle(code, out)
                return self.answer(slot, code, out, _retry_after(code, out))
            task = self.loop.create_task(self.acknowledge(svc, slot, code, out, pending))
            self.tasks.add(task)
            task.add_done_callback(self.tasks.discard)

        def stopping(self, slot: _Owed) -> None:
            """The pool is shut down (the service is stopping): ``slot`` is not decided."""
            holder["svc"].in_flight -= 1
            self.answer(slot, 503, {"error": "Not serving: the service is stopping; send it again.",
                                    "retry_after_s": 1}, [(b"retry-after", b"1")])

        async def acknowledge(self, svc, slot: _Owed, code: int, out: dict, pending: Future) -> None:
            try:
                code, out = await svc.acknowledged(code, out, pending)
            except Exception:  # noqa: BLE001
                log.exception("POST /score failed")
                return self.answer(slot, 500, {"error": "Internal Server Error"})
            self.answer(slot, code, out, _retry_after(code, out))

        def answer(self, slot: _Owed, status: int, content: dict, headers: list | None = None) -> None:
            raw = _json_bytes(content)
            head = [STATUS_LINE[status]]
            for name, value in (*self.server_state.default_headers, (b"content-type", b"application/json"),
                                (b"content-length", b"%d" % len(raw)),
                                (b"server-timing", b"app;dur=%.3f" % ((time.perf_counter() - slot.t_in) * 1000)),
                                *(headers or ())):
                head += (name, b": ", value, b"\r\n")
            if not slot.keep_alive:
                head.append(b"connection: close\r\n")
            head += (b"\r\n", raw)
            slot.data = b"".join(head)
            self.write_owed()

        def write_owed(self) -> None:
            """Write the answers now due (those owed first in line that are known), in one write."""
            out, close = [], False
            while self.owed and self.owed[0].data is not None:
                slot = self.owed.popleft()
                out.append(slot.data)
                self.server_state.total_requests += 1
                if not slot.keep_alive:
                    close = True
                    self.owed.clear()
                    break
            if not out or self.transport.is_closing():
                return
            self.transport.write(b"".join(out))
            if close or (self.close_when_done and not self.owed):
                self.transport.close()
                return
            if not self.owed:  # what uvicorn does after an answer: start what was queued, or wait
                self._unset_keepalive_if_required()
                if self.pipeline:
                    self.flow.resume_reading()
                    cycle, app = self.pipeline.pop()
                    self._start_asgi_task(cycle, app)
                    return
                self.timeout_keep_alive_task = self.loop.call_later(self.timeout_keep_alive,
                                                                    self.timeout_keep_alive_handler)
            self.read_if_due()

        def read_if_due(self) -> None:
            """Read the connection again if it was paused for owing too many answers or for a full write buffer,
            and neither holds now (uvicorn's own pause, for a request in its pipeline, is its to lift)."""
            if (self.flow.read_paused and not self.pipeline and not self.flow.write_paused
                    and self.answers_owed() < _OWED_AT_MOST):
                self.flow.resume_reading()

        def resume_writing(self) -> None:
            super().resume_writing()
            self.read_if_due()

        def shutdown(self) -> None:
            if self.owed:  # a graceful shutdown: the answers owed are written first
                self.close_when_done = True
                return
            super().shutdown()

    return ScoreProtocol


class _StillOwed:
    """What uvicorn sees as the connection's request in progress while answers of ScoreProtocol are owed."""

    response_complete = False


_STILL_OWED = _StillOwed()


def _json_bytes(content: dict) -> bytes:
    return orjson.dumps(content, option=orjson.OPT_SERIALIZE_NUMPY)


async def _send_json(send, status: int, content: dict, headers: list | None = None) -> None:
    raw = _json_bytes(content)
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(raw)).encode()),
                            *(headers or [])]})
    await send({"type": "http.response.body", "body": raw})


def create_app(service_factory, config: ServiceConfig | None = None, freeze_gc: bool = False) -> Any:
    """The FastAPI app. ``service_factory()`` builds the ScoringService at start-up (in the lifespan),
    so a bad configuration fails the start, not the first request. ``config`` gives the authentication
    and the body limit (default: ServiceConfig(), i.e. tokens from FRAUDCD_SCORING_TOKEN and
    FRAUDCD_OPERATOR_TOKEN); unusable tokens raise AuthError here, before anything listens.

    ``freeze_gc`` (``fraudcd serve``): once started, everything start-up built is moved out of the cyclic
    garbage collector's reach (``gc.freeze``). Without it a full collection walks ~300,000 objects (the
    card and merchant history, the models, the imported libraries), ~200 ms with the GIL held, every
    ~20,000 requests: every request in flight waits for it. Frozen, a full collection walks what was
    made since (~15,000 objects: ~ms). Frozen objects are still freed by reference counting; only a
    reference cycle among them would never be collected. Off in tests that run many services in one
    process."""
    from fastapi import FastAPI, Request
    from fastapi.exception_handlers import http_exception_handler
    from fastapi.exceptions import RequestValidationError
    from fastapi.responses import JSONResponse, Response
    from starlette.exceptions import HTTPException

    config = config or ServiceConfig()
    tokens = config.auth.resolve()
    holder: dict[str, ScoringService] = {}

    @contextlib.asynccontextmanager
    async def lifespan(app):
        if tokens is None:
            log.warning("authentication is OFF (auth: {enabled: false}): anyone who can reach this port can score "
                        "and read /state. For a demo on loopback only.")
        svc = service_factory()
        svc.start()
        if freeze_gc:  # what start-up built (history, models, libraries) out of the cyclic collector's walks
            gc.collect()
            gc.freeze()
        holder["svc"] = svc
        holder["mailbox"] = _Mailbox(asyncio.get_running_loop())
        holder["intake"] = _Intake(asyncio.get_running_loop(), holder)
        log.warning("serving: deployment v%s (%s at %g%%), seed day %s, %s cards in history, auth %s",
                    svc.deployment.version, svc.deployment.state, svc.deployment.pct, svc.seed_day,
                    svc.features.cards, "off" if tokens is None else f"on ({len(tokens)} tokens)")
        try:
            yield
        finally:
            await asyncio.get_running_loop().run_in_executor(None, svc.stop)

    app = FastAPI(title="fraud-cd scoring service", lifespan=lifespan,
                  description="Scores a card transaction: allow or block, with the model, score and threshold.")

    @app.exception_handler(RequestValidationError)
    async def _bad_request(request: Request, exc: RequestValidationError):
        return JSONResponse(status_code=422, content=_validation_body(exc))

    @app.exception_handler(HTTPException)
    async def _http_error(request: Request, exc: HTTPException):
        if exc.status_code == 400 and request.url.path == "/score":  # FastAPI: "There was an error parsing the body"
            return JSONResponse(status_code=422, content=_error_body([dict(_UNPARSABLE)]))
        return await http_exception_handler(request, exc)

    async def answer(decide, *args) -> tuple[int, dict]:
        """``decide(*args)`` (a ScoringService method) in the scoring pool, then its acknowledgement."""
        svc = holder["svc"]
        svc.in_flight += 1
        try:  # decided in the scoring pool: the event loop goes on reading and answering other requests
            code, body, pending = await asyncio.get_running_loop().run_in_executor(svc.pool, decide, *args)
        finally:
            svc.in_flight -= 1
        return await svc.acknowledged(code, body, pending)  # the decision is as durable as configured, or not given

    async def score_now(body: bytes, client: str | None, send) -> None:
        """POST /score from the gate: parsed, validated and decided in the scoring pool, then answered."""
        code, out = await answer(holder["svc"].decide_body, body, client)
        await _send_json(send, code, out, _retry_after(code, out))

    @app.post("/score")
    async def score(req: ScoreRequest):  # what the docs show; the gate answers POST /score (score_now)
        code, body = await answer(holder["svc"].decide, req, _SUBJECT.get())
        headers = {"retry-after": str(body["retry_after_s"])} if code == 503 and "retry_after_s" in body else None
        return Response(content=_json_bytes(body), status_code=code, media_type="application/json", headers=headers)

    @app.get("/state")
    async def state():
        return holder["svc"].state()

    @app.get("/healthz")
    async def healthz():
        svc = holder.get("svc")
        ok = svc is not None and svc.deployment.production is not None
        return JSONResponse(status_code=200 if ok else 503,
                            content={"ok": ok, "version": svc.deployment.version if svc else None})

    app.add_middleware(_Gate, tokens=tokens, max_body_bytes=config.max_body_bytes, score=score_now)
    # uvicorn's protocol answering POST /score itself (serve() hands it to uvicorn as ``http``); the gate above
    # answers it for any other server (a test client)
    app.score_protocol = score_protocol(_Gate(None, tokens, config.max_body_bytes), holder)
    return app


def serve(host: str = "127.0.0.1", port: int = 8000, seed_day: dt.date | None = None, controller: bool = False,
          config: Path | None = None) -> None:
    import sys

    import uvicorn

    cfg = load_service_config(config)
    try:
        app = create_app(lambda: ScoringService(cfg, seed_day=seed_day, controller=controller), cfg, freeze_gc=True)
    except AuthError as e:
        from release.core.settings import config_dir

        sys.stderr.write(f"error: {config or config_dir() / 'service.yaml'}: {e}\n")
        raise SystemExit(2) from None
    uvicorn.run(app, host=host, port=port, log_level="warning", access_log=False, timeout_graceful_shutdown=30,
                http=app.score_protocol)
