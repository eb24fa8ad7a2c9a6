"""Bring your own data: a column mapping that normalises a team's transaction log into the canonical
day-partitioned event logs (``transactions``, ``decisions``, ``disputes``) that every later stage reads.

The mapping is YAML (see ``config/source.example.yaml``)::

    path: exports/txlog-*.csv          # a glob; relative to the YAML file's folder
    timezone: Europe/Berlin            # for timestamps without an offset
    columns: {tx_id: txn_ref, ts: event_time, card_id: pan_hash, amount: amt_eur, fraud_flag: chargeback_flag}
    merchant_stand_in: terminal_id
    label_delay_days: 30

Columns the log lacks are handled, not fatal:

- no countries: ``card_country`` and ``merchant_country`` are both ``"ALL"`` (one slice, never cross-border),
  unless ``columns.country`` names one column used for both;
- no merchant: ``merchant_stand_in`` names a column that stands in (a terminal id), else ``"ALL"``;
- no category: ``"unknown"`` (no category code); no action: every row was allowed; no propensity /
  explored: 1.0 / False; no score: null;
- no dispute timestamps: ``fraud_flag`` plus ``label_delay_days``. ASSUMPTION: a flagged transaction's
  label became known exactly ``label_delay_days`` after the transaction (``dispute_ts = ts + delay``).
  If labels really arrive later than that, backtests see them too early; pick the delay from the
  team's typical chargeback lag, erring long.
- no labels at all (neither given): allowed, so a team can ingest and shadow-score before it has labels,
  but no disputes are written and the result says ``labels: "none"``; the training-set build then finds
  one class only and its data contract (``both_labels``) refuses the snapshot, so no model is ever
  trained on a log where every transaction looks legitimate.

The whole source is read and validated (mapped columns exist, ids, timestamps, amounts, flags) before
any partition is written; a problem raises :class:`SourceError` listing every problem found, with a
count and an example row. Each partition holds everything in the source that belongs to its day
(a dispute belongs to its dispute's day), so a rerun over any window writes byte-identical files.
Text ids (tx_id, card_id) that are not all integers are mapped to int64 by a stable hash (md5).
DuckDB reads and stages the source, spilling to a temporary folder beyond ``MEMORY_LIMIT``.
"""
from __future__ import annotations

from dataclasses import dataclass

import datetime as dt
import glob as globlib
import shutil
import tempfile
import zoneinfo
from pathlib import Path
from typing import Literal

import duckdb
import pandas as pd
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from release.core.config import ConfigError, load_yaml_model
from release.core.io import local_events, write_partition

MEMORY_LIMIT = "1GB"  # DuckDB spills staged rows to a temporary folder beyond this
ALL = "ALL"
UNKNOWN = "UNKNOWN"
DEFAULT_CATEGORY = "unknown"
REQUIRED = ("tx_id", "ts", "card_id", "amount")
_ID_TYPES = ("TINYINT", "SMALLINT", "INTEGER", "BIGINT", "UTINYINT", "USMALLINT", "UINTEGER", "UBIGINT")
_NUM_TYPES = _ID_TYPES + ("HUGEINT", "UHUGEINT", "FLOAT", "DOUBLE", "REAL")


class SourceError(ValueError):
    """The mapping or the source log cannot be ingested; the message says what was found."""


class Columns(BaseModel):
    """Canonical name -> the team's column name."""

    model_config = ConfigDict(extra="forbid")

    tx_id: str
    ts: str
    card_id: str
    amount: str
    card_country: str | None = None
    merchant_country: str | None = None
    country: str | None = None
    merchant_id: str | None = None
    merchant_category: str | None = None
    action: str | None = None
    explored: str | None = None
    propensity: str | None = None
    score: str | None = None
    dispute_ts: str | None = None
    fraud_flag: str | None = None

    @model_validator(mode="after")
    def _exclusive(self) -> Columns:
        if self.country and (self.card_country or self.merchant_country):
            raise ValueError("give either country (one column for both) or card_country/merchant_country, not both")
        if self.dispute_ts and self.fraud_flag:
            raise ValueError("give either dispute_ts or fraud_flag (with label_delay_days), not both")
        return self


