"""`fraudcd report`: release reports, regenerated or served to people.

`fraudcd report RELEASE`: rewrite RELEASE's report and the index from the state store and the release's
folder; prints the report's path (`--json`: the report's and the index's, for machines).

`fraudcd report --all`: rewrite every release's report, then the index.

`fraudcd report serve [--host 127.0.0.1] [--port 8090]`: serve the index and the reports over HTTP to
holders of the reports token (release/serving/reports.py); prints the link to open.

Exit codes: 0 ok; 1 refused (a release's evaluation is gone from its folder: its report is left as it
was); 2 bad input (no such release, a port in use, a missing state store).
"""
from __future__ import annotations

import time
from typing import Optional

import typer
from typer.core import TyperGroup

from release.cli.common import _emit, _fail, _note, _plain, _store

REGENERATE = "regenerate"  # the hidden command behind `fraudcd report RELEASE` and `fraudcd report --all`
LISTED = 10  # known releases named when a release is not found


class _ReleaseOrCommand(TyperGroup):
    """The `report` group: a first word that names one of its commands (`serve`) runs that command; anything
    else (a release id, `--all`, `--json`) goes to the hidden `regenerate` command. Routed in click's
    ``resolve_command``, so `fraudcd report rel-2026-05-17` and `fraudcd report serve` both read as written."""

    def resolve_command(self, ctx, args):
        if args and args[0] not in self.commands:
            args = [REGENERATE, *args]
        return super().resolve_command(ctx, args)

    def collect_usage_pieces(self, ctx) -> list[str]:
        return ["RELEASE | --all | serve [OPTIONS]"]


report_app = typer.Typer(cls=_ReleaseOrCommand, no_args_is_help=True, help=__doc__,
                         context_settings={"ignore_unknown_options": True})  # `--all` reaches `regenerate`


def _line(text: str) -> None:
    """A line as it is (no control characters), never wrapped: paths and links are copied from it."""
    typer.echo(_plain(text))


def _unknown_release(release_id: str) -> str:
    """Why ``release_id`` has no report to regenerate, and the releases that do."""
    from release.state.releases import releases_newest_first

    ids = [r["id"] for r in releases_newest_first()]
    if not ids:
        return (f"no release {release_id!r} in the state store: it has no releases yet (`fraudcd release --as-of "
                "YYYY-MM-DD` runs one)")
    more = f", and {len(ids) - LISTED} older" if len(ids) > LISTED else ""
    return (f"no release {release_id!r} in the state store; its releases, newest first: {', '.join(ids[:LISTED])}"
            f"{more} (`fraudcd status` shows the latest, `fraudcd report --all` rewrites every report)")


def _lost_evidence(release_id: str) -> str | None:
    """Why regenerating the release's report would lose what it shows, or None: a release judged offline
    whose folder no longer holds its evaluation would be reported as never evaluated."""
    from release.orchestration.cycle import release_dir
    from release.state.releases import release_verdicts

    folder = release_dir(release_id)
    if (folder / "evaluation.json").exists() or not any(v["stage"] == "offline" for v in release_verdicts(release_id)):
        return None
    return (f"{release_id} was evaluated, but its folder {folder} holds no evaluation.json (moved or deleted?): "
            "its report, rewritten now, would show no evidence. Its report is left as it was; restore the folder "
            "and run this again")


@report_app.command(REGENERATE, hidden=True)
def regenerate(release: Optional[str] = typer.Argument(None, help="the release id, e.g. rel-2026-05-17"),
               every: bool = typer.Option(False, "--all", help="every release's report, and the index"),
               as_json: bool = typer.Option(False, "--json")) -> None:
    """Rewrite a release's report (or every one's, with --all) and the index; print where."""
    from analysis.report import write_index
    from release.core.settings import paths
    from release.orchestration.cycle import write_release_report
    from release.state.releases import get_release, releases_newest_first

    if (release is not None) == every:  # neither, or both
        _fail("say which report: `fraudcd report RELEASE` for one release, `fraudcd report --all` for every "
              "release" + (f"; got both {release!r} and --all" if every else ""), 2)
    _store("write")  # writing a report records where it is
    if release is not None:
        try:
            get_release(release)
        except KeyError:
            _fail(_unknown_release(release), 2)
        if why := _lost_evidence(release):
            _fail(why, 1)
        path = write_release_report(release)
        if as_json:
            return _emit({"release": release, "report": path, "index": str(paths().reports / "index.html")}, True)
        return _line(path)  # the path alone: `xdg-open "$(fraudcd report RELEASE)"`
    written, refused = {}, {}
    ids = [r["id"] for r in releases_newest_first()]
    for i, rid in enumerate(ids, 1):
        if why := _lost_evidence(rid):
            refused[rid] = why
            _note("refused", why)
            continue
        start = time.perf_counter()
        written[rid] = write_release_report(rid)
        if not as_json:
            _line(f"[{i}/{len(ids)}] {rid}: {written[rid]} ({time.perf_counter() - start:.1f} s)")
    index = str(write_index(paths().reports))  # also when there is no release (and so no report) at all
    if as_json:
        _emit({"reports": written, "refused": refused, "index": index}, True)
    else:
        _line(f"index: {index}" + ("" if ids else " (no releases yet)"))
    if refused:
        raise typer.Exit(1)


@report_app.command()
def serve(host: str = typer.Option("127.0.0.1", help="address to listen on (anything but loopback: the token and "
                                                     "the reports cross the network unencrypted)"),
          port: int = typer.Option(8090, help="port to listen on")) -> None:
    """Serve the index and the reports over HTTP to holders of the reports token (FRAUDCD_HOME/reports-token,
    made on first serve, 0600). Prints the link to open: it carries the token once, then a cookie does;
    scripts send `Authorization: Bearer <token>`. Until Ctrl-C."""
    from urllib.parse import quote

    from release.core.settings import paths
    from release.serving.reports import (ReportsServeError, is_loopback, listening_socket, reports_app,
                                         reports_token, serve_reports)

    if not 0 < port < 65536:
        _fail(f"--port must be in [1, 65535]; got {port}", 2)
    try:
        token = reports_token(paths().home)
        sock = listening_socket(host, port)
    except ReportsServeError as e:
        _fail(str(e), 2)
    if not is_loopback(host):
        _note("warning", f"serving on {host}, not loopback, over plain HTTP: the token and the reports cross the "
                         "network unencrypted. Put a TLS proxy in front, or serve on 127.0.0.1 and reach it over SSH "
                         "(`ssh -L`)")
    if not (paths().reports / "index.html").exists():
        _note("note", f"no index in {paths().reports} yet: `fraudcd report --all` writes it")
    shown = f"[{host}]" if ":" in host else host
    _line(f"serving reports on http://{shown}:{port}/?token={quote(token)}  (Ctrl-C stops)")
    serve_reports(reports_app(paths().reports, token, port), sock)
