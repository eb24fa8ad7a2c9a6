"""Six biweekly cycles of the closed loop (`fraudcd simulate-cycles`, release/orchestration/closed_loop.py): the world
and the real pipeline together through Airflow, each cycle's production model deciding the world's next 14 days.

Planted: in the first cycle the analyst edits the five largest merchants' thresholds to almost nothing before
approving (the re-judgement of the approved policy must stop it before traffic moves); in the third, the release
trains a deliberately worse candidate (a contract must fail on it, not merely lack evidence). A new fraud pattern
appears in the second cycle's days; with 14-day label maturity its labels can first reach a training set in the
fourth cycle: the deployed decisions must block a share of it within four cycles of its appearance.

Run by `make test-cycles` (about a quarter of an hour on two cores), which CI runs after `make test`.
"""
from __future__ import annotations

import datetime as dt
import json

import pandas as pd
import pytest

pytestmark = [pytest.mark.cycles, pytest.mark.slow]

NEW_PATTERN_CYCLE = 1  # 0-based: the second cycle's days hold it first
LEARN_WITHIN = 4  # cycles after its appearance by which the deployed decisions block part of it (LEARNED_SHARE)


@pytest.fixture(scope="module")
def loop_run(tmp_path_factory):
    import os

    from release.orchestration.closed_loop import LoopConfig, run_loop

    home = tmp_path_factory.mktemp("closed-loop") / "home"
    loop = LoopConfig(cycles=6, history_days=100, exploration=0.25, tx_per_day=3000, n_merchants=1000, n_cards=20000,
                      new_pattern_cycle=NEW_PATTERN_CYCLE, fading_cycle=1, bad_edit_cycle=0, bad_candidate_cycle=2,
                      replay_rate=400, maturity_days=14, training_history_days=70, dispute_median_days=4.0,
                      dispute_max_days=14)
    before = {k: os.environ.get(k) for k in ("FRAUDCD_HOME", "FRAUDCD_CONFIG", "FRAUDCD_PIPELINE")}
    try:
        rows = run_loop(loop, home)
        yield home, loop, rows
    finally:
        for k, v in before.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def test_six_cycles_ran_through_airflow_and_the_deployed_model_decided_each_window(loop_run):
    from release.state.releases import get_release

    home, loop, rows = loop_run
    print(json.dumps([{k: r.get(k) for k in ("cycle", "status", "planted", "release_seconds", "cycle_seconds",
                                             "true_recall", "new_pattern_blocked", "production_model")}
                      for r in rows], indent=1))
    assert [r["cycle"] for r in rows] == [1, 2, 3, 4, 5, 6]
    assert [r["error"] for r in rows] == [None] * 6  # every DAG run ended; each release ended as it did
    for r in rows:
        rel = get_release(r["release_id"])
        assert rel["status"] in ("promoted", "rolled_back", "stopped"), (r["release_id"], rel["status"])
        assert (home / "logs" / f"release-{r['as_of']}-{r['cycle'] - 1}.log").exists()  # `airflow dags test release`
        # the 14 days after each release were decided by what was production when it ended, and only by it
        assert r["policies"] == ([r["production_model"]] if r["production_model"] else ["legacy-rules"])
        dec = pd.read_parquet(home / "events" / "decisions" / f"day={r['as_of']}" / "part-0.parquet")
        assert set(dec["policy"]) == set(r["policies"]) and len(dec) > 0
    assert any(r["status"] == "promoted" for r in rows)
    # what the deployed model blocked was never disputed (censored)
    blocked = pd.concat(pd.read_parquet(p) for p in (home / "events" / "decisions").glob("day=*/part-0.parquet"))
    blocked = set(blocked.loc[blocked["action"] == "block", "tx_id"])
    disputed = set(pd.concat(pd.read_parquet(p) for p in (home / "events" / "disputes").glob("day=*/*.parquet"))["tx_id"])
    assert blocked and not (blocked & disputed)


