"""`fraudcd status` (release/cli/releases.py): beside the models, the ramp and the last release, the newest
alerts from the state store, newest first, in the table and in --json."""
from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from release.cli.main import app
from release.state.alerts import notify_once, raise_alert

runner = CliRunner()


@pytest.fixture
def wide(monkeypatch):
    """A terminal wide enough that table cells are not wrapped."""
    from release.cli import common

    monkeypatch.setattr(common.console, "width", 400)


def test_status_shows_the_newest_ten_alerts_newest_first(home, wide):
    for i in range(11):
        raise_alert("ramp_inconclusive", f"rel-1: step {i} stayed inconclusive", at=f"2026-03-01T10:{i:02d}:00+00:00",
                    severity="warning", details={"release_id": "rel-1"})
    notify_once("release_rolled_back", "rel-1", "rel-1 rolled back: production is unchanged. [bold]x[/]",
                at="2026-03-01T11:00:00+00:00", severity="warning")
    r = runner.invoke(app, ["status"])
    assert r.exit_code == 0, r.output
    lines = [line for line in r.output.splitlines() if "2026-03-01T" in line]
    assert len(lines) == 10
    assert ("- 2026-03-01T11:00:00+00:00 warning release_rolled_back: rel-1 rolled back: production is unchanged. "
            "[bold]x[/]") in lines[0]  # markup in a message prints as it is
    assert [f"step {i} stayed" in line for i, line in zip(range(10, 1, -1), lines[1:])] == [True] * 9
    assert "step 1 stayed" not in r.output and "step 0 stayed" not in r.output
    assert "... and 2 older (the report index, reports/index.html, lists more)" in r.output

    r = runner.invoke(app, ["status", "--json"])
    assert r.exit_code == 0, r.output
    out = json.loads(r.output)
    assert out["alerts_total"] == 12 and len(out["alerts"]) == 10
    assert out["alerts"][0] == {"at": "2026-03-01T11:00:00+00:00", "kind": "release_rolled_back",
                                "severity": "warning", "details": {"release_id": "rel-1"},
                                "message": "rel-1 rolled back: production is unchanged. [bold]x[/]"}
    assert [a["message"] for a in out["alerts"][1:]] == [f"rel-1: step {i} stayed inconclusive"
                                                         for i in range(10, 1, -1)]


def test_status_without_alerts_says_none(home, wide):
    from release.state.store import open_store

    open_store("create")
    r = runner.invoke(app, ["status"])
    assert r.exit_code == 0, r.output
    assert "│ newest alerts │ none │" in " ".join(r.output.split())
    assert json.loads(runner.invoke(app, ["status", "--json"]).output)["alerts"] == []
