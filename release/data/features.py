"""Point-in-time features: for each transaction, only what was known strictly before its timestamp.

Card and merchant window aggregates are computed with Polars' grouped rolling windows, closed on the
left (``[t - w, t)``: the row itself and anything at the same instant are not known), which is about
thirty times faster here than SQL window frames over event time; DuckDB reads the event logs and joins
the rest (decisions, the merchant fraud rate, static features).

The merchant's fraud rate uses labels the way the training set does: a transaction counts once it has
matured (older than the maturity window), and as fraud only if its dispute had arrived before the day
of the transaction being scored. It is computed on a merchant-by-day grid (a dispute is known from the
day after it arrived), shrunk toward the all-merchant rate known on the same day, so a merchant with a
handful of matured transactions does not get a rate of 0 or 1. A risk feature on the exact clock
(``RiskFeature.clock: exact``) slides instead with each transaction's time: an ASOF join on running sums
of window-entry and window-exit events (``_exact_rate_ctes``).
"""
from __future__ import annotations

import contextlib
import datetime as dt
import hashlib
from pathlib import Path

import duckdb
import pandas as pd

from release.core.io import list_partitions, local_copy, location
from release.core.pipeline import STATIC_FEATURES, Features, pipeline

CATEGORIES = ["grocery", "fuel", "restaurants", "fashion", "electronics", "travel", "digital_goods",
              "gambling"]
# The static features; the window aggregates (card and merchant counts, sums, distinct merchants, amount
# against the window's mean or maximum) and the delayed-label risk features (the merchant's fraud rate and
# matured count) follow them, as the pipeline configuration declares them: ``feature_columns``.
BASE_FEATURE_COLUMNS = STATIC_FEATURES  # named where the settings are validated (release.core.pipeline)


def feature_code_digest() -> str:
    """The hash of the feature definitions themselves (this module: the offline engine's SQL and windows), so a
    snapshot's hash changes when the feature code changes, without a hand-bumped version string."""
    return hashlib.sha256(Path(__file__).read_bytes()).hexdigest()[:16]


def feature_columns(features: Features | None = None) -> list[str]:
    """Every feature column, under the given (default: the configured) feature settings."""
    features = features if features is not None else pipeline().features
    return BASE_FEATURE_COLUMNS + features.columns()


# The columns under the embedded default settings (tests and benchmarks of the default world); the
# pipeline reads ``feature_columns(settings)``.
FEATURE_COLUMNS = BASE_FEATURE_COLUMNS + Features().columns()


def nullable_features(features: Features | None = None) -> tuple[str, ...]:
    """Features allowed to be null: an unknown category; a fraud rate before any label anywhere has matured."""
    features = features if features is not None else pipeline().features
    return ("category_code", *(r.rate for r in features.risk))
# The settings of these definitions (the fraud rate's window and prior, the card-age cap, the lookback)
# and the label maturity are the pipeline configuration's (release/core/pipeline.py), never constants here.


def settings(features: Features | None = None, maturity_days: int | None = None) -> tuple[Features, int]:
    """The feature settings and label maturity to use: those given, else the pipeline configuration's."""
    cfg = pipeline() if features is None or maturity_days is None else None
    return (features if features is not None else cfg.features,
            int(maturity_days) if maturity_days is not None else cfg.labels.maturity_days)


def _sql_list(files: list) -> str:
    """Files as a DuckDB list literal; a file at a URL as its local copy (release.core.io.local_copy: the input
    cache), so DuckDB scans local files whatever the event logs' location."""
    return "[" + ", ".join("'" + str(local_copy(f)).replace("'", "''") + "'" for f in files) + "]"


def _ts(day: dt.date) -> str:
    return f"TIMESTAMPTZ '{day.isoformat()} 00:00:00+00'"


