"""What every `fraudcd` command shares: the consoles, printing data as it is, errors with exit codes, the
state store check, and who and why (the audit's own checks, as CLI errors)."""
from __future__ import annotations

import datetime as dt
import json
import re
import sys
from typing import Optional

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table
from rich.text import Text

console = Console()
err = Console(stderr=True)


def _now() -> str:
    """Wall-clock time of a person's action (CLI only; pipeline tasks use their data interval)."""
    return dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")


def _fail(msg: str, code: int) -> None:
    err.print(f"[bold red]error:[/] {escape(msg)}", highlight=False, emoji=False)
    raise typer.Exit(code)


_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f]")


def _plain(text: str) -> str:
    """``text`` with control characters shown as escapes (an ESC sequence in stored data must not drive
    an operator's terminal); newlines and tabs stay."""
    return _CONTROL.sub(lambda m: repr(m.group())[1:-1], text)


def _out(line: str, c: Console | None = None) -> None:
    """Print a line that holds data as it is: no markup, no emoji codes (a merchant may be named
    `[bold red]M1` and a person `--as '[/]'`), no terminal control sequences."""
    (c or console).print(_plain(line), markup=False, emoji=False, highlight=False)


def _note(kind: str, line: str, colour: str = "yellow") -> None:
    """`kind: line` on standard error, the kind coloured, the line as it is."""
    err.print(Text.assemble((f"{kind}:", colour), " ", line), highlight=False)


def _row(t: Table, *cells) -> None:
    """A table row whose cells print as they are (Text is never read as markup); pass a Text to style one."""
    t.add_row(*[c if isinstance(c, Text) else Text("" if c is None else _plain(str(c))) for c in cells])


def _store(mode: str) -> None:
    """Check the state store before a command uses it (see release.state.store.open_store): a missing, damaged
    or unmigrated store is bad input (exit 2) with the command that fixes it."""
    from release.state import store

    try:
        store.open_store(mode)
    except store.StoreError as e:
        _fail(str(e), 2)


def _emit(obj, as_json: bool, table: Table | None = None) -> None:
    if as_json:
        sys.stdout.write(json.dumps(obj, indent=2, default=str) + "\n")
    elif table is not None:
        console.print(table)


def _actor(name: Optional[str], option: str = "--as") -> str:
    """A person's stated name: the audit's check (release.state.store.checked_actor), and not a name of
    fraud-cd's own automation (a person's change must not read as the pipeline's)."""
    from release.state.store import automation_name, checked_actor

    if name is None or not name.strip():
        _fail(f"say who you are with {option} NAME (every money-moving change records who made it)", 2)
    try:
        name = checked_actor(name)
    except ValueError as e:
        _fail(f"{option}: {e}", 2)
    if automation_name(name):
        _fail(f"{option} {name!r} is reserved: names beginning with 'fraud-cd' belong to fraud-cd's own automation "
              "(pipeline, bootstrap, ramp controller), so a person's change cannot look like theirs. Give your own "
              "name, e.g. --as 'ana (on-call)'.", 2)
    return name


AS_HELP = "who (recorded); default: your Airflow user when Airflow runs for real, else your OS login"


def _actor_or_login(name: Optional[str], airflow: bool = False) -> str:
    """The stated name; without one, who the environment says the caller is, said out loud and marked in the
    audit row (``actor_source``): with ``airflow`` (commands that answer Airflow's approval question), the user
    of their Airflow token when Airflow runs for real (release.orchestration.airflow_api: FRAUDCD_AIRFLOW_TOKEN,
    or FRAUDCD_AIRFLOW_USER and its password; Airflow there with no usable credentials refuses the command
    before anything changes); else the OS login. Emergency controls (ramp pause, rollback) never wait on
    Airflow for a name: they take the OS login."""
    from release.state.store import note_context, os_user

    if name is not None:
        return _actor(name)
    if airflow:
        from release.orchestration import airflow_api

        try:
            api = airflow_api.connect()  # one login per process: _airflow_identity() asks the same
        except airflow_api.AirflowAPIError as e:
            _fail(f"{e} (or give a name with --as NAME); nothing was changed", 2)
        if api is not None:
            user = _actor(api.user, "the Airflow user")
            _note("note", f"no --as given: recorded as {user!r} (your Airflow user at {api.base})")
            note_context(actor_source="airflow_user")
            return user
    login = os_user()
    _note("note", f"no --as given: recorded as {login!r} (your OS login); say who you are with --as NAME")
    note_context(actor_source="os_user")
    return login


def _reason_given(reason: str) -> str:
    """The audit's check of a reason (release.state.store.checked_reason), as a CLI error."""
    from release.state.store import checked_reason

    if not reason or not reason.strip():
        _fail("give a reason with --reason (every money-moving change records why)", 2)
    try:
        return checked_reason(reason, "this change")
    except ValueError as e:
        _fail(f"--reason: {e}", 2)


def _fmt(x, spec: str = ".4f") -> str:
    return "-" if x is None or x != x else format(x, spec)


_COLOUR = {"pass": "green", "fail": "red", "insufficient data": "yellow"}


def _verdict_summary(vs: list[dict]) -> Text:
    """One line per stage: counts of each verdict (the detail is `fraudcd verdicts RELEASE`)."""
    out = Text()
    for i, stage in enumerate(dict.fromkeys(v["stage"] for v in vs)):
        counts = {}
        for v in vs:
            if v["stage"] == stage:
                counts[v["verdict"]] = counts.get(v["verdict"], 0) + 1
        out.append(("\n" if i else "") + f"{stage}: ")
        for j, (k, n) in enumerate(counts.items()):
            out.append(", " if j else "")
            out.append(f"{n} {k}", style=_COLOUR.get(k, ""))
    return out


def _verdict_table(vs: list[dict]) -> None:
    """Verdicts grouped by stage and contract, one line per slice with the sentence that explains it."""
    key = None
    for v in vs:
        if (v["stage"], v["contract"]) != key:
            key = (v["stage"], v["contract"])
            gate = "gate" if v["gate"] else "warn only"
            console.print(Text.assemble("\n", (f"{v['stage']} / {v['contract']}", "bold"), f" ({gate})"),
                          highlight=False)
        console.print(Text.assemble("  ", (f"{v['verdict']:>17}", _COLOUR.get(v["verdict"], "")), "  ",
                                    str(v["sentence"])), highlight=False)


def _airflow_identity() -> None:
    """When Airflow runs for real (release.orchestration.airflow_api), the caller's user there (their token's)
    joins the audit context before anything is recorded; with an API server but no usable credentials the
    command is refused before anything changes. The `airflow dags test` harness has no API server: nothing."""
    from release.orchestration import airflow_api
    from release.state.store import note_context

    try:
        api = airflow_api.connect()
    except airflow_api.AirflowAPIError as e:
        _fail(f"{e}; nothing was changed", 2)
    if api is not None:
        note_context(airflow_user=api.user, airflow_url=api.base)
