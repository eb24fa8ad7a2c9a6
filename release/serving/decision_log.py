"""The decision log: every decision the scoring service takes, acknowledged only once it is on disk.

Two files hold a decision, one after the other:

1. **The journal** (``<folder>/journal/*.wal``), before the answer. ``journal(record)`` appends the decision
   as one checksummed JSON line and returns a future that completes once the line is fsync'ed; the
   service answers only then (``on_failure: fail_closed``). One committer thread fsyncs whatever lines
   arrived since its last fsync together (group commit): at ~4 ms an fsync, a burst of requests shares
   one, so latency grows by one fsync, not by one per request in the queue.
2. **The Parquet batches** (``<folder>/day=<served day>/part-*.parquet``), what readers read. The complete
   record (with the shadow model's score, known only after the answer) is buffered and written every
   ``flush_every`` records or ``flush_ms`` milliseconds, and on shutdown: a hidden temp file, fsync,
   rename, fsync of the folder, so a reader sees whole batches or nothing. A journal segment is deleted
   once every record in it is in a batch file.

After a hard stop (kill -9, power loss) ``recover()``, run at start-up before anything reads the log,
writes every journaled decision that no batch file holds as a recovery batch (shadow ``lost`` when the
shadow score had not been taken), and also every record of a complete orphaned ``.tmp-part-*.parquet``
(a batch killed between its fsync and its rename, or left by a version without the journal). Records
already in the log are not written again. A torn last line of a journal (the write the kill interrupted,
never acknowledged) is skipped and counted; an orphan that cannot be read (killed mid-write) is renamed
``.unreadable-*`` and reported, never read. So an acknowledged decision is never lost and never doubled.

Why a journal rather than only recovering orphans: the Parquet buffer lives in memory for up to
``flush_ms``, so a kill loses the buffered records whether or not an orphan exists; only an fsync before
the answer makes the acknowledgement mean "logged".

When the journal cannot be written (a full disk, an I/O error) the configured policy decides:
``fail_closed`` refuses the decision (the service answers 503; the record is dropped, never logged as if
given) and ``keep_answering`` gives it, flagged ``"logged": false`` and counted as unlogged (the batch
writer keeps retrying it). Either way an ERROR line is logged (at once, then at most every 10 s) and
``health()`` (the service's ``/state``) carries the counts and the last error.

Readers deduplicate on ``request_id`` (``read_decision_log`` does) and skip, with an ERROR line, a batch
file they cannot read. Each record carries what evaluation needs later: both models' scores and
thresholds, what each would have done, which model served, the exploration flag and propensity, the
deployment version and ramp share it was decided under, and the server-side latency.
"""
from __future__ import annotations

import ctypes
import datetime as dt
import errno
import fcntl
import json
import logging
import os
import threading
import time
import zlib
from concurrent.futures import Future
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Literal

import orjson
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
    ("shadow", pa.string()),  # none | scored | dropped | error | lost (recovered from the journal after a crash)
    ("candidate_error", pa.string()), ("latency_ms", pa.float64()),
    ("client", pa.string()),  # who sent it: the name of the token it came with (null in logs made before)
])
COLUMNS = SCHEMA.names
_TIME_COLUMNS = ("ts", "served_at")
FAIL_CLOSED, KEEP_ANSWERING = "fail_closed", "keep_answering"
OnFailure = Literal["fail_closed", "keep_answering"]
# What an acknowledgement waits for. write: the journal line is in the operating system's hands (it
# survives the service being killed, not the machine losing power; the committer fsyncs behind the
# answer). fsync: the line is on disk (survives power loss too; each answer waits for a shared fsync,
# which on a shared disk puts tens of milliseconds into the p99: benchmarks/bench_service.py).
WRITE, FSYNC = "write", "fsync"
Durability = Literal["write", "fsync"]
JOURNAL = "journal"
_SEGMENT_BYTES = 4 << 20  # a new journal segment after this many bytes ...
_SEGMENT_S = 60.0  # ... or this many seconds, so written segments can be deleted
_LOUD_EVERY_S = 10.0
# durability write: the answers do not wait for the fsync behind them, so the committer gathers what is journaled
# for this long after it wakes (one fsync per burst, not one per request: each costs ~20 us of a core)
_WRITE_COMMIT_LINGER_S = 0.005
BACKGROUND_PATIENCE_S = 0.05  # how long work behind the answers waits for a pause in them, at most
_REFUSED = "_refused_unlogged"  # set on a record whose journal write failed under fail_closed


