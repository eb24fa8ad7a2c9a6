"""The daily monitoring run (release/orchestration/monitoring.py, `fraudcd monitor`) on a simulated world in
steady state: a quiet week raises nothing; a feed that starts sending one country's amounts in cents raises a
feature-drift alert for that country that says since when and what to do, once per day, and "N days running"
the day after. The world's own features, snapshot and registry: nothing is stubbed."""
from __future__ import annotations

import datetime as dt
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

pytestmark = pytest.mark.slow

PIPELINE = """\
labels: {maturity_days: 7}
training_set: {history_days: 35}
features:
  risk: [{rate: merchant_fraud_rate, count: merchant_matured_tx, window_days: 14, prior_tx: 50}]
  lookback_days: 31
"""
FEATURES = ["amount", "log_amount", "hour", "card_tx_24h", "card_tx_7d", "amount_vs_card_avg_30d", "card_age_days",
            "merchant_tx_24h", "merchant_tx_7d", "merchant_fraud_rate", "merchant_matured_tx"]


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """A world of 90 days with no new fraud pattern (steady once its 30-day windows are full), a snapshot
    as of day 75 (rows of days 40..67), and its model in production (registered, not trained: monitoring
    reads the model's features and snapshot, never its trees)."""
    from simulation.world import WorldConfig, simulate

    root = tmp_path_factory.mktemp("monitoring")
    home = root / "home"
    (root / "pipeline.yaml").write_text(PIPELINE)
    env = {"FRAUDCD_HOME": str(home), "FRAUDCD_PIPELINE": str(root / "pipeline.yaml")}
    cfg = WorldConfig(days=90, tx_per_day=700, n_merchants=120, n_cards=4000, drift_per_1k=0.0,
                      dispute_median_days=2.0, dispute_max_days=6, seed=11)
    simulate(cfg, home / "events")
    return home, env, cfg


@pytest.fixture
def deployed(world, monkeypatch):
    from release.data.training_set import build_training_set
    from release.state.registry import move_tag, register_model

    home, env, cfg = world
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    snap = build_training_set(home / "events", home / "snapshots", cfg.start + dt.timedelta(days=75))
    m = register_model("monitoring test model\n", workflow={"name": "wf"}, features=FEATURES,
                       snapshot_hash=snap.hash, code_version="t", metrics={}, at="t0", actor="trainer")
    move_tag("production", m.id, at="t0", actor="test", reason="deployed for monitoring")
    return home, cfg


def _cents(home: Path, day: dt.date, country: str) -> int:
    """Rewrite one day's transactions so that ``country``'s amounts arrive in cents (a feed bug)."""
    [f] = list((home / "events" / "transactions" / f"day={day.isoformat()}").glob("*.parquet"))
    tx = pd.read_parquet(f)
    hit = tx["merchant_country"] == country
    tx.loc[hit, "amount"] = tx.loc[hit, "amount"] * 100
    tx.to_parquet(f, index=False)
    return int(hit.sum())


def test_a_quiet_week_raises_nothing_and_a_feed_in_cents_is_caught_in_its_country(deployed):
    from release.orchestration.monitoring import findings_of, monitor
    from release.state.alerts import read_alerts

    home, cfg = deployed
    d = cfg.start + dt.timedelta(days=82)
    quiet = monitor(d)
    assert quiet["judged"] and quiet["findings"].get("alert", 0) == 0 and quiet["alerts"] == [], quiet
    f = findings_of(d)
    drifted = f[f["check"] == "feature_drift"]
    assert (drifted["status"] == "ok").sum() >= 40  # judged, not merely insufficient
    assert "decisions" in quiet  # no decision log here: score and action rate said as not judged

    top = drifted.loc[drifted["slice"] != "all"].groupby("slice")["rows"].max().idxmax()  # the largest country
    n = _cents(home, d + dt.timedelta(days=1), top) + _cents(home, d + dt.timedelta(days=2), top)
    assert n > 200
    day1 = monitor(d + dt.timedelta(days=2))  # the week ending with the second day in cents
    fired = {(a.split(" in ")[0], a.split(" in ")[1].split(" drifted")[0]) for a in day1["alerts"]}
    assert ("amount", f"country {top}") in fired, day1
    assert {country for _, country in fired} <= {f"country {top}", "all traffic"}, fired  # nowhere else
    msg = next(a for a in day1["alerts"] if a.startswith(f"amount in country {top}"))
    assert "Since" in msg and "(today)" in msg and "What to do:" in msg
    again = monitor(d + dt.timedelta(days=2))  # a rerun of the day: the same findings, no new alert
    assert again["alerts"] == [] and again["findings"] == day1["findings"] and again["firing"] == day1["firing"]
    later = monitor(d + dt.timedelta(days=3))  # the days in cents still in the window: 2 days running
    msg = next(a for a in later["alerts"] if a.startswith(f"amount in country {top}"))
    assert f"Since {(d + dt.timedelta(days=2)).isoformat()} (2 days running)" in msg
    kinds = [a for a in read_alerts() if a["kind"] == "monitoring_feature_drift"]
    assert len([a for a in kinds if a["details"]["slice"] == top and a["details"]["feature"] == "amount"]) == 2


