"""`fraudcd report RELEASE | --all | serve`: a release's report regenerated from the state store and its folder
(a real release: tests/analysis/test_report.py's, in a fresh state store), and the reports served for real
(`fraudcd report serve` in a subprocess on a loopback port) to holders of the reports token only."""
from __future__ import annotations

import json
import re
import selectors
import signal
import subprocess
import sys

import httpx
import pytest
from deployment_world import free_port

from release.core.settings import PROJECT_ROOT, REPORT_NAME, paths
from tests.analysis.test_report import FAILING, RID, _release
from tests.release.cli.runner import fraudcd, said


@pytest.fixture
def released(home, monkeypatch) -> str:
    """A release judged offline (stopped by a failed gate), with its evaluation in its folder; no report yet."""
    rid, _, _ = _release(home, monkeypatch, FAILING)
    return rid


def test_a_release_report_is_rewritten_from_the_store_and_its_folder(released):
    from release.state.releases import get_release

    target = paths().reports / f"{released}.html"
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text("<html>an old report</html>")
    r = fraudcd("report", released)
    assert r.exit_code == 0, r.output
    assert r.stdout == f"{target}\n"  # the path alone, unwrapped
    raw = target.read_text()
    assert "an old report" not in raw and "<title>" in raw and released in raw and 'class="banner stop"' in raw
    assert get_release(released)["report_path"] == str(target)
    assert f'href="{released}.html"' in (paths().reports / "index.html").read_text()  # the index, rewritten too

    r = fraudcd("report", "--json", released)  # --json before or after the release
    assert r.exit_code == 0, r.output
    assert json.loads(r.stdout) == {"release": released, "report": str(target),
                                    "index": str(paths().reports / "index.html")}


def test_an_unknown_release_is_bad_input_naming_the_releases_there_are(home):
    assert fraudcd("db", "--create", "--as", "ana").exit_code == 0
    r = fraudcd("report", "rel-1999-01-01")
    assert r.exit_code == 2
    assert ("no release 'rel-1999-01-01' in the state store: it has no releases yet (`fraudcd release --as-of "
            "YYYY-MM-DD` runs one)") in said(r)


def test_an_unknown_release_among_others_names_them(released):
    r = fraudcd("report", "rel-1999-01-01")
    assert r.exit_code == 2
    assert (f"no release 'rel-1999-01-01' in the state store; its releases, newest first: {released} (`fraudcd "
            "status` shows the latest, `fraudcd report --all` rewrites every report)") in said(r)
    assert not (paths().reports / "rel-1999-01-01.html").exists()


def test_all_rewrites_every_report_and_the_index(released):
    r = fraudcd("report", "--all")
    assert r.exit_code == 0, r.output
    report, index = paths().reports / f"{released}.html", paths().reports / "index.html"
    assert r.stdout.startswith(f"[1/1] {released}: {report} (") and r.stdout.endswith(f" s)\nindex: {index}\n")
    assert released in report.read_text() and f'href="{released}.html"' in index.read_text()
    r = fraudcd("report", "--all", "--json")
    assert r.exit_code == 0, r.output
    assert json.loads(r.stdout) == {"reports": {released: str(report)}, "refused": {}, "index": str(index)}


def test_a_release_whose_evaluation_is_gone_keeps_its_report(released):
    from release.orchestration.cycle import release_dir

    assert fraudcd("report", released).exit_code == 0
    report = paths().reports / f"{released}.html"
    before = report.read_text()
    (release_dir(released) / "evaluation.json").unlink()
    r = fraudcd("report", released)
    assert r.exit_code == 1
    assert f"{released} was evaluated, but its folder" in said(r) and "holds no evaluation.json" in said(r)
    assert "Its report is left as it was; restore the folder and run this again" in said(r)
    r = fraudcd("report", "--all")
    assert r.exit_code == 1 and "refused:" in said(r) and "index:" in said(r)
    assert report.read_text() == before


@pytest.mark.parametrize("args, message", [
    (["report", "--json"], "say which report: `fraudcd report RELEASE` for one release, `fraudcd report --all` "
                           "for every release"),
    (["report", "--all", RID], f"got both '{RID}' and --all"),
    (["report", "--all", "serve"], "got both 'serve' and --all"),
    (["report", "serve", "--port", "0"], "--port must be in [1, 65535]; got 0"),
    (["report", "serve", "--bogus"], "No such option: --bogus"),
])
def test_bad_input_exits_2(home, args, message):
    r = fraudcd(*args)
    assert r.exit_code == 2, r.output
    assert message in said(r)


def test_report_names_are_whole_file_names_of_html_files():
    for name in ("index.html", RID + ".html", "a.html"):
        assert REPORT_NAME.fullmatch(name), name
    for name in ("index.htm", "../state.db", "..%2Fstate.db", ".tmp-x.html", "a/b.html", "x.html\n", "x.html.bak",
                 "state.db", "", ".html"):
        assert not REPORT_NAME.fullmatch(name), name


def test_serving_off_loopback_warns(home, monkeypatch):
    from release.serving import reports

    served = []

    def listened(app, sock):  # bound and listening, then closed: nothing is served off loopback here
        served.append(sock.getsockname())
        sock.close()

    monkeypatch.setattr(reports, "serve_reports", listened)
    r = fraudcd("report", "serve", "--host", "0.0.0.0", "--port", str(free_port()))
    assert r.exit_code == 0, r.output
    assert "warning: serving on 0.0.0.0, not loopback, over plain HTTP" in said(r) and served
    assert reports.is_loopback("127.0.0.1") and reports.is_loopback("::1") and reports.is_loopback("localhost")
    assert not reports.is_loopback("0.0.0.0") and not reports.is_loopback("192.168.1.10")


