"""The `fraudcd` command run in-process (typer's CliRunner) for the CLI tests, and what it printed."""
from __future__ import annotations

from typer.testing import CliRunner

from release.cli.main import app

runner = CliRunner()


def fraudcd(*args: str):
    return runner.invoke(app, list(args))


def said(r) -> str:
    """What the command printed (both streams), with the terminal's line wrapping undone."""
    return " ".join(r.output.split())
