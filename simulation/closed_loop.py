"""The world a window at a time, its blocks decided by whatever policy is deployed: the closed loop.

``simulation.world.simulate`` writes a whole history at once, every transaction decided by the legacy rules. Here
the same world (the same entities, transactions and fraud: each day's draws come from the seed and the day, never
from what was decided) is written in steps:

1. ``ClosedLoopWorld.start(cfg, out, history_days)``: the history, decided by the legacy rules, exactly as
   ``simulate`` writes those days;
2. ``add_traffic(days)``: the next days' transactions (and their truth), not decided yet: the live traffic the
   release's rollout replays through the scoring service;
3. ``decide(decider)``: each of those days, in order, decided by ``decider`` (the deployed model and its approved
   thresholds, with the service's exploration), then the disputes of what it let through.

What is blocked is never disputed, so what the deployed model blocks is missing from the next training sets'
labels: the censoring the pipeline has to live with. Disputes arrive weeks late: those arriving after the decided
days are kept in ``world/pending_disputes.parquet`` and written into the event logs once their day is decided
(a day's disputes partition is written once, whole). The state (``world/closed_loop.json``: the configuration,
how far traffic and decisions go) is JSON and Parquet, never pickle; each step writes its partitions (temp file,
then rename) before the state that says it is done, so a step killed midway is redone from the same state and
gives the same files.

A decider gets the day and its transactions (``TX_COLUMNS``) and returns one row per transaction: ``tx_id``,
``policy`` (the model that decided), ``score``, ``threshold``, ``action`` (allow|block), ``explored`` and
``propensity`` (the probability of the action taken).
"""
from __future__ import annotations

import datetime as dt
import json
from pathlib import Path
from typing import Callable

import numpy as np
import pandas as pd

from release.core.io import atomic_write_parquet, atomic_write_text, list_partitions, write_partition
from simulation.world import TX_COLUMNS, WorldConfig, _decide, _disputes, _one_day, _world_entities

STATE = "closed_loop.json"
PENDING = "pending_disputes.parquet"
DECISION_COLUMNS = ["tx_id", "ts", "policy", "score", "threshold", "action", "explored", "propensity"]
Decider = Callable[[dt.date, pd.DataFrame], pd.DataFrame]


class WorldStateError(RuntimeError):
    pass


