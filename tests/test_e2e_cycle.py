"""End to end: whole release cycles through real Airflow (`airflow dags test`) on a tiny simulated world.

Cycle 1 (day 136) starts from nothing: it bootstraps an incumbent, trains the candidate from the default
workflow, the thresholds are approved through the CLI by a named approver, and shadow, ramp and
promotion follow. Cycle 2 (day 150) trains a deliberately worse candidate (it sees only the hour of
day): the release contracts must stop it before any traffic moves, and the report must say why.
Then on call rolls back from the terminal.
"""
from __future__ import annotations

import datetime as dt
import hashlib
import html
import json
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

APPROVER = "e2e approver (pytest)"
WORSE_WORKFLOW = """\
name: hour-only
description: deliberately worse - sees only the hour of day
features: [hour]
categorical_features: []
eval_days: 21
seed: 7
num_boost_round: 20
lightgbm: {objective: binary, learning_rate: 0.1, num_leaves: 4, min_data_in_leaf: 100}
"""


def _fraudcd(home: Path, *args: str) -> subprocess.CompletedProcess:
    from release.demo import cycle_env

    return subprocess.run([str(Path(sys.executable).with_name("fraudcd")), *args], env=cycle_env(home),
                          capture_output=True, text=True, timeout=120)


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """A simulated world and two cycles run through Airflow. Returns (home, good release, worse release)."""
    from release.airflow_env import migrate_airflow_db
    from release.demo import cycle_env, run_cycle
    from simulation.world import WorldConfig, simulate

    home = tmp_path_factory.mktemp("e2e") / "home"
    # a small world: at a few thousand transactions a day the default 5% exploration leaves about one
    # explored fraud in a judging window, too few for any counterfactual figure (the gates would rightly stop
    # every release as "insufficient data"); exploring 30% of would-be blocks gives what a window needs
    cfg = WorldConfig(days=150, tx_per_day=2500, n_merchants=150, n_cards=15000, exploration=0.3)
    simulate(cfg, home / "events")
    env = cycle_env(home)  # also points this process's FRAUDCD_HOME at the world
    migrate_airflow_db(env)
    good = run_cycle(cfg.start + dt.timedelta(days=136), env, home / "logs", APPROVER)
    worse_yaml = home / "hour_only.yaml"
    worse_yaml.write_text(WORSE_WORKFLOW)
    worse = run_cycle(cfg.start + dt.timedelta(days=150), env, home / "logs", APPROVER, workflow=str(worse_yaml))
    return home, good, worse


def test_first_cycle_bootstraps_then_promotes_the_candidate(world):
    from release import registry
    from release.cycle import get_release

    home, good, _ = world
    rel = get_release(good)
    assert rel["status"] == "promoted"
    assert rel["incumbent_bootstrap"]
    prod, prev = registry.tagged("production"), registry.tagged("previous")
    assert prod.id == rel["candidate_model_id"]
    assert prev.id == rel["incumbent_model_id"] and prev.workflow == "bootstrap-baseline"
    # the registry's id is the content hash of the LightGBM text it points at
    text = prod.path.read_text()
    assert text.startswith("tree") and prod.id == "m-" + hashlib.sha256(text.encode()).hexdigest()[:16]
    assert prod.path.is_relative_to(home)
    assert prod.booster().num_feature() == len(prod.features)


def test_verdicts_for_every_stage_are_in_the_store(world):
    from release.cycle import release_verdicts

    _, good, _ = world
    vs = release_verdicts(good)
    assert {v["stage"] for v in vs} == {"offline", "approved", "shadow", "ramp"}  # approved: the re-judgement
    offline = {v["contract"] for v in vs if v["stage"] == "offline"}
    from contracts.evaluator import load_contracts
    from release.settings import contracts_file

    assert offline == set(load_contracts(contracts_file()).names())  # every contract in force was judged
    from contracts.base import stops

    assert not [v for v in vs if v["stage"] in ("offline", "approved") and stops(v)]  # nothing stopped it
    assert not [v for v in vs if v["gate"] and v["verdict"] == "fail"]
    assert all(v["sentence"] for v in vs)


def test_evaluation_metrics_with_intervals_are_on_disk_and_summarised_in_the_store(world):
    import pandas as pd
    import sqlalchemy as sa

    from release.cycle import release_dir
    from release.store import engine, evaluation_summary

    _, good, _ = world
    metrics = pd.read_parquet(release_dir(good) / "metrics.parquet")
    assert {"country", "merchant", "merchant_size", "amount_band", "card_segment"} <= set(metrics.slice_type)
    with engine().connect() as conn:
        rows = conn.execute(sa.select(evaluation_summary).where(evaluation_summary.c.release_id == good)).all()
    summary = {(r.metric, r.estimator, r.model): r for r in rows}
    d = summary[("recall", "ipw", "candidate-incumbent")]
    assert d.lo <= d.estimate <= d.hi
    overall = metrics[metrics.slice_type == "all"]
    assert len(rows) == len(overall)  # the summary is the all-traffic part of the tidy table


