"""An independent baseline on the handbook's world: what a fraud team would compute from the log alone.

It shares no code with the project's ``release/`` package (nor ``analysis/``): the features are the
Fraud Detection Handbook's (chapter 3.4, "Baseline feature transformation"), computed here with pandas
``groupby(...).rolling(...)`` per transaction, point in time:

- TX_AMOUNT, TX_DURING_WEEKEND (Saturday or Sunday), TX_DURING_NIGHT (hour <= 6, the handbook's rule);
- customer, for w in 1, 7, 30 days: the number of transactions and their mean amount over (t - w, t],
  the window ending at the transaction and including it, as the handbook does;
- terminal, for w in 1, 7, 30 days: the number of transactions and the fraud rate ("risk", 0 when the
  window is empty) over [t - delay - w, t - delay): a terminal's fraud labels are only known ``delay``
  days later.

:func:`baseline_scores` trains a deterministic LightGBM on the train week and scores the test week
(ROC-AUC and average precision from scikit-learn). Two test sets are reported: the whole test week, and
the handbook's protocol (``get_train_test_set``): a test day's transactions are dropped for customers
already known to be defrauded (a fraud in the train week, or on a later day up to the test day minus
delay minus one), as their cards would have been blocked.

    .venv/bin/python benchmarks/handbook_baseline.py                       # the default 6-month world
    .venv/bin/python benchmarks/handbook_baseline.py --customers 1000 --terminals 2000 --days 120
    .venv/bin/python benchmarks/handbook_baseline.py --log exported.csv    # a written log instead
"""
from __future__ import annotations

import argparse
import importlib.util
import sys
import time
from pathlib import Path

import lightgbm as lgb
import numpy as np
import pandas as pd
from sklearn.metrics import average_precision_score, roc_auc_score

WINDOWS = (1, 7, 30)
FEATURES = (["TX_AMOUNT", "TX_DURING_WEEKEND", "TX_DURING_NIGHT"]
            + [f"CUSTOMER_ID_{k}_{w}DAY_WINDOW" for w in WINDOWS for k in ("NB_TX", "AVG_AMOUNT")]
            + [f"TERMINAL_ID_{k}_{w}DAY_WINDOW" for w in WINDOWS for k in ("NB_TX", "RISK")])


def _rolling(df: pd.DataFrame, key: str, col: str, window: str, how: str, closed: str) -> pd.Series:
    """One per-key time-window aggregate, aligned on ``df``'s rows (``df`` sorted by time).

    ``groupby(...).rolling(on=...)`` returns the groups one after another, so the frame is first put in
    (key, time) order and the result put back."""
    codes = pd.factorize(df[key])[0]
    perm = np.argsort(codes, kind="stable")                 # by key, time order kept within a key
    grouped = pd.DataFrame({"k": codes[perm], "TX_DATETIME": df["TX_DATETIME"].to_numpy()[perm],
                            "v": df[col].to_numpy(dtype=float)[perm]})
    vals = getattr(grouped.groupby("k", sort=True).rolling(window, on="TX_DATETIME", closed=closed)["v"],
                   how)().to_numpy()
    out = np.empty(len(df))
    out[perm] = vals
    return pd.Series(out, index=df.index).fillna(0.0)


