"""Point-in-time features for one transaction at a time, the way ``release.data.features`` computes them
for a batch.

The scoring service keeps each card's and each merchant's recent transactions in memory: seeded at
start from the event logs (days [seed_day - lookback_days, seed_day)), then appended with every scored
request. A request's features use only what is strictly earlier than its timestamp (windows
``[t - w, t)``, as offline: another transaction at the same instant is not known).

Exact online, i.e. equal to ``compute_features(events, seed_day, end)`` for every transaction the
service scores in time order (tested on a replayed day, ``tests/release/data/test_online_features.py``):

- request-only: amount, log_amount, cross_border, hour, category_code;
- card windows: card_tx_1h, card_tx_24h, card_amount_24h, card_tx_7d, card_amount_7d, card_tx_30d,
  amount_vs_card_avg_30d, amount_vs_card_max_30d, card_merchants_24h;
- merchant windows: merchant_tx_1h, merchant_tx_24h, merchant_tx_7d, merchant_amount_24h,
  amount_vs_merchant_avg_7d;
- card_age_days: "days since first seen", capped at card_age_cap_days, first seen counted from the
  service's seed day minus lookback_days, exactly as an offline call whose window starts on the seed
  day. (An offline call starting on another day reads a different lookback; the two can then differ
  for a card whose only activity before the last 30 days lies more than 60 days back. That is a
  property of the offline definition, which the cap keeps rare.)
- the risk features (merchant_fraud_rate, merchant_matured_tx by default; one rate and count per risk
  window of the pipeline configuration): daily batch features, one table per day (every merchant, plus
  the all-merchant rate for merchants never seen). Exact when that day's inputs (matured decisions,
  disputes that arrived before the day) are in the event logs when the table is finished. A risk feature
  on the exact clock (``RiskFeature.clock``) has an ``ExactRates`` table instead: the times each allowed
  transaction enters and leaves its window and each dispute enters and leaves the numerator, looked up at
  the request's own time; the day's own disputes partition is then an input too (re-read when it changes).

  In the scoring service (``start_preparing``) no request ever computes a table: a background thread
  keeps the tables of the clock's day, the day before (late transactions) and the day after ready,
  the clock's day before the service listens, the next one well before it begins (its heavy part reads
  ~90 days of logs; its last input, the disputes that arrive during the day before, is read when the
  table is finished and again whenever that partition changes, within ``refresh_s``: a dispute logged
  late is counted from then on, as offline counts it). A request for a day whose table is not ready
  (the clock jumped, a preparation failed or is still running) is not kept waiting: ``table_nowait``
  says so (None) and asks for it; the service answers 503 with the reason. Used as a library (no
  ``start_preparing``), the table is computed the first time a day is asked for, as before.

Sums are added in a different order than Polars adds them: equal to about 1e-12 relative, not bit for bit.

Limits, said plainly: the history lives in one process's memory (a 30-day card window, a 7-day
merchant window, plus first-seen times), sized for the simulated world (a few thousand transactions a
day). At 10M transactions a day the same windows belong in a keyed streaming store (sharded by card),
not in one Python process. A request that arrives out of time order is inserted where it belongs, but
requests scored before it did not see it (offline would have).
"""
from __future__ import annotations

import bisect
import itertools
import datetime as dt
import math
import logging
import threading
import time
from collections import OrderedDict, deque
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from release.data.features import CATEGORIES, _sql_list, connect, settings
from release.core.pipeline import Features
from release.core.io import list_partitions, location, read_parquet_table

log = logging.getLogger(__name__)

MICROS_PER_S = 1_000_000  # timestamps are integer microseconds since the epoch, as in the event logs
HOUR, DAY = 3600 * MICROS_PER_S, 86400 * MICROS_PER_S
PRUNE_EVERY = 50_000  # forget what no window can see any more, every this many transactions
PRESENT_SAMPLE = 1001  # pruning measures "now" as the median time of this many latest transactions
_CATEGORY_CODE = {c: float(i) for i, c in enumerate(CATEGORIES)}
_EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.timezone.utc)