class ClosedLoopWorld:
    def __init__(self, cfg: WorldConfig, out: Path, traffic_days: int, decided_days: int):
        self.cfg, self.out = cfg, Path(out)
        self.traffic_days, self.decided_days = traffic_days, decided_days
        rng = np.random.default_rng(cfg.seed)
        self.merchants, self.cards = _world_entities(cfg, rng)

    # ---- where things are ------------------------------------------------------------------------------

    @property
    def folder(self) -> Path:
        return self.out / "world"

    def day(self, i: int) -> dt.date:
        return self.cfg.start + dt.timedelta(days=i)

    @property
    def horizon(self) -> dt.date:
        """The first day not decided yet: the event logs hold every decision and dispute before it."""
        return self.day(self.decided_days)

    def _save(self) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        atomic_write_text(json.dumps({"config": json.loads(self.cfg.model_dump_json()),
                                      "traffic_days": self.traffic_days, "decided_days": self.decided_days},
                                     indent=2) + "\n", self.folder / STATE)

    def _pending(self) -> pd.DataFrame:
        f = self.folder / PENDING
        if not f.exists():
            return pd.DataFrame({"tx_id": pd.Series(dtype="int64"),
                                 "dispute_ts": pd.Series(dtype="datetime64[us, UTC]")})
        return pd.read_parquet(f)

    # ---- the steps -------------------------------------------------------------------------------------

    @classmethod
    def start(cls, cfg: WorldConfig, out: str | Path, history_days: int) -> "ClosedLoopWorld":
        """The history before fraud-cd: ``history_days`` days decided by the legacy rules, as ``simulate``
        writes them (same rows, same files), with the disputes that arrive later kept pending."""
        out = Path(out)
        if (out / "world" / STATE).exists() or any((out / "transactions").glob("day=*")):
            raise WorldStateError(f"{out} already holds event logs; a closed loop starts in an empty folder "
                                  "(ClosedLoopWorld.open continues one)")
        if not 0 < history_days < cfg.days:
            raise WorldStateError(f"history_days {history_days}: must be in [1, {cfg.days - 1}] (cfg.days "
                                  f"{cfg.days} is the whole run: the history and every cycle's days)")
        w = cls(cfg, out, 0, 0)
        pending = []
        for i in range(history_days):
            day_rng = np.random.default_rng([cfg.seed, i])
            df = _one_day(cfg, i, w.merchants, w.cards, day_rng)
            dec = _decide(cfg, df, day_rng)
            pending.append(_disputes(cfg, df, dec, day_rng))
            write_partition(out / "transactions", w.day(i), df[TX_COLUMNS])
            write_partition(out / "truth", w.day(i), df[["tx_id", "is_fraud", "scenario"]])
            write_partition(out / "decisions", w.day(i), dec)
        atomic_write_parquet(w.merchants.drop(columns="volume"), out / "reference" / "merchants.parquet")
        w._land_disputes(pd.concat(pending, ignore_index=True), 0, history_days)
        w.traffic_days = w.decided_days = history_days
        w._save()
        return w

    @classmethod
    def open(cls, out: str | Path) -> "ClosedLoopWorld":
        f = Path(out) / "world" / STATE
        try:
            state = json.loads(f.read_text())
        except FileNotFoundError:
            raise WorldStateError(f"no closed-loop world in {out} (no {f}); start one first") from None
        return cls(WorldConfig.model_validate(state["config"]), Path(out), int(state["traffic_days"]),
                   int(state["decided_days"]))

    def add_traffic(self, days: int) -> tuple[dt.date, dt.date]:
        """The next ``days`` days' transactions and truth, undecided. Returns (first day, day after the last).
        One window at a time: the previous one must be decided first."""
        if self.traffic_days != self.decided_days:
            raise WorldStateError(f"days {self.horizon} .. {self.day(self.traffic_days - 1)} are not decided yet: "
                                  "decide them before adding traffic")
        if self.traffic_days + days > self.cfg.days:
            raise WorldStateError(f"{days} more days would go past the world's {self.cfg.days} days")
        for i in range(self.traffic_days, self.traffic_days + days):
            df = _one_day(self.cfg, i, self.merchants, self.cards, np.random.default_rng([self.cfg.seed, i]))
            write_partition(self.out / "transactions", self.day(i), df[TX_COLUMNS])
            write_partition(self.out / "truth", self.day(i), df[["tx_id", "is_fraud", "scenario"]])
        first = self.horizon
        self.traffic_days += days
        self._save()
        return first, self.day(self.traffic_days)

    def decide(self, decider: Decider) -> dict:
        """Decide the undecided days in order (each day's decisions are in the event logs before the next day
        is decided: the deployed model's risk features read them), then their disputes. Returns counts."""
        lo, hi = self.decided_days, self.traffic_days
        pending, totals = [], {"transactions": 0, "blocked": 0, "explored": 0, "frauds": 0, "blocked_frauds": 0}
        for i in range(lo, hi):
            day = self.day(i)
            tx = _read_day(self.out / "transactions", day)
            truth = _read_day(self.out / "truth", day)
            dec = decider(day, tx[TX_COLUMNS].copy())
            dec = _checked(dec, tx, day)
            write_partition(self.out / "decisions", day, dec)
            df = tx.merge(truth, on="tx_id", validate="one_to_one")
            pending.append(_disputes(self.cfg, df, dec, np.random.default_rng([self.cfg.seed, i, 1])))
            blocked = dec["action"].to_numpy() == "block"
            fraud = df["is_fraud"].to_numpy()
            totals["transactions"] += len(dec)
            totals["blocked"] += int(blocked.sum())
            totals["explored"] += int(dec["explored"].sum())
            totals["frauds"] += int(fraud.sum())
            totals["blocked_frauds"] += int((blocked & fraud).sum())
        self._land_disputes(pd.concat(pending, ignore_index=True) if pending else self._pending().iloc[:0], lo, hi)
        self.decided_days = hi
        self._save()
        return totals

    def _land_disputes(self, new: pd.DataFrame, lo: int, hi: int) -> None:
        """Disputes arriving on the days [lo, hi) into the event logs (complete: every transaction before them is
        decided), the later ones kept pending."""
        both = pd.concat([self._pending(), new], ignore_index=True)
        both["dispute_ts"] = pd.to_datetime(both["dispute_ts"], utc=True).astype("datetime64[us, UTC]")
        day = both["dispute_ts"].dt.date
        due = (day >= self.day(lo)) & (day < self.day(hi))
        if bool(((day < self.day(lo))).any()):
            raise WorldStateError("a dispute arrived before the days being decided: the pending disputes are "
                                  "out of step with the event logs")
        landing = both[due].assign(day=day[due])
        for d in pd.date_range(self.day(lo), self.day(hi - 1), freq="D").date:
            g = landing[landing["day"] == d].drop(columns="day").sort_values("tx_id")
            if len(g):
                write_partition(self.out / "disputes", d, g.reset_index(drop=True))
        self.folder.mkdir(parents=True, exist_ok=True)
        atomic_write_parquet(both[~due].sort_values("tx_id").reset_index(drop=True), self.folder / PENDING)

    # ---- the truth, for judging the pipeline (never read by it) -------------------------------------------

    def truth_of(self, first: dt.date, end: dt.date) -> pd.DataFrame:
        """Transactions of [first, end) with their truth and the decision taken on them."""
        parts = []
        for table in ("transactions", "truth", "decisions"):
            files = list_partitions(self.out / table, first, end)
            parts.append(pd.concat([pd.read_parquet(f) for f in files], ignore_index=True))
        tx, truth, dec = parts
        return (tx.merge(truth, on="tx_id", validate="one_to_one")
                  .merge(dec.drop(columns=["ts"]), on="tx_id", validate="one_to_one"))


