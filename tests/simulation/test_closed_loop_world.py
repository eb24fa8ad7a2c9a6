"""The world a window at a time (simulation/closed_loop.py): its history is the batch simulation's, its traffic does
not depend on who decides, what the deployed policy blocks is never disputed, disputes land on their day once it
is decided, and a step killed midway is redone to the same files."""
from __future__ import annotations

import datetime as dt
import hashlib

import pandas as pd
import pytest

from release.core.io import list_partitions
from simulation.closed_loop import ClosedLoopWorld, WorldStateError
from simulation.world import WorldConfig, simulate

CFG = WorldConfig(days=50, tx_per_day=250, n_merchants=30, n_cards=1500, dispute_median_days=4.0, dispute_max_days=15)
HISTORY = 30


def allow_all(day, tx):
    return pd.DataFrame({"tx_id": tx["tx_id"], "policy": "allow-all", "score": 0.0, "threshold": 1.0,
                         "action": "allow", "explored": False, "propensity": 1.0})


def block_all(day, tx):
    return allow_all(day, tx).assign(policy="block-all", score=1.0, threshold=0.5, action="block")


def _files(root, table, start=None, end=None) -> dict[str, str]:
    return {f.parent.name: hashlib.sha256(f.read_bytes()).hexdigest()
            for f in list_partitions(root / table, start, end)}


@pytest.fixture(scope="module")
def batch(tmp_path_factory):
    out = tmp_path_factory.mktemp("batch") / "events"
    simulate(CFG, out)
    return out


def test_the_history_is_the_batch_simulation_and_traffic_does_not_depend_on_who_decides(tmp_path, batch):
    end = CFG.start + dt.timedelta(days=HISTORY)
    a = ClosedLoopWorld.start(CFG, tmp_path / "a", HISTORY)
    for table in ("transactions", "truth", "decisions", "disputes"):  # every file of the history, byte for byte
        assert _files(a.out, table) == _files(batch, table, None, end), table
    b = ClosedLoopWorld.start(CFG, tmp_path / "b", HISTORY)
    for w, decider in ((a, allow_all), (b, block_all)):
        first, stop = w.add_traffic(10)
        assert (first, stop) == (end, end + dt.timedelta(days=10))
        w.decide(decider)
    for table in ("transactions", "truth"):  # the same world whoever decided; the batch's days too
        assert _files(a.out, table, end) == _files(b.out, table, end) == _files(batch, table, end,
                                                                                 end + dt.timedelta(days=10))


def test_what_the_policy_blocks_is_never_disputed_and_disputes_land_once_their_day_is_decided(tmp_path):
    w = ClosedLoopWorld.start(CFG, tmp_path / "w", HISTORY)
    first, end = w.add_traffic(10)
    assert not list_partitions(w.out / "decisions", first, end)  # traffic first: undecided
    counts = w.decide(block_all)
    assert counts["blocked"] == counts["transactions"] > 0 and counts["blocked_frauds"] == counts["frauds"] > 0
    window = set(w.truth_of(first, end)["tx_id"])
    disputes = pd.concat([pd.read_parquet(f) for f in list_partitions(w.out / "disputes")])
    assert not (set(disputes["tx_id"]) & window)  # blocked: never disputed
    # the history's disputes that arrive during the window landed on their days, none before nor after
    assert set(pd.to_datetime(disputes["dispute_ts"]).dt.date) <= set(pd.date_range(CFG.start, end - dt.timedelta(days=1)).date)
    pending = pd.read_parquet(w.folder / "pending_disputes.parquet")
    assert (pd.to_datetime(pending["dispute_ts"]).dt.date >= end).all()

    w2 = ClosedLoopWorld.start(CFG, tmp_path / "w2", HISTORY)
    w2.add_traffic(10)
    w2.decide(allow_all)
    truth = w2.truth_of(first, end)
    allowed_frauds = set(truth.loc[truth["is_fraud"], "tx_id"])
    later = ClosedLoopWorld.open(w2.out)
    later.add_traffic(10)
    later.decide(allow_all)  # 20 days on: most disputes of the first window have arrived (median 4 days)
    disputed = set(pd.concat([pd.read_parquet(f) for f in list_partitions(w2.out / "disputes")])["tx_id"])
    share = len(disputed & allowed_frauds) / len(allowed_frauds)
    assert 0.7 <= share <= CFG.dispute_rate + 0.05, share  # allowed fraud is disputed, late
    for f in list_partitions(w2.out / "disputes", first):  # each day's partition once, sorted, no duplicates
        d = pd.read_parquet(f)
        assert d["tx_id"].is_unique and d["tx_id"].is_monotonic_increasing


