"""Day partitions and atomic writes."""
from __future__ import annotations

import datetime as dt
import hashlib

import pandas as pd
import pytest

from release.core.io import (
    atomic_write_parquet,
    atomic_write_text,
    file_sha256,
    list_partitions,
    partition_dir,
    write_partition,
)

D = dt.date(2026, 2, 1)


def leftovers(folder):
    return [p.name for p in folder.rglob(".tmp-*")]


def test_partition_folder_is_named_by_iso_day(tmp_path):
    assert partition_dir(tmp_path / "tx", D) == tmp_path / "tx" / "day=2026-02-01"


def test_write_partition_round_trips_and_rerun_replaces(tmp_path):
    first = pd.DataFrame({"tx_id": [1, 2], "amount": [1.5, 2.5]})
    path = write_partition(tmp_path / "tx", D, first)
    assert path == tmp_path / "tx" / "day=2026-02-01" / "part-0.parquet"
    pd.testing.assert_frame_equal(pd.read_parquet(path), first)
    second = pd.DataFrame({"tx_id": [3], "amount": [9.0]})
    assert write_partition(tmp_path / "tx", D, second) == path
    pd.testing.assert_frame_equal(pd.read_parquet(path), second)
    assert list_partitions(tmp_path / "tx") == [path]
    assert leftovers(tmp_path) == []


def test_list_partitions_is_half_open_and_sorted_by_day(tmp_path):
    days = [D + dt.timedelta(days=i) for i in (3, 0, 2, 1)]
    for d in days:
        write_partition(tmp_path / "tx", d, pd.DataFrame({"x": [d.day]}))
    every = list_partitions(tmp_path / "tx")
    assert [p.parent.name for p in every] == [f"day=2026-02-0{i}" for i in (1, 2, 3, 4)]
    window = list_partitions(tmp_path / "tx", D + dt.timedelta(days=1), D + dt.timedelta(days=3))
    assert [p.parent.name for p in window] == ["day=2026-02-02", "day=2026-02-03"]
    assert list_partitions(tmp_path / "tx", start=D + dt.timedelta(days=3)) == every[3:]
    assert list_partitions(tmp_path / "tx", end=D) == []
    assert list_partitions(tmp_path / "missing") == []


def test_list_partitions_skips_the_temp_file_of_an_unfinished_write(tmp_path):
    # A writer killed mid-write (or still writing) leaves ".tmp-*.parquet" beside the real file; readers
    # must never see it, or the partial bytes would be read as data.
    real = write_partition(tmp_path / "tx", D, pd.DataFrame({"x": [1]}))
    (real.parent / ".tmp-abc123.parquet").write_bytes(b"PAR1 partial")
    assert list_partitions(tmp_path / "tx") == [real]


def test_a_failed_text_write_keeps_the_old_file_and_leaves_no_temp(tmp_path):
    target = tmp_path / "sub" / "model.txt"
    atomic_write_text("old", target)
    with pytest.raises(TypeError):
        atomic_write_text(b"not text", target)
    assert target.read_text() == "old"
    assert leftovers(tmp_path) == []


def test_atomic_write_parquet_creates_parents_and_accepts_arrow_tables(tmp_path):
    import pyarrow as pa

    target = tmp_path / "a" / "b" / "t.parquet"
    atomic_write_parquet(pa.table({"x": [1, 2, 3]}), target)
    assert pd.read_parquet(target)["x"].tolist() == [1, 2, 3]
    assert leftovers(tmp_path) == []


def test_file_sha256_is_the_sha256_of_the_bytes(tmp_path):
    p = tmp_path / "f.bin"
    data = bytes(range(256)) * 5000  # larger than one read chunk
    p.write_bytes(data)
    assert file_sha256(p) == hashlib.sha256(data).hexdigest()


def test_replace_dir_swaps_a_folder_in_whole_and_the_old_one_goes_with_the_temp_folder(tmp_path):
    from release.core.io import owned_temp_dir, replace_dir

    target = tmp_path / "world"
    (target / "old-only").mkdir(parents=True)
    (target / "old-only" / "a.txt").write_text("old")
    with owned_temp_dir(tmp_path, ".world.tmp-") as tmp:
        (tmp / "b.txt").write_text("new")
        replace_dir(tmp, target)
    assert sorted(p.name for p in target.iterdir()) == ["b.txt"]  # nothing of the old folder survives
    assert sorted(p.name for p in tmp_path.iterdir()) == ["world"]  # the old folder went with the temp one


def test_remove_stale_temp_dirs_removes_only_unheld_folders(tmp_path):
    from release.core.io import owned_temp_dir, remove_stale_temp_dirs

    (tmp_path / ".tmp-dead").mkdir()  # a killed build's: nobody holds it
    (tmp_path / ".tmp-file").write_text("not a folder")
    with owned_temp_dir(tmp_path, ".tmp-") as live:
        assert remove_stale_temp_dirs(tmp_path, ".tmp-") == [tmp_path / ".tmp-dead"]
        assert live.is_dir()
    assert sorted(p.name for p in tmp_path.iterdir()) == [".tmp-file"]
