"""`fraudcd` commands, the "Scoring service" panel of its help. The scoring service and the load it is sent."""
from __future__ import annotations

import datetime as dt
from typing import Optional

import typer

from release.cli.common import _fail, _store

PANEL = "Scoring service"
app = typer.Typer()


@app.command(rich_help_panel=PANEL)
def serve(host: str = typer.Option("127.0.0.1", help="address to listen on"),
          port: int = typer.Option(8000, help="port to listen on"),
          seed_day: Optional[str] = typer.Option(None, "--seed-day", help="YYYY-MM-DD: card and merchant history "
                                                 "is read from the event logs before this day (default: the day "
                                                 "after the last one logged)"),
          controller: bool = typer.Option(False, "--controller/--no-controller",
                                          help="also run the ramp controller (guardrails, automatic steps)"),
          config: Optional[str] = typer.Option(None, help="service YAML (default: config/service.yaml)")) -> None:
    """The scoring service: POST /score answers allow or block; GET /state shows the deployment it serves."""
    from pathlib import Path

    from release.core.config import ConfigError
    from release.serving.service import load_service_config, serve as run

    try:
        day = dt.date.fromisoformat(seed_day) if seed_day else None
        load_service_config(Path(config) if config else None)
    except (ValueError, ConfigError) as e:
        _fail(str(e), 2)
    if not 0 < port < 65536:
        _fail(f"--port must be in [1, 65535]; got {port}", 2)
    _store("write")
    run(host=host, port=port, seed_day=day, controller=controller, config=Path(config) if config else None)



@app.command(rich_help_panel=PANEL)
def replay(day: str = typer.Option(..., help="the day to replay, YYYY-MM-DD"),
           rate: float = typer.Option(300.0, help="requests per second (0: as fast as possible)"),
           url: str = typer.Option("http://127.0.0.1:8000", help="the scoring service"),
           limit: Optional[int] = typer.Option(None, help="send at most this many transactions"),
           concurrency: int = typer.Option(32, help="requests in flight at most"),
           as_json: bool = typer.Option(False, "--json")) -> None:
    """Send a day of transactions from the event logs through the scoring service (exit 1 if any failed)."""
    from release.serving.replay import replay_command

    replay_command(day, rate=rate, url=url, limit=limit, concurrency=concurrency, as_json=as_json)

