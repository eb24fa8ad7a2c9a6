"""Label completeness: the share of eventual disputes already arrived at a window's age, estimated from
matured history.

Fraud labels arrive as disputes, weeks after the transaction. A window of transaction days judged at
``as_of`` holds only the disputes that arrived before ``as_of``; this module says how many of the
disputes that will eventually come that is, so a recall or a fraud rate measured on a young window can
be read for what it is.

**The estimate: fully observed cohorts.** The delay distribution (dispute time - transaction time, in
days) is the plain empirical distribution of the delays of transactions at least ``horizon_days`` old
at ``as_of`` (by default the 90 days of such cohorts just before ``as_of - horizon_days``). Every
dispute such a transaction gets within the horizon has arrived by ``as_of``, so nothing in the sample
is cut short (right-censored) and no correction is needed. "Eventual disputes" therefore means disputes
arriving within ``horizon_days`` (default 120: card networks' usual chargeback limit, and the
simulator's cap); disputes later than the horizon are not counted (the manifest says how many were
seen).

Why not Kaplan-Meier on every cohort: its at-risk set is transactions, and most transactions are never
disputed, so its hazards divide by transaction counts. A fraud wave in a young cohort (a compromised
merchant, a card-testing burst) then adds early delays without its later ones yet, and the shape comes
out skewed toward short delays; the same happens when the block rate moves. Fully observed cohorts
assume only that the *shape* of the delay distribution is stable over the last ``horizon + cohort``
days, at the cost of reacting to a change in that shape ``horizon_days`` late.

**Completeness of a window** ``[start, end)`` at ``as_of``: the mean over the window's days (weighted by
each day's transaction count when given) of the share of the day's eventual disputes arrived. A
transaction on day ``d`` is between ``a - 1`` and ``a`` days old at ``as_of`` (``a = as_of - d``);
taking its time of day as uniform, the day's share is ``E[clip(a - D, 0, 1)]`` over the delays ``D``
(the delay CDF averaged over the day). A day older than ``horizon + 1`` days counts as complete: complete
*given the horizon*, which the result says (``beyond_horizon_share``).

The estimate is a sample mean over the disputes used (of ``g(D) = sum_d w_d clip(a_d - D, 0, 1)``), so
its standard error is exact for independent delays; delays that come in correlated groups (one incident,
many disputes) make it an underestimate.

A log without dispute times (a team's source ingested with ``fraud_flag`` + ``label_delay_days``, see
``release/data/source.py``) has every dispute exactly ``label_delay_days`` after its transaction: the reader
recognises that and says completeness cannot be measured, instead of restating the assumption as a
measurement. A log with no disputes at all gets the same treatment. Nothing here returns a number that
was not estimated: every "cannot say" is ``None`` with a ``reason``.

For the evaluation::

    from release.data.label_completeness import window_completeness
    out = window_completeness(events, dt.date(2026, 6, 20), {
        "fitting window": (dt.date(2026, 3, 20), dt.date(2026, 4, 10)),
        "judging window": (dt.date(2026, 4, 10), dt.date(2026, 4, 21))})
    out["judging window"]["sentence"]
    # 'Label completeness of the judging window (2026-04-10..2026-04-20) at 2026-06-20: 93% of eventual
    #  disputes have arrived (7% still to come), from 1,204 disputes of matured history.'
"""
from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import pandas as pd

from release.core.io import list_partitions, location, parquet_num_rows

DAY = pd.Timedelta(days=1)
HORIZON_DAYS = 120  # a dispute later than this is not an "eventual dispute" (card networks' usual limit)
COHORT_DAYS = 90  # days of fully observed cohorts the delay distribution rests on
MIN_DISPUTES = 30  # fewer disputes than this: no estimate (a completeness from a handful of delays is noise)


# ---------------------------------------------------------------- helpers

def _check_int(func: str, name: str, value: int, lo: int, hi: int) -> None:
    if not isinstance(value, (int, np.integer)) or isinstance(value, bool) or not lo <= value <= hi:
        raise ValueError(f"The '{name}' parameter of {func} must be an int in [{lo}, {hi}]. Got {value!r} instead.")


