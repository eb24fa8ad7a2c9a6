"""A backfill of training-set snapshots as work that spreads across workers (the training_set_backfill DAG).

The snapshots as of every day the training-set cadence falls on in [from, to] (``schedule.training_set`` of the
pipeline configuration) are built in three steps:

1. ``backfill_days``: the days of their matured windows that hold transactions and are not built yet (a day
   sits in the windows of several consecutive snapshots: it is one unit of work, not one per snapshot);
2. ``build_backfill_day``, one mapped task a day: that day's rows of each snapshot whose window holds it, each
   read from the day's own lookback (release.data.training_set.build_day_partition), written whole or not at all;
3. ``assemble_backfill``: each snapshot from its day partitions, in as-of order, so each one's volume check
   compares with the snapshot before its own date, as the daily build does.

A snapshot assembled from day partitions is the one ``build_snapshot`` (one process) gives for the same date: same
hash, manifest and rows, value for value (tests/release/data/test_training_set_partitioned.py). Only this
module's imports and release.data load in a day's task.
"""
from __future__ import annotations

import datetime as dt

MAX_BACKFILL_DAYS = 3660  # ten years of as-of dates in one run


def _day(value, name: str) -> dt.date:
    if isinstance(value, dt.datetime):
        return value.date()
    if isinstance(value, dt.date):
        return value
    try:
        return dt.date.fromisoformat(str(value))
    except ValueError:
        pass
    try:
        return dt.datetime.fromisoformat(str(value)).date()
    except ValueError:
        raise ValueError(f"The '{name}' parameter of a training-set backfill must be a date (YYYY-MM-DD). "
                         f"Got {value!r} instead.") from None


def backfill_as_of_dates(from_date, to_date) -> list[dt.date]:
    """The as-of dates of a backfill: the days in [from_date, to_date] the training-set cadence falls on."""
    from release.core.pipeline import pipeline

    first, last = _day(from_date, "from_date"), _day(to_date, "to_date")
    if last < first:
        raise ValueError(f"The 'to_date' parameter of a training-set backfill must not be before from_date "
                         f"({first}). Got {last} instead.")
    if (last - first).days >= MAX_BACKFILL_DAYS:
        raise ValueError(f"A training-set backfill covers at most {MAX_BACKFILL_DAYS} days; {first} .. {last} is "
                         f"{(last - first).days + 1}. Split it into several runs.")
    cadence = pipeline().schedule.training_set
    return [d for d in (first + dt.timedelta(days=i) for i in range((last - first).days + 1)) if cadence.due(d)]


def _plans(from_date, to_date, holding: dt.date | None = None):
    """The plans of the backfill's snapshots; with ``holding``, only of those whose matured window holds that day
    (as-of dates in [day + maturity + 1, day + history]: the others' inputs are not even hashed)."""
    from release.core.pipeline import pipeline
    from release.core.settings import paths
    from release.data.training_set import plan_snapshot

    dates = backfill_as_of_dates(from_date, to_date)
    if holding is not None:
        cfg = pipeline()
        dates = [d for d in dates if cfg.labels.maturity_days < (d - holding).days <= cfg.training_set.history_days]
    return [plan_snapshot(paths().events, paths().snapshots, d) for d in dates]


def backfill_days(from_date, to_date) -> list[str]:
    """The days (ISO dates, sorted) that the snapshots of the backfill still need built: every day holding
    transactions in the matured window of a snapshot that has not landed. Empty when all have landed."""
    days = set()
    for plan in _plans(from_date, to_date):
        if not (plan.snapshot.path / "manifest.json").exists():
            days.update(plan.days)
    return [d.isoformat() for d in sorted(days)]


def build_backfill_day(day, from_date, to_date) -> list[str]:
    """Build ``day``'s partition of every snapshot of the backfill whose window holds it (a rerun finds them
    and writes nothing). Returns the as-of dates it wrote (or found) a partition for."""
    from release.core.settings import paths
    from release.data.training_set import build_day_partition

    d = _day(day, "day")
    done = []
    for plan in _plans(from_date, to_date, holding=d):
        if d in plan.days and build_day_partition(paths().events, paths().snapshots, plan.as_of, d,
                                                  plan=plan) is not None:
            done.append(plan.as_of.isoformat())
    return done


def assemble_backfill(from_date, to_date) -> list[dict]:
    """Assemble each snapshot of the backfill from its day partitions, oldest first; a landed one is kept as it is.
    Each volume check compares with the latest earlier snapshot of the same lineage, as ``build_snapshot`` does.
    Returns ``{"as_of", "snapshot"}`` per as-of date."""
    from release.core.settings import paths
    from release.data.training_set import assemble_snapshot, latest_snapshot

    out = []
    for plan in _plans(from_date, to_date):
        prev = latest_snapshot(paths().snapshots, before=plan.as_of, lineage=plan.config["lineage"])
        snap = assemble_snapshot(paths().events, paths().snapshots, plan.as_of,
                                 previous_rows=prev.manifest["rows"] if prev else None, plan=plan)
        out.append({"as_of": plan.as_of.isoformat(), "snapshot": snap.hash})
    return out
