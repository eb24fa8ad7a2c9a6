"""A long-lived process keeps seeing what other processes write to the SQLite state store.

Found walking the README: `fraudcd release` waited for the approval by reading the release's status every half
second, and never saw it change. `store_revision` had read the file's header with Python's own open() and
close(); on POSIX, closing any descriptor of a file drops every lock the process holds on it, SQLite's too. The
next process to close its last connection then found no other reader, checkpointed the write-ahead log and
deleted it, and the long-lived process went on reading the deleted one: a frozen snapshot (and any write it
made there would have been lost)."""
from __future__ import annotations

import os
import subprocess
import sys


def _register_elsewhere(name: str) -> str:
    code = ("from release.state.registry import register_model\n"
            f"m = register_model({name!r}, workflow={{'name': 'wf'}}, features=['amount'], snapshot_hash='ab' * 32,"
            " code_version='t', metrics={}, at='t0', actor='another process')\n"
            "print(m.id)\n")
    r = subprocess.run([sys.executable, "-c", code], env=dict(os.environ), capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr[-2000:]
    return r.stdout.strip().splitlines()[-1]


def test_a_reader_that_checked_the_store_still_sees_writes_of_other_processes(home):
    from release.state import store
    from release.state.registry import get_model

    store.open_store("create")
    first = _register_elsewhere("model one\n")
    assert get_model(first, missing_ok=True) is not None  # a pooled connection is open in this process now
    for _ in range(3):  # what the CLI and the harness do again and again: check the store, then read
        store.store_revision()
        later = _register_elsewhere(f"model {_}\n")
        assert get_model(later, missing_ok=True) is not None, "this process reads a stale snapshot"
    wal = home / "state.db-wal"
    fds = []
    for fd in os.listdir("/proc/self/fd"):
        try:
            fds.append(os.readlink(f"/proc/self/fd/{fd}"))
        except FileNotFoundError:  # the listing's own descriptor, closed already
            pass
    assert not any(f.endswith("(deleted)") and f.startswith(str(home)) for f in fds), fds
    assert wal.exists()