def _utc_ts(value) -> pd.Timestamp:
    """A date, a string or a timestamp as a tz-aware UTC timestamp (naive ones are taken to be UTC; a
    date is its midnight)."""
    ts = pd.Timestamp(value)
    return ts.tz_localize("UTC") if ts.tz is None else ts.tz_convert("UTC")


def _as_date(value, func: str, name: str) -> dt.date:
    try:
        ts = pd.Timestamp(value)
    except (TypeError, ValueError):
        raise ValueError(f"The '{name}' parameter of {func} must be a date. Got {value!r} instead.") from None
    if ts is pd.NaT or ts != ts.normalize():
        raise ValueError(f"The '{name}' parameter of {func} must be a date (midnight). Got {value!r} instead.")
    return ts.date()


def _utc_times(values) -> pd.DatetimeIndex:
    return pd.DatetimeIndex(pd.to_datetime(values, utc=True))


def _day_ceil(ts: pd.Timestamp) -> dt.date:
    """The first day starting at or after ``ts``: the exclusive end of the days strictly before it."""
    return ts.date() if ts == ts.normalize() else ts.date() + dt.timedelta(days=1)


def _show_time(ts: pd.Timestamp) -> str:
    return ts.date().isoformat() if ts == ts.normalize() else ts.isoformat()


def _pct(share: float) -> str:
    """A share as a whole percentage, with one decimal where rounding would say 0% or 100% of a share that
    is neither."""
    text = f"{share:.0%}"
    if (text == "0%" and share > 0) or (text == "100%" and share < 1):
        text = f"{share:.1%}"
        if text in ("0.0%", "100.0%"):
            text = "<0.1%" if share < 0.5 else ">99.9%"
    return text


def _r(x: float | None, digits: int = 6) -> float | None:
    return None if x is None else round(float(x), digits)


# ---------------------------------------------------------------- the delay distribution

@dataclass(frozen=True)
class DelayDistribution:
    """The empirical distribution of dispute delays (days) of fully observed cohorts.

    ``delays_days`` holds every delay used, sorted (each in [0, horizon]); ``cdf[k]`` is the share of
    eventual disputes that arrive within ``grid_days[k]`` days (k = 0..horizon). ``reason`` is None when
    the distribution can be used, else why not (and the figures are then not to be read).
    """

    as_of: pd.Timestamp
    horizon_days: int
    delays_days: np.ndarray
    disputes_used: int
    cohort_start: dt.date | None  # first transaction day the cohorts cover (inclusive)
    cohort_end: dt.date | None  # day after the last one (exclusive): as_of - horizon
    disputes_beyond_horizon: int = 0  # arrived by as_of, later than the horizon after the transaction: not counted
    young_disputes_excluded: int = 0  # of transactions younger than the horizon: their later disputes are unseen
    invalid_disputes: int = 0  # dated before their transaction: dropped
    transactions_used: int | None = None  # transactions in the cohorts, when known
    reason: str | None = None
    grid_days: np.ndarray = field(init=False, repr=False)
    cdf: np.ndarray = field(init=False, repr=False)

    def __post_init__(self) -> None:
        grid = np.arange(self.horizon_days + 1, dtype=float)
        object.__setattr__(self, "grid_days", grid)
        object.__setattr__(self, "cdf", self.cdf_at(grid))

    @property
    def usable(self) -> bool:
        return self.reason is None

    def cdf_at(self, age_days) -> np.ndarray:
        """Share of eventual disputes arrived within ``age_days`` of the transaction (vectorised; 1 from
        the horizon on; NaN when there are no delays)."""
        age = np.asarray(age_days, dtype=float)
        if self.disputes_used == 0:
            return np.full(age.shape, np.nan)
        return np.searchsorted(self.delays_days, age, side="right") / self.disputes_used

    def quantile(self, q: float) -> float | None:
        """The delay (days) by which a share ``q`` of eventual disputes has arrived; None when unusable."""
        if not self.usable:
            return None
        return float(np.quantile(self.delays_days, q))

    @property
    def median_days(self) -> float | None:
        return self.quantile(0.5)

    @property
    def p90_days(self) -> float | None:
        return self.quantile(0.9)

    def summary(self) -> dict:
        """What the snapshot manifest records: median, p90, disputes used, horizon, cohorts, reason."""
        return {
            "horizon_days": self.horizon_days,
            "median_days": _r(self.median_days, 2), "p90_days": _r(self.p90_days, 2),
            "disputes_used": self.disputes_used, "transactions_used": self.transactions_used,
            "cohort_start": self.cohort_start.isoformat() if self.cohort_start else None,
            "cohort_end": self.cohort_end.isoformat() if self.cohort_end else None,
            "disputes_beyond_horizon": self.disputes_beyond_horizon,
            "invalid_disputes": self.invalid_disputes,
            "reason": self.reason,
        }