def default_folder() -> Path:
    from release.core.settings import paths

    return paths().home / "decision_log"


def _durable_write(table: pa.Table, target: Path) -> None:
    """Write ``table`` to ``target`` so that it survives a crash: a hidden temp file, fsync, rename,
    then fsync the folder so the rename itself is on disk."""
    tmp = target.parent / f".tmp-{target.name}"
    try:
        with open(tmp, "wb") as f:
            pq.write_table(table, f)
            f.flush()
            os.fsync(f.fileno())
    except BaseException:
        tmp.unlink(missing_ok=True)  # a failed write (a full disk) leaves no orphan behind
        raise
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


# ---- the journal's line format --------------------------------------------------------------------------

def _json_default(v):
    if isinstance(v, dt.datetime):
        return v.isoformat()
    if hasattr(v, "item"):  # numpy scalars
        return v.item()
    raise TypeError(f"A decision-log field must be a string, number, boolean, time or null; got {type(v).__name__}.")


def journal_line(record: dict) -> bytes:
    """One record as ``<crc32 of the JSON, 8 hex digits> <JSON>\\n``: a torn or damaged line fails its check.
    orjson: times as ``datetime.isoformat`` writes them, numpy scalars as numbers, text as UTF-8."""
    payload = orjson.dumps({k: record.get(k) for k in COLUMNS}, default=_json_default,
                           option=orjson.OPT_SERIALIZE_NUMPY)
    return b"%08x %s\n" % (zlib.crc32(payload), payload)


def parse_journal(data: bytes) -> tuple[list[dict], int]:
    """The records of a journal segment's bytes, and how many lines failed their check (a torn last
    line after a kill; anything else is damage). Never raises on bad bytes."""
    records, bad = [], 0
    for line in data.split(b"\n"):
        if not line:
            continue
        try:
            crc, payload = line.split(b" ", 1)
            if int(crc, 16) != zlib.crc32(payload):
                raise ValueError("checksum")
            rec = json.loads(payload)
            for c in _TIME_COLUMNS:
                if rec.get(c) is not None:
                    rec[c] = dt.datetime.fromisoformat(rec[c])
        except (ValueError, TypeError):
            bad += 1
            continue
        records.append(rec)
    return records, bad


@dataclass(eq=False)
class _Segment:
    path: Path
    fd: int
    opened: float
    size: int = 0  # bytes of complete lines
    outstanding: int = 0  # journaled records not yet in a batch file
    sealed: bool = False
    dir_synced: bool = False


def _table(records: list[dict]) -> pa.Table:
    """The records as one table, a column at a time (half the cost of ``Table.from_pylist`` here)."""
    return pa.Table.from_arrays([pa.array([r.get(k) for r in records], type=SCHEMA.field(k).type) for k in COLUMNS],
                                schema=SCHEMA)


def wait_while(busy: Callable[[], bool] | None, at_most_s: float, step_s: float = 0.005) -> None:
    """Background work's manners: while ``busy()`` (answers in flight) and for at most ``at_most_s``, wait.
    Work done behind the answers (a batch file, shadow scores) takes the GIL and a core from them; done
    between bursts, it delays none of them. The bound keeps it from waiting for ever under constant load.
    Each look at ``busy()`` takes the GIL too, so it looks every ``step_s``, not more often."""
    if busy is None:
        return
    deadline = time.monotonic() + at_most_s
    while busy() and time.monotonic() < deadline:
        time.sleep(step_s)


