"""Files: day-partitioned Parquet event logs, atomic writes (temp file, then rename), folders that land
whole, and the one permission policy.

Permissions (one policy for every file fraud-cd writes)
-------------------------------------------------------
Event logs, snapshots, decision logs and the state store hold card ids and amounts; reports and models
are read by the team that receives them. So: the owner reads and writes, the owner's group reads, other
users get nothing. Files are created ``0640`` and folders ``0750``, each narrowed further by the
process umask (an operator who sets ``umask 077`` gets ``0600``/``0700``; a umask never widens them).
Give the people who receive reports the data folder's group. ``restrict(path)`` applies the policy to a
file another library created (SQLite, DuckDB); processes that let other libraries create files (the
service, Airflow) should start with ``os.umask(POLICY_UMASK)`` (``apply_umask()``).

Folders that land whole
-----------------------
``owned_temp_dir(parent)`` makes a temp folder beside its target and holds a lock on it while this process
lives; ``replace_dir(new, target)`` swaps it in (atomically on Linux, renameat2 RENAME_EXCHANGE);
``remove_stale_temp_dirs(parent, prefix)`` removes the temp folders of builds that were killed (their lock
died with them), never one another process is still writing.
"""
from __future__ import annotations

import ctypes
import datetime as dt
import errno
import fcntl
import hashlib
import math
import os
import shutil
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

FILE_MODE = 0o640  # owner rw, group r, others nothing
DIR_MODE = 0o750
POLICY_UMASK = 0o027  # the umask that gives the same modes to files other libraries create


def current_umask() -> int:
    """The process umask, read without changing it (Linux: /proc/self/status)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except OSError:  # pragma: no cover - not Linux
        pass
    mask = os.umask(0o022)  # pragma: no cover
    os.umask(mask)  # pragma: no cover
    return mask  # pragma: no cover


def file_mode() -> int:
    return FILE_MODE & ~current_umask()


def dir_mode() -> int:
    return DIR_MODE & ~current_umask()


def apply_umask() -> int:
    """Narrow the process umask to the policy's (files other libraries create come out 0640 or
    narrower, folders 0750 or narrower); returns the previous umask."""
    previous = os.umask(POLICY_UMASK)
    os.umask(previous | POLICY_UMASK)  # only ever narrower: a stricter umask the user set stays
    return previous


def restrict(path: str | Path) -> None:
    """Apply the policy to a file (or folder) another library created."""
    path = Path(path)
    path.chmod(dir_mode() if path.is_dir() else file_mode())


def make_dirs(path: str | Path) -> Path:
    """mkdir -p, every folder it creates with the policy's mode."""
    path = Path(path)
    missing = []
    p = path
    while not p.exists():
        missing.append(p)
        if p.parent == p:
            break
        p = p.parent
    for d in reversed(missing):
        try:
            d.mkdir(mode=dir_mode())
        except FileExistsError:
            pass
    return path


def partition_dir(table_dir: Path, day: dt.date) -> Path:
    return Path(table_dir) / f"day={day.isoformat()}"


def write_partition(table_dir: Path, day: dt.date, df: pd.DataFrame) -> Path:
    """Write one day of one table; rerunning replaces the file atomically."""
    target = partition_dir(table_dir, day) / "part-0.parquet"
    atomic_write_parquet(df, target)
    return target


def _temp_file(target: Path, suffix: str = "") -> tuple[int, str]:
    """A temp file beside ``target`` with the policy's mode (mkstemp alone makes it 0600)."""
    make_dirs(target.parent)
    fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=".tmp-", suffix=suffix)
    os.fchmod(fd, file_mode())
    return fd, tmp


def atomic_write_parquet(df: pd.DataFrame | pa.Table, target: Path) -> None:
    target = Path(target)
    table = df if isinstance(df, pa.Table) else pa.Table.from_pandas(df, preserve_index=False)
    fd, tmp = _temp_file(target, ".parquet")
    try:
        with os.fdopen(fd, "wb") as f:
            pq.write_table(table, f)
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def json_value(v):
    """A value as JSON carries it: a numpy scalar as its Python value, a missing or non-finite number as None, a
    date or time as ISO text; anything else as it is (``json.dumps(..., default=json_value)`` or per value)."""
    if hasattr(v, "item") and not isinstance(v, (str, bytes)):
        v = v.item()
    if v is None or (isinstance(v, float) and not math.isfinite(v)):
        return None
    if isinstance(v, (dt.date, dt.datetime)):
        return v.isoformat()
    return v