def dispute_delay_distribution(transactions_ts, dispute_ts, as_of, horizon_days: int = HORIZON_DAYS, *,
                               cohort_days: int | None = None,
                               min_disputes: int = MIN_DISPUTES) -> DelayDistribution:
    """The delay distribution estimated from the cohorts fully observed at ``as_of``.

    ``transactions_ts`` and ``dispute_ts`` are aligned (one entry per transaction; a transaction's first
    dispute, NaT when it has none); undisputed transactions may be left out. Naive times are UTC. Used:
    transactions with ts < as_of - horizon_days (and, with ``cohort_days``, ts >= as_of - horizon_days -
    cohort_days) whose dispute arrived before ``as_of`` within ``horizon_days``. Disputes of younger
    transactions are excluded (counted in ``young_disputes_excluded``): their long delays have not
    arrived yet, so they would bias the distribution toward short delays.
    """
    func = "dispute_delay_distribution"
    _check_int(func, "horizon_days", horizon_days, 1, 3650)
    if cohort_days is not None:
        _check_int(func, "cohort_days", cohort_days, 1, 3650)
    _check_int(func, "min_disputes", min_disputes, 1, 10**9)
    at = _utc_ts(as_of)
    tx = _utc_times(transactions_ts)
    dis = _utc_times(dispute_ts)
    if len(tx) != len(dis):
        raise ValueError(f"transactions_ts and dispute_ts of {func} must be aligned (one dispute time or NaT per "
                         f"transaction). Got {len(tx)} and {len(dis)} values instead.")
    cut = at - horizon_days * DAY
    lo = None if cohort_days is None else cut - cohort_days * DAY
    # strictly older than the horizon: a dispute within it arrived strictly before as_of, so it is known
    old = np.asarray(tx < cut)
    if lo is not None:
        old &= np.asarray(tx >= lo)
    young = np.asarray(tx >= cut)
    known = np.asarray(dis.notna() & (dis < at))
    delay = np.asarray((dis - tx) / DAY, dtype=float)
    invalid = known & (delay < 0)
    valid = known & ~invalid
    within = valid & (delay <= horizon_days)
    used = old & within
    delays = np.sort(delay[used])
    start = tx[old].min().date() if old.any() else (lo.date() if lo is not None else None)
    end = _day_ceil(cut)
    n = int(used.sum())
    reason = None
    span = f"transactions {start}..{end - dt.timedelta(days=1)}" if start and start < end else "no transactions"
    if not old.any():
        reason = (f"no transactions at least {horizon_days} days old at {_show_time(at)} (the horizon): "
                  "the history is too short to see whole dispute delays")
    elif n == 0:
        reason = (f"no disputes in matured history ({span}, disputed within {horizon_days} days): "
                  "no delays to estimate the distribution from")
    elif n < min_disputes:
        reason = (f"only {n:,} disputes in matured history ({span}); at least {min_disputes:,} are needed "
                  "to estimate the delay distribution")
    return DelayDistribution(
        as_of=at, horizon_days=horizon_days, delays_days=delays, disputes_used=n, cohort_start=start,
        cohort_end=end, disputes_beyond_horizon=int((old & valid & ~within).sum()),
        young_disputes_excluded=int((young & within).sum()),
        invalid_disputes=int((old & invalid).sum()), reason=reason)


# ---------------------------------------------------------------- completeness of a window

