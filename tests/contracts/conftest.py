"""The release-gate battery (test_battery.py) is computed while the rest of the session runs.

The battery judges 90 planted candidates on windows of 800,000 rows: minutes of work on two processes,
which its tests only read. Most of the suite runs on one core, so the battery starts in the background
as soon as the session knows which tests it will run, in worker processes at the lowest CPU priority
(they take only the time the other tests leave idle), and its tests run last, when it is done or nearly
so; its workers get their normal priority back when its tests start waiting for it. The same seeds, the
same judgements, the same assertions: only when the battery is computed changes. Run alone (or with
nothing else to overlap), the battery is computed by its fixture as before.
"""
from __future__ import annotations

from pathlib import Path

import pytest

BATTERY = Path(__file__).with_name("test_battery.py")


def pytest_collection_modifyitems(config, items):
    """The battery's tests run after every other test of the session."""
    battery = [i for i in items if i.path == BATTERY]
    if battery:
        items[:] = [i for i in items if i.path != BATTERY] + battery


@pytest.hookimpl(trylast=True)
def pytest_collection_finish(session):
    battery = [i for i in session.items if i.path == BATTERY]
    if not battery or len(battery) == len(session.items):  # nothing to overlap: the fixture computes it
        return
    if session.config.option.collectonly or hasattr(session.config, "workerinput"):  # xdist: one per worker
        return
    module = battery[0].module
    session.config.stash[module.STARTED] = module.start(nice=19)


def pytest_sessionfinish(session):
    for key in {i.module.STARTED for i in session.items if i.path == BATTERY}:
        started = session.config.stash.get(key, None)
        if started is not None:
            started.cancel()  # stops the workers of a session that ended before its battery was read