def atomic_write_text(text: str, target: Path) -> None:
    target = Path(target)
    fd, tmp = _temp_file(target)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


# ---- folders that land whole -------------------------------------------------------------------------

def _locked_temp_dir(parent: Path, prefix: str) -> tuple[Path, int]:
    """mkdtemp, then an exclusive lock on the folder. A sweep may remove the folder in the instant
    between the two (it was not locked yet); then the lock is on a removed folder, and we try again."""
    while True:
        tmp = Path(tempfile.mkdtemp(dir=parent, prefix=prefix))
        fd = os.open(tmp, os.O_RDONLY)
        fcntl.flock(fd, fcntl.LOCK_EX)  # waits while a sweep holds it, which then removes it
        try:
            if os.stat(tmp).st_ino == os.fstat(fd).st_ino:
                return tmp, fd
        except FileNotFoundError:
            pass
        os.close(fd)


@contextmanager
def owned_temp_dir(parent: str | Path, prefix: str) -> Iterator[Path]:
    """A new folder ``<parent>/<prefix>XXXX`` (policy mode) that this process holds a lock on until the
    block ends; then it is removed, unless it was renamed away (landed) meanwhile. If the process is
    killed, the lock goes with it and the next ``remove_stale_temp_dirs`` removes the folder."""
    tmp, fd = _locked_temp_dir(make_dirs(parent), prefix)
    try:
        os.chmod(tmp, dir_mode())
        yield tmp
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
        os.close(fd)


def remove_stale_temp_dirs(parent: str | Path, prefix: str) -> list[Path]:
    """Remove the ``<parent>/<prefix>*`` folders nobody holds (their builds were killed); a folder whose
    owner is still running is left alone. Returns what was removed."""
    parent = Path(parent)
    if not parent.is_dir():
        return []
    removed = []
    for d in sorted(parent.glob(f"{prefix}*")):
        if not d.is_dir() or d.is_symlink():
            continue
        try:
            fd = os.open(d, os.O_RDONLY)
        except OSError:
            continue
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            continue  # its owner is alive
        try:  # holding the lock while removing: a creator that just made it waits, then sees it gone
            shutil.rmtree(d, ignore_errors=True)
            removed.append(d)
        finally:
            os.close(fd)
    return removed


_RENAME_EXCHANGE = 2


def _exchange(a: Path, b: Path) -> bool:
    """Swap two paths in one step (Linux renameat2); False where the system cannot."""
    try:
        renameat2 = ctypes.CDLL(None, use_errno=True).renameat2
    except (AttributeError, OSError):  # pragma: no cover - not glibc
        return False
    at_fdcwd = -100
    if renameat2(at_fdcwd, os.fsencode(a), at_fdcwd, os.fsencode(b), _RENAME_EXCHANGE) == 0:
        return True
    err = ctypes.get_errno()
    if err in (errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP):  # pragma: no cover - filesystem cannot
        return False
    raise OSError(err, os.strerror(err), str(b))


def replace_dir(new: str | Path, target: str | Path) -> None:
    """Put the folder ``new`` where ``target`` is, in one step: a reader sees the old folder or the new
    one, never a mix. The old folder ends up at ``new``'s path (the caller's temp folder, which removes it).
    Where the system cannot swap in one step, the old folder is renamed aside first: a reader in between
    finds no folder, never half of one."""
    new, target = Path(new), Path(target)
    if not target.exists():
        os.rename(new, target)
        return
    if _exchange(new, target):
        return
    aside = new.with_name(new.name + "-old")  # pragma: no cover - filesystems without RENAME_EXCHANGE
    os.rename(target, aside)  # pragma: no cover
    os.rename(new, target)  # pragma: no cover
    os.rename(aside, new)  # pragma: no cover


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