def test_the_cli_says_what_was_judged_and_exits_1_on_an_alert(deployed, tmp_path):
    home, cfg = deployed

    d = cfg.start + dt.timedelta(days=82)
    exe = str(Path(sys.executable).with_name("fraudcd"))
    r = subprocess.run([exe, "monitor", "--day", d.isoformat(), "--json"], env=dict(os.environ), capture_output=True,
                       text=True, timeout=300)
    assert r.returncode == 0, r.stdout + r.stderr
    out = json.loads(r.stdout)
    assert out["judged"] and out["model"].startswith("m-") and out["findings"]["ok"] > 0
    bad = subprocess.run([exe, "monitor", "--day", "2026-13-01"], env=dict(os.environ), capture_output=True,
                         text=True, timeout=60)
    assert bad.returncode == 2 and "--day must be YYYY-MM-DD" in bad.stderr
    st = subprocess.run([exe, "status", "--json"], env=dict(os.environ), capture_output=True, text=True, timeout=60)
    latest = json.loads(st.stdout)["monitoring"]  # the last day monitored (the test before may have gone further)
    assert latest["day"] >= d.isoformat() and sum(latest["findings"].values()) > 0
    if latest["alerts"]:  # that day alerts: the command says so by its exit code, on every rerun
        again = subprocess.run([exe, "monitor", "--day", latest["day"]], env=dict(os.environ), capture_output=True,
                               text=True, timeout=300)
        assert again.returncode == 1 and "ALERT " in again.stdout


# ---------------------------------------------------------------- performance as labels mature

P_START = dt.date(2026, 6, 1)  # a Monday: the production model's first week live
P_MATURITY = 14


def _week(k: int) -> dt.date:
    return P_START + dt.timedelta(days=7 * k)


@pytest.fixture
def decayed(tmp_path, monkeypatch):
    """Six weeks of the production model's decisions in the decision log (25,000 a week; a new fraud pattern it
    misses, 70% of the fraud, from the third week), the event logs' disputes and 90 days of matured history
    (transactions and disputes) for the delay distribution, a 14-day maturity window, and the release that
    shipped the model: its approved policy promised the recall of the world before the decay; its suggested
    policy's figure (not what went live) an impossible one."""
    from planted_traffic import promise_metrics, traffic

    from analysis.evaluation import Evaluation
    from release.core.io import write_partition
    from release.serving.decision_log import SCHEMA
    from release.state.registry import move_tag, register_model
    from release.state.store import releases, transaction

    home = tmp_path / "home"
    (tmp_path / "pipeline.yaml").write_text(f"labels: {{maturity_days: {P_MATURITY}}}\n")
    monkeypatch.setenv("FRAUDCD_HOME", str(home))
    monkeypatch.setenv("FRAUDCD_PIPELINE", str(tmp_path / "pipeline.yaml"))
    rng = np.random.default_rng(20)
    m = register_model("performance test model\n", workflow={"name": "wf"}, features=FEATURES, snapshot_hash="gone",
                       code_version="t", metrics={}, at="t0", actor="trainer")
    move_tag("production", m.id, at="t0", actor="test", reason="deployed for monitoring")
    rid = "rel-2026-05-17"
    with transaction() as conn:
        conn.execute(releases.insert().values(id=rid, as_of="2026-05-17", status="promoted", snapshot_hash="gone",
                                              candidate_model_id=m.id, incumbent_bootstrap=False, updated_at="t0"))
    judged = promise_metrics(rng, P_START - dt.timedelta(days=14), delay_median=5.0)
    folder = home / "releases" / rid
    no_rates = pd.DataFrame({"at": pd.Series([], dtype=str), "slice_type": pd.Series([], dtype=str),
                             "slice": pd.Series([], dtype=str), "candidate_action_rate": pd.Series([], dtype=float)})
    for where, metrics in ((folder, judged.assign(estimate=0.99, lo=0.98, hi=1.0)), (folder / "approved", judged)):
        Evaluation(overall={}, slices=no_rates, recall_diff={}, operating_fpr=0.002, candidate_threshold=0.5,
                   suggestions=pd.DataFrame({"merchant_id": pd.Series([], dtype=str)}), metrics=metrics).save(where)
    # matured history (transactions 90..300 days before the live weeks), then the live weeks
    old, old_disputes = traffic(rng, P_START - dt.timedelta(days=300), 210, per_week=2_000, delay_median=5.0,
                                id0=10 ** 8)
    live, live_disputes = traffic(rng, P_START, 42, new_from=_week(2), new_share=0.7, delay_median=5.0)
    events = home / "events"
    for frame, table, col in ((old, "transactions", "ts"), (live, "transactions", "ts"),
                              (pd.concat([old_disputes, live_disputes]), "disputes", "dispute_ts")):
        for day, g in frame.groupby(frame[col].dt.date):
            write_partition(events / table, day, g[["tx_id", col]])
    n = len(live)
    log = live.assign(request_id=[f"r{i}" for i in range(n)], tx_id=live["tx_id"].astype(str),
                      served_at=live["ts"], card_id=live["card_id"].astype(str), card_country="DE",
                      merchant_id="M1", merchant_country="DE", merchant_category="grocery", known_merchant=True,
                      deployment_version=1, release_id=rid, ramp_state="promoted", ramp_pct=0.0, routed=False,
                      served_by="production", model_id=m.id, score=live["production_score"], threshold=0.5,
                      threshold_source="global", production_model_id=m.id, production_threshold=0.5,
                      candidate_model_id=None, candidate_score=np.nan, candidate_threshold=np.nan,
                      candidate_block=None, shadow="none", candidate_error=None, latency_ms=1.0, client="test")
    for day, g in log.groupby(log["ts"].dt.date):
        f = home / "decision_log" / f"day={day.isoformat()}" / "part-0.parquet"
        f.parent.mkdir(parents=True)
        pq.write_table(pa.Table.from_pandas(g[SCHEMA.names], schema=SCHEMA, preserve_index=False), f)
    return home, m.id, rid


