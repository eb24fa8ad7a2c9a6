"""A team's own log through fraud-cd by configuration alone, against an independent baseline.

The log: six months of the public Fraud Detection Handbook's simulated transactions
(``simulation/handbook.py``: customer and terminal ids as unpadded strings, amounts, a fraud flag and
nothing else). The project's side uses only files a new user writes (a column mapping, a pipeline
configuration, a training workflow) and the ``fraudcd`` commands of the README's "Your own data":
``fraudcd ingest``, ``fraudcd training-set``, ``fraudcd train``. The candidate is then scored on the
fixed split (train 2018-07-25..31, 7-day label delay, test 2018-08-08..14) with the project's own
scoring function. Beside it, in the same run, ``benchmarks/handbook_baseline.py``: an independent
LightGBM on handbook-style features (customer 1/7/30-day counts and mean amounts, terminal 1/7/30-day
counts and fraud rates known after the delay) that shares no code with ``release/``.

Target (issue 14): the candidate within 0.01 of the baseline's ROC-AUC and AP on the whole test week.

    .venv/bin/python benchmarks/bench_own_data.py [--customers 5000 --terminals 10000 --days 183 --seed 0]
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd
from sklearn.metrics import average_precision_score, roc_auc_score

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

TRAIN = ("2018-07-25", "2018-08-01")  # [start, end)
TEST = ("2018-08-08", "2018-08-15")
AS_OF = "2018-08-22"  # the test week's labels have all arrived (7-day delay) and matured (7-day maturity)

MAPPING = """\
# The handbook log's columns, mapped (README "Your own data")
path: {log}
columns:
  tx_id: TRANSACTION_ID
  ts: TX_DATETIME
  card_id: CUSTOMER_ID
  amount: TX_AMOUNT
  fraud_flag: TX_FRAUD
merchant_stand_in: TERMINAL_ID   # no merchant: the terminal stands in for it
label_delay_days: 7              # a flagged transaction's label is known 7 days after it
"""

PIPELINE = """\
labels: {{maturity_days: 7}}          # labels arrive within a week here: use them after a week
training_set: {{history_days: 60}}
features:
  risk:   # the terminal (standing in for the merchant): fast and slow fraud rates, each window sliding with
          # the transaction's time (labels here are known to the second: the handbook's 7-day delay)
    - {{rate: terminal_fraud_rate_1d, count: terminal_matured_tx_1d, window_days: 1, prior_tx: {prior},
       clock: exact}}
    - {{rate: terminal_fraud_rate_7d, count: terminal_matured_tx_7d, window_days: 7, prior_tx: {prior},
       clock: exact}}
    - {{rate: terminal_fraud_rate_30d, count: terminal_matured_tx_30d, window_days: 30, prior_tx: {prior},
       clock: exact}}
schedule:
  training_set: {{start_date: 2018-04-01, every_days: 1}}
  release: {{start_date: 2018-05-01, every_days: 14}}
source: source.yaml
"""

WORKFLOW = """\
name: handbook-fixed-split
snapshot: latest
features: [amount, log_amount, hour,
           card_tx_1h, card_tx_24h, card_amount_24h, card_tx_7d, card_amount_7d, card_tx_30d,
           amount_vs_card_avg_30d, amount_vs_card_max_30d, card_age_days, card_merchants_24h,
           merchant_tx_1h, merchant_tx_24h, merchant_tx_7d, merchant_amount_24h, amount_vs_merchant_avg_7d,
           terminal_fraud_rate_1d, terminal_matured_tx_1d, terminal_fraud_rate_7d, terminal_matured_tx_7d,
           terminal_fraud_rate_30d, terminal_matured_tx_30d]
train_window: {{start: {train0}, end: {train1}}}
eval_window: {{start: {test0}, end: {test1}}}
seed: 7
max_sample_weight: 50
positive_weight: 1.0
num_boost_round: 300
lightgbm: {{objective: binary, learning_rate: 0.05, num_leaves: 31, min_data_in_leaf: 50,
           feature_fraction: 0.9, lambda_l2: 1.0}}
