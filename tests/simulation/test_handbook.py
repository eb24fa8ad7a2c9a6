"""The Fraud Detection Handbook's simulator (simulation/handbook.py): its rules checked row by row."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from simulation.handbook import (COLUMNS, HOSTILE_CUSTOMER_PREFIX, HOSTILE_TERMINAL_PREFIX, LOG_COLUMNS,
                                 generate, simulate, write_log)

SMALL = {"n_customers": 500, "n_terminals": 1000, "n_days": 60}


@pytest.fixture(scope="module")
def world():
    return simulate(seed=7, **SMALL)


@pytest.fixture(scope="module")
def tx(world):
    return world.transactions


def test_same_seed_same_log_and_another_seed_another(tx):
    assert generate(seed=7, **SMALL).equals(tx)
    other = generate(seed=8, **SMALL)
    assert len(other) != len(tx) or not other["TX_AMOUNT"].equals(tx["TX_AMOUNT"])


def test_columns_types_and_order(tx):
    assert list(tx.columns) == COLUMNS
    assert tx["TRANSACTION_ID"].tolist() == list(range(len(tx)))
    assert tx["TX_DATETIME"].dt.tz is None
    assert tx["TX_DATETIME"].is_monotonic_increasing
    assert tx["TX_DATETIME"].min() >= pd.Timestamp("2018-04-01")
    assert tx["TX_DATETIME"].max() < pd.Timestamp("2018-04-01") + pd.Timedelta(days=SMALL["n_days"])
    assert set(tx["TX_FRAUD"].unique()) == {0, 1}
    assert set(tx["TX_FRAUD_SCENARIO"].unique()) == {0, 1, 2, 3}
    assert (tx["TX_FRAUD"] == (tx["TX_FRAUD_SCENARIO"] > 0)).all()
    assert (tx["TX_AMOUNT"] >= 0).all()
    assert (tx["TX_AMOUNT"].round(2) == tx["TX_AMOUNT"]).mean() > 0.99  # cents, but x5 and float noise


def test_ids_are_unpadded_decimal_strings(tx):
    for col, n in (("CUSTOMER_ID", SMALL["n_customers"]), ("TERMINAL_ID", SMALL["n_terminals"])):
        ids = tx[col]
        assert all(isinstance(v, str) for v in ids.iloc[:1000])
        assert ids.str.fullmatch(r"0|[1-9][0-9]*").all()           # no leading zeros, no padding
        assert "10" in set(ids) and not ids.str.match(r"0[0-9]").any()
        assert ids.astype(int).max() < n


def test_every_terminal_used_is_within_the_radius_of_its_customer(world, tx):
    c = world.customers.set_index("CUSTOMER_ID").loc[tx["CUSTOMER_ID"], ["x", "y"]].to_numpy()
    t = world.terminals.set_index("TERMINAL_ID").loc[tx["TERMINAL_ID"], ["x", "y"]].to_numpy()
    assert (np.hypot(*(c - t).T) < 5.0).all()


def test_scenario_1_is_exactly_the_amounts_above_220_not_taken_by_another_scenario(tx):
    above = tx["TX_AMOUNT"] > 220
    assert (tx.loc[above, "TX_FRAUD"] == 1).all()                     # every amount above 220 is fraud
    s = tx["TX_FRAUD_SCENARIO"]
    assert ((s == 1) == (above & ~s.isin([2, 3]))).all()
    assert (s == 1).sum() > 0


def test_scenario_2_frauds_are_exactly_the_transactions_at_compromised_terminals_within_28_days(world, tx):
    comp = world.compromised_terminals
    assert len(comp) == 2 * (SMALL["n_days"] - 1)                     # 2 a day, every day but the last
    assert (comp["end"] - comp["start"] == pd.Timedelta(days=28)).all()
    m = tx[["TRANSACTION_ID", "TERMINAL_ID", "TX_DATETIME"]].merge(comp, on="TERMINAL_ID")
    inside = m[(m["TX_DATETIME"] >= m["start"]) & (m["TX_DATETIME"] < m["end"])]
    in_window = tx["TRANSACTION_ID"].isin(inside["TRANSACTION_ID"])
    s = tx["TX_FRAUD_SCENARIO"]
    assert not (s == 2)[~in_window].any()                             # every scenario-2 fraud lies in a window
    assert s[in_window].isin([2, 3]).all()                            # and every window row is fraud (3 overrides)
    assert (s == 2).sum() > 100


def test_scenario_3_takes_a_third_of_a_compromised_customers_transactions(world, tx):
    comp = world.compromised_customers
    assert len(comp) == 3 * (SMALL["n_days"] - 1)
    m = tx[["TRANSACTION_ID", "CUSTOMER_ID", "TX_DATETIME"]].merge(comp, on="CUSTOMER_ID")
    inside = m[(m["TX_DATETIME"] >= m["start"]) & (m["TX_DATETIME"] < m["end"])]
    s3 = tx["TX_FRAUD_SCENARIO"] == 3
    assert tx.loc[s3, "TRANSACTION_ID"].isin(inside["TRANSACTION_ID"]).all()
    # a customer compromised once: exactly int(n / 3) of the window's n transactions are scenario 3
    once = comp["CUSTOMER_ID"].value_counts().loc[lambda v: v == 1].index
    checked = 0
    for cid, rows in inside[inside["CUSTOMER_ID"].isin(once)].groupby("CUSTOMER_ID"):
        n = len(rows)
        assert s3[tx["TRANSACTION_ID"].isin(rows["TRANSACTION_ID"])].sum() == n // 3
        checked += n >= 3
    assert checked > 20
    # their amounts were multiplied by 5: well above the customer's usual spending
    mean = world.customers.set_index("CUSTOMER_ID")["mean_amount"]
    ratio = tx.loc[s3, "TX_AMOUNT"].to_numpy() / mean.loc[tx.loc[s3, "CUSTOMER_ID"]].to_numpy()
    assert np.median(ratio) > 3.5


def test_default_world_size_and_fraud_rate_are_the_handbooks():
    # the handbook's own run: about 1.75M transactions, 0.84% fraud; this one: 1.79M and 0.84% (seed 0)
    df = generate(seed=0)
    assert 1_650_000 < len(df) < 1_900_000
    assert 0.006 < df["TX_FRAUD"].mean() < 0.011
    shares = df.loc[df["TX_FRAUD"] == 1, "TX_FRAUD_SCENARIO"].value_counts(normalize=True)
    assert shares[2] > shares[3] > shares[1] > 0.03                   # terminals, then customers, then > 220


def test_the_log_round_trips_through_csv(tx, tmp_path):
    path = write_log(tx, tmp_path / "log.csv")
    back = pd.read_csv(path, dtype=str)
    assert list(back.columns) == LOG_COLUMNS
    assert back["CUSTOMER_ID"].tolist() == tx["CUSTOMER_ID"].tolist()
    assert back["TERMINAL_ID"].tolist() == tx["TERMINAL_ID"].tolist()
    assert (pd.to_datetime(back["TX_DATETIME"]) == tx["TX_DATETIME"]).all()
    assert np.allclose(back["TX_AMOUNT"].astype(float), tx["TX_AMOUNT"])
    assert "TX_FRAUD_SCENARIO" in pd.read_csv(write_log(tx, tmp_path / "s.csv", with_scenario=True), nrows=1)


def test_hostile_ids_carry_a_comma_a_quote_and_non_ascii_and_round_trip(tx, tmp_path):
    hostile = generate(seed=7, hostile_ids=True, **SMALL)
    # the same world, only the names differ
    assert hostile.drop(columns=["CUSTOMER_ID", "TERMINAL_ID"]).equals(tx.drop(columns=["CUSTOMER_ID", "TERMINAL_ID"]))
    assert (hostile["TERMINAL_ID"] == HOSTILE_TERMINAL_PREFIX + tx["TERMINAL_ID"]).all()
    assert (hostile["CUSTOMER_ID"] == HOSTILE_CUSTOMER_PREFIX + tx["CUSTOMER_ID"]).all()
    for col in ("CUSTOMER_ID", "TERMINAL_ID"):
        v = hostile[col].iloc[0]
        assert "," in v and '"' in v and not v.isascii()
    path = write_log(hostile, tmp_path / "hostile.csv")
    back = pd.read_csv(path, dtype=str, encoding="utf-8")
    assert len(back) == len(hostile)
    assert back["CUSTOMER_ID"].tolist() == hostile["CUSTOMER_ID"].tolist()
    assert back["TERMINAL_ID"].tolist() == hostile["TERMINAL_ID"].tolist()
    assert back["TRANSACTION_ID"].astype(int).tolist() == hostile["TRANSACTION_ID"].tolist()