def handbook_features(df: pd.DataFrame, delay_days: int = 7) -> pd.DataFrame:
    """The handbook's 15 features for every row of ``df`` (which must hold each key's history)."""
    df = df.sort_values(["TX_DATETIME", "TRANSACTION_ID"], kind="stable").reset_index(drop=True)
    out = pd.DataFrame(index=df.index)
    out["TX_AMOUNT"] = df["TX_AMOUNT"].astype(float)
    out["TX_DURING_WEEKEND"] = (df["TX_DATETIME"].dt.day_of_week >= 5).astype(int)
    out["TX_DURING_NIGHT"] = (df["TX_DATETIME"].dt.hour <= 6).astype(int)
    for w in WINDOWS:
        out[f"CUSTOMER_ID_NB_TX_{w}DAY_WINDOW"] = _rolling(df, "CUSTOMER_ID", "TX_AMOUNT", f"{w}D", "count", "right")
        out[f"CUSTOMER_ID_AVG_AMOUNT_{w}DAY_WINDOW"] = _rolling(df, "CUSTOMER_ID", "TX_AMOUNT", f"{w}D", "mean",
                                                                 "right")
    # [t - delay - w, t) minus [t - delay, t) = [t - delay - w, t - delay)
    nb_delay = _rolling(df, "TERMINAL_ID", "TX_FRAUD", f"{delay_days}D", "count", "left")
    fr_delay = _rolling(df, "TERMINAL_ID", "TX_FRAUD", f"{delay_days}D", "sum", "left")
    for w in WINDOWS:
        nb = _rolling(df, "TERMINAL_ID", "TX_FRAUD", f"{delay_days + w}D", "count", "left") - nb_delay
        fr = _rolling(df, "TERMINAL_ID", "TX_FRAUD", f"{delay_days + w}D", "sum", "left") - fr_delay
        nb, fr = nb.round(), fr.round()
        out[f"TERMINAL_ID_NB_TX_{w}DAY_WINDOW"] = nb
        out[f"TERMINAL_ID_RISK_{w}DAY_WINDOW"] = np.where(nb > 0, fr / nb.where(nb > 0, 1.0), 0.0)
    for c in ("TRANSACTION_ID", "TX_DATETIME", "CUSTOMER_ID", "TX_FRAUD"):
        out[c] = df[c].to_numpy()
    return out[["TRANSACTION_ID", "TX_DATETIME", "CUSTOMER_ID", "TX_FRAUD"] + FEATURES]


def _known_defrauded_mask(feat: pd.DataFrame, test: pd.DataFrame, train_start: pd.Timestamp,
                          train_end: pd.Timestamp, delay_days: int) -> np.ndarray:
    """The handbook's test-set rule: drop a test day's rows of customers with a fraud dated in
    [train start, max(train end, test day - delay - 1)]."""
    day = feat["TX_DATETIME"].dt.normalize()
    frauds = feat.loc[(feat["TX_FRAUD"] == 1) & (day >= train_start), ["CUSTOMER_ID"]].assign(day=day)
    first = frauds.groupby("CUSTOMER_ID", observed=True)["day"].min()   # first fraud day from train start
    test_day = test["TX_DATETIME"].dt.normalize()
    known_until = (test_day - pd.Timedelta(days=delay_days + 1)).clip(lower=train_end)
    first_of_row = test["CUSTOMER_ID"].map(first)
    return (first_of_row.notna() & (first_of_row <= known_until)).to_numpy()


def baseline_scores(df: pd.DataFrame, train=("2018-07-25", "2018-07-31"), test=("2018-08-08", "2018-08-14"),
                    delay_days: int = 7, seed: int = 0) -> dict:
    """Train LightGBM on the train week (dates inclusive), score the test week; ROC-AUC and average
    precision on the whole test week and under the handbook's known-defrauded-customer rule."""
    train_start, train_end = pd.Timestamp(train[0]), pd.Timestamp(train[1])
    test_start, test_end = pd.Timestamp(test[0]), pd.Timestamp(test[1])
    # only the history the windows need: the longest look-back is delay + 30 days before the train start
    lo = train_start - pd.Timedelta(days=delay_days + max(WINDOWS) + 1)
    hi = test_end + pd.Timedelta(days=1)
    part = df[(df["TX_DATETIME"] >= lo) & (df["TX_DATETIME"] < hi)]
    feat = handbook_features(part, delay_days)
    day = feat["TX_DATETIME"].dt.normalize()
    tr = feat[(day >= train_start) & (day <= train_end)]
    te = feat[(day >= test_start) & (day <= test_end)]
    model = lgb.LGBMClassifier(objective="binary", n_estimators=200, learning_rate=0.05, num_leaves=31,
                               random_state=seed, deterministic=True, force_row_wise=True, n_jobs=1,
                               verbose=-1)
    model.fit(tr[FEATURES], tr["TX_FRAUD"])
    score = model.predict_proba(te[FEATURES])[:, 1]
    y = te["TX_FRAUD"].to_numpy()
    drop = _known_defrauded_mask(feat, te, train_start, train_end, delay_days)
    kept = ~drop
    return {
        "train_rows": len(tr), "train_frauds": int(tr["TX_FRAUD"].sum()),
        "test_rows": len(te), "test_frauds": int(y.sum()),
        "roc_auc": float(roc_auc_score(y, score)), "average_precision": float(average_precision_score(y, score)),
        "handbook_test_rows": int(kept.sum()), "handbook_test_frauds": int(y[kept].sum()),
        "handbook_roc_auc": float(roc_auc_score(y[kept], score[kept])),
        "handbook_average_precision": float(average_precision_score(y[kept], score[kept])),
    }