"""


def fraudcd(*args: str, env: dict) -> str:
    exe = Path(sys.executable).with_name("fraudcd")
    r = subprocess.run([str(exe), *args], env=env, capture_output=True, text=True)
    if r.returncode:
        raise SystemExit(f"fraudcd {' '.join(args)} exited {r.returncode}:\n{r.stdout}\n{r.stderr}")
    return r.stdout


def project_scores(log: Path, work: Path, prior: float) -> dict:
    """The documented path on ``log``; ROC-AUC and AP of the candidate on the test week."""
    work.mkdir(parents=True, exist_ok=True)
    (work / "source.yaml").write_text(MAPPING.format(log=log))
    (work / "pipeline.yaml").write_text(PIPELINE.format(prior=prior))
    (work / "workflow.yaml").write_text(WORKFLOW.format(train0=TRAIN[0], train1=TRAIN[1], test0=TEST[0],
                                                        test1=TEST[1]))
    env = dict(os.environ, FRAUDCD_HOME=str(work / "home"), FRAUDCD_PIPELINE=str(work / "pipeline.yaml"))
    t0 = time.perf_counter()
    fraudcd("ingest", "--mapping", str(work / "source.yaml"), env=env)
    t1 = time.perf_counter()
    snap = fraudcd("training-set", "--as-of", AS_OF, env=env).strip().splitlines()[-1]
    t2 = time.perf_counter()
    model_id = json.loads(fraudcd("train", "--workflow", str(work / "workflow.yaml"), "--as", "bench_own_data",
                                  "--reason", "outside benchmark", "--json", env=env))["model_id"]
    t3 = time.perf_counter()
    os.environ.update(FRAUDCD_HOME=env["FRAUDCD_HOME"], FRAUDCD_PIPELINE=env["FRAUDCD_PIPELINE"])
    from release.state import registry
    from release.modeling.training import score

    model = registry.get_model(model_id)
    df = pd.read_parquet(work / "home" / "snapshots" / snap / "data.parquet")
    day = pd.to_datetime(df["day"])
    te = df[(day >= pd.Timestamp(TEST[0])) & (day < pd.Timestamp(TEST[1]))]
    y = te["label"].astype(int).to_numpy()
    s = score(model.booster(), te, model.features)
    return {"test_rows": len(te), "test_frauds": int(y.sum()), "roc_auc": float(roc_auc_score(y, s)),
            "average_precision": float(average_precision_score(y, s)),
            "seconds": {"ingest": t1 - t0, "training-set": t2 - t1, "train": t3 - t2}, "model": model_id}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--customers", type=int, default=5000)
    ap.add_argument("--terminals", type=int, default=10000)
    ap.add_argument("--days", type=int, default=183)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--rate-prior", type=float, default=1.0, help="the terminal fraud rates' prior weight, in "
                    "transactions")
    ap.add_argument("--keep", type=Path, help="work here and keep the files (default: a temp folder)")
    args = ap.parse_args(argv)

    import handbook_baseline as hb

    sim = hb._load_handbook_simulator()
    t0 = time.perf_counter()
    df = sim.generate(n_customers=args.customers, n_terminals=args.terminals, n_days=args.days, seed=args.seed)
    with tempfile.TemporaryDirectory() as tmp:
        work = args.keep or Path(tmp)
        work.mkdir(parents=True, exist_ok=True)
        log = sim.write_log(df, work / "handbook.csv")
        t1 = time.perf_counter()
        base = hb.baseline_scores(hb.read_log(log), seed=args.seed)
        t2 = time.perf_counter()
        proj = project_scores(log.resolve(), work / "project", args.rate_prior)
        t3 = time.perf_counter()
    print(f"handbook world: {args.customers} customers, {args.terminals} terminals, {args.days} days, seed "
          f"{args.seed}: {len(df):,} transactions, {int(df['TX_FRAUD'].sum()):,} frauds (generated {t1 - t0:.1f} s)")
    print(f"fixed split: train {TRAIN[0]}..{TRAIN[1]} (exclusive), 7-day delay, test {TEST[0]}..{TEST[1]} (exclusive)")
    print(f"{'':<44}{'rows':>8}{'frauds':>8}{'ROC-AUC':>9}{'AP':>8}{'seconds':>9}")
    print(f"{'independent baseline (handbook features)':<44}{base['test_rows']:>8,}{base['test_frauds']:>8,}"
          f"{base['roc_auc']:>9.3f}{base['average_precision']:>8.3f}{t2 - t1:>9.1f}")
    print(f"{'fraud-cd candidate (configuration only)':<44}{proj['test_rows']:>8,}{proj['test_frauds']:>8,}"
          f"{proj['roc_auc']:>9.3f}{proj['average_precision']:>8.3f}{t3 - t2:>9.1f}")
    d_auc, d_ap = proj["roc_auc"] - base["roc_auc"], proj["average_precision"] - base["average_precision"]
    ok = d_auc >= -0.01 and d_ap >= -0.01
    print(f"difference: ROC-AUC {d_auc:+.3f}, AP {d_ap:+.3f} -> {'within' if ok else 'NOT within'} 0.01 of the "
          f"baseline (target); project stages: " + ", ".join(f"{k} {v:.1f} s" for k, v in proj["seconds"].items()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
