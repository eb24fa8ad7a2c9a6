"""The decision log: batched, atomic Parquet appends; a journal fsync'ed (group commit) before an answer,
recovered once after a kill; a full journal refused or counted as configured; readers deduplicate on request id."""
from __future__ import annotations

import datetime as dt
import threading
import time

import pandas as pd
import pytest

from release.serving.decision_log import COLUMNS, DecisionLog, read_decision_log

T0 = dt.datetime(2026, 3, 10, 12, 0, tzinfo=dt.timezone.utc)


def rec(i: int, served: dt.datetime = T0, **kw) -> dict:
    return {"request_id": str(i), "tx_id": str(i), "ts": T0, "served_at": served + dt.timedelta(milliseconds=i),
            "card_id": "c", "amount": 1.0 + i, "served_by": "production", "production_score": 0.1, **kw}


def test_records_are_written_in_batches_and_read_back(tmp_path):
    log = DecisionLog(tmp_path, flush_every=10, flush_ms=10_000)
    for i in range(25):
        log.append(rec(i))
    assert log.flush() == 25 and log.flush() == 0
    df = read_decision_log(tmp_path)
    assert df["request_id"].tolist() == [str(i) for i in range(25)]
    assert list(df.columns) == COLUMNS
    assert df["candidate_score"].isna().all()  # fields a record does not carry are null, typed


def test_the_background_writer_flushes_on_count_and_on_time(tmp_path):
    log = DecisionLog(tmp_path, flush_every=5, flush_ms=50).start()
    try:
        for i in range(5):
            log.append(rec(i))
        deadline = time.monotonic() + 5
        while log.written < 5 and time.monotonic() < deadline:
            time.sleep(0.01)
        assert log.written == 5
        log.append(rec(5))  # one record: written when the period elapses, not held until the count
        while log.written < 6 and time.monotonic() < deadline:
            time.sleep(0.01)
        assert log.written == 6 and log.files == 2
    finally:
        log.close()


def test_batch_files_wait_for_a_pause_in_the_answers(tmp_path, monkeypatch):
    """While answers are in flight (``busy``) the background writer writes no batch file; once they stop, it
    does. The wait's bound is set far away here, so what is asserted does not depend on timing."""
    from release.serving import decision_log as dl

    monkeypatch.setattr(dl, "BACKGROUND_PATIENCE_S", 60.0)
    answering, polled = threading.Event(), threading.Event()
    answering.set()

    def busy() -> bool:
        polled.set()
        return answering.is_set()

    log = DecisionLog(tmp_path, flush_every=5, flush_ms=20, busy=busy).start()
    try:
        for i in range(12):
            log.append(rec(i))
        assert polled.wait(10)  # the writer is due (12 >= flush_every) and asked
        time.sleep(0.1)  # five periods: without the wait it would have written by now
        assert log.written == 0 and log.pending == 12
        answering.clear()
        deadline = time.monotonic() + 10
        while log.written < 12 and time.monotonic() < deadline:
            time.sleep(0.01)
        assert log.written == 12
    finally:
        answering.clear()
        log.close()


def test_the_wait_for_a_pause_is_bounded():
    """Under answers that never stop, background work waits its bound and then goes on; without a busy
    signal it never waits."""
    from release.serving.decision_log import wait_while

    calls = []
    t = time.monotonic()
    wait_while(lambda: calls.append(1) or True, 0.05)
    assert time.monotonic() - t >= 0.05 and len(calls) > 1
    wait_while(None, 60)  # returns at once (a test would time out otherwise)
    left = iter([True, True, False])
    wait_while(lambda: next(left), 60)  # stops as soon as the answers do
    assert next(left, "done") == "done"