def test_a_silent_recall_decay_is_judged_per_cohort_week_stored_and_alerted_once(decayed):
    """Monitoring the Sunday of the sixth week: the first four weeks have matured (14 days), the last two have
    not. The two weeks before the decay are ok against what the approved policy promised (the suggested
    policy's impossible figure is not what went live); the two decayed weeks alert, the second since the
    first; the two young weeks are not judged yet. Alerts say what moved, since which week and what to do,
    once; the figures are kept; `fraudcd monitor` shows every week and exits 1."""
    from release.orchestration.monitoring import findings_of, folder, monitor
    from release.state.alerts import read_alerts

    home, model, rid = decayed
    day = _week(6) - dt.timedelta(days=1)
    out = monitor(day)
    perf = {p["cohort_week"]: p for p in out["performance"]}
    assert [perf[_week(k).isoformat()]["status"] for k in range(6)] == ["ok", "ok", "alert", "alert",
                                                                      "insufficient", "insufficient"], out["performance"]
    assert perf[_week(3).isoformat()]["since"] == _week(2).isoformat()
    assert all(f"release {rid}" in perf[_week(k).isoformat()]["sentence"] for k in range(4))
    assert perf[_week(0).isoformat()]["completeness"] > 0.95  # estimated from the event logs' matured history
    assert "younger than the 14-day maturity window" in perf[_week(5).isoformat()]["sentence"]
    fired = [a for a in out["alerts"] if a.startswith("Cohort week")]
    assert len(fired) == 2 and all(a.count("What to do:") == 1 and f"Alerting since {day} (today)." in a
                                   for a in fired), fired
    assert f"since the cohort week of {_week(2)}" in fired[1] and "recall fell to" in fired[1]
    stored = findings_of(day)
    mine = stored[stored["check"] == "matured_performance"]
    assert list(mine["status"]) == ["ok", "ok", "alert", "alert", "insufficient", "insufficient"]
    figures = pd.read_parquet(folder() / "performance" / f"day={day.isoformat()}.parquet")
    assert len(figures) == 6 and figures["recall_hi"].iloc[2] < figures["alert_below"].iloc[2]
    again = monitor(day)  # a rerun of the day: the same findings, nothing raised again
    assert again["alerts"] == [] and again["performance"] == out["performance"]
    raised = [a for a in read_alerts() if a["kind"] == "monitoring_matured_performance"]
    assert sorted(a["details"]["slice"] for a in raised) == [_week(2).isoformat(), _week(3).isoformat()]

    exe = str(Path(sys.executable).with_name("fraudcd"))
    r = subprocess.run([exe, "monitor", "--day", day.isoformat()], env=dict(os.environ), capture_output=True,
                       text=True, timeout=300)
    assert r.returncode == 1, r.stdout + r.stderr
    assert "performance as labels mature" in r.stdout and f"week of {_week(2)}: alert" in r.stdout
    assert f"week of {_week(0)}: ok" in r.stdout and f"week of {_week(5)}: insufficient" in r.stdout