def _load_handbook_simulator():
    """simulation/handbook.py by file path: importing the ``simulation`` package would run its
    ``__init__`` and with it the project's own world and ``release.core.io``, which this baseline keeps out."""
    path = Path(__file__).resolve().parents[1] / "simulation" / "handbook.py"
    spec = importlib.util.spec_from_file_location("handbook_simulator", path)
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod   # dataclasses resolve the module by name
    spec.loader.exec_module(mod)
    return mod


def read_log(path: str | Path) -> pd.DataFrame:
    df = pd.read_csv(path, dtype={"CUSTOMER_ID": str, "TERMINAL_ID": str}, encoding="utf-8")
    df["TX_DATETIME"] = pd.to_datetime(df["TX_DATETIME"], format="%Y-%m-%d %H:%M:%S")
    return df


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--customers", type=int, default=5000)
    ap.add_argument("--terminals", type=int, default=10000)
    ap.add_argument("--days", type=int, default=183)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--log", type=Path, help="read this CSV log instead of generating one")
    ap.add_argument("--delay", type=int, default=7)
    args = ap.parse_args(argv)

    t0 = time.perf_counter()
    if args.log:
        df = read_log(args.log)
        what = str(args.log)
    else:
        df = _load_handbook_simulator().generate(n_customers=args.customers, n_terminals=args.terminals,
                                                 n_days=args.days, seed=args.seed)
        what = f"handbook world: {args.customers} customers, {args.terminals} terminals, {args.days} days, " \
               f"seed {args.seed}"
    t1 = time.perf_counter()
    r = baseline_scores(df, delay_days=args.delay, seed=args.seed)
    t2 = time.perf_counter()
    print(what)
    print(f"log: {len(df):,} transactions, {int(df['TX_FRAUD'].sum()):,} frauds "
          f"({df['TX_FRAUD'].mean():.3%}); {'read' if args.log else 'generated'} in {t1 - t0:.1f} s")
    print(f"train 2018-07-25..07-31: {r['train_rows']:,} rows, {r['train_frauds']:,} frauds")
    print(f"{'test 2018-08-08..08-14':<38}{'rows':>9}{'frauds':>8}{'ROC-AUC':>9}{'AP':>8}")
    print(f"{'  whole week':<38}{r['test_rows']:>9,}{r['test_frauds']:>8,}{r['roc_auc']:>9.3f}"
          f"{r['average_precision']:>8.3f}")
    print(f"{'  known-defrauded customers dropped':<38}{r['handbook_test_rows']:>9,}"
          f"{r['handbook_test_frauds']:>8,}{r['handbook_roc_auc']:>9.3f}{r['handbook_average_precision']:>8.3f}")
    print(f"features + training + scoring: {t2 - t1:.1f} s; total {t2 - t0:.1f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