def test_the_planted_bad_edit_is_stopped_by_the_re_judgement_before_traffic_moves(loop_run):
    from release.state.store import engine, verdicts
    import sqlalchemy as sa

    home, loop, rows = loop_run
    r = rows[loop.bad_edit_cycle]
    assert r["planted"] == "bad edit" and len(r["edited_merchants"]) == 5
    assert r["status"] == "stopped" and r["reason"].startswith("Stopped by re-judging the approved policy"), r["reason"]
    with engine().connect() as conn:
        failed = conn.execute(sa.select(verdicts.c.contract).where(
            (verdicts.c.release_id == r["release_id"]) & (verdicts.c.stage == "approved")
            & (verdicts.c.verdict == "fail") & verdicts.c.gate)).scalars().all()
        live = conn.execute(sa.select(verdicts.c.id).where(
            (verdicts.c.release_id == r["release_id"]) & verdicts.c.stage.in_(["backtest", "shadow", "ramp"]))).all()
    assert failed, "the re-judgement stopped it without a failed gate"
    assert live == []  # stopped before the backtest: never shadowed, never ramped
    assert r["production_model"] != r["candidate_model"]  # the edited policy's model never went live


def test_the_planted_bad_candidate_fails_a_contract_and_production_is_unchanged(loop_run):
    from release.state.store import engine, verdicts
    import sqlalchemy as sa

    home, loop, rows = loop_run
    k = loop.bad_candidate_cycle
    r = rows[k]
    assert r["planted"] == "bad candidate" and r["status"] == "stopped", r
    with engine().connect() as conn:
        failed = set(conn.execute(sa.select(verdicts.c.contract).where(
            (verdicts.c.release_id == r["release_id"]) & (verdicts.c.stage == "offline")
            & (verdicts.c.verdict == "fail") & verdicts.c.gate)).scalars())
    assert failed & {"fixed_fpr_higher_recall", "country_recall_regression"}, failed  # judged worse, not just unjudged
    assert r["production_model"] == rows[k - 1]["production_model"] != r["candidate_model"]


def test_the_new_pattern_is_learned_within_the_stated_cycles_and_the_summary_says_so(loop_run):
    from analysis.closed_loop_report import LEARNED_SHARE, summary_figures

    home, loop, rows = loop_run
    before = [r["new_pattern_blocked"] for r in rows[NEW_PATTERN_CYCLE:NEW_PATTERN_CYCLE + 2]]
    assert all(b is not None and b < 0.05 for b in before), before  # the policies before it: blind to it
    learned = [r for r in rows[NEW_PATTERN_CYCLE:NEW_PATTERN_CYCLE + LEARN_WITHIN + 1]
               if (r["new_pattern_blocked"] or 0) >= LEARNED_SHARE]
    assert learned, [(r["cycle"], r["status"], r["new_pattern_blocked"]) for r in rows]
    assert learned[0]["production_model"] not in {r["production_model"] for r in rows[:NEW_PATTERN_CYCLE + 1]}

    figures = summary_figures(rows)
    page = (home / "reports" / "closed-loop.html").read_text()
    index = (home / "reports" / "index.html").read_text()
    assert 'href="closed-loop.html"' in index and '<svg role="img"' in page
    assert figures["new_pattern"]["first_seen_cycle"] == NEW_PATTERN_CYCLE + 1
    assert figures["new_pattern"]["learned_cycle"] == learned[0]["cycle"]
    assert (f"learned (the deployed decisions block at least 15% of it) from cycle {learned[0]['cycle']} "
            f"({learned[0]['cycle'] - NEW_PATTERN_CYCLE - 1} cycles after it appeared)") in " ".join(page.split())
    assert figures["planted"] == [{"cycle": 1, "planted": "bad edit", "status": "stopped", "reason": rows[0]["reason"]},
                                  {"cycle": 3, "planted": "bad candidate", "status": "stopped",
                                   "reason": rows[2]["reason"]}]
    # the estimates beside the truth of the same rows, each cycle whose release got to evaluation
    judged = [r for r in rows if r.get("true_incumbent_recall") is not None]
    assert len(judged) >= 5 and all(0 <= r["est_incumbent_recall_ipw"] <= 1 for r in judged)
    # exploration's cost is counted: frauds let through that a block would have stopped
    assert figures["explored_frauds"] == sum(r["explored_frauds"] for r in rows) > 0
    cycles = json.loads((home / "closed_loop" / "cycles.json").read_text())
    assert [c["release_id"] for c in cycles["cycles"]] == [r["release_id"] for r in rows]
    assert dt.date.fromisoformat(rows[-1]["as_of"]) == dt.date(2026, 1, 1) + dt.timedelta(days=100 + 5 * 14)