def _read_day(table: Path, day: dt.date) -> pd.DataFrame:
    files = list_partitions(table, day, day + dt.timedelta(days=1))
    if not files:
        raise WorldStateError(f"no {table.name} for {day} in {table}")
    return pd.concat([pd.read_parquet(f) for f in files], ignore_index=True)


def _checked(dec: pd.DataFrame, tx: pd.DataFrame, day: dt.date) -> pd.DataFrame:
    """The decider's rows: one per transaction of the day, each field as the decisions table holds it."""
    missing = [c for c in DECISION_COLUMNS if c != "ts" and c not in dec.columns]
    if missing:
        raise WorldStateError(f"the decider's rows for {day} lack {missing}; it returns {DECISION_COLUMNS[:1] + DECISION_COLUMNS[2:]}")
    dec = dec.copy()
    dec["tx_id"] = dec["tx_id"].astype("int64")
    if sorted(dec["tx_id"].tolist()) != sorted(tx["tx_id"].tolist()):
        raise WorldStateError(f"the decider decided {len(dec)} transactions of {day}, not the day's {len(tx)}")
    if not dec["action"].isin(["allow", "block"]).all():
        raise WorldStateError(f"the decider's actions for {day} must be allow or block; got "
                              f"{sorted(set(dec['action']) - {'allow', 'block'})}")
    dec = tx[["tx_id", "ts"]].merge(dec.drop(columns=["ts"], errors="ignore"), on="tx_id", validate="one_to_one")
    dec["explored"] = dec["explored"].astype(bool)
    for c in ("score", "threshold", "propensity"):
        dec[c] = dec[c].astype(float)
    dec["policy"] = dec["policy"].astype(str)
    return dec[DECISION_COLUMNS]
