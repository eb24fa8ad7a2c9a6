"""Fault battery for the deployment state: concurrent writers and writers killed with SIGKILL mid-change.

Each worker is a real process driving the ramp's Python API against one SQLite state store (WAL,
BEGIN IMMEDIATE). A worker prints a line only after its change committed (an acknowledged change).
Afterwards, whatever was killed where:

- the store opens and passes SQLite's integrity check;
- every acknowledged change is in the audit log, under the version it was acknowledged with;
- the ramp row equals the ``after`` of the last audited ramp change (state and audit never disagree);
- the ramp's version moved once per audited ramp change, never skipping or repeating one.
"""
from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from release.rollout import ramp
from release.state.registry import move_tag, register_model

ROOT = Path(__file__).resolve().parents[3]

WORKER = r"""
import sys
from release.rollout import ramp
name, n = sys.argv[1], int(sys.argv[2])
i = 0
while n < 0 or i < n:
    pct = float(1 + (i * 7 + len(name)) % 99)
    s = ramp.set_pct(pct, at=f"2026-12-01T00:00:{i % 60:02d}+00:00", actor=name, reason=f"{name} step {i}")
    print(f"{s['version']} {pct}", flush=True)
    i += 1
"""


def _start(home: Path, name: str, n: int) -> subprocess.Popen:
    env = dict(os.environ, FRAUDCD_HOME=str(home), PYTHONPATH=str(ROOT))
    return subprocess.Popen([sys.executable, "-c", WORKER, name, str(n)], env=env, cwd=ROOT,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


@pytest.fixture
def shadowed(home):
    prod = register_model("prod\n", workflow={"name": "wf"}, features=["amount"], snapshot_hash="ef" * 32,
                          code_version="t", metrics={}, at="t0", actor="setup").id
    cand = register_model("cand\n", workflow={"name": "wf"}, features=["amount"], snapshot_hash="ef" * 32,
                          code_version="t", metrics={}, at="t0", actor="setup").id
    move_tag("production", prod, at="t0", actor="setup", reason="initial production model")
    ramp.start_shadow("rel-1", cand, at="t1", actor="setup", reason="shadow")
    return home


def _ramp_audit(home: Path) -> list[dict]:
    con = sqlite3.connect(home / "state.db")
    try:
        assert con.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        rows = con.execute("SELECT id, actor, action, after_json FROM audit WHERE entity = 'ramp' ORDER BY id")
        return [{"id": i, "actor": a, "action": act, "after": json.loads(after)} for i, a, act, after in rows]
    finally:
        con.close()


def _acknowledged(out: str) -> list[tuple[int, float]]:
    """The changes a worker acknowledged: complete lines only (a kill can cut the last one short)."""
    acks = []
    for line in out.splitlines(keepends=True):
        if line.endswith("\n"):
            v, pct = line.split()
            acks.append((int(v), float(pct)))
    return acks


def _check_consistent(home: Path, acks: dict[str, list[tuple[int, float]]]) -> list[dict]:
    rows = _ramp_audit(home)
    by_id = {r["id"]: r for r in rows}
    for name, got in acks.items():
        for version, pct in got:
            assert version in by_id, f"{name}'s acknowledged change (version {version}) is not in the audit log"
            assert by_id[version]["actor"] == name and by_id[version]["after"]["pct"] == pct
    now = ramp.current()
    last = rows[-1]
    assert now["version"] == last["id"]
    assert {k: now[k] for k in ("release_id", "candidate_model_id", "pct", "state")} == last["after"]
    return rows


def test_concurrent_writers_are_serialized_and_every_change_audited_once(shadowed):
    before = ramp.current()["version"]
    workers = {f"op{i}": _start(shadowed, f"op{i}", 15) for i in range(4)}
    acks = {}
    for name, p in workers.items():
        out, err = p.communicate(timeout=240)
        assert p.returncode == 0, err
        acks[name] = _acknowledged(out)
        assert len(acks[name]) == 15
    rows = _check_consistent(shadowed, acks)
    changes = [r for r in rows if r["id"] > before]
    assert len(changes) == 60 and all(r["action"] == "ramp_set" for r in changes)
    # versions acknowledged are distinct: no two writers ever saw themselves as the same change
    versions = [v for got in acks.values() for v, _ in got]
    assert len(set(versions)) == 60


@pytest.mark.parametrize("round_", range(3))
def test_writers_killed_mid_change_leave_state_and_audit_agreeing(shadowed, round_):
    workers = {f"k{round_}-{i}": _start(shadowed, f"k{round_}-{i}", -1) for i in range(3)}
    # let each commit a few changes, then SIGKILL all of them at different moments
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        time.sleep(0.2)
        if sum(1 for r in _ramp_audit(shadowed) if r["actor"].startswith(f"k{round_}-")) >= 6:
            break
    for i, p in enumerate(workers.values()):
        time.sleep(0.01 * (i + round_))
        p.send_signal(signal.SIGKILL)
    acks = {}
    for name, p in workers.items():
        out, _ = p.communicate(timeout=60)
        assert p.returncode == -signal.SIGKILL
        acks[name] = _acknowledged(out)
    assert sum(len(a) for a in acks.values()) >= 1
    _check_consistent(shadowed, acks)
    # and the store takes the next change normally
    s = ramp.set_pct(50, at="2026-12-01T01:00:00+00:00", actor="oncall", reason="after the kill")
    assert s["pct"] == 50 and ramp.current()["version"] == s["version"]