class SourceMapping(BaseModel):
    """Where a team's transaction log is and how its columns map to the canonical ones."""

    model_config = ConfigDict(extra="forbid")

    path: str = Field(min_length=1)
    format: Literal["parquet", "csv"] | None = None
    timezone: str = "UTC"
    timestamp_format: str | None = None
    columns: Columns
    merchant_stand_in: str | None = None
    block_values: list[str | int | bool] | None = Field(None, min_length=1)
    label_delay_days: int | None = Field(None, gt=0, le=365)
    policy_name: str = Field("source", min_length=1)

    @field_validator("timezone")
    @classmethod
    def _known_zone(cls, v: str) -> str:
        try:
            zoneinfo.ZoneInfo(v)
        except (zoneinfo.ZoneInfoNotFoundError, ValueError):
            raise ValueError("not an IANA time zone name (e.g. UTC, Europe/Berlin)") from None
        return v

    @model_validator(mode="after")
    def _consistent(self) -> SourceMapping:
        c = self.columns
        if self.format is None:
            low = self.path.lower()
            if low.endswith((".parquet", ".pq")):
                self.format = "parquet"
            elif low.endswith((".csv", ".csv.gz", ".tsv", ".txt")):
                self.format = "csv"
            else:
                raise ValueError("format: cannot tell from the path's extension; set format to parquet or csv")
        if self.merchant_stand_in and c.merchant_id:
            raise ValueError("give either columns.merchant_id or merchant_stand_in, not both")
        if bool(c.action) != bool(self.block_values):
            raise ValueError("columns.action and block_values go together: block_values lists the action "
                             "values that mean the transaction was blocked")
        if bool(c.fraud_flag) != (self.label_delay_days is not None):
            raise ValueError("columns.fraud_flag and label_delay_days go together: a flagged transaction's "
                             "dispute_ts is taken to be ts + label_delay_days")
        return self

    def with_base(self, base: Path) -> SourceMapping:
        """The mapping with a relative ``path`` resolved against ``base``."""
        p = Path(self.path).expanduser()
        return self if p.is_absolute() else self.model_copy(update={"path": str(Path(base) / p)})


def load_mapping(path: str | Path) -> SourceMapping:
    """Read a mapping YAML; a relative ``path`` inside it is relative to the YAML file's folder."""
    path = Path(path)
    try:
        m = load_yaml_model(path, SourceMapping)
    except ConfigError as e:
        raise SourceError(str(e)) from e
    return m.with_base(path.resolve().parent)


