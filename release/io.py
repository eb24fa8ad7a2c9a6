"""Event-log io: day-partitioned Parquet, written atomically (temp file, then rename)."""
from __future__ import annotations

import datetime as dt
import hashlib
import os
import tempfile
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq


def partition_dir(table_dir: Path, day: dt.date) -> Path:
    return Path(table_dir) / f"day={day.isoformat()}"


def write_partition(table_dir: Path, day: dt.date, df: pd.DataFrame) -> Path:
    """Write one day of one table; rerunning replaces the file atomically."""
    target = partition_dir(table_dir, day) / "part-0.parquet"
    atomic_write_parquet(df, target)
    return target


def atomic_write_parquet(df: pd.DataFrame | pa.Table, target: Path) -> None:
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    table = df if isinstance(df, pa.Table) else pa.Table.from_pandas(df, preserve_index=False)
    fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=".tmp-", suffix=".parquet")
    os.close(fd)
    try:
        pq.write_table(table, tmp)
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_text(text: str, target: Path) -> None:
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=".tmp-")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def list_partitions(table_dir: Path, start: dt.date | None = None, end: dt.date | None = None) -> list[Path]:
    """Partition files of a table with start <= day < end, sorted by day."""
    table_dir = Path(table_dir)
    if not table_dir.exists():
        return []
    out = []
    for d in sorted(table_dir.glob("day=*")):
        day = dt.date.fromisoformat(d.name.removeprefix("day="))
        if (start is None or day >= start) and (end is None or day < end):
            # skip hidden files: an in-flight (or crashed) atomic write's ".tmp-*.parquet" is not data
            out.extend(sorted(f for f in d.glob("*.parquet") if not f.name.startswith(".")))
    return out


def file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()
