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

Event logs at a URL
-------------------
The event logs may be read from an fsspec URL (``FRAUDCD_EVENTS_URL``, release/core/settings.py): then
``paths().events`` is a ``upath.UPath`` and every reader goes through the functions here, which take a local
``pathlib.Path`` or a ``UPath`` alike: ``list_partitions`` (one recursive listing of a table, a clear error for
an unreachable endpoint or a missing bucket), ``file_sha256`` (the same digest of the same bytes: a snapshot's
hash does not depend on where its inputs were read), ``read_parquet_frame``, ``read_parquet_table`` and
``parquet_num_rows``. What is read at a URL is read from a local copy (``local_copy``): the input cache under
``FRAUDCD_HOME/cache/events``, keyed by the file's URL and its version (the ETag the listing or the store gives),
so each version of a file is downloaded once per machine, whatever process reads it (a build's tasks on several
Celery workers, DuckDB's scans, a hash), and a rewritten object is a new key, read again. DuckDB gets the local
copies' paths (``release.data.features._sql_list``), never a URL. Writers stay local (``local_events``): a day's partition
lands whole by a rename, and a world or an ingest replaces many of them, which object storage cannot do in
one step; with a URL set they refuse and write nothing.
"""
from __future__ import annotations

import ctypes
import datetime as dt
import errno
import fcntl
import hashlib
import math
import os
import re
import shutil
import sys
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from release.core.config import EventsLocationError, EventsUnreachable

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


def is_remote(path) -> bool:
    """Whether ``path`` is on an fsspec filesystem (a ``upath.UPath`` of a URL) rather than a local path."""
    return not isinstance(path, (str, Path)) and hasattr(path, "fs")


def location(path):
    """``path`` as a path object of its kind: a ``pathlib.Path`` or ``upath.UPath`` as it is; a string with a
    protocol (``s3://bucket/events``) resolved as ``FRAUDCD_EVENTS_URL`` is (``events_location``); any
    other string as a ``pathlib.Path``."""
    if isinstance(path, Path) or is_remote(path):
        return path
    text = os.fspath(path)
    if "://" in text:
        return events_location(text, setting="the event logs' location")
    return Path(text)


EVENTS_URL_EXAMPLES = "a local folder, s3://bucket/prefix, gs://bucket/prefix, abfs://container/prefix"


def events_location(url: str, setting: str = "FRAUDCD_EVENTS_URL"):
    """The event logs at ``url`` as a path object: a local folder (no protocol, or ``file://``) as a
    ``pathlib.Path``; an fsspec URL as a ``upath.UPath`` whose filesystem is configured by fsspec's own
    configuration for its protocol (``FSSPEC_<PROTOCOL>_<KWARG>`` variables and ``FSSPEC_CONFIG_DIR`` files,
    read now, so a process sees the environment it has, not the one fsspec was imported in). Nothing is
    contacted here: an unknown protocol or a missing implementation is an error naming the setting, what is
    allowed and what to install; an unreachable endpoint or a missing bucket is said by the first read
    (``list_partitions``)."""
    protocol, sep, rest = url.partition("://")
    if not sep:
        return Path(url).expanduser().resolve()
    if protocol in ("file", "local"):
        return Path(rest).expanduser().resolve()
    if not re.fullmatch(r"[a-z][a-z0-9+.-]*", protocol) or not rest.strip("/"):
        raise EventsLocationError(f"{setting}={url!r} is not a location of event logs. Give {EVENTS_URL_EXAMPLES}.")
    import fsspec
    import fsspec.config
    from fsspec.registry import known_implementations

    try:
        fsspec.get_filesystem_class(protocol)
    except ImportError as e:
        package = known_implementations.get(protocol, {}).get("class", str(e)).split(".")[0]
        extra = " (the fraud-cd extra: pip install 'fraud-cd[s3]')" if protocol in ("s3", "s3a") else ""
        raise EventsLocationError(f"{setting}={url!r}: reading {protocol}:// needs the package {package}, which "
                                  f"is not installed in {sys.prefix}. Install it: pip install {package}{extra}."
                                  ) from e
    except ValueError as e:
        raise EventsLocationError(f"{setting}={url!r}: fsspec knows no protocol {protocol!r}. Give "
                                  f"{EVENTS_URL_EXAMPLES} (fsspec's protocols: "
                                  f"{', '.join(sorted(known_implementations))}).") from e
    conf: dict = {}
    fsspec.config.set_conf_files(os.environ.get("FSSPEC_CONFIG_DIR", fsspec.config.default_conf_dir), conf)
    fsspec.config.set_conf_env(conf)
    from upath import UPath

    return UPath(url, **conf.get(protocol, {}))


def local_events(events, writer: str) -> Path:
    """``events`` as the local folder a writer of event logs (``writer``: the command) writes into. A URL is
    refused, nothing written: each day's partition lands whole by a rename (a world, an ingest: many of them,
    replaced in one step), which object storage cannot do."""
    events = location(events)
    if is_remote(events):
        raise EventsLocationError(
            f"{writer} writes event logs to a local folder only (each day lands whole by a rename, which object "
            f"storage cannot do), and FRAUDCD_EVENTS_URL points at {events}; nothing was written. Unset "
            "FRAUDCD_EVENTS_URL to write under FRAUDCD_HOME/events, then copy the day partitions to the bucket "
            "(`aws s3 sync`, or fsspec's put(local, url, recursive=True)) and set it again to read them there.")
    return events


def _storage(path) -> str:
    """Where a remote path's filesystem points, for an error (never its credentials)."""
    endpoint = getattr(path.fs, "endpoint_url", None) or path.fs.storage_options.get("endpoint_url")
    proto = str(path.protocol).upper()
    return (f"endpoint {endpoint}" if endpoint else "the default endpoint") + \
        f" (fsspec's settings: FSSPEC_{proto}_ENDPOINT_URL, FSSPEC_{proto}_KEY, ...)"


def _remote_listing(table_dir) -> dict[str, list[str]]:
    """A remote table's partition files, by day folder name (``day=YYYY-MM-DD``): one recursive listing (the
    filesystem's listing cache dropped first: new partitions appear). Hidden files (an in-flight write's
    ``.tmp-*``) and anything not ``<day folder>/<name>.parquet`` are left out."""
    fs, root = table_dir.fs, table_dir.path.rstrip("/")
    try:
        fs.invalidate_cache(root)
        names = fs.find(root)
    except FileNotFoundError:
        names = []
    except Exception as e:  # noqa: BLE001 - the filesystem's own errors (botocore's are not OSErrors)
        raise EventsUnreachable(f"Cannot read the event logs at {table_dir}: {type(e).__name__}: {e}. Check "
                                f"FRAUDCD_EVENTS_URL and how {_storage(table_dir)} is reached.") from e
    if not names and table_dir.drive and not fs.exists(table_dir.drive):
        raise EventsLocationError(
            f"Cannot read the event logs at {table_dir}: the bucket {table_dir.drive!r} does not exist at "
            f"{_storage(table_dir)}. Point FRAUDCD_EVENTS_URL at the bucket that holds the event logs "
            "(<url>/transactions/day=YYYY-MM-DD/*.parquet, decisions/..., disputes/...).")
    out: dict[str, list[str]] = {}
    for name in names:
        parts = name[len(root) + 1:].split("/") if name.startswith(root + "/") else []
        if len(parts) == 2 and parts[0].startswith("day=") and parts[1].endswith(".parquet") \
                and not parts[1].startswith("."):
            out.setdefault(parts[0], []).append(parts[1])
    return out


def partition_days(table_dir) -> list[dt.date]:
    """The days a table has a partition folder of, sorted (remote: a day with at least one file)."""
    table_dir = location(table_dir)
    if is_remote(table_dir):
        names = _remote_listing(table_dir)
    else:
        names = [d.name for d in table_dir.glob("day=*")] if table_dir.exists() else []
    return sorted(dt.date.fromisoformat(n.removeprefix("day=")) for n in names)


def list_partitions(table_dir, start: dt.date | None = None, end: dt.date | None = None) -> list:
    """Partition files of a table with start <= day < end, sorted by day (then by name). ``table_dir``: a local
    folder or a ``upath.UPath`` of a URL; the files come back as the same kind of path."""
    table_dir = location(table_dir)
    if is_remote(table_dir):
        out = []
        for folder, names in sorted(_remote_listing(table_dir).items()):
            day = dt.date.fromisoformat(folder.removeprefix("day="))
            if (start is None or day >= start) and (end is None or day < end):
                out.extend(table_dir / folder / n for n in sorted(names))
        return out
    if not table_dir.exists():
        return []
    out = []
    for d in sorted(table_dir.glob("day=*")):
        day = dt.date.fromisoformat(d.name.removeprefix("day="))
        if (start is None or day >= start) and (end is None or day < end):
            # skip hidden files: an in-flight (or crashed) atomic write's ".tmp-*.parquet" is not data
            out.extend(sorted(f for f in d.glob("*.parquet") if not f.name.startswith(".")))
    return out


def relative_name(path, root) -> str:
    """``path`` under ``root`` as a relative POSIX name (``transactions/day=2026-01-01/part-0.parquet``): the
    same for a local folder and a URL, so what a snapshot's hash covers does not depend on where it was read."""
    return location(path).relative_to(location(root)).as_posix()


def file_sha256(path) -> str:
    h = hashlib.sha256()
    with local_copy(path).open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


# ---- the input cache: files at a URL, read from local copies ------------------------------------------

CACHE_MB_SETTING = "FRAUDCD_EVENTS_CACHE_MB"
CACHE_MB_DEFAULT = 8192
CACHE_KEEP_S = 600  # a copy used within the last ten minutes is never evicted: a reader may be about to open it
_downloaded = [0]  # bytes this process downloaded since its last eviction pass (a pass stats every copy)


def cache_dir() -> Path:
    """Where local copies of files read at a URL are kept: ``FRAUDCD_HOME/cache/events``."""
    from release.core.home import data_home

    return data_home() / "cache" / "events"


def cache_limit_bytes() -> int:
    """``FRAUDCD_EVENTS_CACHE_MB`` (default 8192): the input cache's size the eviction keeps it under."""
    raw = os.environ.get(CACHE_MB_SETTING, "").strip()
    if not raw:
        return CACHE_MB_DEFAULT << 20
    if not raw.isdigit():
        raise EventsLocationError(f"{CACHE_MB_SETTING}={raw!r}: give the input cache's size in MB, a whole number "
                                  f">= 0 (default {CACHE_MB_DEFAULT}).")
    return int(raw) << 20


def local_copy(path) -> Path:
    """A local file with the bytes of ``path``: a local path as it is; a file at a URL, its copy in the input cache
    (``cache_dir``), keyed by the URL and the object's version (the filesystem's ``ukey``: S3's ETag, taken from the
    listing ``list_partitions`` just made, else asked once). The first reader of a version downloads it (temp file
    beside the copy, size checked, then a rename: a killed download leaves no copy, two processes downloading at
    once land the same bytes); every later read of that version, in any process on this machine, opens the copy.
    A rewritten object has a new version: it is read again. The copy follows the file policy (0640): it holds
    what the event logs hold."""
    path = location(path)
    if not is_remote(path):
        return path
    fs, name = path.fs, path.path
    try:
        info = fs.info(name)
        version = fs.ukey(name)
    except FileNotFoundError:
        raise
    except Exception as e:  # noqa: BLE001 - the filesystem's own errors (botocore's are not OSErrors)
        raise EventsUnreachable(f"Cannot read {path}: {type(e).__name__}: {e}. Check FRAUDCD_EVENTS_URL and how "
                                f"{_storage(path)} is reached.") from e
    key = hashlib.sha256(f"{path}\0{version}".encode()).hexdigest()
    target = cache_dir() / key[:2] / f"{key}{Path(name).suffix}"
    try:
        os.utime(target)  # used now: the eviction keeps it
        return target
    except FileNotFoundError:
        pass
    fd, tmp = _temp_file(target, ".part")
    try:
        with os.fdopen(fd, "wb") as out, fs.open(name, "rb") as src:
            shutil.copyfileobj(src, out, 1 << 20)
            size = out.tell()
        if info.get("size") is not None and size != int(info["size"]):
            raise EventsUnreachable(f"Reading {path} gave {size:,} bytes where the store lists {int(info['size']):,}; "
                                    "nothing was kept. Read it again.")
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    _downloaded[0] += size
    if _downloaded[0] >= cache_limit_bytes() // 64:  # a pass per 1/64 of the size downloaded: over by that at most
        _downloaded[0] = 0
        evict_cache(keep=target)
    return target


def evict_cache(keep: Path | None = None) -> int:
    """Remove the least recently used copies until the input cache is within ``cache_limit_bytes``, never one used
    within ``CACHE_KEEP_S`` (nor ``keep``); a download killed midway (its temp file an hour old) goes too.
    Returns how many files were removed. ``local_copy`` runs it each time its process has downloaded 1/64 of the
    cache's size since the last pass (every time, at size 0)."""
    root = cache_dir()
    limit, now = cache_limit_bytes(), time.time()
    files = []
    for sub in (root.iterdir() if root.is_dir() else ()):
        for f in (sub.iterdir() if sub.is_dir() else ()):
            try:
                st = f.stat()
            except FileNotFoundError:  # another process evicted it meanwhile
                continue
            files.append((st.st_mtime, st.st_size, f))
    removed, total = 0, sum(size for _, size, _ in files)
    for mtime, size, f in sorted(files, key=lambda x: x[0]):  # the least recently used first
        if f.name.startswith(".tmp-"):  # a download in flight, or one killed midway (an hour old)
            drop = now - mtime > 3600
        else:
            drop = total > limit and f != keep and now - mtime >= CACHE_KEEP_S
        if drop:
            f.unlink(missing_ok=True)
            total -= size
            removed += 1
    return removed


def read_parquet_frame(path, columns: list[str] | None = None) -> pd.DataFrame:
    """``pd.read_parquet`` of a local file or of a file at a URL (its local copy)."""
    return pd.read_parquet(local_copy(path), columns=columns)


def read_parquet_table(path, columns: list[str] | None = None) -> pa.Table:
    """``pq.read_table`` of a local file or of a file at a URL (its local copy)."""
    return pq.read_table(local_copy(path), columns=columns)


def parquet_num_rows(path) -> int:
    """A Parquet file's row count, from its metadata (local or at a URL)."""
    return pq.ParquetFile(local_copy(path)).metadata.num_rows
