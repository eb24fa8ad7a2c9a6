"""The scoring service (``fraudcd serve``): scores a transaction and answers allow or block.

How a request is served::

    POST /score {tx_id, ts, card_id, card_country, merchant_id, merchant_country, merchant_category, amount}
      -> point-in-time features (release.online_features: in-memory card and merchant history)
      -> route: the card's bucket (release.ramp.card_bucket) < ramp share -> candidate, else production
      -> the serving model's score >= its threshold for the merchant (merchant's own, else global) -> block,
         unless the seeded exploration draw lets a would-be block through (logged with its propensity)
      <- {decision, model_id, score, threshold, exploration, propensity, ...}
      -> off the critical path: the other model scores the same features in a background worker
         (shadow); then the decision, with both scores, is appended to the decision log.

Deployment state (production model and its thresholds, candidate and its thresholds, ramp state and
share) is one immutable ``Deployment`` snapshot. A watcher thread polls the state store's audit log
every ``reload_poll_ms`` (every change that moves money writes an audit row in the same transaction,
so the last audit id is a version counter); on a new version it loads a new snapshot and swaps the
reference. A request reads the reference once, so it finishes on the snapshot it started with; no
restart, no dropped request. Models are loaded once per id (ids are immutable content hashes).

The shadow worker queue is bounded: when it is full the shadow score is dropped (counted, logged as
``shadow = dropped``), never waited for. A candidate that fails to score a request it was routed
(an exception) falls back to production's decision; the failure is logged and counts toward the
error-rate guardrail.

One process, one worker: the feature history is in this process's memory (see online_features for
what that means at scale). A retried transaction id gets the first answer again and is not counted
twice in the history (idempotent).
"""
from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import hashlib
import json
import logging
import queue
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, Mapping

import numpy as np
import pandas as pd
from pydantic import AfterValidator, AwareDatetime, BaseModel, ConfigDict, Field, StrictInt, StrictStr

from release.config import load_yaml_model
from release.features import feature_columns
from release.training_set import model_settings
from release.online_features import OnlineFeatures, epoch_us
from release.ramp import PAUSED, RAMPING, card_bucket

log = logging.getLogger("fraudcd.service")


# ---- configuration ------------------------------------------------------------------------------------

class DecisionLogConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")
    flush_every: int = Field(1000, ge=1)
    flush_ms: int = Field(200, ge=1, le=10_000)
    compact_after_s: float | None = Field(600, ge=0)  # merge batch files older than this; null: never


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


def load_service_config(path: Path | None = None) -> ServiceConfig:
    from release.settings import config_dir

    return load_yaml_model(path or config_dir() / "service.yaml", ServiceConfig)


# ---- the request ----------------------------------------------------------------------------------------

Ident = Annotated[StrictStr | StrictInt, AfterValidator(lambda v: str(v)),
                  Field(description="string or integer id")]


class ScoreRequest(BaseModel):
    """One transaction to score. Unknown fields are refused (a misspelt field is a bug, not a hint)."""

    model_config = ConfigDict(extra="forbid")
    tx_id: Ident
    ts: AwareDatetime = Field(description="when the transaction happened, with a timezone (ISO 8601)")
    card_id: Ident
    card_country: str = Field(min_length=2, max_length=3)
    merchant_id: str = Field(min_length=1, max_length=64)
    merchant_country: str = Field(min_length=2, max_length=3)
    merchant_category: str = Field(min_length=1, max_length=64)
    amount: float = Field(gt=0, le=1e9, allow_inf_nan=False)


# ---- the deployment snapshot --------------------------------------------------------------------------

@dataclass(frozen=True)
class Scorer:
    """One model with its live thresholds. Two boosters: the request path's and the shadow worker's,
    so the two threads never share one."""

    model_id: str
    features: tuple[str, ...]
    booster: Any
    shadow_booster: Any
    global_threshold: float
    per_merchant: Mapping[str, float]

    def threshold(self, merchant_id: str) -> tuple[float, str]:
        t = self.per_merchant.get(merchant_id)
        return (t, "merchant") if t is not None else (self.global_threshold, "global")

    def score(self, f: dict[str, float], shadow: bool = False) -> float:
        row = np.array([[f[n] for n in self.features]], dtype=np.float64)
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
        """Sticky by card: the same bucket function as the replayed ramp (release.ramp.card_bucket)."""
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


