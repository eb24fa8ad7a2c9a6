"""The decision log: batched, atomic, durable Parquet appends; readers deduplicate on request id."""
from __future__ import annotations

import datetime as dt
import threading
import time

import pandas as pd
import pytest

from release.decision_log import COLUMNS, DecisionLog, read_decision_log

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
    from release.decision_log import LogReader

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
