"""Shared, session-scoped fixtures for the release tests: one tiny simulated world and its snapshot.

The world is small (20 days x ~300 tx/day) and disputes arrive within 1..5 days, so a snapshot with a
5-day maturity window has matured labels of both classes; it simulates and builds in about a second.
"""
from __future__ import annotations

import datetime as dt
from pathlib import Path
from types import SimpleNamespace

import pytest

from simulation.world import WorldConfig


@pytest.fixture(scope="session")
def tiny() -> SimpleNamespace:
    """The tiny world's configuration and the snapshot parameters that fit it."""
    cfg = WorldConfig(days=20, tx_per_day=300, n_merchants=30, n_cards=2000, dispute_median_days=2.0,
                      dispute_max_days=5)
    return SimpleNamespace(cfg=cfg, as_of=cfg.start + dt.timedelta(days=cfg.days), maturity_days=5,
                           history_days=15)


@pytest.fixture(scope="session")
def tiny_events(tiny, tmp_path_factory) -> Path:
    """Event logs of the tiny world (read-only: tests that modify events copy them first)."""
    from simulation.world import simulate

    out = tmp_path_factory.mktemp("tiny-world") / "events"
    simulate(tiny.cfg, out)
    return out


@pytest.fixture(scope="session")
def tiny_snapshot(tiny, tiny_events, tmp_path_factory):
    """The snapshot of the tiny world at its horizon (read-only)."""
    from release.data.training_set import build_training_set

    snaps = tmp_path_factory.mktemp("tiny-snapshots")
    return build_training_set(tiny_events, snaps, tiny.as_of, maturity_days=tiny.maturity_days,
                              history_days=tiny.history_days)


@pytest.fixture(scope="session")
def long_world(tmp_path_factory):
    """A small world of 80 days (read-only) whose snapshot as of its horizon, with 5-day maturity and 15-day history,
    starts after a whole feature lookback (60 days): what a day-partitioned build must read further back shows.
    Returns (config, events folder, as-of date)."""
    from simulation.world import simulate

    cfg = WorldConfig(days=80, tx_per_day=250, n_merchants=30, n_cards=1500, dispute_median_days=2.0,
                      dispute_max_days=5)
    events = tmp_path_factory.mktemp("long-world") / "events"
    simulate(cfg, events)
    return cfg, events, cfg.start + dt.timedelta(days=cfg.days)
