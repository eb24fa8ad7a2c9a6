"""Point-in-time features: for each transaction, only what was known strictly before its timestamp.

Computed in one DuckDB query with window frames over event time (``EXCLUDE GROUP`` drops the row itself
and anything at the same instant), so no feature can read the future.
"""
from __future__ import annotations

import datetime as dt
from pathlib import Path

import duckdb
import pandas as pd

from release.io import list_partitions

FEATURES_VERSION = "f2"
CATEGORIES = ["grocery", "fuel", "restaurants", "fashion", "electronics", "travel", "digital_goods",
              "gambling"]
FEATURE_COLUMNS = [
    "amount", "log_amount", "cross_border", "hour", "category_code",
    "card_tx_1h", "card_tx_24h", "card_amount_24h", "card_tx_30d", "amount_vs_card_avg_30d",
    "card_age_days", "merchant_tx_24h",
]
# How far back the windows look: enough history before a window's start for every aggregate.
LOOKBACK_DAYS = 60
# Card age is "days since first seen", capped: an uncapped age would depend on how far back the query
# happened to read (a training window reads more history than a week of live traffic), so the same
# transaction would get different features offline and online. Capped below LOOKBACK_DAYS, it cannot.
CARD_AGE_CAP_DAYS = 30


def _sql_list(files: list[Path]) -> str:
    return "[" + ", ".join("'" + str(f).replace("'", "''") + "'" for f in files) + "]"


def compute_features(events: Path, start: dt.date, end: dt.date, con: duckdb.DuckDBPyConnection | None = None,
                     threads: int = 2) -> pd.DataFrame:
    """Transactions with start <= day < end, with point-in-time features, joined to their decisions."""
    events = Path(events)
    tx_files = list_partitions(events / "transactions", start - dt.timedelta(days=LOOKBACK_DAYS), end)
    dec_files = list_partitions(events / "decisions", start, end)
    if not any(list_partitions(events / "transactions", start, end)):
        raise FileNotFoundError(
            f"No transactions found in {events / 'transactions'} for days {start} .. {end - dt.timedelta(days=1)}."
            " Simulate a world (`fraudcd simulate`) or point FRAUDCD_HOME at your event logs.")
    con = con or duckdb.connect()
    con.execute(f"SET threads = {int(threads)}")
    con.execute("SET TimeZone = 'UTC'")
    cats = ", ".join(f"'{c}'" for c in CATEGORIES)
    q = f"""
    WITH tx AS (
        SELECT tx_id, ts, card_id, card_country, merchant_id, merchant_country, merchant_category, amount
        FROM read_parquet({_sql_list(tx_files)})
    ), f AS (
        SELECT *,
            count(*) OVER card_1h AS card_tx_1h,
            count(*) OVER card_24h AS card_tx_24h,
            coalesce(sum(amount) OVER card_24h, 0) AS card_amount_24h,
            count(*) OVER card_30d AS card_tx_30d,
            avg(amount) OVER card_30d AS card_avg_30d,
            min(ts) OVER card_all AS card_first_seen,
            count(*) OVER merchant_24h AS merchant_tx_24h
        FROM tx
        WINDOW
            card_1h AS (PARTITION BY card_id ORDER BY ts RANGE BETWEEN INTERVAL 1 HOUR PRECEDING AND CURRENT ROW EXCLUDE GROUP),
            card_24h AS (PARTITION BY card_id ORDER BY ts RANGE BETWEEN INTERVAL 1 DAY PRECEDING AND CURRENT ROW EXCLUDE GROUP),
            card_30d AS (PARTITION BY card_id ORDER BY ts RANGE BETWEEN INTERVAL 30 DAY PRECEDING AND CURRENT ROW EXCLUDE GROUP),
            card_all AS (PARTITION BY card_id ORDER BY ts RANGE BETWEEN UNBOUNDED PRECEDING AND CURRENT ROW),
            merchant_24h AS (PARTITION BY merchant_id ORDER BY ts RANGE BETWEEN INTERVAL 1 DAY PRECEDING AND CURRENT ROW EXCLUDE GROUP)
    )
    SELECT f.tx_id, f.ts, CAST(f.ts AS DATE) AS day, f.card_id, f.card_country, f.merchant_id,
        f.merchant_country, f.merchant_category,
        f.amount,
        ln(1 + f.amount) AS log_amount,
        CAST(f.card_country <> f.merchant_country AS INTEGER) AS cross_border,
        hour(f.ts) AS hour,
        list_position([{cats}], f.merchant_category) - 1 AS category_code,
        f.card_tx_1h, f.card_tx_24h, f.card_amount_24h, f.card_tx_30d,
        f.amount / (coalesce(f.card_avg_30d, f.amount) + 1) AS amount_vs_card_avg_30d,
        least(date_diff('second', f.card_first_seen, f.ts) / 86400.0, {CARD_AGE_CAP_DAYS}) AS card_age_days,
        f.merchant_tx_24h,
        d.action, d.explored, d.propensity
    FROM f JOIN read_parquet({_sql_list(dec_files)}) d USING (tx_id)
    WHERE f.ts >= TIMESTAMPTZ '{start.isoformat()} 00:00:00+00' AND f.ts < TIMESTAMPTZ '{end.isoformat()} 00:00:00+00'
    ORDER BY f.ts, f.tx_id
    """
    df = con.execute(q).df()
    df["category_code"] = df["category_code"].astype("float64")
    return df