class DeploymentRefused(ValueError):
    """The deployment state in the store cannot be served (e.g. production needs an unknown feature)."""


class DeploymentLoader:
    """Reads the deployment state from the state store; keeps loaded boosters by (immutable) model id."""

    def __init__(self):
        self._models: dict[str, tuple[tuple[str, ...], Any, Any]] = {}

    def version(self) -> int:
        """The last audit id, read without taking the store's write lock (a plain autocommit read)."""
        from release.store import engine

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
            from release.training import load_booster

            self._models[model.id] = (tuple(model.features), load_booster(text), load_booster(text))
        feats, b1, b2 = self._models[model.id]
        g, per = thresholds
        return Scorer(model_id=model.id, features=feats, booster=b1, shadow_booster=b2, global_threshold=float(g),
                      per_merchant={str(k): float(v) for k, v in per.items()})

    def load(self) -> Deployment:
        from release import approvals, ramp, registry

        version = self.version()  # first: a change landing during the load is picked up by the next poll
        st = ramp.current()
        problems = []
        prod_model = registry.tagged("production")
        production = None
        if prod_model is None:
            problems.append("no production model is tagged in the registry")
        elif [f for f in prod_model.features if f not in feature_columns(model_settings(prod_model.snapshot_hash)[0])]:
            # refuse the snapshot: the watcher keeps serving the last good one (at start: no start)
            allowed = feature_columns(model_settings(prod_model.snapshot_hash)[0])
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
    started_at: str = field(default_factory=lambda: dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"))


def _explore_draw(seed: int, tx_id: str) -> float:
    """A uniform draw in [0, 1) that depends only on the seed and the transaction id."""
    h = hashlib.blake2b(f"{seed}:{tx_id}".encode(), digest_size=8).digest()
    return int.from_bytes(h, "big") / 2.0 ** 64


def default_seed_day(events: Path) -> dt.date:
    """The day after the last day of transactions in the event logs (the service continues from there)."""
    days = sorted(p.name.removeprefix("day=") for p in (Path(events) / "transactions").glob("day=*"))
    if not days:
        raise FileNotFoundError(f"No transactions in {Path(events) / 'transactions'}: the service seeds its card "
                                "and merchant history from the event logs. Simulate or ingest some first.")
    return dt.date.fromisoformat(days[-1]) + dt.timedelta(days=1)


class ScoringService:
    """Everything behind the HTTP routes: deployment snapshot, features, shadow worker, decision log."""

    def __init__(self, config: ServiceConfig | None = None, seed_day: dt.date | None = None,
                 controller: bool = False):
        from release.decision_log import DecisionLog
        from release.settings import paths

        self.config = config or load_service_config()
        self.events = paths().events
        self.seed_day = seed_day or default_seed_day(self.events)
        self.loader = DeploymentLoader()
        self.deployment = self.loader.load()
        self.counters = Counters()
        self.log = DecisionLog(flush_every=self.config.decision_log.flush_every,
                               flush_ms=self.config.decision_log.flush_ms,
                               compact_after_s=self.config.decision_log.compact_after_s)
        self.features = OnlineFeatures(self.events, self.seed_day, *self._feature_settings())
        self._seen: OrderedDict[str, dict] = OrderedDict()
        self.resumed_rows = self._resume_from_log()
        self._queue: queue.Queue = queue.Queue(maxsize=self.config.shadow_queue)
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._controller = None
        self._want_controller = controller

    def _feature_settings(self):
        """(label maturity, feature settings) of the production model's snapshot: live features are
        computed as its training rows were. The service configuration may override the maturity."""
        from release import registry

        prod = registry.tagged("production")
        features, maturity = model_settings(prod.snapshot_hash if prod else None)
        if self.config.maturity_days is not None:
            maturity = self.config.maturity_days
        return maturity, features

    def _resume_from_log(self) -> int:
        """After a restart: the transactions this service already scored (on or after the seed day) go
        back into the feature history, and their answers into the retry cache."""
        from release.decision_log import read_decision_log

        df = read_decision_log(self.log.folder)
        if df.empty:
            return 0
        df = df[df["ts"] >= pd.Timestamp(self.seed_day, tz="UTC")].drop_duplicates("tx_id", keep="first")
        self.features.add_many(df[["ts", "card_id", "merchant_id", "amount"]])
        for r in df.itertuples(index=False):
            self._remember(r.tx_id, self._response(r._asdict()))
        return len(df)

    def _remember(self, tx_id: str, response: dict) -> None:
        self._seen[tx_id] = response
        if len(self._seen) > 200_000:
            self._seen.popitem(last=False)

    @staticmethod
    def _response(rec: dict) -> dict:
        return {"request_id": rec["request_id"], "tx_id": rec["tx_id"], "decision": rec["action"],
                "model_id": rec["model_id"], "served_by": rec["served_by"], "score": rec["score"],
                "threshold": rec["threshold"], "threshold_source": rec["threshold_source"],
                "exploration": bool(rec["explored"]), "propensity": rec["propensity"],
                "deployment_version": int(rec["deployment_version"])}

    # ---- lifecycle ----------------------------------------------------------------------------------

    def start(self) -> None:
        self.log.start()
        for target, name in ((self._watch, "deployment-watcher"), (self._shadow_worker, "shadow-worker")):
            t = threading.Thread(target=target, name=name, daemon=True)
            t.start()
            self._threads.append(t)
        if self._want_controller:
            from release.controller import Controller

            self._controller = Controller(poll_s=self.config.controller_poll_ms / 1000).start()

    def stop(self) -> None:
        """Finish the shadow scores already queued, then write every decision still buffered."""
        if self._controller is not None:
            self._controller.stop()
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
        while True:
            item = self._queue.get()
            if item is None:
                return
            rec, f, scorer, role = item
            try:
                s = scorer.score(f, shadow=True)
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

    # ---- one request --------------------------------------------------------------------------------

    def score(self, req: ScoreRequest) -> tuple[int, dict]:
        t0 = time.perf_counter()
        d = self.deployment  # read once: this request finishes on this snapshot
        if d.production is None:
            return 503, {"error": "Not serving: " + "; ".join(d.problems)}
        tx_id = req.tx_id
        again = self._seen.get(tx_id)
        if again is not None:
            self.counters.retries += 1
            return 200, {**again, "retry": True}
        self.counters.requests += 1
        card, merchant = req.card_id, req.merchant_id
        known = self.features.knows_merchant(merchant)
        f = self.features.features_and_add(epoch_us(req.ts), card, req.card_country, merchant,
                                           req.merchant_country, req.merchant_category, req.amount)
        routed = d.routed(card)
        serving, role, other, other_role = ((d.candidate, "candidate", d.production, "production") if routed else
                                            (d.production, "production", d.candidate, "candidate"))
        candidate_error = None
        try:
            s = serving.score(f)
        except Exception as e:  # noqa: BLE001
            if not routed:
                raise
            candidate_error = f"{type(e).__name__}: {e}"
            self.counters.candidate_errors += 1
            serving, role, other = d.production, "production", None
            s = serving.score(f)
        t, source = serving.threshold(merchant)
        would_block = s >= t
        explored = bool(would_block and _explore_draw(self.config.exploration_seed, tx_id) < self.config.exploration)
        propensity = (self.config.exploration if explored else
                      (1 - self.config.exploration) if would_block else 1.0)
        action = "block" if would_block and not explored else "allow"
        if role == "candidate":
            self.counters.served_by_candidate += 1
        rec = {
            "request_id": tx_id, "tx_id": tx_id, "ts": req.ts, "served_at": dt.datetime.now(dt.timezone.utc),
            "card_id": card, "card_country": req.card_country, "merchant_id": merchant,
            "merchant_country": req.merchant_country, "merchant_category": req.merchant_category,
            "amount": req.amount, "known_merchant": known or source == "merchant",
            "deployment_version": d.version, "release_id": d.release_id, "ramp_state": d.state,
            "ramp_pct": d.pct, "routed": routed, "served_by": role, "model_id": serving.model_id, "score": s,
            "threshold": t, "threshold_source": source, "action": action, "explored": explored,
            "propensity": propensity,
            f"{role}_model_id": serving.model_id, f"{role}_score": s, f"{role}_threshold": t,
            f"{role}_block": would_block,
            "shadow": "none", "candidate_error": candidate_error,
        }
        if d.candidate is not None:
            rec["candidate_model_id"] = d.candidate.model_id
        rec["production_model_id"] = d.production.model_id
        response = self._response(rec)
        rec["latency_ms"] = (time.perf_counter() - t0) * 1000
        if other is not None:
            try:
                self._queue.put_nowait((rec, f, other, other_role))
            except queue.Full:
                rec["shadow"] = "dropped"
                self.counters.shadow_dropped += 1
                self.log.append(rec)
        else:
            self.log.append(rec)
        self._remember(tx_id, response)
        return 200, response

    def state(self) -> dict:
        c = self.counters
        return {"deployment": self.deployment.summary(),
                "features": {"seed_day": self.seed_day.isoformat(), "seeded_rows": self.features.seeded_rows,
                             "resumed_rows": self.resumed_rows, "cards": self.features.cards,
                             "maturity_days": self.features.maturity_days},
                "counters": {**c.__dict__, "shadow_queue": self._queue.qsize()},
                "decision_log": {"folder": str(self.log.folder), "appended": self.log.appended,
                                 "written": self.log.written, "pending": self.log.pending, "files": self.log.files},
                "controller": None if self._controller is None else self._controller.last}


# ---- HTTP ---------------------------------------------------------------------------------------------

def _field_errors(exc) -> list[dict]:
    out = []
    for e in exc.errors():
        if e.get("type") == "json_invalid":
            pos = e.get("loc", ("body", "?"))[-1]
            why = e.get("ctx", {}).get("error", "decode error")
            out.append({"field": "(body)", "problem": f"not valid JSON ({why} at character {pos})", "got": None})
            continue
        # a union's alternatives add their type to the location (tx_id.str, tx_id.int): the field is the first part
        loc = [str(p) for p in e.get("loc", ()) if p != "body"]
        field = loc[0] if loc else "(body)"
        problem = e.get("msg", "")
        if len(loc) == 2 and loc[1] in ("str", "int"):
            problem = "Input should be a string or an integer id"
        if any(d["field"] == field for d in out):  # one line per field
            continue
        got = e.get("input") if e.get("type") != "missing" else None
        out.append({"field": field, "problem": problem, "got": got})
    return out


def create_app(service_factory) -> Any:
    """The FastAPI app. ``service_factory()`` builds the ScoringService at start-up (in the lifespan),
    so a bad configuration fails the start, not the first request."""
    from fastapi import FastAPI, Request
    from fastapi.exceptions import RequestValidationError
    from fastapi.responses import JSONResponse, Response

    holder: dict[str, ScoringService] = {}

    @contextlib.asynccontextmanager
    async def lifespan(app):
        svc = service_factory()
        svc.start()
        holder["svc"] = svc
        log.warning("serving: deployment v%s (%s at %g%%), seed day %s, %s cards in history",
                    svc.deployment.version, svc.deployment.state, svc.deployment.pct, svc.seed_day,
                    svc.features.cards)
        try:
            yield
        finally:
            await asyncio.get_running_loop().run_in_executor(None, svc.stop)

    app = FastAPI(title="fraud-cd scoring service", lifespan=lifespan,
                  description="Scores a card transaction: allow or block, with the model, score and threshold.")

    @app.exception_handler(RequestValidationError)
    async def _bad_request(request: Request, exc: RequestValidationError):
        fields = _field_errors(exc)
        msg = "; ".join(f"{f['field']}: {f['problem']}" + (f" (got {f['got']!r})" if f["got"] is not None else "")
                        for f in fields)
        return JSONResponse(status_code=422, content={"error": f"Bad request: {msg}", "fields": fields})

    @app.post("/score")
    async def score(req: ScoreRequest):
        code, body = holder["svc"].score(req)
        return Response(content=json.dumps(body), status_code=code, media_type="application/json")

    @app.get("/state")
    async def state():
        return holder["svc"].state()

    @app.get("/healthz")
    async def healthz():
        svc = holder.get("svc")
        ok = svc is not None and svc.deployment.production is not None
        return JSONResponse(status_code=200 if ok else 503,
                            content={"ok": ok, "version": svc.deployment.version if svc else None})

    return app


def serve(host: str = "127.0.0.1", port: int = 8000, seed_day: dt.date | None = None, controller: bool = False,
          config: Path | None = None) -> None:
    import uvicorn

    cfg = load_service_config(config)
    app = create_app(lambda: ScoringService(cfg, seed_day=seed_day, controller=controller))
    uvicorn.run(app, host=host, port=port, log_level="warning", access_log=False, timeout_graceful_shutdown=30)