def test_close_writes_everything_appended_from_many_threads(tmp_path):
    log = DecisionLog(tmp_path, flush_every=100, flush_ms=20).start()

    def writer(k):
        for i in range(500):
            log.append(rec(k * 1000 + i))

    threads = [threading.Thread(target=writer, args=(k,)) for k in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    log.close()
    df = read_decision_log(tmp_path)
    assert len(df) == 2000 and df["request_id"].is_unique and log.pending == 0


def test_no_temporary_file_is_left_or_read(tmp_path):
    log = DecisionLog(tmp_path, flush_every=10, flush_ms=10_000)
    log.append(rec(1))
    log.flush()
    folder = next(tmp_path.glob("day=*"))
    assert [p.name.startswith("part-") for p in folder.iterdir()] == [True]
    (folder / ".tmp-part-crashed.parquet").write_bytes(b"half a file")  # a crash mid-write
    assert len(read_decision_log(tmp_path)) == 1


def test_readers_deduplicate_on_request_id(tmp_path):
    """At-least-once: a record written twice is read once (the first)."""
    log = DecisionLog(tmp_path)
    log.append(rec(1, served_by="production"))
    log.flush()
    log.append(rec(1, served=T0 + dt.timedelta(seconds=1), served_by="candidate"))
    log.flush()
    df = read_decision_log(tmp_path)
    assert len(df) == 1 and df["served_by"].iloc[0] == "production"


def test_read_since_keeps_only_later_decisions(tmp_path):
    log = DecisionLog(tmp_path)
    for i in range(3):
        log.append(rec(i, served=T0 + dt.timedelta(days=i)))
        log.flush()
    df = read_decision_log(tmp_path, since=T0 + dt.timedelta(days=1))
    assert df["request_id"].tolist() == ["1", "2"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["day=2026-03-10", "day=2026-03-11", "day=2026-03-12"]


def test_a_failed_write_keeps_the_batch(tmp_path):
    blocker = tmp_path / "log"
    blocker.write_text("a file where the log folder should be")
    log = DecisionLog(blocker)
    log.append(rec(1))
    with pytest.raises(OSError):
        log.flush()
    assert log.pending == 1  # nothing appended is lost; the next flush retries
    blocker.unlink()
    assert log.flush() == 1 and len(read_decision_log(blocker)) == 1


@pytest.mark.parametrize("kw, message", [({"flush_every": 0}, "'flush_every' parameter of DecisionLog must be"),
                                          ({"flush_ms": 0}, "'flush_ms' parameter of DecisionLog must be")])
def test_bad_parameters_are_refused(tmp_path, kw, message):
    with pytest.raises(ValueError, match=message):
        DecisionLog(tmp_path, **kw)


def test_reading_an_empty_log_gives_typed_columns(tmp_path):
    df = read_decision_log(tmp_path / "nothing")
    assert df.empty and list(df.columns) == COLUMNS
    assert isinstance(df["served_at"].dtype, pd.DatetimeTZDtype)


def test_compaction_merges_old_batches_without_losing_or_doubling_a_record(tmp_path):
    log = DecisionLog(tmp_path, flush_every=1000)
    for i in range(50):
        log.append(rec(i))
        if i % 10 == 9:
            log.flush()
    assert len(list(tmp_path.glob("day=*/part-*.parquet"))) == 5
    assert log.compact(older_than_s=0) == 5
    files = list(tmp_path.glob("day=*/part-*.parquet"))
    assert len(files) == 1 and "-c" in files[0].name
    df = read_decision_log(tmp_path)
    assert df["request_id"].tolist() == [str(i) for i in range(50)]
    assert log.compact(older_than_s=0) == 0  # one file: nothing to merge


def test_a_reader_kept_across_looks_reads_only_new_files_and_survives_compaction(tmp_path):
    from release.serving.decision_log import LogReader

    log = DecisionLog(tmp_path)
    reader = LogReader(tmp_path)
    for i in range(3):
        log.append(rec(i))
        log.flush()
    assert len(reader.read()) == 3 and len(reader._cache) == 3
    log.compact(older_than_s=0)
    log.append(rec(3))
    log.flush()
    df = reader.read()
    assert df["request_id"].tolist() == ["0", "1", "2", "3"] and len(reader._cache) == 2


def test_the_process_keeps_one_reader_and_its_reads_equal_a_fresh_readers(tmp_path):
    """The rollout task looks again after each deferral: under `airflow dags test` in the same process, where
    the process's kept reader (one, of the folder last asked for) reads only the files written since. What it returns is what a fresh
    reader of the whole log returns (the same frame, dtypes included)."""
    from release.serving.decision_log import LogReader, process_reader

    log = DecisionLog(tmp_path)
    kept = process_reader(tmp_path)
    assert process_reader(tmp_path / ".") is kept
    assert process_reader(tmp_path / "other") is not kept and process_reader(tmp_path) is not kept
    kept = process_reader(tmp_path)  # one kept at a time: another folder starts afresh
    for i in range(4):
        log.append(rec(i, candidate_score=0.5 if i % 2 else None, routed=bool(i % 2)))
        log.flush()
        pd.testing.assert_frame_equal(kept.read(), LogReader(tmp_path).read())
    since = T0 + dt.timedelta(milliseconds=2)
    pd.testing.assert_frame_equal(kept.read(since=since), LogReader(tmp_path).read(since=since))
    assert kept.read(since=since)["request_id"].tolist() == ["2", "3"] and len(kept._cache) == 4


# ---------------------------------------------------------------- the journal: acknowledged means on disk

def journaled(log: DecisionLog, records: list[dict]) -> None:
    """Journal ``records`` and wait for each acknowledgement, as the service does before answering."""
    for f in [log.journal(r) for r in records]:
        assert f.result(timeout=10) is None


def killed(log: DecisionLog) -> None:
    """What kill -9 leaves behind: the files as they are (no flush, no close), what was only in memory gone,
    none of its threads running on (a journal committer left running would act on segments whose fds are
    closed under it: on a loaded machine it did); its locks die with its fds."""
    import os

    with log._lock:
        log._buf.clear()  # the in-memory batch dies with the process
    log._stop.set()
    log._wake.set()
    with log._jlock:
        log._jstop, committer = True, log._committer
    log._jwake.set()
    for t in (committer, log._thread):
        if t is not None:
            t.join(timeout=10)
    for seg in log._segments:
        if seg.fd != -1:
            os.close(seg.fd)
            seg.fd = -1


def test_acknowledged_records_a_kill_left_in_memory_are_recovered_once(tmp_path):
    log = DecisionLog(tmp_path, flush_every=10_000, flush_ms=10_000).start()
    records = [rec(i, candidate_model_id="cand", shadow="none") for i in range(50)]
    journaled(log, records)
    for r in records[:20]:  # 20 complete records reached a batch file before the kill; 30 were in memory
        log.append({**r, "shadow": "scored", "candidate_score": 0.5})
    log.flush()
    for r in records[20:]:
        log.append(r)
    killed(log)
    report = DecisionLog(tmp_path).recover()
    assert (report["recovered"], report["already_logged"], report["torn_lines"]) == (30, 20, 0)
    df = read_decision_log(tmp_path)
    assert sorted(df["request_id"], key=int) == [str(i) for i in range(50)]
    assert (df.set_index("request_id").loc[["0", "19"], "shadow"] == "scored").all()
    assert (df.set_index("request_id").loc[["20", "49"], "shadow"] == "lost").all()  # shadow was still to come
    assert not list((tmp_path / "journal").glob("*.wal"))
    assert DecisionLog(tmp_path).recover()["recovered"] == 0  # a second start recovers nothing more
    rows = pd.concat([pd.read_parquet(p) for p in tmp_path.glob("day=*/part-*.parquet")])
    assert rows["request_id"].is_unique  # not a duplicate on disk either


def test_a_torn_journal_line_is_skipped_and_everything_before_it_recovered(tmp_path):
    from release.serving.decision_log import journal_line

    (tmp_path / "journal").mkdir(parents=True)
    line = journal_line(rec(3))
    damaged = journal_line(rec(4)).replace(b'"card_id":"c"', b'"card_id":"X"')  # its checksum no longer fits
    (tmp_path / "journal" / "1-1-000001.wal").write_bytes(
        journal_line(rec(1)) + journal_line(rec(2)) + damaged + line + line[:len(line) // 2])
    report = DecisionLog(tmp_path).recover()
    assert (report["recovered"], report["torn_lines"]) == (3, 2)
    assert read_decision_log(tmp_path)["request_id"].tolist() == ["1", "2", "3"]


def test_a_complete_orphaned_batch_is_recovered_and_a_torn_one_reported(tmp_path, caplog):
    """The issue's case: a batch killed between its fsync and its rename, left as .tmp-part-*.parquet."""
    from release.serving.decision_log import _table

    log = DecisionLog(tmp_path)
    log.append(rec(0))
    log.flush()
    day = next(tmp_path.glob("day=*"))
    orphan = day / ".tmp-part-1-1-000002.parquet"
    _table([rec(i) for i in range(35)]).to_pandas().to_parquet(orphan)  # 0 is logged already
    torn = day / ".tmp-part-1-1-000003.parquet"
    _table([rec(i) for i in range(100, 110)]).to_pandas().to_parquet(torn)
    torn.write_bytes(torn.read_bytes()[:200])
    assert len(read_decision_log(tmp_path)) == 1  # readers ignore both, and do not crash on the torn one
    report = DecisionLog(tmp_path).recover()
    assert (report["orphans"], report["recovered"], report["already_logged"]) == (2, 34, 1)
    assert report["orphans_unreadable"] == [str(day / ".unreadable-part-1-1-000003.parquet")]
    assert "cannot be read" in caplog.text
    df = read_decision_log(tmp_path)
    assert sorted(df["request_id"], key=int) == [str(i) for i in range(35)]
    assert not orphan.exists() and not torn.exists()


def test_recovery_leaves_a_live_writers_journal_alone(tmp_path):
    live = DecisionLog(tmp_path, flush_ms=10_000).start()
    journaled(live, [rec(1)])
    report = DecisionLog(tmp_path).recover()
    assert (report["journal_segments"], report["recovered"]) == (0, 0)  # its lock is held: not ours to take
    live.append(rec(1))
    live.close()
    assert read_decision_log(tmp_path)["request_id"].tolist() == ["1"]
    assert not list((tmp_path / "journal").glob("*.wal"))  # a graceful stop needs no journal


def test_concurrent_acknowledgements_share_fsyncs(tmp_path, monkeypatch):
    """Group commit: 8 threads each waiting for its own record take far fewer fsyncs than records."""
    import os

    import release.serving.decision_log as dl

    calls = []
    real = os.fsync

    def fsync(fd):
        calls.append(fd)
        time.sleep(0.004)  # a disk's fsync
        return real(fd)

    monkeypatch.setattr(dl.os, "fsync", fsync)
    log = DecisionLog(tmp_path, flush_ms=10_000, durability="fsync").start()

    def client(k):
        for i in range(25):
            log.journal(rec(k * 100 + i)).result(timeout=10)

    threads = [threading.Thread(target=client, args=(k,)) for k in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert log.journaled == 200 and len(calls) < 120
    log.close()


@pytest.mark.parametrize("policy, refused, unlogged, logged", [("fail_closed", 1, 0, ["1"]),
                                                                ("keep_answering", 0, 1, ["1", "2"])])
def test_a_journal_that_cannot_be_written_refuses_or_counts_as_configured(tmp_path, monkeypatch, caplog, policy,
                                                                          refused, unlogged, logged):
    import errno

    import release.serving.decision_log as dl

    log = DecisionLog(tmp_path, on_failure=policy).start()
    journaled(log, [rec(1)])
    monkeypatch.setattr(dl, "_os_write", lambda fd, b: (_ for _ in ()).throw(OSError(errno.ENOSPC, "No space")))
    failed = log.journal(r2 := rec(2))
    with pytest.raises(OSError, match="No space"):
        failed.result(timeout=5)
    assert log.durable("2") is failed and log.durable("2") is None  # handed to the answer once
    monkeypatch.undo()
    log.append(rec(1))
    log.append(r2)  # the shadow worker appends every record; a refused one is dropped
    log.close()
    h = log.health()
    assert (h["refused"], h["unlogged"], h["on_failure"]) == (refused, unlogged, policy)
    assert "cannot be written" in caplog.text and policy in caplog.text
    assert read_decision_log(tmp_path)["request_id"].tolist() == logged


def test_an_unreadable_batch_file_is_skipped_not_fatal(tmp_path, caplog):
    from release.serving.decision_log import LogReader

    log = DecisionLog(tmp_path)
    log.append(rec(1))
    log.flush()
    bad = next(tmp_path.glob("day=*")) / "part-0-0-000000.parquet"
    bad.write_bytes(b"PAR1 not really")
    reader = LogReader(tmp_path)
    assert reader.read()["request_id"].tolist() == ["1"]
    assert list(reader.unreadable) == [bad] and "cannot be read" in caplog.text


def test_a_bad_failure_policy_is_refused(tmp_path):
    with pytest.raises(ValueError, match="'on_failure' parameter of DecisionLog must be one of"):
        DecisionLog(tmp_path, on_failure="shrug")


@pytest.mark.parametrize("durability", ["write", "fsync"])
def test_an_answer_waits_for_the_fsync_only_when_asked(tmp_path, monkeypatch, durability):
    """durability write: acknowledged once the line is written (with the OS), the fsync follows behind;
    fsync: not acknowledged until the fsync returns."""
    import os

    import release.serving.decision_log as dl

    gate = threading.Event()
    real = os.fsync

    def slow_fsync(fd):
        gate.wait(10)
        return real(fd)

    monkeypatch.setattr(dl.os, "fsync", slow_fsync)
    log = DecisionLog(tmp_path, flush_ms=10_000, durability=durability).start()
    fut = log.journal(r := rec(1))
    time.sleep(0.2)
    # the line is in the journal file either way (a killed process loses nothing the OS holds)
    assert b'"request_id":"1"' in b"".join(p.read_bytes() for p in (tmp_path / "journal").glob("*.wal"))
    assert fut.done() == (durability == "write")
    gate.set()
    fut.result(timeout=5)
    log.append(r)
    log.close()
    assert read_decision_log(tmp_path)["request_id"].tolist() == ["1"]


def test_a_failed_background_fsync_keeps_answered_decisions_and_says_so(tmp_path, monkeypatch, caplog):
    import errno

    import release.serving.decision_log as dl

    monkeypatch.setattr(dl.os, "fsync", lambda fd: (_ for _ in ()).throw(OSError(errno.EIO, "I/O error")))
    log = DecisionLog(tmp_path, flush_ms=10_000, durability="write").start()
    assert log.journal(r := rec(1)).result(timeout=5) is None  # answered when written
    deadline = time.monotonic() + 5
    while "fsync" not in caplog.text and time.monotonic() < deadline:
        time.sleep(0.02)
    assert "already answered (durability: write)" in caplog.text
    monkeypatch.undo()
    log.append(r)
    log.close()
    assert read_decision_log(tmp_path)["request_id"].tolist() == ["1"]
    assert log.health()["refused"] == 0


def test_a_full_disk_neither_leaks_files_nor_outlasts_the_space_coming_back(tmp_path, monkeypatch):
    """500 refused journal writes (ENOSPC) leave one journal segment and no more open files than
    before; once writes work again, acknowledgements do too (no restart)."""
    import errno
    import os

    import release.serving.decision_log as dl

    log = DecisionLog(tmp_path, on_failure="fail_closed").start()
    journaled(log, [rec(0)])
    fds = len(os.listdir("/proc/self/fd"))
    real = dl._os_write
    monkeypatch.setattr(dl, "_os_write", lambda fd, b: (_ for _ in ()).throw(OSError(errno.ENOSPC, "No space")))
    for i in range(1, 501):
        with pytest.raises(OSError):
            log.journal(rec(i)).result(timeout=5)
        log.durable(str(i))
    monkeypatch.setattr(dl, "_os_write", real)
    time.sleep(0.2)
    assert len(os.listdir("/proc/self/fd")) <= fds + 1
    assert len(list((tmp_path / "journal").glob("*.wal"))) <= 2
    assert log.journal(r := rec(501)).result(timeout=5) is None
    log.append(rec(0))
    log.append(r)
    log.close()
    assert log.health()["refused"] == 500
    assert sorted(read_decision_log(tmp_path)["request_id"].tolist()) == ["0", "501"]


def test_the_journal_write_gives_the_os_error_of_a_real_full_device(tmp_path):
    """The journal's write(2) (called with the GIL held, not through os.write) reports a real failure as
    os.write would: /dev/full refuses every write with ENOSPC; a closed descriptor is EBADF; a file gets
    every byte."""
    import errno
    import os

    import release.serving.decision_log as dl

    fd = os.open("/dev/full", os.O_WRONLY)
    try:
        with pytest.raises(OSError) as e:
            dl._os_write(fd, b"a line\n")
        assert e.value.errno == errno.ENOSPC and "No space" in str(e.value)
    finally:
        os.close(fd)
    with pytest.raises(OSError) as e:
        dl._os_write(fd, b"a line\n")
    assert e.value.errno == errno.EBADF
    line = "é ✓ \x00 ".encode() * 20_000 + b"\n"  # NUL bytes and more than a page: written whole, not as C text
    fd = os.open(tmp_path / "f", os.O_WRONLY | os.O_CREAT)
    try:
        assert dl._os_write(fd, line) == len(line)
    finally:
        os.close(fd)
    assert (tmp_path / "f").read_bytes() == line
