"""The decision log: every decision the scoring service takes, appended durably.

Records are buffered in memory and written as Parquet files, one file per batch, every ``flush_every``
records or ``flush_ms`` milliseconds, whichever comes first, and on shutdown. A batch file is written
to a hidden temporary name, fsync'ed, then renamed into place (and the folder fsync'ed), so a reader
sees whole batches or nothing. Layout: ``<folder>/day=<served day>/part-<first served µs>-<pid>-<seq>.parquet``.

Small batches keep the log fresh; every minute the writer merges each day's batch files older than
``compact_after_s`` into one (``compact``), so readers do not open thousands of files.

Delivery is at-least-once: a record is never dropped once appended, but a crash between the rename
and the buffer being cleared could in principle write it twice, so readers deduplicate on
``request_id`` (``read_decision_log`` does). What a hard crash (kill -9, power loss) loses is the
batch still in memory: at most ``flush_ms`` of decisions. A graceful stop (SIGTERM) loses nothing.

Each record carries what evaluation needs later: both models' scores and thresholds, what each would
have done, which model served, the exploration flag and propensity, the deployment version and ramp
share it was decided under, and the server-side latency.
"""
from __future__ import annotations

import datetime as dt
import logging
import os
import threading
import time
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

log = logging.getLogger(__name__)

_TS = pa.timestamp("us", tz="UTC")
SCHEMA = pa.schema([
    ("request_id", pa.string()), ("tx_id", pa.string()), ("ts", _TS), ("served_at", _TS),
    ("card_id", pa.string()), ("card_country", pa.string()), ("merchant_id", pa.string()),
    ("merchant_country", pa.string()), ("merchant_category", pa.string()), ("amount", pa.float64()),
    ("known_merchant", pa.bool_()), ("deployment_version", pa.int64()), ("release_id", pa.string()),
    ("ramp_state", pa.string()), ("ramp_pct", pa.float64()),
    ("routed", pa.bool_()),  # the card's bucket sent it to the candidate (it served unless it failed)
    ("served_by", pa.string()), ("model_id", pa.string()), ("score", pa.float64()), ("threshold", pa.float64()),
    ("threshold_source", pa.string()), ("action", pa.string()), ("explored", pa.bool_()),
    ("propensity", pa.float64()),
    ("production_model_id", pa.string()), ("production_score", pa.float64()),
    ("production_threshold", pa.float64()), ("production_block", pa.bool_()),
    ("candidate_model_id", pa.string()), ("candidate_score", pa.float64()),
    ("candidate_threshold", pa.float64()), ("candidate_block", pa.bool_()),
    ("shadow", pa.string()),  # none | scored | dropped | error
    ("candidate_error", pa.string()), ("latency_ms", pa.float64()),
])
COLUMNS = SCHEMA.names


def default_folder() -> Path:
    from release.settings import paths

    return paths().home / "decision_log"


def _durable_write(table: pa.Table, target: Path) -> None:
    """Write ``table`` to ``target`` so that it survives a crash: a hidden temp file, fsync, rename,
    then fsync the folder so the rename itself is on disk."""
    tmp = target.parent / f".tmp-{target.name}"
    with open(tmp, "wb") as f:
        pq.write_table(table, f)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, target)
    _fsync_dir(target.parent)