class DecisionLog:
    """``journal`` a decision before answering, ``append`` its complete record after; any thread."""

    def __init__(self, folder: Path | None = None, flush_every: int = 1000, flush_ms: int = 200,
                 compact_after_s: float | None = 600, on_failure: OnFailure = FAIL_CLOSED,
                 durability: Durability = WRITE, busy: Callable[[], bool] | None = None):
        if flush_every < 1:
            raise ValueError(f"The 'flush_every' parameter of DecisionLog must be an int >= 1. Got {flush_every}.")
        if flush_ms < 1:
            raise ValueError(f"The 'flush_ms' parameter of DecisionLog must be >= 1. Got {flush_ms}.")
        if on_failure not in (FAIL_CLOSED, KEEP_ANSWERING):
            raise ValueError(f"The 'on_failure' parameter of DecisionLog must be one of "
                             f"['{FAIL_CLOSED}', '{KEEP_ANSWERING}']. Got {on_failure!r}.")
        self.folder = Path(folder) if folder is not None else default_folder()
        self.journal_dir = self.folder / JOURNAL
        self.flush_every, self.flush_ms = int(flush_every), int(flush_ms)
        self.compact_after_s = compact_after_s
        if durability not in (WRITE, FSYNC):
            raise ValueError(f"The 'durability' parameter of DecisionLog must be one of ['{WRITE}', '{FSYNC}']. "
                             f"Got {durability!r}.")
        self.on_failure = on_failure
        self.durability = durability
        self.busy = busy  # True while answers are in flight: batch files wait for a pause (wait_while)
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
        # the journal: one lock for the open segment, the waiting acknowledgements and the bookkeeping
        self._jlock = threading.Lock()
        self._jwake = threading.Event()
        self._jstop = False
        self._committer: threading.Thread | None = None
        self._seg: _Segment | None = None
        self._segments: list[_Segment] = []  # open or sealed, not yet deleted
        self._pending: list[tuple[_Segment, str, dict, Future]] = []  # written, waiting for the next fsync
        self._to_close: list[_Segment] = []
        self._inflight: dict[str, Future] = {}  # request id -> its acknowledgement, until it completes
        self._journaled: dict[str, _Segment] = {}  # request id -> its segment, until it is in a batch file
        self._seg_seq = 0
        self.journaled = 0  # acknowledged durable
        self.refused = 0  # fail_closed: decisions refused because they could not be logged
        self.unlogged = 0  # keep_answering: decisions given that were not durably logged when given
        self.last_failure: str | None = None
        self._failing_since: float | None = None
        self._last_loud = 0.0
        self.recovery: dict | None = None

    # ---- the journal: what an acknowledgement waits for -----------------------------------------------

    def journal(self, record: dict) -> Future:
        """Append ``record`` to the journal; the future completes (``None``) once it is fsync'ed, or fails
        with the OSError that kept it off the disk. Never raises: a failure is the future's."""
        rid = str(record["request_id"])
        fut: Future = Future()
        line = journal_line(record)
        with self._jlock:
            self._ensure_committer()
            seg = None
            try:
                seg = self._segment()
                _write_all(seg, line)
            except OSError as e:
                if seg is not None:
                    try:  # a partial line would spoil the next: cut it off and go on in the same segment
                        os.ftruncate(seg.fd, seg.size)
                    except OSError:  # its state is unknown: the committer closes it, a new one follows
                        self._seal_locked(seg)
                        self._jwake.set()
                self._failed_locked([(rid, record)], e)
                fut.set_exception(e)
                self._inflight[rid] = fut  # until durable() hands it to the answer
                return fut
            seg.outstanding += 1
            self._journaled[rid] = seg
            if self.durability == WRITE:  # acknowledged now; the committer fsyncs it behind the answer
                self.journaled += 1
                self._pending.append((seg, rid, record, None))
                fut.set_result(None)
            else:
                self._inflight[rid] = fut
                self._pending.append((seg, rid, record, fut))
        self._jwake.set()
        return fut

    def durable(self, request_id: str) -> Future | None:
        """The acknowledgement of ``request_id`` while it is pending, or once it failed (handed out once);
        None once it succeeded or if it was never journaled."""
        if not self._inflight:  # the common case, without the lock: only this request's own thread adds its entry
            return None
        with self._jlock:
            fut = self._inflight.get(str(request_id))
            if fut is not None and fut.done():
                del self._inflight[str(request_id)]
            return fut

    def _ensure_committer(self) -> None:
        if self._committer is None:
            self._jstop = False
            self._committer = threading.Thread(target=self._commit_loop, name="decision-journal", daemon=True)
            self._committer.start()

    def _segment(self) -> _Segment:
        seg = self._seg
        if seg is not None and (seg.size >= _SEGMENT_BYTES or time.monotonic() - seg.opened > _SEGMENT_S):
            self._seal_locked(seg)
            seg = None
        if seg is None:
            self.journal_dir.mkdir(parents=True, exist_ok=True)
            self._seg_seq += 1
            path = self.journal_dir / f"{time.time_ns() // 1000}-{os.getpid()}-{self._seg_seq:06d}.wal"
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o640)  # narrowed by the umask
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)  # held while this process lives: recover() skips it
            seg = self._seg = _Segment(path, fd, time.monotonic())
            self._segments.append(seg)
        return seg

    def _seal_locked(self, seg: _Segment) -> None:
        """No more lines go to ``seg``; the committer closes it after its next fsync."""
        if not seg.sealed:
            seg.sealed = True
            self._to_close.append(seg)
        if self._seg is seg:
            self._seg = None
        self._delete_done_locked()

    def _commit_loop(self) -> None:
        while True:
            self._jwake.wait()
            if self.durability == WRITE and not self._jstop:
                time.sleep(_WRITE_COMMIT_LINGER_S)
            self._jwake.clear()
            with self._jlock:
                pending, self._pending = self._pending, []
                closing, self._to_close = self._to_close, []
                stop = self._jstop
            by_seg: dict[_Segment, list[tuple[str, dict, Future]]] = {}
            for seg, rid, record, fut in pending:
                by_seg.setdefault(seg, []).append((rid, record, fut))
            for seg, waiting in by_seg.items():
                try:
                    if not seg.dir_synced:  # the segment's name must be on disk before its lines count
                        _fsync_dir(self.journal_dir)
                        seg.dir_synced = True
                    os.fsync(seg.fd)
                except OSError as e:
                    with self._jlock:
                        self._seal_locked(seg)  # after a failed fsync the file's state is unknown: a new one
                        acked = [(rid, record) for rid, record, fut in waiting if fut is None]
                        if acked:  # durability write: already answered; they stay in the batch files' way
                            self.last_failure = f"{type(e).__name__}: {e}"
                            log.error("decision log: fsync of %s failed (%s) for %d decisions already answered "
                                      "(durability: write); they are still written to the batch files",
                                      seg.path, self.last_failure, len(acked))
                        waited = [(rid, record) for rid, record, fut in waiting if fut is not None]
                        if waited:
                            self._failed_locked(waited, e)
                        # failed futures stay in _inflight: durable() hands them to the answer (or it races it)
                    for _, _, fut in waiting:
                        if fut is not None:
                            fut.set_exception(e)
                    continue
                with self._jlock:
                    self.journaled += sum(1 for _, _, fut in waiting if fut is not None)
                    for rid, _, _ in waiting:
                        self._inflight.pop(rid, None)
                    self._recovered_locked()
                for _, _, fut in waiting:
                    if fut is not None:
                        fut.set_result(None)
            for seg in closing:
                os.close(seg.fd)
                seg.fd = -1
            if closing:
                with self._jlock:
                    self._delete_done_locked()
            if stop:
                return

    def _failed_locked(self, failed: list[tuple[str, dict]], e: OSError) -> None:
        """A journal write or fsync failed for these (request id, record): apply the policy, count, say so."""
        for rid, record in failed:
            s = self._journaled.pop(rid, None)
            if s is not None:
                s.outstanding -= 1
            if self.on_failure == FAIL_CLOSED:
                record[_REFUSED] = True  # its answer is a 503: append() drops it, it is never logged as given
        n = len(failed)
        self.last_failure = f"{type(e).__name__}: {e}"
        if self.on_failure == FAIL_CLOSED:
            self.refused += n
        else:
            self.unlogged += n
        now = time.monotonic()
        if self._failing_since is None:
            self._failing_since = now
        if now - self._last_loud >= _LOUD_EVERY_S or self._last_loud < self._failing_since:
            self._last_loud = now
            what = ("refusing decisions (503): on_failure is fail_closed" if self.on_failure == FAIL_CLOSED else
                    "ANSWERING WITHOUT LOGGING: on_failure is keep_answering")
            log.error("decision log: the journal in %s cannot be written (%s); %s. So far %d refused, %d answered "
                      "unlogged.", self.journal_dir, self.last_failure, what, self.refused, self.unlogged)

    def _recovered_locked(self) -> None:
        if self._failing_since is not None:
            log.warning("decision log: the journal is written again after %.1f s of failures (%d refused, "
                        "%d answered unlogged)", time.monotonic() - self._failing_since, self.refused, self.unlogged)
            self._failing_since = None

    def _delete_done_locked(self) -> None:
        """Delete sealed, closed segments whose every record is in a batch file."""
        keep = []
        for seg in self._segments:
            if seg.sealed and seg.fd == -1 and seg.outstanding <= 0:
                try:
                    seg.path.unlink()
                except OSError:  # still there: recover() finds its records logged and deletes it
                    pass
            else:
                keep.append(seg)
        self._segments = keep

    def health(self) -> dict:
        """The journal's counts and policy, for /state."""
        with self._jlock:
            return {"on_failure": self.on_failure, "journaled": self.journaled, "refused": self.refused,
                    "unlogged": self.unlogged, "last_failure": self.last_failure,
                    "failing": self._failing_since is not None, "journal_segments": len(self._segments),
                    "recovered": self.recovery}

    # ---- the Parquet batches ------------------------------------------------------------------------

    def append(self, record: dict) -> None:
        if record.get(_REFUSED):  # its answer was a 503 (fail_closed): never logged as given
            return
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
            with self._jlock:  # their journal lines are no longer needed
                for r in batch:
                    seg = self._journaled.pop(str(r["request_id"]), None)
                    if seg is not None:
                        seg.outstanding -= 1
                self._delete_done_locked()
            return len(batch)

    def _write(self, batch: list[dict]) -> None:
        table = _table(batch)
        first = min(r["served_at"] for r in batch)
        day = first.date().isoformat() if isinstance(first, dt.datetime) else pd.Timestamp(first).date().isoformat()
        folder = self.folder / f"day={day}"
        folder.mkdir(parents=True, exist_ok=True)
        self._seq += 1
        stamp = int(pd.Timestamp(first).value // 1000)
        target = folder / f"part-{stamp}-{os.getpid()}-{self._seq:06d}.parquet"
        _durable_write(table, target)
        self.files += 1

    # ---- recovery after a hard stop --------------------------------------------------------------------

    def recover(self) -> dict:
        """Write every journaled or orphaned record that no batch file holds (once), then delete the
        journal segments and orphans it came from. Run before anything reads the log (the service does
        at start-up). Segments another live process holds are left alone. Returns what it found."""
        report = {"journal_segments": 0, "journal_records": 0, "torn_lines": 0, "orphans": 0,
                  "orphans_unreadable": [], "recovered": 0, "already_logged": 0}
        if not self.folder.exists():
            self.recovery = report
            return report
        with open(self.folder / ".compact.lock", "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)  # not while a compaction rewrites the batches
            found: dict[str, dict] = {}
            done: list[Path] = []
            held: list[int] = []
            try:
                for path in sorted(self.journal_dir.glob("*.wal")) if self.journal_dir.exists() else []:
                    fd = os.open(path, os.O_RDONLY)
                    try:
                        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    except BlockingIOError:  # a live writer's segment
                        os.close(fd)
                        continue
                    held.append(fd)
                    with open(path, "rb") as f:
                        records, bad = parse_journal(f.read())
                    report["journal_segments"] += 1
                    report["journal_records"] += len(records)
                    report["torn_lines"] += bad
                    if bad:
                        log.warning("decision log: %d damaged or torn line(s) in %s skipped (a write the stop "
                                    "interrupted is never acknowledged)", bad, path)
                    for r in records:
                        if r.get("shadow") == "none" and r.get("candidate_model_id") and not r.get("candidate_error"):
                            r["shadow"] = "lost"  # the shadow score was still to come when the process died
                        found.setdefault(str(r["request_id"]), r)
                    done.append(path)
                for path in sorted(self.folder.glob("day=*/.tmp-part-*.parquet")):
                    report["orphans"] += 1
                    try:
                        df = pq.read_table(path, schema=SCHEMA).to_pylist()
                    except Exception as e:  # noqa: BLE001 - a torn Parquet file has no footer: report, keep
                        bad_path = path.with_name(".unreadable-" + path.name.removeprefix(".tmp-"))
                        os.replace(path, bad_path)
                        report["orphans_unreadable"].append(str(bad_path))
                        log.error("decision log: the orphaned batch %s cannot be read (%s: %s); kept as %s. Its "
                                  "acknowledged records are recovered from the journal.", path, type(e).__name__, e,
                                  bad_path)
                        continue
                    for r in df:
                        found[str(r["request_id"])] = r  # the batch's record is complete (shadow included)
                    done.append(path)
                if found:
                    logged = set(read_decision_log(self.folder)["request_id"])
                    new = [r for rid, r in found.items() if rid not in logged]
                    report["already_logged"] = len(found) - len(new)
                    new.sort(key=lambda r: pd.Timestamp(r["served_at"]))
                    by_day: dict[str, list[dict]] = {}
                    for r in new:
                        by_day.setdefault(pd.Timestamp(r["served_at"]).date().isoformat(), []).append(r)
                    for day_records in by_day.values():
                        self._write(day_records)
                    report["recovered"] = len(new)
                for path in done:
                    path.unlink()
                for d in {p.parent for p in done}:
                    _fsync_dir(d)
            finally:
                for fd in held:
                    os.close(fd)
        if report["recovered"] or report["torn_lines"] or report["orphans"]:
            log.warning("decision log: recovered %d decision(s) after a hard stop (%d journal record(s) in %d "
                        "segment(s), %d already logged, %d torn line(s), %d orphaned batch(es), %d unreadable)",
                        report["recovered"], report["journal_records"], report["journal_segments"],
                        report["already_logged"], report["torn_lines"], report["orphans"],
                        len(report["orphans_unreadable"]))
        self.recovery = report
        return report

    # ---- the background writer ----------------------------------------------------------------------

    def start(self) -> "DecisionLog":
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="decision-log", daemon=True)
            self._thread.start()
        with self._jlock:
            self._ensure_committer()
        return self

    def _run(self) -> None:
        while not self._stop.is_set():
            self._wake.wait(self.flush_ms / 1000)
            self._wake.clear()
            if not self._stop.is_set():
                wait_while(self.busy, BACKGROUND_PATIENCE_S)
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
        """Stop the writers, write everything still buffered, and drop the journal it no longer needs."""
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout=30)
            self._thread = None
        self.flush()
        with self._jlock:
            committer, self._committer = self._committer, None
            self._jstop = True
            if self._seg is not None:
                self._seal_locked(self._seg)
        self._jwake.set()
        if committer is not None:
            committer.join(timeout=30)
        with self._jlock:
            for seg in self._to_close:  # sealed after the committer's last round (no committer was running)
                if seg.fd != -1:
                    os.close(seg.fd)
                    seg.fd = -1
            self._to_close = []
            self._delete_done_locked()