def test_a_decide_killed_midway_is_redone_to_the_same_files(tmp_path):
    calls = []

    def dies_on_day_three(day, tx):
        calls.append(day)
        if len(calls) == 3:
            raise KeyboardInterrupt("killed")
        return allow_all(day, tx)

    w = ClosedLoopWorld.start(CFG, tmp_path / "w", HISTORY)
    w.add_traffic(6)
    with pytest.raises(KeyboardInterrupt):
        w.decide(dies_on_day_three)
    again = ClosedLoopWorld.open(w.out)  # what a new process finds: the window still undecided
    assert again.decided_days == HISTORY and again.traffic_days == HISTORY + 6
    again.decide(allow_all)
    clean = ClosedLoopWorld.start(CFG, tmp_path / "clean", HISTORY)
    clean.add_traffic(6)
    clean.decide(allow_all)
    for table in ("transactions", "truth", "decisions", "disputes"):
        assert _files(again.out, table) == _files(clean.out, table), table
    assert (again.folder / "pending_disputes.parquet").read_bytes() == (clean.folder / "pending_disputes.parquet").read_bytes()


def test_steps_out_of_order_and_a_wrong_decider_are_refused_saying_why(tmp_path):
    w = ClosedLoopWorld.start(CFG, tmp_path / "w", HISTORY)
    with pytest.raises(WorldStateError, match="already holds event logs"):
        ClosedLoopWorld.start(CFG, tmp_path / "w", HISTORY)
    w.add_traffic(3)
    with pytest.raises(WorldStateError, match="are not decided yet: decide them before adding traffic"):
        w.add_traffic(3)
    with pytest.raises(WorldStateError, match=r"decided \d+ transactions of 2026-01-31, not the day's \d+"):
        w.decide(lambda day, tx: allow_all(day, tx).head(5))
    with pytest.raises(WorldStateError, match="actions for 2026-01-31 must be allow or block; got \\['maybe'\\]"):
        w.decide(lambda day, tx: allow_all(day, tx).assign(action="maybe"))
    with pytest.raises(WorldStateError, match="lack \\['propensity'\\]"):
        w.decide(lambda day, tx: allow_all(day, tx).drop(columns="propensity"))
    assert ClosedLoopWorld.open(w.out).decided_days == HISTORY  # nothing was recorded as decided
    w.decide(allow_all)
    with pytest.raises(WorldStateError, match="would go past the world's 50 days"):
        w.add_traffic(30)
    with pytest.raises(WorldStateError, match="no closed-loop world"):
        ClosedLoopWorld.open(tmp_path / "nothing")


def test_a_pattern_appears_and_another_fades_on_the_days_configured():
    from simulation.world import _one_day, _world_entities
    import numpy as np

    cfg = CFG.model_copy(update={"days": 100, "drift_start_fraction": 0.5, "fade_start_fraction": 0.3, "fade_days": 10,
                                 "card_testing_per_1k": 6.0})
    merchants, cards = _world_entities(cfg, np.random.default_rng(cfg.seed))

    def scenarios(days):
        return pd.concat([_one_day(cfg, d, merchants, cards, np.random.default_rng([cfg.seed, d]))
                          for d in days])["scenario"].value_counts()

    before, faded, after = scenarios(range(0, 30)), scenarios(range(40, 100)), scenarios(range(50, 100))
    assert before.get("card_testing", 0) > 20 and faded.get("card_testing", 0) == 0
    assert before.get("fresh_card_bust_out", 0) == 0 and after.get("fresh_card_bust_out", 0) > 20
