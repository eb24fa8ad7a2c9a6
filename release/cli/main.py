"""`fraudcd`: one entry point for people and scripts.

One typer app composed of per-domain groups, each in its own module: data (event logs, training sets),
releases (models, a release's run and verdicts, waivers, rollback; `report`: a release's report
regenerated, and the reports served to people), serving (the scoring service and its
load), state (the store's schema, the audit log), airflow (the demo, `up`, `down`), and the people's
controls as sub-commands: thresholds and ramp.

Exit codes: 0 ok; 1 a contract failed or the action was refused; 2 bad input (a missing, damaged or
unmigrated state store included).
"""
from __future__ import annotations

import sys

import typer
from rich.markup import escape

from release.cli import airflow, data, releases, serving, state
from release.cli.common import err
from release.cli.ramp import ramp_app
from release.cli.report import report_app
from release.cli.thresholds import thresholds_app

app = typer.Typer(add_completion=False, no_args_is_help=True, help=__doc__)
for group in (data, releases, serving, state, airflow):  # their commands, at the top level, in panels
    app.add_typer(group.app)
app.add_typer(report_app, name="report", rich_help_panel=releases.PANEL)
app.add_typer(thresholds_app, name="thresholds", rich_help_panel="People's controls")
app.add_typer(ramp_app, name="ramp", rich_help_panel="People's controls")


@app.callback()
def _cli(ctx: typer.Context) -> None:
    from release.state.store import acting

    # every audit row a command writes records that it came from the CLI, and which command
    ctx.with_resource(acting("cli", command=f"fraudcd {ctx.invoked_subcommand}"))


def main() -> None:
    from sqlalchemy import exc as sa_exc

    from release.core.config import ConfigError
    from release.core.io import apply_umask
    from release.state.store import StoreError

    apply_umask()  # one permission policy for everything this process writes (release/core/io.py)
    try:
        app()
    except (StoreError, ConfigError) as e:  # a broken store or configuration: said, not a traceback
        err.print(f"[bold red]error:[/] {escape(str(e))}", highlight=False)
        sys.exit(2)
    except sa_exc.DBAPIError as e:  # the database itself: busy (retry) or damaged (nothing was changed)
        from release.core.settings import state_url

        text = str(getattr(e, "orig", e))
        if "locked" in text or "busy" in text:
            err.print(f"[bold red]error:[/] the state store is busy: another change held it for 30 s ({escape(text)}); "
                      "nothing was changed, try again", highlight=False)
            sys.exit(1)
        err.print(f"[bold red]error:[/] the state store at {escape(state_url())} is damaged or unreadable "
                  f"({escape(text)}); nothing was changed. Restore it from a backup (SQLite: `PRAGMA "
                  "integrity_check` says where)", highlight=False)
        sys.exit(2)


if __name__ == "__main__":
    main()