def feature_query(events: Path, start: dt.date, end: dt.date, maturity_days: int | None = None,
                  features: Features | None = None) -> str:
    """The SQL that computes features for transactions with start <= day < end from the event logs and
    the registered relations ``card_windows`` and ``merchant_windows`` (see ``window_features``).
    Unordered: callers sort once, where the rows land."""
    events = location(events)
    features, maturity_days = settings(features, maturity_days)
    if not any(list_partitions(events / "transactions", start, end)):
        raise FileNotFoundError(
            f"No transactions found in {events / 'transactions'} for days {start} .. {end - dt.timedelta(days=1)}."
            " Simulate a world (`fraudcd simulate`), ingest your own log (`fraudcd ingest`), or point"
            " FRAUDCD_HOME at your event logs.")
    rate_from = start - dt.timedelta(days=features.reach(maturity_days) + 1)
    tx_files = list_partitions(events / "transactions", start - dt.timedelta(days=features.lookback_days), end)
    dec_files = list_partitions(events / "decisions", start, end)
    hist_tx = list_partitions(events / "transactions", rate_from, end)
    hist_dec = list_partitions(events / "decisions", rate_from, end)
    dis_files = list_partitions(events / "disputes", rate_from, end)
    if not dec_files:
        raise FileNotFoundError(f"No decisions found in {events / 'decisions'} for days {start} .. "
                                f"{end - dt.timedelta(days=1)}: every transaction needs the decision taken on it.")
    cats = ", ".join(f"'{c}'" for c in CATEGORIES)
    m = int(maturity_days)
    epoch = "DATE '1970-01-01'"
    disputes = (f"SELECT tx_id, dispute_ts FROM read_parquet({_sql_list(dis_files)})" if dis_files else
                "SELECT CAST(NULL AS BIGINT) AS tx_id, CAST(NULL AS TIMESTAMPTZ) AS dispute_ts WHERE false")
    return f"""
    WITH tx AS (
        SELECT tx_id, ts, card_id, card_country, merchant_id, merchant_country, merchant_category, amount
        FROM read_parquet({_sql_list(tx_files)})
    ), hist AS (  -- merchant, day and decision of every transaction the fraud rate may count
        SELECT t.tx_id, t.merchant_id, t.ts, date_diff('day', {epoch}, CAST(t.ts AS DATE)) AS dn, d.action
        FROM read_parquet({_sql_list(hist_tx)}) t JOIN read_parquet({_sql_list(hist_dec)}) d USING (tx_id)
    ), md AS (  -- allowed transactions per merchant and day
        SELECT merchant_id, dn, count(*) FILTER (WHERE action = 'allow') AS allowed FROM hist GROUP BY ALL
    ), gd AS (
        SELECT dn, sum(allowed) AS allowed FROM md GROUP BY ALL
    ), known AS (  -- a dispute counts on day d when it arrived before d (and its transaction is in the window)
        SELECT h.merchant_id, h.dn AS tdn, date_diff('day', {epoch}, CAST(s.dispute_ts AS DATE)) + 1 AS dlo,
               h.ts AS tts, s.dispute_ts
        FROM ({disputes}) s JOIN hist h USING (tx_id)
        WHERE h.action = 'allow'
    ), target AS (
        SELECT DISTINCT merchant_id, date_diff('day', {epoch}, CAST(ts AS DATE)) AS dn FROM tx
        WHERE ts >= {_ts(start)} AND ts < {_ts(end)}
    ), days AS (SELECT DISTINCT dn FROM target
    ), targets AS (SELECT tx_id, merchant_id, ts FROM tx WHERE ts >= {_ts(start)} AND ts < {_ts(end)}
    ){"".join((_exact_rate_ctes if r.clock == "exact" else _rate_ctes)(i, r, r.delay(m), epoch)
              for i, r in enumerate(features.risk))}
    , f AS (
        SELECT * FROM tx JOIN card_windows USING (tx_id) JOIN merchant_windows USING (tx_id)
        WHERE tx.ts >= {_ts(start)} AND tx.ts < {_ts(end)}
    )
    SELECT f.tx_id, f.ts, CAST(f.ts AS DATE) AS day, f.card_id, f.card_country, f.merchant_id,
        f.merchant_country, f.merchant_category,
        f.amount,
        ln(1 + f.amount) AS log_amount,
        CAST(f.card_country <> f.merchant_country AS INTEGER) AS cross_border,
        hour(f.ts) AS hour,
        CAST(list_position([{cats}], f.merchant_category) - 1 AS DOUBLE) AS category_code,
        least(date_diff('second', f.card_first_seen, f.ts) / 86400.0, {int(features.card_age_cap_days)}) AS card_age_days,
        {"".join(_window_select(w) + ", " for w in features.windows)}
        {", ".join(f"r{i}.{r.rate}, r{i}.{r.count}" for i, r in enumerate(features.risk))},
        d.action, d.explored, d.propensity
    FROM f JOIN read_parquet({_sql_list(dec_files)}) d USING (tx_id)
    {" ".join(f"LEFT JOIN rate{i} r{i} ON r{i}.tx_id = f.tx_id" if r.clock == "exact" else
              f"LEFT JOIN rate{i} r{i} ON r{i}.merchant_id = f.merchant_id AND r{i}.dn = "
              f"date_diff('day', {epoch}, CAST(f.ts AS DATE))" for i, r in enumerate(features.risk))}
    WHERE f.ts >= {_ts(start)} AND f.ts < {_ts(end)}
    """