def epoch_us(ts: dt.datetime | pd.Timestamp) -> int:
    """Integer microseconds since the epoch of a timezone-aware time (exact, no float rounding)."""
    if isinstance(ts, pd.Timestamp):
        return int(ts.tz_convert("UTC").value // 1000)
    if ts.tzinfo is None:
        raise ValueError(f"A transaction time needs a timezone (e.g. 2026-03-01T10:00:00Z). Got {ts.isoformat()}.")
    return (ts - _EPOCH) // dt.timedelta(microseconds=1)


@dataclass
class _History:
    """One card's or merchant's transactions, in time order, with the running sum of their amounts
    (``csum[i]``: the amounts before position i, plus what pruning forgot), so that a window's sum is
    one subtraction, not a walk over every transaction in it (a busy merchant's week holds thousands)."""

    ts: list[int] = field(default_factory=list)
    amount: list[float] = field(default_factory=list)
    merchant: list[str] = field(default_factory=list)  # cards only
    first_seen: int | None = None
    csum: list[float] = field(default_factory=lambda: [0.0])

    def add(self, ts: int, amount: float, merchant: str | None) -> None:
        # in time order: at the end; out of it: where it belongs
        i = len(self.ts) if not self.ts or ts >= self.ts[-1] else bisect.bisect_right(self.ts, ts)
        self.ts.insert(i, ts)
        self.amount.insert(i, amount)
        if merchant is not None:
            self.merchant.insert(i, merchant)
        self._resum(i)
        self.first_seen = ts if self.first_seen is None else min(self.first_seen, ts)

    def _resum(self, i: int) -> None:
        """The running sums from position ``i`` on, again (after an insertion or a removal there)."""
        self.csum[i:] = itertools.accumulate(self.amount[i:], initial=self.csum[i])

    def window_sum(self, lo: int, hi: int) -> float:
        """The sum of the amounts at positions [lo, hi)."""
        return self.csum[hi] - self.csum[lo] if hi > lo else 0.0

    def remove(self, ts: int, amount: float) -> bool:
        """Forget one transaction added at ``ts`` with ``amount`` (one not given after all)."""
        i = bisect.bisect_left(self.ts, ts)
        while i < len(self.ts) and self.ts[i] == ts:
            if self.amount[i] == amount:
                del self.ts[i], self.amount[i]
                if self.merchant:
                    del self.merchant[i]
                self._resum(i)
                if self.first_seen == ts:
                    self.first_seen = self.ts[0] if self.ts else None
                return True
            i += 1
        return False

    def prune(self, before: int) -> None:
        """Forget transactions older than ``before`` (first_seen stays); the running sums start again from
        zero, so they stay as small as the history is (their precision is that of the sums they hold)."""
        k = bisect.bisect_left(self.ts, before)
        if k:
            del self.ts[:k], self.amount[:k]
            if self.merchant:
                del self.merchant[:k]
            self.csum = [0.0]
            self._resum(0)


@dataclass
class RatePrep:
    """Most of a day's risk-feature tables, computed ahead: the allowed transactions of the widest
    denominator window (final long before the day) and, per risk feature, the disputes of its window that
    arrived up to two days before the day. ``finish_rates`` adds the disputes of the day before, which are
    final only once it ends."""

    day: dt.date
    window: pd.DataFrame  # tx_id, merchant_id, day: the allowed transactions of the widest window
    risk: list  # the risk features' settings (release.core.pipeline.RiskFeature), in order
    delays: list  # their delays, in days
    parts: list  # per risk feature: (its window's rows, allowed per merchant, frauds per merchant by day - 2)


def prepare_rates(events: Path, day: dt.date, maturity_days: int | None = None,
                  features: Features | None = None) -> RatePrep:
    """The heavy part of ``merchant_fraud_rates`` (reads the widest risk window of logs); safe to run a
    day ahead, in the background."""
    events = location(events)
    features, maturity_days = settings(features, maturity_days)
    delays = [r.delay(maturity_days) for r in features.risk]
    # every feature's window, both ends included, lies within the days [lo, hi] (on the exact clock, a
    # transaction of day - delay is in the window of the day's later transactions)
    lo = day - dt.timedelta(days=features.reach(maturity_days))
    hi = day - dt.timedelta(days=min(d + (r.clock == "day") for r, d in zip(features.risk, delays)))
    tx = list_partitions(events / "transactions", lo, hi + dt.timedelta(days=1))
    dec = list_partitions(events / "decisions", lo, hi + dt.timedelta(days=1))
    dis = list_partitions(events / "disputes", lo, day - dt.timedelta(days=1))  # arrived by day - 2
    con = connect(threads=1)
    try:
        window = pd.DataFrame({"tx_id": pd.Series(dtype="int64"), "merchant_id": pd.Series(dtype=object),
                               "day": pd.Series(dtype="datetime64[s]"), "ts_us": pd.Series(dtype="int64")})
        if tx and dec:
            window = con.execute(f"""
                SELECT t.tx_id, t.merchant_id, CAST(t.ts AS DATE) AS day, epoch_us(t.ts) AS ts_us
                FROM read_parquet({_sql_list(tx)}) t
                JOIN read_parquet({_sql_list(dec)}) d USING (tx_id)
                WHERE d.action = 'allow' AND CAST(t.ts AS DATE) BETWEEN DATE '{lo}' AND DATE '{hi}'""").df()
        disputes = con.execute(f"SELECT tx_id, epoch_us(dispute_ts) AS dispute_us FROM read_parquet({_sql_list(dis)}) "
                               f"WHERE CAST(dispute_ts AS DATE) <= DATE '{day - dt.timedelta(days=2)}'").df() if dis \
            else pd.DataFrame({"tx_id": pd.Series(dtype="int64"), "dispute_us": pd.Series(dtype="int64")})
    finally:
        con.close()
    days = pd.to_datetime(window["day"]).dt.date
    parts = []
    for r, d in zip(features.risk, delays):
        mine = window[((days >= day - dt.timedelta(days=d + r.window_days))
                       & (days <= day - dt.timedelta(days=d + (r.clock == "day")))).to_numpy()]
        if r.clock == "exact":
            parts.append((mine, None, _hits(mine, disputes)))
        else:
            parts.append((mine, mine["merchant_id"].value_counts(), _frauds(mine, disputes)))
    return RatePrep(day=day, window=window, risk=list(features.risk), delays=delays, parts=parts)


def _frauds(window: pd.DataFrame, disputes: pd.DataFrame) -> pd.Series:
    """Disputes per merchant (each dispute row counts, as the offline join counts them)."""
    hit = disputes[["tx_id"]].astype({"tx_id": "int64"}).merge(window[["tx_id", "merchant_id"]], on="tx_id")
    return hit["merchant_id"].value_counts()


def _hits(window: pd.DataFrame, disputes: pd.DataFrame) -> pd.DataFrame:
    """The disputes of the window's transactions (each dispute row counts): merchant, ts_us, dispute_us."""
    return disputes[["tx_id", "dispute_us"]].astype("int64").merge(
        window[["tx_id", "merchant_id", "ts_us"]], on="tx_id")[["merchant_id", "ts_us", "dispute_us"]]


@dataclass(eq=False)
class ExactRates:
    """One risk feature's table on the exact clock (``RiskFeature.clock``) for one day: per merchant, the
    times its allowed transactions enter and leave the window [t - delay - window, t - delay) and the times
    their disputes enter and leave the numerator (a dispute counts from when it arrived, or from when its
    transaction entered the window if later); a count at t is the events strictly before t. The same
    definition as the offline ``rate{i}`` relation of ``release.data.features._exact_rate_ctes``."""

    merchants: dict  # merchant_id -> (denominator in, out, numerator in, out): sorted lists of times (us)
    total: tuple  # the same four, all merchants: sorted int64 arrays
    prior_tx: float

    @classmethod
    def build(cls, window: pd.DataFrame, hits: pd.DataFrame, r, delay_days: int) -> "ExactRates":
        enter, leave = delay_days * DAY, (delay_days + int(r.window_days)) * DAY
        ts = window["ts_us"].to_numpy(np.int64)
        h_in = np.maximum(hits["ts_us"].to_numpy(np.int64) + enter, hits["dispute_us"].to_numpy(np.int64))
        h_out = hits["ts_us"].to_numpy(np.int64) + leave
        keep = h_in < h_out
        streams = [(window["merchant_id"].to_numpy(object), ts + enter), (window["merchant_id"].to_numpy(object), ts + leave),
                   (hits["merchant_id"].to_numpy(object)[keep], h_in[keep]),
                   (hits["merchant_id"].to_numpy(object)[keep], h_out[keep])]
        merchants: dict = {}
        for j, (mid, t) in enumerate(streams):
            if not len(t):
                continue
            codes, names = pd.factorize(mid)
            order = np.lexsort((t, codes))
            cuts = np.flatnonzero(np.diff(codes[order])) + 1
            for chunk in np.split(order, cuts):
                merchants.setdefault(names[codes[chunk[0]]], ([], [], [], []))[j].extend(t[chunk].tolist())
        total = tuple(np.sort(t) for _, t in streams)
        return cls(merchants=merchants, total=total, prior_tx=float(r.prior_tx))

    def at(self, merchant_id: str, t: int) -> tuple[float | None, int]:
        """(rate, matured count) of the merchant for a transaction at ``t`` (us)."""
        g_in, g_out, gf_in, gf_out = (int(np.searchsorted(a, t, "left")) for a in self.total)
        g_allowed, g_frauds = g_in - g_out, gf_in - gf_out
        m = self.merchants.get(merchant_id)
        a, n = (0, 0) if m is None else (bisect.bisect_left(m[0], t) - bisect.bisect_left(m[1], t),
                                         bisect.bisect_left(m[2], t) - bisect.bisect_left(m[3], t))
        if g_allowed <= 0:
            return None, a
        k = self.prior_tx
        return (n + k * g_frauds / g_allowed) / (a + k), a


def finish_rates(events: Path, prep: RatePrep) -> list:
    """The day's tables from its preparation plus the disputes that arrived the day before (one partition)
    and, for a feature on the exact clock, those of the day itself so far: per risk feature, every
    merchant's (rate, matured count) and the all-merchant rate (an ``ExactRates`` on the exact clock)."""
    day = prep.day
    exact = any(r.clock == "exact" for r in prep.risk)
    files = list_partitions(location(events) / "disputes", day - dt.timedelta(days=1),
                            day + dt.timedelta(days=1 if exact else 0))
    last = None
    if files:  # small partitions: read directly (a DuckDB connection alone costs ~15 ms)
        last = pd.concat([read_parquet_table(f, columns=["tx_id", "dispute_ts"]).to_pandas() for f in files])
        last_day = pd.to_datetime(last["dispute_ts"], utc=True)
        last = last.assign(dispute_us=last_day.astype("datetime64[us, UTC]").astype("int64"),
                           _day=last_day.dt.date)
    out: list = []
    for r, d, (window, allowed, frauds) in zip(prep.risk, prep.delays, prep.parts):
        if r.clock == "exact":  # the disputes of the day before and of the day so far
            if last is not None:
                frauds = pd.concat([frauds, _hits(window, last[last["_day"] >= day - dt.timedelta(days=1)])])
            out.append(ExactRates.build(window, frauds, r, d))
            continue
        if last is not None:  # the disputes of the day before
            frauds = frauds.add(_frauds(window, last[last["_day"] == day - dt.timedelta(days=1)]), fill_value=0)
        g_allowed, g_frauds = int(allowed.sum()), int(frauds.sum())
        if g_allowed <= 0:
            out.append(({}, None))
            continue
        k = float(r.prior_tx)
        prior = k * g_frauds / g_allowed
        f = frauds.reindex(allowed.index, fill_value=0)
        rates = {mid: ((int(n) + prior) / (int(a) + k), int(a))
                 for mid, a, n in zip(allowed.index, allowed.to_numpy(), f.to_numpy())}
        out.append((rates, (0 + prior) / (0 + k)))
    return out


def merchant_fraud_rates(events: Path, day: dt.date, maturity_days: int | None = None,
                         features: Features | None = None) -> list[tuple[dict, float | None]]:
    """Per risk feature: every merchant's (rate, matured count) on ``day``, and the all-merchant rate
    (what a merchant with no matured transactions gets). The same definition as the ``rate{i}`` relations
    of ``release.data.features.feature_query`` (tested equal): allowed transactions of the days
    [day - maturity - window, day - maturity - 1], each dispute counted from the day after it arrived,
    shrunk toward the all-merchant rate with the configured prior weight (in transactions)."""
    return finish_rates(events, prepare_rates(events, day, maturity_days, features))


_EMPTY = _History()  # a card or merchant never seen (never written to)
RETRY_S = 10.0  # a failed table preparation is retried this often
MAX_TABLES = 5  # days of risk tables kept (the clock's day, the next, the day before, two asked for)
PRUNE_CHUNK = 2000  # histories pruned per lock hold in the background


def _day(ts_us: int) -> dt.date:
    return dt.date(1970, 1, 1) + dt.timedelta(microseconds=ts_us)


class OnlineFeatures:
    """Per-card and per-merchant history in memory; ``features_and_add`` gives one transaction's
    point-in-time features and then remembers it. Thread-safe."""

    def __init__(self, events: Path, seed_day: dt.date, maturity_days: int | None = None,
                 features: Features | None = None, prepare_ahead: bool = True):
        self.events = location(events)
        self.prepare_ahead = prepare_ahead
        self._rate_lock = threading.Lock()
        self._prepared: dict[dt.date, RatePrep] = {}
        self._preparing: dict[dt.date, threading.Thread] = {}
        self.seed_day = seed_day
        self.settings, self.maturity_days = settings(features, maturity_days)
        self._groups = self._window_groups()
        self._cards: dict[str, _History] = {}
        self._merchants: dict[str, _History] = {}
        self._rates: OrderedDict[dt.date, list[tuple[dict, float | None]]] = OrderedDict()
        self._lock = threading.Lock()
        self._recent: deque[int] = deque(maxlen=PRESENT_SAMPLE)  # times of the latest transactions added
        self._since_prune = 0
        # the background preparer (start_preparing): what it keeps, what was asked, what went wrong
        self._preparer: threading.Thread | None = None
        self._clock = None
        self._wake = threading.Event()
        self._stopping = threading.Event()
        self._asked: dict[dt.date, float] = {}  # a day a request needed and did not find ready -> when asked
        self._finished_from: dict[dt.date, tuple] = {}  # day -> the dispute files its table was finished with
        self._table_info: dict[dt.date, dict] = {}  # day -> when prepared, how long it took, refreshes
        self._failed: dict[dt.date, tuple[float, str]] = {}  # day -> (when, why) of its last failed preparation
        self._prune_due = False
        self.refresh_s = 1.0
        self.behind_days = 1
        self.seeded_rows = self._seed()

    # ---- history ------------------------------------------------------------------------------------

    def _seed(self) -> int:
        files = list_partitions(self.events / "transactions", self.seed_day - dt.timedelta(days=self.settings.lookback_days),
                                self.seed_day)
        if not files:
            return 0
        con = connect(threads=2)
        try:
            df = con.execute(f"SELECT ts, card_id, merchant_id, amount FROM read_parquet({_sql_list(files)}) "
                             "ORDER BY ts").df()
        finally:
            con.close()
        self.add_many(df)
        return len(df)

    def add_many(self, df: pd.DataFrame) -> None:
        """Remember many transactions (ts, card_id, merchant_id, amount), e.g. the decision log of a
        restarted service. Rows are taken in time order."""
        if df.empty:
            return
        df = df.sort_values("ts", kind="stable")
        ts = pd.to_datetime(df["ts"], utc=True).astype("datetime64[us, UTC]").astype("int64").to_numpy()
        cards = df["card_id"].astype(str).to_numpy()
        merchants = df["merchant_id"].astype(str).to_numpy()
        amounts = df["amount"].astype(float).to_numpy()
        with self._lock:
            for t, c, mid, a in zip(ts.tolist(), cards.tolist(), merchants.tolist(), amounts.tolist()):
                self._add(t, c, mid, a)
            self._prune_all()

    def _add(self, ts: int, card: str, merchant: str, amount: float) -> None:
        h = self._cards.get(card)
        if h is None:
            h = self._cards[card] = _History()
        h.add(ts, amount, merchant)
        m = self._merchants.get(merchant)
        if m is None:
            m = self._merchants[merchant] = _History()
        m.add(ts, amount, None)
        self._recent.append(ts)

    def forget(self, ts: int, card_id: str, merchant_id: str, amount: float) -> None:
        """Take back a transaction ``features_and_add`` remembered whose decision was never given (the
        decision log refused it): a retry of it must not find itself in its own history."""
        with self._lock:
            for table, key in ((self._cards, card_id), (self._merchants, merchant_id)):
                h = table.get(key)
                if h is not None:
                    h.remove(ts, amount)
                    if not h.ts:
                        del table[key]

    def present(self) -> int | None:
        """What pruning takes as "now": the median time of the latest PRESENT_SAMPLE transactions added.
        Not the largest time ever seen: one transaction far in the future (a year-2200 request, a bad log
        row) must not make every window look old and empty. It moves only when most recent traffic
        does; until then pruning keeps more than it needs, which costs memory, never a count."""
        if not self._recent:
            return None
        return sorted(self._recent)[len(self._recent) // 2]

    def _prune_all(self) -> None:
        """Forget what no declared window can see any more (the longest window of each entity, plus a day,
        before the present)."""
        self._since_prune = 0
        now = self.present()
        if now is None:
            return
        card_keep, merchant_keep = (self.settings.longest_window_us("card"),
                                    self.settings.longest_window_us("merchant"))
        for h in self._cards.values():
            h.prune(now - card_keep - DAY)
        for h in self._merchants.values():
            h.prune(now - merchant_keep - DAY)

    @property
    def cards(self) -> int:
        return len(self._cards)

    def knows_merchant(self, merchant_id: str) -> bool:
        return merchant_id in self._merchants

    # ---- the daily merchant fraud rate --------------------------------------------------------------

    def rate_table(self, day: dt.date) -> list[tuple[dict, float | None]]:
        """The risk-feature tables (merchant fraud rates) of ``day``, computed once per day from the event
        logs, waiting for them if need be (the library's way; the service uses ``table_nowait``). Without
        the background preparer, most of the next day's table is prepared in a thread as soon as this one
        is done, so the first request of a day waits only for the last day's disputes (one partition)."""
        got = self._rates.get(day)
        if got is not None:
            return got
        if self._preparer is not None:  # the preparer builds it; wait for it (a library caller asked to)
            while (got := self._rates.get(day)) is None:
                self._ask(day)
                failed = self._failed.get(day)
                if failed is not None and failed[0] >= self._asked.get(day, 0):
                    raise RuntimeError(f"preparing the risk-feature tables of {day} failed: {failed[1]}")
                time.sleep(0.005)
            return got
        with self._rate_lock:
            got = self._rates.get(day)
            if got is not None:
                return got
            worker = self._preparing.pop(day, None)
            if worker is not None:
                worker.join()
            prep = self._prepared.pop(day, None) or prepare_rates(self.events, day, self.maturity_days, self.settings)
            got = finish_rates(self.events, prep)
            self._rates[day] = got
            while len(self._rates) > 3:
                self._rates.popitem(last=False)
            nxt = day + dt.timedelta(days=1)
            if self.prepare_ahead and nxt not in self._rates and nxt not in self._preparing:
                # not a daemon: interpreter exit waits for it (a DuckDB query killed mid-way aborts the process)
                t = threading.Thread(target=self._prepare, args=(nxt,), name=f"rates-{nxt}")
                self._preparing[nxt] = t
                t.start()
        return got

    def table_nowait(self, day: dt.date) -> list[tuple[dict, float | None]] | None:
        """The risk-feature tables of ``day`` if they are ready, else None at once (the background preparer
        is asked for them). Without a preparer (a library caller): ``rate_table``, which computes them."""
        got = self._rates.get(day)
        if got is not None or self._preparer is None:
            return got if got is not None else self.rate_table(day)
        self._ask(day)
        return None

    def not_ready_reason(self, day: dt.date) -> str:
        """Why the tables of ``day`` are not ready, for the 503 a request gets meanwhile."""
        failed = self._failed.get(day)
        since = self._asked.get(day)
        what = (f"the risk-feature tables of {day} (merchant fraud rates from the event logs) are not ready: ")
        if failed is not None:
            return what + (f"their preparation failed ({failed[1]}); it is retried in the background every "
                           f"{RETRY_S:g} s")
        ready = sorted(self._rates)
        return what + (f"they are being prepared in the background (asked {time.monotonic() - since:.1f} s ago)"
                       if since is not None else "they are being prepared in the background") + (
                       f"; ready: {', '.join(d.isoformat() for d in ready)}" if ready else "")

    def wake(self) -> None:
        """Let the background preparer look at once (the service's clock entered a new day)."""
        self._wake.set()

    def _ask(self, day: dt.date) -> None:
        if day not in self._asked:
            self._asked[day] = time.monotonic()
            self._wake.set()

    def start_preparing(self, clock, behind_days: int = 1, refresh_s: float = 1.0) -> None:
        """From now on the tables are prepared ahead in a background thread (see the module's docstring).
        ``clock()``: the service's time (integer microseconds since the epoch); its day, ``behind_days``
        before it and the day after it are kept ready. The clock's day is prepared here, before this
        returns (the service calls this at start-up, before it listens); the others in the thread."""
        if self._preparer is not None:
            return
        self._clock, self.behind_days, self.refresh_s = clock, max(0, int(behind_days)), float(refresh_s)
        today = _day(clock())
        if today not in self._rates:
            try:
                self._build(today)
            except Exception as e:  # noqa: BLE001 - start anyway: requests of the day get a 503 saying why
                self._failed[today] = (time.monotonic(), f"{type(e).__name__}: {e}")
                log.exception("risk tables: preparing the tables of %s failed; retried in %g s", today, RETRY_S)
        self._stopping.clear()
        self._wake.set()  # the other wanted days at once
        # not a daemon: close() joins it (a DuckDB query killed mid-way by interpreter exit aborts the process)
        self._preparer = threading.Thread(target=self._prepare_loop, name="risk-tables")
        self._preparer.start()

    def wanted_days(self) -> list[dt.date]:
        """The days the preparer keeps ready, most urgent first: the clock's day, the next one, the days
        before it that late transactions may be of, then days requests asked for."""
        today = _day(self._clock())
        out = [today, today + dt.timedelta(days=1)]
        out += [today - dt.timedelta(days=k) for k in range(1, self.behind_days + 1)]
        out += sorted((d for d in list(self._asked) if d not in out), key=lambda d: abs((d - today).days))
        return out

    def _prepare_loop(self) -> None:
        while not self._stopping.is_set():
            self._wake.wait(self.refresh_s)
            self._wake.clear()
            if self._stopping.is_set():
                return
            if self._prune_due:
                self._prune_due = False
                self._prune_in_chunks()
            try:
                wanted = self.wanted_days()
            except Exception:  # noqa: BLE001 - a broken clock must not end the thread
                log.exception("risk tables: reading the service's clock failed")
                continue
            for day in wanted:
                if self._stopping.is_set():
                    return
                failed = self._failed.get(day)
                if failed is not None and time.monotonic() - failed[0] < RETRY_S:
                    continue
                try:
                    if day not in self._rates:
                        self._build(day)
                    elif day in self._prepared and self._dispute_files(day) != self._finished_from.get(day):
                        self._refinish(day)
                except Exception as e:  # noqa: BLE001 - requests of the day get a 503 saying why; retried
                    self._failed[day] = (time.monotonic(), f"{type(e).__name__}: {e}")
                    log.exception("risk tables: preparing the tables of %s failed; retried in %g s", day, RETRY_S)
            self._forget_old(wanted)

    def _dispute_files(self, day: dt.date) -> tuple:
        """What finishing ``day``'s table reads: the disputes partition of the day before, and of the day itself
        with a risk feature on the exact clock (names, sizes, modification times), to notice when it changes."""
        out = []
        exact = any(r.clock == "exact" for r in self.settings.risk)
        for f in list_partitions(self.events / "disputes", day - dt.timedelta(days=1),
                                 day + dt.timedelta(days=1 if exact else 0)):
            try:
                st = f.stat()
            except FileNotFoundError:
                continue
            out.append((f.name, st.st_size, st.st_mtime_ns))
        return tuple(out)

    def _build(self, day: dt.date) -> None:
        """Prepare and finish ``day``'s tables (the heavy part reads the widest risk window of logs)."""
        t0 = time.monotonic()
        prep = prepare_rates(self.events, day, self.maturity_days, self.settings)
        files = self._dispute_files(day)
        tables = finish_rates(self.events, prep)
        with self._rate_lock:
            self._rates[day] = tables
            self._prepared[day] = prep  # kept while the day is near: a changed dispute partition re-finishes it
            self._finished_from[day] = files
            self._table_info[day] = {"prepared_at": dt.datetime.now(dt.timezone.utc).isoformat(timespec="milliseconds"),
                                     "seconds": round(time.monotonic() - t0, 3), "refreshes": 0}
            self._failed.pop(day, None)
            self._asked.pop(day, None)

    def _refinish(self, day: dt.date) -> None:
        files = self._dispute_files(day)
        tables = finish_rates(self.events, self._prepared[day])
        with self._rate_lock:
            self._rates[day] = tables  # one reference swap: a request reads the old table or the new one
            self._finished_from[day] = files
            info = self._table_info.setdefault(day, {"refreshes": 0})
            info["refreshes"] = info.get("refreshes", 0) + 1
            info["refreshed_at"] = dt.datetime.now(dt.timezone.utc).isoformat(timespec="milliseconds")
        log.info("risk tables: %s re-finished (its disputes partition changed)", day)

    def _forget_old(self, wanted: list[dt.date]) -> None:
        """Keep the tables of the wanted days (at most MAX_TABLES); the heavy preparations only of the
        clock's day and the next (the days whose last input may still change)."""
        keep = set(wanted[:MAX_TABLES])
        with self._rate_lock:
            for day in [d for d in self._rates if d not in keep]:
                del self._rates[day]
                self._table_info.pop(day, None)
                self._finished_from.pop(day, None)
            for day in [d for d in self._prepared if d not in set(wanted[:2])]:
                del self._prepared[day]
            for day in [d for d in self._asked if d not in keep]:  # asked long ago and pushed out: ask again
                del self._asked[day]

    def tables_state(self) -> dict:
        """For the service's /state: the days whose tables are ready, and what is pending or failed."""
        with self._rate_lock:
            ready = {d.isoformat(): dict(self._table_info.get(d, {})) for d in sorted(self._rates)}
        return {"background": self._preparer is not None, "ready": ready,
                "pending": sorted(d.isoformat() for d in list(self._asked) if d not in self._rates),
                "failed": {d.isoformat(): why for d, (_, why) in list(self._failed.items())}}

    def __enter__(self) -> "OnlineFeatures":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        """Stop the background preparer (after the preparation it is in) and wait for any preparation
        (a library caller's next day, prepared ahead in a thread). Safe to call twice."""
        self._stopping.set()
        self._wake.set()
        if self._preparer is not None:
            self._preparer.join()
            self._preparer = None
        for t in list(self._preparing.values()):
            t.join()

    def _prepare(self, day: dt.date) -> None:
        try:
            self._prepared[day] = prepare_rates(self.events, day, self.maturity_days, self.settings)
        except Exception:  # noqa: BLE001 - the day's first request then computes it in full
            log.exception("preparing the merchant fraud rates of %s failed", day)

    def _prune_in_chunks(self) -> None:
        """``_prune_all`` in the background: the history is walked PRUNE_CHUNK entries at a time, the lock
        taken per chunk, so requests go on between chunks."""
        with self._lock:
            now = self.present()
            tables = [(list(self._cards), self._cards, self.settings.longest_window_us("card")),
                      (list(self._merchants), self._merchants, self.settings.longest_window_us("merchant"))]
        if now is None:
            return
        for keys, table, keep in tables:
            for i in range(0, len(keys), PRUNE_CHUNK):
                with self._lock:
                    for k in keys[i:i + PRUNE_CHUNK]:
                        h = table.get(k)
                        if h is not None:
                            h.prune(now - keep - DAY)

    # ---- one transaction ----------------------------------------------------------------------------

    def features_and_add(self, ts: int, card_id: str, card_country: str, merchant_id: str, merchant_country: str,
                         merchant_category: str, amount: float, tables=None) -> dict[str, float]:
        """The transaction's features from what was known strictly before ``ts``; then remember it.
        ``tables``: the day's risk tables (``table_nowait``); if not given, ``rate_table`` (may compute them)."""
        if tables is None:
            tables = self.rate_table(_day(ts))  # outside the lock: without a preparer, once a day it reads the logs
        with self._lock:
            f = self._features(ts, card_id, merchant_id, amount)
            self._add(ts, card_id, merchant_id, amount)
            self._since_prune += 1
            if self._since_prune >= PRUNE_EVERY:
                if self._preparer is not None:  # in the background, a chunk at a time: no request waits for it
                    self._since_prune, self._prune_due = 0, True
                    self._wake.set()
                else:
                    self._prune_all()
        secs = ts // MICROS_PER_S
        f.update(
            amount=amount, log_amount=math.log1p(amount), cross_border=float(card_country != merchant_country),
            hour=float((secs % 86400) // 3600), category_code=_CATEGORY_CODE.get(merchant_category, math.nan),
        )
        for r, table in zip(self.settings.risk, tables):
            if isinstance(table, ExactRates):
                rate, matured = table.at(merchant_id, ts)
            else:
                rates, global_rate = table
                rate, matured = rates.get(merchant_id, (global_rate, 0))
            f[r.rate] = math.nan if rate is None else rate
            f[r.count] = float(matured)
        return f

    def _window_groups(self) -> list[tuple[str, int, list]]:
        """The declared windows grouped by (entity, length): one bisect and one slice per group."""
        groups: dict[tuple[str, int], list] = {}
        for w in self.settings.windows:
            groups.setdefault((w.entity, w.window_us()), []).append((w.name, w.aggregation))
        return [(entity, length, feats) for (entity, length), feats in groups.items()]

    def _features(self, ts: int, card_id: str, merchant_id: str, amount: float) -> dict[str, float]:
        """The declared window aggregates (release.core.pipeline.WindowFeature) and the card's age, from the
        history strictly before ``ts``: the same definitions as release.data.features computes offline."""
        out: dict[str, float] = {}
        c = self._cards.get(card_id) or _EMPTY
        m = self._merchants.get(merchant_id) or _EMPTY
        hi_c, hi_m = bisect.bisect_left(c.ts, ts), bisect.bisect_left(m.ts, ts)  # strictly before ts
        for entity, length, feats in self._groups:
            h, hi = (c, hi_c) if entity == "card" else (m, hi_m)
            lo = bisect.bisect_left(h.ts, ts - length, 0, hi)
            for name, agg in feats:
                if agg == "count":
                    out[name] = float(hi - lo)
                elif agg == "sum":
                    out[name] = float(h.window_sum(lo, hi))
                elif agg == "distinct_merchants":
                    out[name] = float(len(set(h.merchant[lo:hi])))
                else:
                    base = ((h.window_sum(lo, hi) / (hi - lo) if agg == "amount_over_mean" else
                             max(h.amount[lo:hi])) if hi > lo else amount)
                    out[name] = amount / (base + 1)
        first = ts if c.first_seen is None else min(c.first_seen, ts)
        out["card_age_days"] = min((ts // MICROS_PER_S - first // MICROS_PER_S) / 86400.0,
                                   float(self.settings.card_age_cap_days))
        return out