# ---- `fraudcd report serve`, for real -------------------------------------------------------------------------

SECURITY = {"cache-control": "no-store", "x-content-type-options": "nosniff", "referrer-policy": "no-referrer"}
CSP = "default-src 'none'; style-src 'unsafe-inline'; script-src 'unsafe-inline'; img-src data:"


def _serve(port: int) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "release.cli.main", "report", "serve", "--port", str(port)],
                            cwd=PROJECT_ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _first_line(proc: subprocess.Popen, timeout_s: float = 60.0) -> str:
    """The server's first line on standard output (it prints the link once it listens)."""
    sel = selectors.DefaultSelector()
    sel.register(proc.stdout, selectors.EVENT_READ)
    assert sel.select(timeout_s), f"no line from `fraudcd report serve` in {timeout_s:g} s"
    return proc.stdout.readline()


def _secured(r: httpx.Response) -> None:
    for k, v in SECURITY.items():
        assert r.headers[k] == v, (k, r.headers)
    assert r.headers["content-security-policy"].startswith(CSP)


def test_serve_gives_reports_to_token_holders_only(released, home):
    assert fraudcd("report", "--all").exit_code == 0
    (paths().reports / "notes.txt").write_text("not a report")
    (paths().reports / ".tmp-x.html").write_text("a half-written report")
    port = free_port()
    proc = _serve(port)
    try:
        line = _first_line(proc)
        m = re.fullmatch(rf"serving reports on (http://127\.0\.0\.1:{port})/\?token=(\S+)  \(Ctrl-C stops\)\n", line)
        assert m, (line, proc.stderr.read() if proc.poll() is not None else "")
        base, token = m.groups()
        token_file = home / "reports-token"
        assert token_file.read_text().strip() == token and token_file.stat().st_mode & 0o777 == 0o600
        bearer = {"Authorization": f"Bearer {token}"}

        with httpx.Client(base_url=base, timeout=10) as anon:
            for path in ("/", f"/{released}.html", "/notes.txt", "/?token=not-the-token"):
                r = anon.get(path)
                assert r.status_code == 401, path
                assert "open the link `fraudcd report serve` printed" in r.text and "Bearer" in r.text
                assert r.headers["www-authenticate"] == 'Bearer realm="fraud-cd reports"'
                _secured(r)
            assert anon.get("/", headers={"Authorization": "Bearer not-the-token"}).status_code == 401

        with httpx.Client(base_url=base, timeout=10) as browser:  # the link, then the cookie
            r = browser.get(f"/?token={token}")
            assert r.status_code == 303 and r.headers["location"] == "/"
            cookie = r.headers["set-cookie"]
            assert cookie.startswith(f"fraudcd_reports_{port}=") and token not in cookie
            assert {"httponly", "samesite=strict", "path=/"} <= {p.strip().lower() for p in cookie.split(";")[1:]}
            _secured(r)
            r = browser.get(f"/{released}.html?token={token}")  # a report's own link keeps its address
            assert r.status_code == 303 and r.headers["location"] == f"/{released}.html"
            r = browser.get("/")
            assert r.status_code == 200 and f'href="{released}.html"' in r.text
            assert r.headers["content-type"] == "text/html; charset=utf-8"
            _secured(r)
            r = browser.get(f"/{released}.html")
            assert r.status_code == 200 and 'class="banner stop"' in r.text
            assert r.text == (paths().reports / f"{released}.html").read_text()
            _secured(r)

        with httpx.Client(base_url=base, timeout=10) as script:  # a bearer token, no cookie
            r = script.get(f"/{released}.html", headers=bearer)
            assert r.status_code == 200 and released in r.text and "set-cookie" not in r.headers
            assert script.get("/index.html", headers=bearer).status_code == 200
            # traversal, near-misses and files in the folder that are not reports: 404 (sent as written)
            assert (home / "state.db").is_file()
            for name in ("..%2Fstate.db", "%2E%2E%2Fstate.db", "%2E%2E%2Freports-token", "..%2Freports-token",
                         "index.htm", "notes.txt", ".tmp-x.html", "reports-token", "x.html%0A"):
                r = script.get(f"/{name}", headers=bearer)
                assert r.request.url.raw_path == f"/{name}".encode()  # not normalised away by the client
                assert r.status_code == 404, name
                assert "only the release reports are served here" in r.text
                _secured(r)
            r = script.get("/rel-1999-01-01.html", headers=bearer)
            assert r.status_code == 404 and "`fraudcd report rel-1999-01-01` writes it" in r.text
            assert script.post("/", headers=bearer).status_code == 405

        # the port is taken: a second server says so and exits 2
        second = subprocess.run([sys.executable, "-m", "release.cli.main", "report", "serve", "--port", str(port)],
                                cwd=PROJECT_ROOT, capture_output=True, text=True, timeout=120)
        assert second.returncode == 2
        assert f"port {port} on 127.0.0.1 is in use" in " ".join(second.stderr.split())
        assert second.stdout == ""
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    assert proc.returncode == -signal.SIGTERM  # stopped by SIGTERM alone (uvicorn ends by it once it has stopped)


def test_a_second_serve_reuses_the_token(home):
    from release.serving.reports import reports_token

    first = reports_token(home)
    assert reports_token(home) == first and len(first) >= 32
    (home / "reports-token").write_text("short\n")
    with pytest.raises(ValueError, match="the reports token must be at least 16 characters; got 5. Delete the file"):
        reports_token(home)