def _rate_ctes(i: int, r, m: int, epoch: str) -> str:
    """The relation ``rate{i}`` of risk feature ``r``: per merchant and day d, the allowed transactions of
    the days [d - m - w, d - m - 1] (m: the feature's delay, by default the label maturity) and the disputes
    among them known by d, shrunk toward the all-merchant rate of the same days with ``prior_tx``
    transactions of prior weight."""
    w, k = int(r.window_days), float(r.prior_tx)
    return f"""
    , mden{i} AS (
        SELECT t.merchant_id, t.dn, coalesce(sum(md.allowed), 0) AS allowed
        FROM target t LEFT JOIN md ON md.merchant_id = t.merchant_id
             AND md.dn BETWEEN t.dn - {m + w} AND t.dn - {m + 1}
        GROUP BY ALL
    ), mnum{i} AS (
        SELECT t.merchant_id, t.dn, count(k.dlo) AS frauds
        FROM target t LEFT JOIN known k ON k.merchant_id = t.merchant_id AND t.dn >= k.dlo
             AND t.dn BETWEEN k.tdn + {m + 1} AND k.tdn + {m + w}
        GROUP BY ALL
    ), gden{i} AS (
        SELECT days.dn, coalesce(sum(gd.allowed), 0) AS allowed
        FROM days LEFT JOIN gd ON gd.dn BETWEEN days.dn - {m + w} AND days.dn - {m + 1} GROUP BY ALL
    ), gnum{i} AS (
        SELECT days.dn, count(k.dlo) AS frauds FROM days LEFT JOIN known k ON days.dn >= k.dlo
             AND days.dn BETWEEN k.tdn + {m + 1} AND k.tdn + {m + w}
        GROUP BY ALL
    ), rate{i} AS (
        SELECT mden{i}.merchant_id, mden{i}.dn, CAST(mden{i}.allowed AS BIGINT) AS {r.count},
               CASE WHEN gden{i}.allowed > 0 THEN
                   (mnum{i}.frauds + {k!r} * gnum{i}.frauds / gden{i}.allowed) / (mden{i}.allowed + {k!r})
               END::DOUBLE AS {r.rate}
        FROM mden{i} JOIN mnum{i} USING (merchant_id, dn) JOIN gden{i} USING (dn) JOIN gnum{i} USING (dn)
    )"""


def _exact_rate_ctes(i: int, r, m: int, epoch: str) -> str:
    """The relation ``rate{i}`` of risk feature ``r`` on the exact clock: per transaction at time t, the
    merchant's allowed transactions of [t - m - w, t - m) (m: the feature's delay, w: its window) and the
    disputes among them that arrived before t, shrunk toward the all-merchant rate at t with ``prior_tx``
    transactions of prior weight. As events: an allowed transaction s enters the denominator at s + m and
    leaves it at s + m + w; its dispute enters the numerator at max(s + m, dispute time) and leaves with it.
    A count at t is the running sum of the events strictly before t (an ASOF join on the running sums)."""
    w, k = int(r.window_days), float(r.prior_tx)
    enter, leave = f"INTERVAL {24 * m} HOUR", f"INTERVAL {24 * (m + w)} HOUR"
    known = f"greatest(tts + {enter}, dispute_ts)"
    return f"""
    , ev{i} AS (
        SELECT merchant_id, ts + {enter} AS et, 1 AS dd, 0 AS df FROM hist WHERE action = 'allow'
        UNION ALL SELECT merchant_id, ts + {leave}, -1, 0 FROM hist WHERE action = 'allow'
        UNION ALL SELECT merchant_id, {known}, 0, 1 FROM known WHERE {known} < tts + {leave}
        UNION ALL SELECT merchant_id, tts + {leave}, 0, -1 FROM known WHERE {known} < tts + {leave}
    ), cum{i} AS (
        SELECT merchant_id, et, sum(sum(dd)) OVER (PARTITION BY merchant_id ORDER BY et) AS den,
               sum(sum(df)) OVER (PARTITION BY merchant_id ORDER BY et) AS num
        FROM ev{i} GROUP BY merchant_id, et
    ), gcum{i} AS (
        SELECT et, sum(sum(dd)) OVER (ORDER BY et) AS den, sum(sum(df)) OVER (ORDER BY et) AS num
        FROM ev{i} GROUP BY et
    ), rate{i} AS (
        SELECT q.tx_id, CAST(coalesce(c.den, 0) AS BIGINT) AS {r.count},
               CASE WHEN g.den > 0 THEN
                   (coalesce(c.num, 0) + {k!r} * g.num / g.den) / (coalesce(c.den, 0) + {k!r})
               END::DOUBLE AS {r.rate}
        FROM targets q ASOF LEFT JOIN cum{i} c ON c.merchant_id = q.merchant_id AND q.ts > c.et
             ASOF LEFT JOIN gcum{i} g ON q.ts > g.et
    )"""