@dataclass(frozen=True)
class Completeness:
    """Label completeness of one window at ``as_of``; ``completeness`` and ``missing_share`` are None
    (with ``reason``) when it cannot be estimated."""

    window_start: dt.date
    window_end: dt.date  # exclusive
    as_of: pd.Timestamp
    completeness: float | None
    missing_share: float | None
    standard_error: float | None
    beyond_horizon_share: float | None  # weight of days older than the horizon: complete given the horizon
    disputes_used: int
    horizon_days: int
    reason: str | None = None

    def sentence(self, name: str = "window") -> str:
        """One line for the report, e.g. "Label completeness of the judging window (2026-04-10..2026-04-20)
        at 2026-06-20: 93% of eventual disputes have arrived (7% still to come), from 1,204 disputes of
        matured history." (the window's first and last day)."""
        last = self.window_end - dt.timedelta(days=1)
        days = f"{self.window_start}..{last}" if last >= self.window_start else f"{self.window_start}, empty"
        head = f"Label completeness of the {name} ({days}) at {_show_time(self.as_of)}: "
        if self.completeness is None:
            return head + f"not estimated: {self.reason}."
        source = f"from {self.disputes_used:,} disputes of matured history"
        if self.beyond_horizon_share == 1:
            return (head + f"every eventual dispute has arrived (the window is older than the {self.horizon_days}-day "
                    f"horizon; later disputes are not counted), {source}.")
        note = (f"; {_pct(self.beyond_horizon_share)} of it is older than the {self.horizon_days}-day horizon"
                if self.beyond_horizon_share else "")
        return (head + f"{_pct(self.completeness)} of eventual disputes have arrived "
                f"({_pct(self.missing_share)} still to come), {source}{note}.")

    def to_dict(self, name: str = "window") -> dict:
        return {
            "start": self.window_start.isoformat(), "end": self.window_end.isoformat(),
            "as_of": _show_time(self.as_of),
            "completeness": _r(self.completeness), "missing_share": _r(self.missing_share),
            "standard_error": _r(self.standard_error), "beyond_horizon_share": _r(self.beyond_horizon_share),
            "disputes_used": self.disputes_used, "horizon_days": self.horizon_days,
            "sentence": self.sentence(name), "reason": self.reason,
        }


def _day_weights(days: pd.DatetimeIndex, day_counts) -> np.ndarray:
    if day_counts is None:
        return np.ones(len(days))
    counts = pd.Series(day_counts, dtype=float) if not isinstance(day_counts, pd.Series) else day_counts.astype(float)
    if len(counts):
        counts.index = pd.DatetimeIndex(pd.to_datetime(counts.index)).tz_localize(None).normalize()
        counts = counts.groupby(level=0).sum()
    if (counts < 0).any() or counts.isna().any():
        raise ValueError("The 'day_counts' parameter of label_completeness must hold counts >= 0 per day. "
                         f"Got {counts[(counts < 0) | counts.isna()].head(3).to_dict()} instead.")
    return counts.reindex(days, fill_value=0.0).to_numpy(float)


def label_completeness(distribution: DelayDistribution, window_start, window_end, as_of,
                       day_counts: Mapping | pd.Series | None = None) -> Completeness:
    """Expected share of the eventual disputes of transaction days [window_start, window_end) already
    arrived at ``as_of``: the mean over the window's days (weighted by ``day_counts``, day -> transactions,
    when given) of the delay CDF averaged over the day's ages (a day ``d`` is ``as_of - d - 1`` to
    ``as_of - d`` days old). The window must end by ``as_of``. None, with a reason, when the window is
    empty or the distribution is unusable."""
    func = "label_completeness"
    start = _as_date(window_start, func, "window_start")
    end = _as_date(window_end, func, "window_end")
    at = _utc_ts(as_of)
    if end < start:
        raise ValueError(f"The window of {func} must have window_start <= window_end. Got {start}..{end} instead.")
    if _utc_ts(end) > at:
        raise ValueError(f"The window of {func} must end by as_of ({_show_time(at)}): its later days have no "
                         f"transactions yet. Got window_end={end} instead.")
    h = distribution.horizon_days

    def none(reason: str, n: int = distribution.disputes_used) -> Completeness:
        return Completeness(start, end, at, None, None, None, None, n, h, reason)

    if end == start:
        return none(f"the window {start}..{end} is empty (no days)")
    if not distribution.usable:
        return none(distribution.reason)
    days = pd.date_range(start, end, freq="D", inclusive="left")
    w = _day_weights(days, day_counts)
    if w.sum() <= 0:
        return none(f"no transactions in the window {start}..{end - dt.timedelta(days=1)}")
    # a day d holds transactions aged (a - 1, a] at as_of, a = as_of - d (days); its share arrived is
    # E[clip(a - D, 0, 1)]; g(x) = sum_d w_d clip(a_d - x, 0, 1) / sum w is piecewise linear with kinks at
    # a_d - 1 and a_d, so evaluating it there and interpolating is exact
    ages = np.asarray((at - days.tz_localize("UTC")) / DAY, dtype=float)
    w = w / w.sum()
    knots = np.unique(np.concatenate([ages - 1.0, ages]))
    g_knots = (np.clip(ages[None, :] - knots[:, None], 0.0, 1.0) * w[None, :]).sum(axis=1)
    g = np.interp(distribution.delays_days, knots, g_knots)
    completeness = float(np.clip(g.mean(), 0.0, 1.0))
    n = distribution.disputes_used
    se = float(g.std(ddof=1) / np.sqrt(n)) if n > 1 else None
    beyond = float(w[ages - 1.0 >= h].sum())
    return Completeness(start, end, at, completeness, 1.0 - completeness, se, beyond, n, h)