def test_ramp_walked_every_step(world):
    from release import ramp
    from release.cycle import ramp_step_log

    _, good, _ = world
    steps = ramp_step_log(good)
    assert [s["pct"] for s in steps] == [1, 5, 25, 50, 100]
    assert all(s["outcome"] == "passed" for s in steps)
    shares = [s["candidate_rows"] / s["rows"] for s in steps]
    assert shares == sorted(shares) and shares[-1] == 1.0
    assert ramp.current()["state"] == ramp.PROMOTED


def test_approval_and_every_money_move_are_audited(world):
    from release.store import audit_log

    _, good, _ = world
    trail = audit_log()
    decided = [a for a in trail if a["action"].startswith("thresholds_") and a["action"] != "thresholds_created"
               and json.loads(a["after_json"] or "{}").get("release_id") == good]
    assert [(a["action"], a["actor"]) for a in decided] == [("thresholds_approved", APPROVER)]
    actions = [a["action"] for a in trail]
    for needed in ("register_model", "move_tag", "ramp_shadow", "ramp_set", "promote"):
        assert needed in actions
    assert all(a["actor"] and a["reason"] and a["at"] for a in trail)
    # pipeline changes carry the wall clock as their time and the data interval's date as their own field
    pipeline_rows = [a for a in trail if a["actor"] == "fraud-cd pipeline"]
    assert {(a["logical_date"] or "")[:10] for a in pipeline_rows} <= {"2026-05-17", "2026-05-31"}
    assert all(a["at"][:10] >= dt.date.today().isoformat() for a in pipeline_rows)


def test_report_on_disk_says_ship(world):
    from release.cycle import get_release

    home, good, _ = world
    path = Path(get_release(good)["report_path"])
    assert path.is_file() and path.parent == home / "reports"
    page = html.unescape(path.read_text())
    assert "SHIP" in page and "bootstrap model" in page and APPROVER in page
    assert (home / "reports" / "index.html").read_text().count(good) >= 1


def test_a_worse_candidate_is_stopped_and_the_report_says_why(world):
    from release import ramp, registry
    from release.cycle import get_release, release_verdicts

    home, good, worse = world
    rel = get_release(worse)
    assert rel["status"] == "stopped"
    assert "Stopped by release contracts" in rel["stop_reason"]
    recall = [v for v in release_verdicts(worse) if v["contract"] == "fixed_fpr_higher_recall"
              and v["slice"] == "operating point"]
    assert recall[0]["verdict"] == "fail" and recall[0]["candidate_value"] < recall[0]["incumbent_value"]
    # nothing moved: production is still cycle 1's model, no candidate, no traffic for the worse one
    assert registry.tagged("production").id == get_release(good)["candidate_model_id"]
    assert registry.tagged("candidate") is None
    assert ramp.current()["release_id"] == good
    page = html.unescape(Path(rel["report_path"]).read_text())
    assert "STOP" in page and recall[0]["sentence"] in page
    r = _fraudcd(home, "verdicts", worse)
    assert r.returncode == 1 and "fail" in r.stdout


def test_an_override_given_when_triggering_is_recorded_and_waives_only_its_contract(world):
    """The Airflow path of an override: the release rerun for the same date with an `overrides` param."""
    from release.cycle import get_release, release_verdicts
    from release.demo import cycle_env, run_cycle
    from release.store import audit_log

    home, _, worse = world
    from contracts.base import stops

    failed = sorted({v["contract"] for v in release_verdicts(worse) if stops(v)})
    assert "fixed_fpr_higher_recall" in failed and len(failed) >= 2
    who, why = "Head of risk (pytest)", "drill: waive the recall contract for this release only"
    rel = get_release(worse)
    run_cycle(dt.date.fromisoformat(rel["as_of"]), cycle_env(home), home / "logs", APPROVER,
              workflow=rel["workflow"], overrides=[{"contract": "fixed_fpr_higher_recall", "by": who, "reason": why}],
              run="-override")
    rel = get_release(worse)
    assert rel["status"] == "stopped"  # the other failed contracts still stop it
    assert "fixed_fpr_higher_recall" not in rel["stop_reason"] and "Stopped by release contracts" in rel["stop_reason"]
    waived = [a for a in audit_log() if a["action"] == "contract_waived"]
    assert [(a["actor"], a["reason"]) for a in waived] == [(who, why)]
    page = html.unescape(Path(rel["report_path"]).read_text())
    assert who in page and why in page


def test_status_and_rollback_from_the_terminal(world):
    from release import registry
    from release.store import audit_log

    home, good, _ = world
    before = json.loads(_fraudcd(home, "status", "--json").stdout)
    assert before["tags"]["production"] != before["tags"]["previous"] is not None
    r = _fraudcd(home, "rollback", "--reason", "e2e: on-call drill", "--as", "on-call (pytest)")
    assert r.returncode == 0, r.stderr
    assert registry.tagged("production").id == before["tags"]["previous"]
    last = audit_log()[-1]
    assert last["actor"] == "on-call (pytest)" and last["reason"] == "e2e: on-call drill"
    assert json.loads(last["before_json"])["state"] == "promoted"
    # a second rollback has nothing left to roll back to: refused, exit 1, nothing written
    n = len(audit_log())
    again = _fraudcd(home, "rollback", "--reason", "twice", "--as", "on-call (pytest)")
    assert again.returncode == 1 and "Nothing to roll back" in again.stderr + again.stdout
    assert len(audit_log()) == n
