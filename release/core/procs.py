"""This machine's processes, read from ``/proc`` (Linux): one definition of "is it alive", used by `fraudcd up` and
`down` (release/orchestration/airflow_up.py), the data folder's PostgreSQL (release/core/local_postgres.py) and the
tests that check nothing outlives them."""
from __future__ import annotations

from pathlib import Path


def proc_stat(pid: int) -> tuple[str, int] | None:
    """(state, session id) of a process, None when there is none."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return None
    fields = text[text.rindex(")") + 2:].split()
    return fields[0], int(fields[3])


def alive(pid: int) -> bool:
    """The process exists and has not ended (a zombie waiting for its parent has ended)."""
    st = proc_stat(pid)
    return st is not None and st[0] not in ("Z", "X")
