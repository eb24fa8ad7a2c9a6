"""`fraudcd` commands, the "State store" panel of its help. The state store's schema and its audit log."""
from __future__ import annotations

import json
from typing import Optional

import typer
from rich.table import Table

from release.cli.common import _actor, _actor_or_login, _emit, _fail, _out, _reason_given, _row, _store, console

PANEL = "State store"
app = typer.Typer()


@app.command(rich_help_panel=PANEL)
def db(to: Optional[str] = typer.Option(None, help="move the schema to this revision: head, or an older one "
                                                    "(not below the append-only revision 0002)"),
       create: bool = typer.Option(False, "--create", help="start a new, empty store where none is (a missing or "
                                                           "empty file); an existing store is left as it is"),
       actor: Optional[str] = typer.Option(None, "--as", help="who (recorded); needed to go back a revision"),
       reason: Optional[str] = typer.Option(None, help="why (recorded); needed to go back a revision")) -> None:
    """The state store's schema revision (Alembic), or move it with --to, or start a store with --create.
    Nothing else creates or migrates a store, except the commands that start one (train, release,
    backfill, demo: a new store only). Every move is written to the audit log."""
    from release.state import store

    try:
        rev = store.store_revision()
    except store.StoreError as e:
        _fail(str(e), 2)
    if rev is None and not create:
        _fail(str(store.missing_store()), 2)
    if create and rev is None:
        who = _actor_or_login(actor)
        _, rev = store.create_store(actor=who, reason=_reason_given(reason) if reason else "new state store")
        _out(f"created a new state store at {store.where()} (schema revision {rev}), recorded as {who}")
    if to is not None:
        try:
            target = store.migration_target(to)
        except ValueError as e:
            _fail(str(e), 2)
        revs = store.revisions()
        down = rev in revs and revs.index(target) < revs.index(rev)
        who = _actor(actor) if down else _actor_or_login(actor)
        why = _reason_given(reason or "") if down else (reason or "").strip() or f"schema upgrade to {target}"
        try:
            rev = store.migrate(store.writer_engine(), to, actor=who, reason=why)
        except ValueError as e:
            _fail(str(e), 2)
        except Exception as e:  # noqa: BLE001 - Alembic's own errors, said in one line
            _fail(f"Cannot migrate the state store to {to!r}: {type(e).__name__}: {e}", 2)
    head = store.head_revision()
    behind = "" if rev == head else f" (this fraud-cd reads and writes {head}: run `fraudcd db --to head`)"
    _out(f"state store {store.where()}: schema revision {rev}{behind}")



@app.command(rich_help_panel=PANEL)
def audit(limit: int = typer.Option(30, min=1, help="the latest this many rows"),
          as_json: bool = typer.Option(False, "--json")) -> None:
    """The append-only audit log: who, when, what, why, before and after."""
    from release.state.store import audit_log

    _store("read")
    rows = audit_log(limit=limit)
    if as_json:
        return _emit(rows, True)
    t = Table(title="audit log")
    for c in ("at", "actor", "os user / via", "action", "entity", "reason"):
        t.add_column(c)
    for r in rows:
        via = f"{r['os_user'] or '-'} / {r['via'] or '-'}"
        airflow = json.loads(r["context_json"] or "{}").get("airflow")
        if airflow:
            via += f" ({airflow.get('dag_id', '?')}.{airflow.get('task_id', '?')})"
        what = r["action"] + (f" (data date {r['logical_date'][:10]})" if r["logical_date"] else "")
        _row(t, r["at"], r["actor"], via, what, r["entity"], r["reason"])
    console.print(t)