# ---------------------------------------------------------------- reading the event logs

def read_delay_distribution(events: str | Path, as_of, *, horizon_days: int = HORIZON_DAYS,
                            cohort_days: int = COHORT_DAYS, min_disputes: int = MIN_DISPUTES,
                            threads: int = 2) -> DelayDistribution:
    """The delay distribution of an event-log folder (``transactions/``, ``disputes/``) at ``as_of``,
    from transactions of the ``cohort_days`` days before ``as_of - horizon_days`` (default 90 days
    before as_of - 120 days) and the disputes that arrived before ``as_of``.

    Reads only tx_id and ts of those transaction partitions and tx_id and dispute_ts of the dispute
    partitions from the cohorts' first day to ``as_of``; counts transactions from Parquet metadata.
    A log whose disputes all come exactly the same time after their transaction (a source ingested
    from a fraud flag with an assumed ``label_delay_days``) gives no estimate, with that reason."""
    from release.data.features import _sql_list, connect

    func = "read_delay_distribution"
    _check_int(func, "horizon_days", horizon_days, 1, 3650)
    _check_int(func, "cohort_days", cohort_days, 1, 3650)
    events = location(events)
    at = _utc_ts(as_of)
    cut = at - horizon_days * DAY
    lo = cut - cohort_days * DAY
    tx_files = list_partitions(events / "transactions", lo.date(), _day_ceil(cut))
    dispute_files = list_partitions(events / "disputes", lo.date(), _day_ceil(at))
    empty = pd.DatetimeIndex([], tz="UTC")
    if not tx_files:
        dist = dispute_delay_distribution(empty, empty, at, horizon_days, cohort_days=cohort_days,
                                          min_disputes=min_disputes)
        last = _day_ceil(cut) - dt.timedelta(days=1)
        return replace(dist, reason=f"no transactions at least {horizon_days} days old at {_show_time(at)} in "
                                    f"{events / 'transactions'} (looked for {lo.date()}..{last}): "
                                    "the history is too short to see whole dispute delays")
    n_tx = sum(parquet_num_rows(f) for f in tx_files)
    if dispute_files:
        con = connect(threads=threads)
        try:
            # each transaction's first dispute known at as_of, joined to the cohorts' transaction times
            rows = con.execute(f"""
                WITH d AS (SELECT tx_id, min(dispute_ts) AS dispute_ts FROM read_parquet({_sql_list(dispute_files)})
                           WHERE dispute_ts < TIMESTAMPTZ '{at.isoformat()}' GROUP BY tx_id)
                SELECT t.ts, d.dispute_ts
                FROM (SELECT tx_id, ts FROM read_parquet({_sql_list(tx_files)})
                      WHERE ts >= TIMESTAMPTZ '{lo.isoformat()}' AND ts < TIMESTAMPTZ '{cut.isoformat()}') t
                JOIN d USING (tx_id)""").df()
        finally:
            con.close()
        tx_ts, dis_ts = rows["ts"], rows["dispute_ts"]
    else:
        tx_ts = dis_ts = empty
    dist = dispute_delay_distribution(tx_ts, dis_ts, at, horizon_days, cohort_days=cohort_days,
                                      min_disputes=min_disputes)
    first_tx = dt.date.fromisoformat(tx_files[0].parent.name.removeprefix("day="))
    dist = replace(dist, transactions_used=int(n_tx), cohort_start=max(first_tx, lo.date()))
    span = f"transactions {dist.cohort_start}..{dist.cohort_end - dt.timedelta(days=1)}"
    if not dispute_files or dist.disputes_used == 0:
        return replace(dist, reason=f"no disputes in matured history ({span}, disputed within {horizon_days} "
                                    f"days) in {events / 'disputes'}: the log has no dispute times (a source "
                                    "ingested without labels writes none)")
    if dist.disputes_used >= 2 and dist.delays_days[0] == dist.delays_days[-1]:
        return replace(dist, reason=(
            f"every one of the {dist.disputes_used:,} disputes in matured history arrived exactly "
            f"{dist.delays_days[0]:g} days after its transaction: the log carries a fraud flag with an assumed "
            "delay (label_delay_days), not dispute times, so how late labels arrive cannot be measured from it"))
    return dist