# the journal's write(2), called with the GIL held (ctypes.PyDLL): a line to the page cache takes a microsecond
# or two, but os.write releases the GIL around it and the scoring thread then waits to take it back from the
# event loop (up to the switch interval, 5 ms): a hand-off per decision in a burst. A write that blocks (a
# stalled disk) holds the GIL, so the event loop stops too: nothing answers while no decision can be logged.
_libc_write = ctypes.PyDLL(None, use_errno=True).write
_libc_write.argtypes = (ctypes.c_int, ctypes.c_char_p, ctypes.c_size_t)
_libc_write.restype = ctypes.c_ssize_t


def _os_write(fd: int, data: bytes) -> int:
    """write(2) of ``data`` to ``fd``, the GIL held: the bytes written, or the OSError os.write would raise
    (retried on EINTR, as os.write is)."""
    while True:
        n = _libc_write(fd, data, len(data))
        if n >= 0:
            return n
        code = ctypes.get_errno()
        if code != errno.EINTR:
            raise OSError(code, os.strerror(code))


def _write_all(seg: _Segment, line: bytes) -> None:
    """The whole line, or OSError (``seg.size`` then still ends before it: the caller cuts a partial line off)."""
    rest = line
    while rest:
        rest = rest[_os_write(seg.fd, rest):]
    seg.size += len(line)