def _q(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _lit(s: str) -> str:
    return "'" + str(s).replace("'", "''") + "'"


class _Problems:
    def __init__(self, con: duckdb.DuckDBPyConnection, show: list[str]):
        self.con, self.show, self.items = con, show, []

    def example(self, where: str) -> str:
        row = self.con.execute(f"SELECT {', '.join(_q(c) for c in self.show)} FROM parsed WHERE {where} LIMIT 1").fetchone()
        return "{" + ", ".join(f"{c}: {v!r}" for c, v in zip(self.show, row)) + "}"

    def check(self, n: int, where: str, what: str) -> None:
        if n:
            self.items.append(f"{what}: {n:,} row(s), e.g. {self.example(where)}")


def ingest_source(mapping: SourceMapping | str | Path, events: str | Path, start: dt.date | None = None,
                  end: dt.date | None = None, *, threads: int = 2) -> dict:
    """Validate the whole source, then write canonical partitions for start <= day < end (all days when
    None) under ``events``. Returns counts and what stood in for each missing optional column."""
    events = local_events(events, "fraudcd ingest")  # a URL is refused before anything is read or written
    m = load_mapping(mapping) if isinstance(mapping, (str, Path)) else mapping.with_base(Path.cwd())
    files = sorted(globlib.glob(str(Path(m.path).expanduser()), recursive=True))
    files = [f for f in files if Path(f).is_file()]
    if not files:
        raise SourceError(f"No files match {m.path}.")
    tmpdir = tempfile.mkdtemp(prefix="fraudcd-ingest-")
    con = duckdb.connect()
    try:
        con.execute(f"SET threads = {int(threads)}")
        con.execute(f"SET memory_limit = {_lit(MEMORY_LIMIT)}")
        con.execute(f"SET temp_directory = {_lit(tmpdir)}")
        con.execute("SET preserve_insertion_order = false")
        # naive timestamps are read in the mapping's time zone; everything is written in UTC
        con.execute(f"SET TimeZone = {_lit(m.timezone)}")
        return _ingest(con, m, files, events, start, end)
    finally:
        con.close()
        shutil.rmtree(tmpdir, ignore_errors=True)


def _reader(m: SourceMapping, files: list[str]) -> str:
    lst = "[" + ", ".join(_lit(f) for f in files) + "]"
    if m.format == "parquet":
        return f"read_parquet({lst}, union_by_name = true)"
    # every column as text: our own parsing gives clear errors instead of a sniffer's guess
    return f"read_csv({lst}, header = true, all_varchar = true, union_by_name = true)"


def _ingest(con, m: SourceMapping, files: list[str], events: Path, start, end) -> dict:
    """Read the source once (``_stage``), map its columns to expressions (``_parse``), check every row before
    anything is written (``_check``), build the canonical rows (``_canonicalise``), then write the event-log
    partitions of the period (``_write``)."""
    st = _stage(con, m, files)
    e, ids, missing, notes, labels = _parse(con, m, st.types)
    _check(con, m, st)
    filled = _canonicalise(con, m, e)
    tx_days, rows, blocked, dispute_days, disputes = _write(con, events, start, end)
    return {
        "source": m.path, "files": len(files), "source_rows": st.n_source, "events": str(events),
        "rows": rows, "days": len(tx_days),
        "first_day": tx_days[0].isoformat() if tx_days else None,
        "last_day": tx_days[-1].isoformat() if tx_days else None,
        "blocked": blocked, "disputes": disputes, "dispute_days": len(dispute_days), "labels": labels,
        "ids": ids, "missing": missing, "filled_nulls": filled, "notes": notes,
    }


@dataclass(frozen=True)
class _Staged:
    """The source as read: its columns' types, the mapped ones staged (``staged``), and its row count."""
    types: dict[str, str]
    src_cols: list[str]
    has_file: bool
    n_source: int


def _stage(con, m: SourceMapping, files: list[str]) -> _Staged:
    """Every mapped column of every source file into the temp table ``staged``; a mapped column the source
    lacks is an error naming it (and its likely spelling)."""
    c = m.columns
    reader = _reader(m, files)
    try:
        found = {r[0]: r[1] for r in con.execute(f"DESCRIBE SELECT * FROM {reader}").fetchall()}
    except duckdb.Error as e:
        raise SourceError(f"Cannot read {m.path} as {m.format}: {e}") from e
    mapped = {k: v for k, v in c.model_dump().items() if v} | (
        {"merchant_stand_in": m.merchant_stand_in} if m.merchant_stand_in else {})
    absent = {k: v for k, v in mapped.items() if v not in found}
    if absent:
        lower = {f.lower(): f for f in found}
        parts = [f"{k} -> {v!r}" + (f" (did you mean {lower[v.lower()]!r}?)" if v.lower() in lower else "")
                 for k, v in absent.items()]
        raise SourceError(f"Mapped column(s) not found in {m.path} ({len(files)} file(s)): {'; '.join(parts)}. "
                          f"Columns found: {', '.join(found)}.")
    src_cols = list(dict.fromkeys(mapped.values()))
    types = {col: found[col] for col in src_cols}
    has_file = "filename" not in found
    con.execute(f"CREATE TEMP TABLE staged AS SELECT {', '.join(_q(x) for x in src_cols)}"
                f"{', filename AS __file' if has_file else ''} FROM {reader}")
    n_source = con.execute("SELECT count(*) FROM staged").fetchone()[0]
    if n_source == 0:
        raise SourceError(f"{m.path}: the source has no rows.")
    return _Staged(types=types, src_cols=src_cols, has_file=has_file, n_source=int(n_source))


def _parse(con, m: SourceMapping, types: dict[str, str]) -> tuple[dict, dict, dict, list, str]:
    """The canonical fields as expressions over the staged columns (the view ``parsed``): ids as integers
    (hashed when they are text), timestamps, numbers, booleans; what the mapping leaves out gets its stated
    default. Returns the expressions, how ids were read, the defaults used, notes, and where labels come from."""
    c = m.columns
    problems: list[str] = []
    ids = {}

    def id_expr(name: str) -> str:
        col, t = _q(getattr(c, name)), types[getattr(c, name)]
        if t in _ID_TYPES:
            ids[name] = "integer"
            return f"CAST({col} AS BIGINT)"
        txt = f"CAST({col} AS VARCHAR)"
        bad = con.execute(f"SELECT count(*) FROM staged WHERE {col} IS NOT NULL AND try_cast({txt} AS BIGINT) IS NULL").fetchone()[0]
        if bad == 0:
            ids[name] = "integer"
            return f"try_cast({txt} AS BIGINT)"
        ids[name] = "hashed text"
        return f"CAST('0x' || left(md5({txt}), 15) AS BIGINT)"

    def ts_expr(col_name: str) -> str | None:
        col, t = _q(col_name), types[col_name]
        if t.startswith("TIMESTAMP WITH TIME ZONE"):
            return col
        if t.startswith("TIMESTAMP") or t == "DATE":
            return f"CAST({col} AS TIMESTAMPTZ)"
        if t == "VARCHAR":
            if m.timestamp_format:
                return f"CAST(try_strptime({col}, {_lit(m.timestamp_format)}) AS TIMESTAMPTZ)"
            return f"try_cast({col} AS TIMESTAMPTZ)"
        problems.append(f"column {col_name!r} has type {t}; timestamps must be timestamps or text (ISO 8601, "
                        "or set timestamp_format)")
        return None

    def num_expr(col_name: str, canon: str) -> str | None:
        col, t = _q(col_name), types[col_name]
        if t in _NUM_TYPES or t.startswith("DECIMAL") or t == "VARCHAR":
            return f"try_cast({col} AS DOUBLE)"
        problems.append(f"{canon} column {col_name!r} has type {t}; expected numbers")
        return None

    def bool_expr(col_name: str) -> str:
        col, t = _q(col_name), types[col_name]
        return col if t == "BOOLEAN" else f"try_cast(trim(CAST({col} AS VARCHAR)) AS BOOLEAN)"

    def text(col_name: str) -> str:
        return f"CAST({_q(col_name)} AS VARCHAR)"

    missing: dict[str, str] = {}
    notes: list[str] = []
    e = {"tx_id": id_expr("tx_id"), "card_id": id_expr("card_id"), "ts": ts_expr(c.ts),
         "amount": num_expr(c.amount, "amount")}
    if c.country:
        e["card_country"] = e["merchant_country"] = text(c.country)
    elif c.card_country and c.merchant_country:
        e["card_country"], e["merchant_country"] = text(c.card_country), text(c.merchant_country)
    else:
        e["card_country"] = e["merchant_country"] = _lit(ALL)
        for k in ("card_country", "merchant_country"):
            if getattr(c, k):
                notes.append(f"{k} -> {getattr(c, k)!r} ignored: cross-border needs both countries; "
                             "map it as columns.country to slice by it")
            missing[k] = f"{ALL} (one slice)"
    if c.merchant_id:
        e["merchant_id"] = text(c.merchant_id)
    elif m.merchant_stand_in:
        e["merchant_id"] = text(m.merchant_stand_in)
        missing["merchant_id"] = f"stand-in column {m.merchant_stand_in!r}"
    else:
        e["merchant_id"] = _lit(ALL)
        missing["merchant_id"] = ALL
    if c.merchant_category:
        e["merchant_category"] = text(c.merchant_category)
    else:
        e["merchant_category"] = _lit(DEFAULT_CATEGORY)
        missing["merchant_category"] = DEFAULT_CATEGORY
    if c.action:
        blocks = ", ".join(_lit(str(v).lower()) for v in m.block_values)
        e["action"] = f"lower(trim(CAST({_q(c.action)} AS VARCHAR))) IN ({blocks})"
    else:
        missing["action"] = "allow (every row)"
    if c.explored:
        e["explored"] = bool_expr(c.explored)
    else:
        missing["explored"] = "False"
    if c.propensity:
        e["propensity"] = num_expr(c.propensity, "propensity")
    else:
        missing["propensity"] = "1.0"
    if c.score:
        e["score"] = num_expr(c.score, "score")
    else:
        missing["score"] = "null"
    if c.dispute_ts:
        e["dispute_ts"] = ts_expr(c.dispute_ts)
        labels = f"dispute_ts column {c.dispute_ts!r}"
    elif c.fraud_flag:
        e["fraud_flag"] = bool_expr(c.fraud_flag)
        labels = f"fraud_flag column {c.fraud_flag!r}, dispute_ts = ts + {m.label_delay_days} days (assumed)"
        missing["dispute_ts"] = f"ts + {m.label_delay_days} days for flagged rows"
    else:
        labels = "none"
        missing["dispute_ts"] = "none: no disputes written (the training-set data contract will refuse one-class data)"
    if problems:
        raise SourceError(f"{m.path}: " + "; ".join(problems) + ".")
    con.execute("CREATE TEMP VIEW parsed AS SELECT *, "
                + ", ".join(f"{x} AS __{k}" for k, x in e.items() if k not in ("card_country", "merchant_country"))
                + " FROM staged")

    return e, ids, missing, notes, labels


def _check(con, m: SourceMapping, st: _Staged) -> None:
    """Every row-level check over the whole source, before anything is written: one error listing each
    problem with its count and an example row."""
    c, src_cols, has_file, n_source = m.columns, st.src_cols, st.has_file, st.n_source
    show = src_cols + (["__file"] if has_file else [])
    p = _Problems(con, show)
    checks: list[tuple[str, str]] = []
    for k in REQUIRED:
        col = _q(getattr(c, k))
        checks.append((f"{col} IS NULL", f"{k} ({getattr(c, k)!r}) is empty"))
    checks.append((f"{_q(c.ts)} IS NOT NULL AND __ts IS NULL", f"unparseable timestamps in ts ({c.ts!r})"
                   + (f" with format {m.timestamp_format!r}" if m.timestamp_format else "; expected ISO 8601 "
                      "(or set timestamp_format)")))
    checks.append((f"{_q(c.amount)} IS NOT NULL AND __amount IS NULL", f"non-numeric amount ({c.amount!r})"))
    checks.append(("NOT isfinite(__amount) OR __amount < 0",
                   f"amount ({c.amount!r}) negative or not finite (filter out refunds and reversals)"))
    for k in ("explored", "fraud_flag"):
        col = getattr(c, k)
        if col:
            checks.append((f"{_q(col)} IS NOT NULL AND __{k} IS NULL",
                           f"{k} ({col!r}) not a boolean (true/false, 1/0)"))
    for k in ("propensity", "score"):
        col = getattr(c, k)
        if col:
            checks.append((f"{_q(col)} IS NOT NULL AND __{k} IS NULL", f"non-numeric {k} ({col!r})"))
    if c.propensity:
        checks.append(("NOT (__propensity > 0 AND __propensity <= 1)",
                       f"propensity ({c.propensity!r}) outside (0, 1]"))
    if c.dispute_ts:
        checks.append((f"{_q(c.dispute_ts)} IS NOT NULL AND __dispute_ts IS NULL",
                       f"unparseable timestamps in dispute_ts ({c.dispute_ts!r})"))
        checks.append(("__dispute_ts < __ts", f"dispute_ts ({c.dispute_ts!r}) before the transaction's ts"))
    counts = con.execute("SELECT " + ", ".join(f"count(*) FILTER (WHERE {w})" for w, _ in checks)
                         + " FROM parsed").fetchone()
    for (w, what), n in zip(checks, counts):
        p.check(n, w, what)
    dup = con.execute("SELECT count(*), sum(n), any_value(id) FROM (SELECT __tx_id AS id, count(*) AS n FROM parsed "
                      "WHERE __tx_id IS NOT NULL GROUP BY 1 HAVING count(*) > 1)").fetchone()
    if dup[0]:
        p.items.append(f"duplicate tx_id ({c.tx_id!r}): {dup[0]:,} id(s) on {int(dup[1]):,} rows, "
                       f"e.g. {p.example(f'__tx_id = {int(dup[2])}')}")
    if p.items:
        raise SourceError(f"{m.path}: {n_source:,} rows read, nothing written. Problems:\n- " + "\n- ".join(p.items))


def _canonicalise(con, m: SourceMapping, e: dict) -> dict:
    """The canonical rows (temp table ``canon``), nulls in optional columns filled; returns what was filled."""
    filled = {}
    fills = {"card_country": _lit(UNKNOWN), "merchant_country": _lit(UNKNOWN), "merchant_id": _lit(UNKNOWN),
             "merchant_category": _lit(DEFAULT_CATEGORY)}
    null_counts = {k: e[k] for k in fills if not e[k].startswith("'")}
    for k, x in [("action", "__action"), ("explored", "__explored"), ("propensity", "__propensity")]:
        if k in e:
            null_counts[k] = x
    if null_counts:
        row = con.execute("SELECT " + ", ".join(f"count(*) FILTER (WHERE {x} IS NULL)" for x in null_counts.values())
                          + " FROM parsed").fetchone()
        filled = {k: int(n) for k, n in zip(null_counts, row) if n}
    if "action" in e:
        action = "CASE WHEN coalesce(__action, false) THEN 'block' ELSE 'allow' END"
    else:
        action = "'allow'"
    if "dispute_ts" in e:
        dispute = "__dispute_ts"
    elif "fraud_flag" in e:
        # exact hours, not calendar days: the session time zone (the mapping's) must not shift it at DST
        dispute = f"CASE WHEN coalesce(__fraud_flag, false) THEN __ts + INTERVAL {24 * int(m.label_delay_days)} HOUR END"
    else:
        dispute = "CAST(NULL AS TIMESTAMPTZ)"
    # still in the mapping's time zone (naive text is parsed as the view is read); days are UTC days
    con.execute(f"""CREATE TEMP TABLE canon AS SELECT
        __tx_id AS tx_id, __ts AS ts, __card_id AS card_id,
        coalesce({e['card_country']}, {fills['card_country']}) AS card_country,
        coalesce({e['merchant_id']}, {fills['merchant_id']}) AS merchant_id,
        coalesce({e['merchant_country']}, {fills['merchant_country']}) AS merchant_country,
        coalesce({e['merchant_category']}, {fills['merchant_category']}) AS merchant_category,
        __amount AS amount,
        {_lit(m.policy_name)} AS policy,
        {'__score' if 'score' in e else 'CAST(NULL AS DOUBLE)'} AS score,
        CAST(NULL AS DOUBLE) AS threshold,
        {action} AS action,
        {'coalesce(__explored, false)' if 'explored' in e else 'false'} AS explored,
        {'coalesce(__propensity, 1.0)' if 'propensity' in e else '1.0'} AS propensity,
        {dispute} AS dispute_ts,
        CAST(timezone('UTC', __ts) AS DATE) AS day,
        CAST(timezone('UTC', {dispute}) AS DATE) AS dispute_day
        FROM parsed ORDER BY day, ts, tx_id""")
    con.execute("SET TimeZone = 'UTC'")
    con.execute("DROP VIEW parsed")
    con.execute("DROP TABLE staged")

    return filled


def _write(con, events: Path, start, end) -> tuple[list, int, int, list, int]:
    """The period's transactions, decisions and disputes as day partitions of the event logs."""
    def window(col: str) -> str:
        w = [f"{col} IS NOT NULL"]
        if start:
            w.append(f"{col} >= DATE {_lit(start.isoformat())}")
        if end:
            w.append(f"{col} < DATE {_lit(end.isoformat())}")
        return " AND ".join(w)

    tx_days = [r[0] for r in con.execute(f"SELECT DISTINCT day FROM canon WHERE {window('day')} ORDER BY 1").fetchall()]
    rows = blocked = 0
    for day in tx_days:
        df = con.execute("SELECT tx_id, ts, card_id, card_country, merchant_id, merchant_country, merchant_category, "
                         "amount, policy, score, threshold, action, explored, propensity FROM canon WHERE day = ? "
                         "ORDER BY ts, tx_id", [day]).df()
        tx, dec = _canonical(df)
        write_partition(events / "transactions", day, tx)
        write_partition(events / "decisions", day, dec)
        rows += len(tx)
        blocked += int((dec["action"] == "block").sum())
    dispute_days = [r[0] for r in con.execute(
        f"SELECT DISTINCT dispute_day FROM canon WHERE {window('dispute_day')} ORDER BY 1").fetchall()]
    disputes = 0
    for day in dispute_days:
        df = con.execute("SELECT tx_id, dispute_ts FROM canon WHERE dispute_day = ? ORDER BY tx_id", [day]).df()
        dis = pd.DataFrame({"tx_id": df["tx_id"].astype("int64"), "dispute_ts": _utc(df["dispute_ts"])})
        write_partition(events / "disputes", day, dis)
        disputes += len(dis)
    return tx_days, rows, blocked, dispute_days, disputes


def _utc(s: pd.Series) -> pd.Series:
    s = pd.to_datetime(s)
    s = s.dt.tz_localize("UTC") if s.dt.tz is None else s.dt.tz_convert("UTC")
    return s.astype("datetime64[us, UTC]")


def _canonical(df: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    """One day's rows as the transactions and decisions frames, with the simulator's dtypes."""
    ts = _utc(df["ts"])
    tx = pd.DataFrame({
        "tx_id": df["tx_id"].astype("int64"), "ts": ts, "card_id": df["card_id"].astype("int64"),
        "card_country": df["card_country"].astype("str"), "merchant_id": df["merchant_id"].astype("str"),
        "merchant_country": df["merchant_country"].astype("str"),
        "merchant_category": df["merchant_category"].astype("str"), "amount": df["amount"].astype("float64"),
    })
    dec = pd.DataFrame({
        "tx_id": tx["tx_id"], "ts": ts, "policy": df["policy"].astype("str"),
        "score": df["score"].astype("float64"), "threshold": df["threshold"].astype("float64"),
        "action": df["action"].astype("str"), "explored": df["explored"].astype("bool"),
        "propensity": df["propensity"].astype("float64"),
    })
    return tx, dec
