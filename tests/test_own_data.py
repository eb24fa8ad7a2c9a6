"""A team's own log by configuration alone (README "Your own data"): a public-style handbook log with
hostile ids (commas, quotes, unicode) and 2018 dates, a column mapping, a pipeline configuration with a
7-day maturity and terminal risk windows, then the CLI: `fraudcd ingest`, `fraudcd backfill` (the
training_set DAG through real Airflow, its start date and period from the configuration) and
`fraudcd train`. The whole release (`fraudcd release`) on such a log is measured in
benchmarks/bench_own_data.py and walked in the README."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[1]
PIPELINE = """\
labels: {maturity_days: 7}
training_set: {history_days: 40}
features:
  risk:
    - {rate: terminal_fraud_rate_1d, count: terminal_matured_tx_1d, window_days: 1, prior_tx: 1, clock: exact}
    - {rate: terminal_fraud_rate_7d, count: terminal_matured_tx_7d, window_days: 7, prior_tx: 1}
schedule:
  training_set: {start_date: 2018-04-01, every_days: 1}
  release: {start_date: 2018-05-01, every_days: 14}
source: source.yaml
workflow: workflow.yaml
"""
SOURCE = """\
path: handbook.csv
columns: {tx_id: TRANSACTION_ID, ts: TX_DATETIME, card_id: CUSTOMER_ID, amount: TX_AMOUNT, fraud_flag: TX_FRAUD}
merchant_stand_in: TERMINAL_ID
label_delay_days: 7
"""
WORKFLOW = """\
name: terminal-gbm
features: [amount, log_amount, hour, card_tx_24h, card_tx_7d, amount_vs_card_avg_30d, merchant_tx_24h,
           terminal_fraud_rate_1d, terminal_matured_tx_1d, terminal_fraud_rate_7d, terminal_matured_tx_7d]
eval_days: 7
num_boost_round: 50
"""


def fraudcd(*args, env, ok=True):
    r = subprocess.run([str(Path(sys.executable).with_name("fraudcd")), *args], env=env, capture_output=True,
                       text=True, timeout=900)
    assert (r.returncode == 0) == ok, (args, r.returncode, r.stdout[-3000:], r.stderr[-3000:])
    return r


@pytest.fixture(scope="module")
def own(tmp_path_factory):
    work = tmp_path_factory.mktemp("own-data")
    (work / "pipeline.yaml").write_text(PIPELINE)
    (work / "source.yaml").write_text(SOURCE)
    (work / "workflow.yaml").write_text(WORKFLOW)
    env = dict(os.environ, FRAUDCD_HOME=str(work / "home"), FRAUDCD_PIPELINE=str(work / "pipeline.yaml"))
    for k in ("AIRFLOW__DATABASE__SQL_ALCHEMY_CONN", "AIRFLOW__LOGGING__BASE_LOG_FOLDER"):
        env.pop(k, None)  # Airflow's metadata database under this FRAUDCD_HOME, as for a new user
    fraudcd("handbook-log", "--out", str(work / "handbook.csv"), "--customers", "600", "--terminals", "1200",
            "--days", "75", "--hostile-ids", env=env)
    return work, env


def test_a_handbook_log_with_hostile_ids_goes_from_mapping_to_a_trained_candidate(own):
    work, env = own
    log = pd.read_csv(work / "handbook.csv", dtype=str)
    assert log["TERMINAL_ID"].str.contains(",").all() and log["TERMINAL_ID"].str.contains('"').all()
    out = json.loads(fraudcd("ingest", "--mapping", str(work / "source.yaml"), "--json", env=env).stdout)
    assert out["rows"] == len(log) and out["labels"] != "none"

    # the training_set DAG through Airflow for a 2018 date: its start date comes from the configuration
    # (a DAG fixed at 2026-01-01 recorded a successful run and ran no task)
    fraudcd("backfill", "--start", "2018-06-10", "--end", "2018-06-10", env=env)
    snaps = [json.loads(m.read_text()) for m in (work / "home" / "snapshots").glob("*/manifest.json")]
    assert [s["config"]["as_of"] for s in snaps] == ["2018-06-10"]
    snap = snaps[0]
    assert snap["config"]["maturity_days"] == 7 and snap["window"] == {"start": "2018-05-01", "end": "2018-06-03"}
    assert snap["rows"] > 5000 and snap["frauds"] > 20 and all(c["passed"] for c in snap["data_contract"])
    df = pd.read_parquet(work / "home" / "snapshots" / snap["hash"] / "data.parquet")
    assert df["merchant_id"].str.contains('tërm,"').all()  # ids as they came, commas, quotes and all
    # the terminal's 1-day fraud rate sees compromised terminals: higher on frauds than on the rest
    assert df.loc[df["label"] == 1, "terminal_fraud_rate_1d"].mean() > 3 * df.loc[df["label"] == 0,
                                                                                   "terminal_fraud_rate_1d"].mean()

    trained = json.loads(fraudcd("train", "--workflow", str(work / "workflow.yaml"), "--as", "own-data test",
                                 "--reason", "own data by configuration", "--json", env=env).stdout)
    assert trained["snapshot"] == snap["hash"]
    assert trained["metrics"]["training"]["train_end"] < trained["metrics"]["training"]["eval_start"]


def test_a_bad_pipeline_file_stops_every_command_with_the_key(own, tmp_path):
    work, env = own
    bad = tmp_path / "pipeline.yaml"
    bad.write_text(PIPELINE.replace("maturity_days: 7", "maturity_days: seven"))
    r = fraudcd("training-set", "--as-of", "2018-06-10", env=dict(env, FRAUDCD_PIPELINE=str(bad)), ok=False)
    assert "labels.maturity_days" in r.stdout + r.stderr and str(bad) in r.stdout + r.stderr
