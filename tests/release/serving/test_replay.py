"""The traffic replayer: a day of the event logs as /score requests, and its command line."""
from __future__ import annotations

import datetime as dt
import subprocess
import sys

import pandas as pd
import pytest

from release.serving.replay import day_requests
from release.serving.service import ScoreRequest
from release.core.settings import PROJECT_ROOT


def test_a_day_becomes_valid_requests_in_time_order(tiny, tiny_events):
    day = tiny.cfg.start + dt.timedelta(days=3)
    bodies = day_requests(tiny_events, day)
    tx = pd.read_parquet(next((tiny_events / "transactions" / f"day={day}").glob("*.parquet")))
    assert len(bodies) == len(tx)
    parsed = [ScoreRequest(**b) for b in bodies]  # every one is a request the service accepts
    assert [p.ts for p in parsed] == sorted(p.ts for p in parsed)
    assert {p.ts.date() for p in parsed} == {day}
    assert len(day_requests(tiny_events, day, limit=10)) == 10


def test_a_day_without_transactions_is_a_clear_error(tiny_events):
    with pytest.raises(FileNotFoundError, match="No transactions for 2031-01-01 in"):
        day_requests(tiny_events, dt.date(2031, 1, 1))


@pytest.mark.parametrize("args, message", [(["--day", "someday"], "Invalid isoformat string"),
                                           (["--day", "2026-01-05", "--rate", "-1"], "--rate must be >= 0")])
def test_bad_input_exits_2(args, message, home):
    """`fraudcd replay` (the one way to run the replayer from a shell)."""
    from pathlib import Path

    r = subprocess.run([str(Path(sys.executable).with_name("fraudcd")), "replay", *args], cwd=PROJECT_ROOT,
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 2 and message in r.stderr