class LogReader:
    """Reads the decision log, keeping the batch files it has read (as Arrow tables: the files of a read are
    converted to pandas in one go, not one small frame each): a reader that looks again (the rollout, every
    poll) reads only the files written since. Files that compaction replaced are dropped from the cache;
    their records come back from the compacted file (read once, deduplicated). A batch file that cannot be
    read is skipped with an ERROR line and listed in ``unreadable``."""

    def __init__(self, folder: Path | None = None):
        self.folder = Path(folder) if folder is not None else default_folder()
        self._cache: dict[Path, pa.Table] = {}
        self.unreadable: dict[Path, str] = {}

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

    def _read_file(self, p: Path) -> pa.Table:
        try:
            return pq.read_table(p, schema=SCHEMA)
        except FileNotFoundError:
            raise
        except Exception as e:  # noqa: BLE001 - one damaged file must not stop every reader
            if p not in self.unreadable:
                log.error("decision log: the batch file %s cannot be read (%s: %s); its records are left out",
                          p, type(e).__name__, e)
            self.unreadable[p] = f"{type(e).__name__}: {e}"
            return SCHEMA.empty_table()

    def read(self, since: dt.datetime | None = None) -> pd.DataFrame:
        """Every decision logged (served at or after ``since``), one row per request id, in serving order."""
        for _ in range(5):  # a compaction between listing and reading: list again
            files = self._files(since)
            try:
                for p in files:
                    if p not in self._cache:
                        df = self._read_file(p)
                        if p not in self.unreadable:
                            self._cache[p] = df
                break
            except FileNotFoundError:
                continue
        files = [p for p in files if p in self._cache]
        keep = set(files)
        for p in [p for p in self._cache if p not in keep]:
            del self._cache[p]
        if not files:
            return SCHEMA.empty_table().to_pandas()
        df = pa.concat_tables([self._cache[p] for p in files]).to_pandas()
        if since is not None:
            df = df[df["served_at"] >= pd.Timestamp(since)]
        return (df.sort_values("served_at", kind="stable").drop_duplicates("request_id", keep="first")
                .reset_index(drop=True))


_KEPT: list[LogReader] = []  # this process's reader (one: a process's rollout reads one data folder)


def process_reader(folder: Path | None = None) -> LogReader:
    """This process's reader of the decision log in ``folder`` (default: the data folder's), kept between calls:
    the rollout task looks again after each deferral (in the same process under `airflow dags test`, whose
    looks then read only the files written since the last). Asked for another folder, it starts afresh there."""
    key = (Path(folder) if folder is not None else default_folder()).resolve()
    if not _KEPT or _KEPT[0].folder != key:
        _KEPT[:] = [LogReader(key)]
    return _KEPT[0]


def read_decision_log(folder: Path | None = None, since: dt.datetime | None = None) -> pd.DataFrame:
    """Every decision logged (served at or after ``since``), one row per request id, in serving order."""
    return LogReader(folder).read(since)


def _last_us(p: Path) -> int:
    """A cheap upper bound for a batch file's last record: it was renamed into place after it."""
    return int(p.stat().st_mtime * 1_000_000) + 1_000_000
