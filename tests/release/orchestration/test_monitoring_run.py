"""The daily monitoring run (release/orchestration/monitoring.py, `fraudcd monitor`) on a simulated world in
steady state: a quiet week raises nothing; a feed that starts sending one country's amounts in cents raises a
feature-drift alert for that country that says since when and what to do, once per day, and "N days running"
the day after. The world's own features, snapshot and registry: nothing is stubbed."""
from __future__ import annotations

import datetime as dt
import json
import subprocess
import sys
from pathlib import Path

import pandas as pd
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
    import os

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
