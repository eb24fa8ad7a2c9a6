"""When a release runs: on the published training set of a day the release cadence falls on (anchored at the
configured start date), or on the date a person started it for."""
from __future__ import annotations

import datetime as dt
from types import SimpleNamespace

import pytest

from release.core.pipeline import DagSchedule
from release.orchestration.cycle import NotDue, published_extra, release_date

D = dt.date


def _events(*days: str) -> dict:
    return {"fraudcd-training-set": [SimpleNamespace(extra={"as_of": d, "snapshot": "ab" * 32}) for d in days]}


def test_the_cadence_is_anchored_at_its_start_date():
    c = DagSchedule(start_date=D(2026, 1, 1), every_days=14)
    assert [d for d in (D(2026, 1, 1) + dt.timedelta(days=i) for i in range(60)) if c.due(d)] == [
        D(2026, 1, 1), D(2026, 1, 15), D(2026, 1, 29), D(2026, 2, 12), D(2026, 2, 26)]
    assert not c.due(D(2025, 12, 18))  # 14 days before the start: not yet
    assert c.next_due(D(2025, 6, 1)) == D(2026, 1, 1)
    assert c.next_due(D(2026, 1, 16)) == D(2026, 1, 29) and c.next_due(D(2026, 1, 29)) == D(2026, 1, 29)
    far = DagSchedule(start_date=D(2018, 4, 1), every_days=7)  # a log's own dates, far from ours
    assert far.due(D(2018, 7, 29)) and far.next_due(D(2018, 7, 30)) == D(2018, 8, 5)


def test_a_published_training_set_on_a_release_day_names_the_release():
    # the shipped configuration: every 14 days from 2026-01-01 (..., 05-21, 06-04, ...)
    assert release_date(_events("2026-06-04")) == D(2026, 6, 4)
    # several published since the last run (queued behind a long rollout): the newest
    assert release_date(_events("2026-06-02", "2026-06-04", "2026-06-03")) == D(2026, 6, 4)


def test_a_training_set_on_another_day_is_no_release_and_says_when_the_next_is():
    with pytest.raises(NotDue, match=r"2026-06-01 .* every 14 days from 2026-01-01 .* next on 2026-06-04"):
        release_date(_events("2026-06-01"))


def test_a_run_a_person_started_is_about_its_date_whatever_the_cadence():
    assert release_date(None, "2026-06-03T00:00:00+00:00") == D(2026, 6, 3)
    assert release_date({}, None, run_after=dt.datetime(2026, 6, 4, 9, 30, tzinfo=dt.timezone.utc)) == D(2026, 6, 4)
    with pytest.raises(ValueError, match="no data interval and no run_after"):
        release_date(None, None, None)


def test_what_the_training_set_dag_publishes_is_what_the_release_reads():
    extra = published_extra("2026-06-04T00:00:00+00:00", None, "cd" * 32)
    assert extra == {"as_of": "2026-06-04", "snapshot": "cd" * 32}
    assert release_date({"a": [SimpleNamespace(extra=extra)]}) == D(2026, 6, 4)