def _transaction_counts(events: Path, start: dt.date, end: dt.date) -> dict[dt.date, int]:
    """Transactions per day in [start, end), from Parquet metadata (no rows read)."""
    counts: dict[dt.date, int] = {}
    for f in list_partitions(location(events) / "transactions", start, end):
        day = dt.date.fromisoformat(f.parent.name.removeprefix("day="))
        counts[day] = counts.get(day, 0) + parquet_num_rows(f)
    return counts


def window_completeness(events: str | Path, as_of, windows: Mapping[str, tuple], *,
                        horizon_days: int = HORIZON_DAYS, cohort_days: int = COHORT_DAYS,
                        min_disputes: int = MIN_DISPUTES,
                        distribution: DelayDistribution | None = None) -> dict[str, dict]:
    """Label completeness of named windows of transaction days, each ``(start, end)`` with ``end``
    exclusive, judged at ``as_of``, for the evaluation (its fitting and judging windows) and the report.

    The delay distribution is read once from ``events`` (:func:`read_delay_distribution`; pass
    ``distribution`` to reuse one); each window's days are weighted by their transaction counts (Parquet
    metadata of ``events/transactions``). Returns, per name: ``completeness`` and ``missing_share``
    (floats in [0, 1], or None when not estimated), ``disputes_used``, ``sentence`` (one line for the
    report, saying why when there is no estimate), and ``start``, ``end``, ``as_of``,
    ``standard_error``, ``beyond_horizon_share``, ``horizon_days``, ``reason``.
    """
    events = location(events)
    dist = distribution or read_delay_distribution(events, as_of, horizon_days=horizon_days,
                                                   cohort_days=cohort_days, min_disputes=min_disputes)
    out = {}
    for name, (start, end) in windows.items():
        s = _as_date(start, "window_completeness", f"windows[{name!r}] start")
        e = _as_date(end, "window_completeness", f"windows[{name!r}] end")
        counts = _transaction_counts(events, s, e) if e > s else {}
        out[name] = label_completeness(dist, s, e, as_of, day_counts=counts).to_dict(name.replace("_", " "))
    return out


def snapshot_entry(events: str | Path, as_of, windows: Mapping[str, tuple], *,
                   day_counts: Mapping | pd.Series | None = None, weighted_by: str = "days equally",
                   horizon_days: int = HORIZON_DAYS, cohort_days: int = COHORT_DAYS) -> dict:
    """The snapshot manifest's ``label_completeness`` entry: the delay distribution's summary and each
    named window's completeness at ``as_of``, its days weighted by ``day_counts`` (day -> rows; say what
    they count in ``weighted_by``)."""
    dist = read_delay_distribution(events, as_of, horizon_days=horizon_days, cohort_days=cohort_days)
    return {
        "definition": ("share of eventual disputes (arriving within horizon_days of the transaction) already "
                       "arrived at as_of, estimated from the delays of fully observed cohorts of matured history"),
        "cohort_days": cohort_days,
        "weighted_by": weighted_by if day_counts is not None else "days equally",
        "delay_distribution": dist.summary(),
        "windows": {name: label_completeness(dist, s, e, as_of, day_counts=day_counts).to_dict(name.replace("_", " "))
                    for name, (s, e) in windows.items()},
    }