def _window_select(w) -> str:
    """The SELECT expression of window feature ``w`` from its rolling aggregate (``_w_<name>``)."""
    if w.aggregation in ("amount_over_mean", "amount_over_max"):
        return f"f.amount / (coalesce(f._w_{w.name}, f.amount) + 1) AS {w.name}"
    return f"f._w_{w.name} AS {w.name}"


# empty windows: a count, a sum and a number of distinct merchants of nothing are 0; a mean or a maximum
# of nothing stays null (the amount stands in for it)
_FILLED = ("count", "sum", "distinct_merchants")
# Sums (and means) of amounts are taken in integer millionths of the amount, exactly: a rolling float sum
# adds and subtracts as its window slides, so its last bits depended on how many rows were read before the
# window. In integers a window's sum is the same whatever was read before it (a day built on its own equals
# the same day in a whole window's build), then divided once.
AMOUNT_SCALE = 1_000_000


def _agg(w) -> list:
    """The rolling aggregates window feature ``w`` needs (``_finish`` turns them into ``_w_<name>``)."""
    import polars as pl

    units = pl.col("_amount_units").sum()
    return {"count": [pl.len().cast(pl.Int64).alias(f"_w_{w.name}")],
            "sum": [units.alias(f"_u_{w.name}")],
            "distinct_merchants": [pl.col("merchant_id").n_unique().cast(pl.Int64).alias(f"_w_{w.name}")],
            "amount_over_mean": [units.alias(f"_u_{w.name}"), pl.len().cast(pl.Int64).alias(f"_n_{w.name}")],
            "amount_over_max": [pl.col("amount").max().alias(f"_w_{w.name}")]}[w.aggregation]


def _finish(w) -> list:
    """``_w_<name>`` from the integer aggregates of ``_agg`` (sums and means of amounts), else nothing."""
    import polars as pl

    u, n = pl.col(f"_u_{w.name}"), pl.col(f"_n_{w.name}")
    if w.aggregation == "sum":
        return [(u / AMOUNT_SCALE).alias(f"_w_{w.name}")]
    if w.aggregation == "amount_over_mean":
        return [pl.when(n > 0).then(u / n / AMOUNT_SCALE).alias(f"_w_{w.name}")]
    return []


def _rolling(df, key: str, windows: dict[str, list], first_seen: bool = False):
    """Grouped rolling windows [t - w, t) over rows sorted by (key, ts), one pass per window length.
    Returns tx_id and the aggregates, row-aligned with the sorted rows (checked: a misalignment would
    silently give one transaction another's history)."""
    import polars as pl

    d = df.select(*dict.fromkeys(["tx_id", key, "ts", "amount", "merchant_id"])).sort([key, "ts"]).with_columns(
        (pl.col("amount") * AMOUNT_SCALE).round().cast(pl.Int64).alias("_amount_units"))
    cols = [d.select("tx_id")]
    if first_seen:
        cols.append(d.select(pl.col("ts").min().over(key).alias("card_first_seen")))
    for period, ws in windows.items():
        aggs = [a for w in ws for a in _agg(w)]
        r = d.rolling(index_column="ts", period=period, closed="left", group_by=key).agg(aggs)
        if not (r[key].equals(d[key]) and r["ts"].equals(d["ts"])):
            # Polars returns the groups in an order of its own ("1", "2", "10" where the sort gave "1", "10",
            # "2"). Rows of one key at one instant have the same window [t - w, t), so sorting the result the
            # way the rows were sorted realigns it exactly, whatever the ids look like.
            r = r.sort([key, "ts"], maintain_order=True)
            if not (r[key].equals(d[key]) and r["ts"].equals(d["ts"])):
                raise RuntimeError(f"rolling windows over {key} came back in a different row order")
        finish = [f for w in ws for f in _finish(w)]
        if finish:
            r = r.with_columns(finish).drop([c for w in ws for c in (f"_u_{w.name}", f"_n_{w.name}")],
                                           strict=False)
        cols.append(r.drop(key, "ts"))
        del r
    out = pl.concat(cols, how="horizontal")
    fill = [f"_w_{w.name}" for ws in windows.values() for w in ws if w.aggregation in _FILLED]
    return out.with_columns(pl.col(fill).fill_null(0)) if fill else out