def _fsync_dir(folder: Path) -> None:
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:  # pragma: no cover - platforms without directory fds
        return
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class DecisionLog:
    """Append records from any thread; a background thread writes them in batches."""

    def __init__(self, folder: Path | None = None, flush_every: int = 1000, flush_ms: int = 200,
                 compact_after_s: float | None = 600):
        if flush_every < 1:
            raise ValueError(f"The 'flush_every' parameter of DecisionLog must be an int >= 1. Got {flush_every}.")
        if flush_ms < 1:
            raise ValueError(f"The 'flush_ms' parameter of DecisionLog must be >= 1. Got {flush_ms}.")
        self.folder = Path(folder) if folder is not None else default_folder()
        self.flush_every, self.flush_ms = int(flush_every), int(flush_ms)
        self.compact_after_s = compact_after_s
        self._last_compaction = time.monotonic()
        self._buf: list[dict] = []
        self._lock = threading.Lock()
        self._write_lock = threading.Lock()
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._seq = 0
        self.appended = 0
        self.written = 0
        self.files = 0

    # ---- writing ------------------------------------------------------------------------------------

    def append(self, record: dict) -> None:
        with self._lock:
            self._buf.append(record)
            self.appended += 1
            full = len(self._buf) >= self.flush_every
        if full:
            self._wake.set()

    @property
    def pending(self) -> int:
        with self._lock:
            return len(self._buf)

    def flush(self) -> int:
        """Write what is buffered as one batch file; returns how many records were written."""
        with self._write_lock:
            with self._lock:
                batch, self._buf = self._buf, []
            if not batch:
                return 0
            try:
                self._write(batch)
            except BaseException:
                with self._lock:  # put the batch back in front: nothing appended is lost
                    self._buf = batch + self._buf
                raise
            self.written += len(batch)
            return len(batch)

    def _write(self, batch: list[dict]) -> None:
        table = pa.Table.from_pylist([{k: r.get(k) for k in COLUMNS} for r in batch], schema=SCHEMA)
        first = min(r["served_at"] for r in batch)
        day = first.date().isoformat() if isinstance(first, dt.datetime) else pd.Timestamp(first).date().isoformat()
        folder = self.folder / f"day={day}"
        folder.mkdir(parents=True, exist_ok=True)
        self._seq += 1
        stamp = int(pd.Timestamp(first).value // 1000)
        target = folder / f"part-{stamp}-{os.getpid()}-{self._seq:06d}.parquet"
        _durable_write(table, target)
        self.files += 1

    # ---- the background writer ----------------------------------------------------------------------

    def start(self) -> "DecisionLog":
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="decision-log", daemon=True)
            self._thread.start()
        return self

    def _run(self) -> None:
        while not self._stop.is_set():
            self._wake.wait(self.flush_ms / 1000)
            self._wake.clear()
            try:
                self.flush()
            except Exception:  # a full disk must not kill the writer: the batch stays buffered, retried
                log.exception("decision log: writing a batch failed; it stays buffered and is retried")
                time.sleep(min(1.0, self.flush_ms / 1000))
            if self.compact_after_s is not None and time.monotonic() - self._last_compaction > 60:
                self._last_compaction = time.monotonic()
                try:
                    self.compact()
                except Exception:  # noqa: BLE001 - compaction is housekeeping; the batches stay as they are
                    log.exception("decision log: compaction failed; the batch files stay as they are")

    def compact(self, older_than_s: float | None = None) -> int:
        """Merge each day's batch files older than ``older_than_s`` (default ``compact_after_s``) into one
        file: small batches keep the log fresh, but thousands of them make every reader slow. The merged
        file lands (temp, fsync, rename) before the batches go, so a crash in between leaves duplicates,
        which readers drop, never a gap. One compactor at a time (a lock file); returns files removed."""
        import fcntl

        cutoff = time.time() - (self.compact_after_s if older_than_s is None else older_than_s)
        if not self.folder.exists():
            return 0
        removed = 0
        with open(self.folder / ".compact.lock", "w") as lock:
            try:
                fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                return 0
            for day in sorted(self.folder.glob("day=*")):
                old = sorted(p for p in day.glob("part-*.parquet") if p.stat().st_mtime < cutoff)
                if len(old) < 2:
                    continue
                table = pa.concat_tables([pq.read_table(p, schema=SCHEMA) for p in old])
                table = table.sort_by("served_at")
                self._seq += 1
                first = int(pd.Timestamp(table.column("served_at")[0].as_py()).value // 1000)
                target = day / f"part-{first}-{os.getpid()}-c{self._seq:06d}.parquet"
                _durable_write(table, target)
                for p in old:
                    p.unlink()
                _fsync_dir(day)
                removed += len(old)
        return removed

    def close(self) -> None:
        """Stop the writer and write everything still buffered."""
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout=30)
            self._thread = None
        self.flush()


class LogReader:
    """Reads the decision log, keeping the batch files it has read: a reader that looks again (the ramp
    controller, every second) reads only the files written since. Files that compaction replaced are
    dropped from the cache; their records come back from the compacted file (read once, deduplicated)."""

    def __init__(self, folder: Path | None = None):
        self.folder = Path(folder) if folder is not None else default_folder()
        self._cache: dict[Path, pd.DataFrame] = {}

    def _files(self, since: dt.datetime | None) -> list[Path]:
        if not self.folder.exists():
            return []
        files = sorted(self.folder.glob("day=*/part-*.parquet"))
        if since is None:
            return files
        cut_day = since.astimezone(dt.timezone.utc).date().isoformat()
        cut_us = int(pd.Timestamp(since).value // 1000)
        out = []
        for p in files:
            day = p.parent.name.removeprefix("day=")
            try:
                if day > cut_day or (day == cut_day and _last_us(p) >= cut_us):
                    out.append(p)
            except FileNotFoundError:  # compacted away since the listing
                continue
        return out

    def read(self, since: dt.datetime | None = None) -> pd.DataFrame:
        """Every decision logged (served at or after ``since``), one row per request id, in serving order."""
        for _ in range(5):  # a compaction between listing and reading: list again
            files = self._files(since)
            try:
                for p in files:
                    if p not in self._cache:
                        self._cache[p] = pq.read_table(p, schema=SCHEMA).to_pandas()
                break
            except FileNotFoundError:
                continue
        keep = set(files)
        for p in [p for p in self._cache if p not in keep]:
            del self._cache[p]
        if not files:
            return SCHEMA.empty_table().to_pandas()
        df = pd.concat([self._cache[p] for p in files], ignore_index=True)
        if since is not None:
            df = df[df["served_at"] >= pd.Timestamp(since)]
        return (df.sort_values("served_at", kind="stable").drop_duplicates("request_id", keep="first")
                .reset_index(drop=True))


def read_decision_log(folder: Path | None = None, since: dt.datetime | None = None) -> pd.DataFrame:
    """Every decision logged (served at or after ``since``), one row per request id, in serving order."""
    return LogReader(folder).read(since)


def _last_us(p: Path) -> int:
    """A cheap upper bound for a batch file's last record: it was renamed into place after it."""
    return int(p.stat().st_mtime * 1_000_000) + 1_000_000
