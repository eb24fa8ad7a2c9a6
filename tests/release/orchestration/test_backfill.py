"""The training-set backfill's steps (the training_set_backfill DAG's tasks, run here in-process): each day of
the snapshots' windows is one unit of work, and the snapshots assembled from the days are the ones the daily
build gives, one process, for the same dates: same hashes, manifests and rows. Bad ranges say what is allowed."""
from __future__ import annotations

import datetime as dt
import json
import os

import pandas as pd
import pyarrow.parquet as pq
import pytest

MATURITY, HISTORY = 5, 15  # the windows the `long_world` fits (tests/release/conftest.py)


@pytest.fixture
def backfill_home(long_world, tmp_path, monkeypatch):
    """FRAUDCD_HOME holding the world's events, and a pipeline configuration with the tiny windows."""
    cfg, events, as_of = long_world
    home = tmp_path / "home"
    home.mkdir()
    os.symlink(events, home / "events")
    (tmp_path / "pipeline.yaml").write_text(json.dumps(
        {"labels": {"maturity_days": MATURITY}, "training_set": {"history_days": HISTORY}}))
    monkeypatch.setenv("FRAUDCD_HOME", str(home))
    monkeypatch.setenv("FRAUDCD_PIPELINE", str(tmp_path / "pipeline.yaml"))
    return home, as_of


def test_a_backfill_builds_each_day_once_and_assembles_what_the_daily_build_gives(backfill_home, tmp_path):
    from release.orchestration.backfill import assemble_backfill, backfill_days, build_backfill_day
    from release.orchestration.cycle import build_snapshot

    home, as_of = backfill_home
    first, last = as_of - dt.timedelta(days=2), as_of
    days = backfill_days(first, last.isoformat())
    # three snapshots of 10-day windows a day apart: 12 days, each one unit of work
    assert days == [(first - dt.timedelta(days=HISTORY) + dt.timedelta(days=i)).isoformat() for i in range(12)]
    built = {d: build_backfill_day(d, first, last) for d in days}
    assert built[days[0]] == [first.isoformat()] and len(built[days[5]]) == 3 and built[days[-1]] == [last.isoformat()]
    assembled = assemble_backfill(first, last)
    assert [a["as_of"] for a in assembled] == [(first + dt.timedelta(days=i)).isoformat() for i in range(3)]
    assert backfill_days(first, last) == []  # all landed: a rerun has nothing to do

    # the daily build, one process, on another data folder with the same events
    other = tmp_path / "other"
    other.mkdir()
    os.symlink(home / "events", other / "events")
    os.environ["FRAUDCD_HOME"] = str(other)  # restored by monkeypatch (backfill_home set it)
    single = [build_snapshot(pd.Timestamp(a["as_of"], tz="UTC")) for a in assembled]
    assert single == [a["snapshot"] for a in assembled]
    for h in single:
        # the same manifests (the volume checks compared with the same earlier snapshots), but for the name of
        # the events folder in a sentence (this short history's label completeness is not estimated)
        mine = (home / "snapshots" / h / "manifest.json").read_text()
        theirs = (other / "snapshots" / h / "manifest.json").read_text()
        assert json.loads(mine.replace(str(home), str(other))) == json.loads(theirs)
        assert pq.read_table(home / "snapshots" / h / "data.parquet").equals(
            pq.read_table(other / "snapshots" / h / "data.parquet"))


def test_a_backfill_range_must_make_sense(backfill_home):
    from release.orchestration.backfill import backfill_days

    with pytest.raises(ValueError, match=r"'to_date' parameter of a training-set backfill must not be before "
                                         r"from_date \(2026-03-02\)\. Got 2026-03-01 instead"):
        backfill_days("2026-03-02", "2026-03-01")
    with pytest.raises(ValueError, match=r"'from_date' parameter of a training-set backfill must be a date "
                                         r"\(YYYY-MM-DD\)\. Got 'March' instead"):
        backfill_days("March", "2026-03-01")