def window_features(tx, features: Features | None = None):
    """The declared card and merchant window aggregates for every row of ``tx`` (a Polars frame with
    tx_id, ts, card_id, merchant_id, amount) over [t - w, t), and when the card was first seen in these
    rows. Two frames keyed by tx_id (card windows, merchant windows), each in its own row order; one
    grouped rolling pass per entity and window length."""
    features, _ = settings(features, 0)

    def by_period(entity):
        out: dict[str, list] = {}
        for w in features.windows:
            if w.entity == entity:
                out.setdefault(w.window, []).append(w)
        return out

    card = _rolling(tx, "card_id", by_period("card"), first_seen=True)
    merchant = _rolling(tx, "merchant_id", by_period("merchant"))
    return card, merchant


def connect(threads: int = 2, memory_limit: str | None = None) -> duckdb.DuckDBPyConnection:
    """A DuckDB connection (UTC; ``threads``; ``memory_limit``). It reads local files only: event logs at a URL
    reach it as their local copies (``_sql_list``)."""
    con = duckdb.connect()
    con.execute(f"SET threads = {int(threads)}")
    con.execute("SET TimeZone = 'UTC'")
    if memory_limit:
        con.execute(f"SET memory_limit = '{memory_limit}'")
    return con


def compute_features(events: Path, start: dt.date, end: dt.date, con: duckdb.DuckDBPyConnection | None = None,
                     threads: int = 2, maturity_days: int | None = None,
                     features: Features | None = None) -> pd.DataFrame:
    """Transactions with start <= day < end, with point-in-time features, joined to their decisions,
    ordered by time."""
    con = con or connect(threads)
    features, maturity_days = settings(features, maturity_days)
    with window_relations(con, events, start, end, features):
        return con.execute(f"SELECT * FROM ({feature_query(events, start, end, maturity_days, features)}) "
                           "ORDER BY ts, tx_id").df()


@contextlib.contextmanager
def window_relations(con: duckdb.DuckDBPyConnection, events: Path, start: dt.date, end: dt.date,
                     features: Features | None = None, first_seen_from: dt.date | None = None):
    """Register ``card_windows`` and ``merchant_windows`` in ``con`` for the duration of the block:
    the window aggregates of every transaction from the configured lookback before start up to end.

    A card's first-seen time is the earliest of its transactions read, from the lookback before ``start``;
    with ``first_seen_from`` (earlier than that) from that day on instead: a build of one day of a longer
    window reads the card's first-seen time as the build of the whole window does (its own lookback for
    everything else)."""
    import polars as pl

    features, _ = settings(features, 0)
    read_from = start - dt.timedelta(days=features.lookback_days)
    tx_files = list_partitions(location(events) / "transactions", read_from, end)
    if not tx_files:
        feature_query(events, start, end)  # raises the clear "no transactions" error
    tx = pl.from_arrow(con.sql(f"SELECT tx_id, ts, card_id, merchant_id, amount FROM read_parquet("
                               f"{_sql_list(tx_files)})").to_arrow_table())
    card, merchant = window_features(tx, features)
    earlier = (list_partitions(location(events) / "transactions", first_seen_from, read_from)
               if first_seen_from is not None and first_seen_from < read_from else [])
    if earlier:  # the cards' earliest transactions before this read: only two columns of those days
        seen = pl.from_arrow(con.sql(f"SELECT card_id, min(ts) AS _earlier FROM read_parquet({_sql_list(earlier)}) "
                                     "GROUP BY card_id").to_arrow_table())
        card = (card.join(tx.select("tx_id", "card_id"), on="tx_id", how="left")
                .join(seen.with_columns(pl.col("_earlier").cast(card.schema["card_first_seen"])), on="card_id",
                      how="left")
                .with_columns(pl.min_horizontal("card_first_seen", "_earlier").alias("card_first_seen"))
                .drop("card_id", "_earlier"))
    del tx
    con.register("card_windows", card.to_arrow())
    con.register("merchant_windows", merchant.to_arrow())
    del card, merchant
    try:
        yield
    finally:
        con.unregister("card_windows")
        con.unregister("merchant_windows")
