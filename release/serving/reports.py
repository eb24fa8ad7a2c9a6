"""The release reports over HTTP, to people (``fraudcd report serve``): the index at ``/`` and each report at
``/<release id>.html``, read from ``FRAUDCD_HOME/reports`` as they are at each request.

Who may read them: whoever holds the reports token, a secret generated once into ``FRAUDCD_HOME/reports-token``
(0600: readable by the data folder's owner only, who hands the link on) and reused by every later serve; delete
the file to change it (every link and cookie given out before stops working at the next serve). A reader needs
no role: the scoring service's tokens (``config/service.yaml``) are held by machines, for scoring and its
state, and are not handed to people for reading reports.

- ``GET /?token=<token>`` (the link the command prints; any served path takes it) with the right token: a
  cookie for this server (HttpOnly, SameSite=Strict) and a 303 to the same address without the token, so
  the secret leaves the address bar; a wrong token: 401.
- every other request: the cookie, or ``Authorization: Bearer <token>`` (scripts); neither: 401 with a
  short text saying how to get in.
- only report names (release.core.settings.REPORT_NAME, the Airflow plugin's too) are served; anything
  else, present in the folder or not (``../state.db``, ``index.htm``, ``.tmp-*``), is a 404. The name is
  looked at only once the caller is known: a stranger learns nothing of what the folder holds.
- every answer: ``Cache-Control: no-store``, ``X-Content-Type-Options: nosniff``, ``Referrer-Policy:
  no-referrer`` and a Content-Security-Policy that lets a report's inline styles and scripts run and
  nothing reach the network (a report is one self-contained file).

Plain HTTP: on loopback (the default) nothing crosses the network; on any other address the token and the
reports do, unencrypted (the command warns). Cookies are not bound to a port: a browser also sends this
one to other servers on the same host name, so its value is not the token itself but a digest of it, and
its name carries the port (two servers on one host keep their own).
"""
from __future__ import annotations

import errno
import hashlib
import hmac
import ipaddress
import os
import secrets
import socket
import tempfile
from pathlib import Path
from urllib.parse import urlencode

from release.core.settings import REPORT_NAME

TOKEN_FILE = "reports-token"  # in FRAUDCD_HOME
MIN_TOKEN_CHARS = 16
HEADERS = {
    "Cache-Control": "no-store",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    # a report's inline CSS and any inline script, inline SVG and data: images; nothing fetched, no frame,
    # no form, no <base>
    "Content-Security-Policy": "default-src 'none'; style-src 'unsafe-inline'; script-src 'unsafe-inline'; "
                               "img-src data:; base-uri 'none'; form-action 'none'; frame-ancestors 'none'",
}


class ReportsServeError(ValueError):
    """The reports cannot be served as asked (the token file is unusable, the address cannot be bound)."""


def reports_token(home: Path) -> str:
    """The reports token in ``home/reports-token``, made (0600, 32 random bytes, URL-safe) when there is none.
    Two first serves at once agree: the file appears whole, once (a link of a private temporary file)."""
    f = Path(home) / TOKEN_FILE
    if not f.exists():
        f.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=f.parent, prefix=".tmp-")  # 0600
        try:
            with os.fdopen(fd, "w") as out:
                out.write(secrets.token_urlsafe(32) + "\n")
            os.link(tmp, f)
        except FileExistsError:
            pass  # another serve made it first: that one is the token
        finally:
            os.unlink(tmp)
    token = f.read_text().strip()
    if len(token) < MIN_TOKEN_CHARS:
        raise ReportsServeError(f"{f}: the reports token must be at least {MIN_TOKEN_CHARS} characters; got "
                                f"{len(token)}. Delete the file and serve again: a new one is made.")
    return token


def _cookie_value(token: str) -> str:
    """What the cookie holds: a digest of the token (it works as this server's cookie, not as a token)."""
    return hmac.new(token.encode(), b"fraud-cd reports cookie", hashlib.sha256).hexdigest()


def reports_app(reports_dir: Path, token: str, port: int):
    """The ASGI app serving ``reports_dir`` to holders of ``token`` (see the module's docstring); ``port`` names
    its cookie."""
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import RedirectResponse, Response
    from starlette.routing import Route

    reports_dir = Path(reports_dir)
    cookie_name, cookie_value = f"fraudcd_reports_{port}", _cookie_value(token)
    way_in = ("The release reports need the reports token: open the link `fraudcd report serve` printed when it "
              "started (http://HOST:PORT/?token=...), or send `Authorization: Bearer <token>`. The token is in "
              f"{TOKEN_FILE} in the fraud-cd data folder (FRAUDCD_HOME), readable by its owner only.\n")

    def text(status: int, body: str, **headers) -> Response:
        return Response(body, status_code=status, media_type="text/plain; charset=utf-8", headers=headers)

    def unauthorized(why: str) -> Response:
        return text(401, f"401 Unauthorized: {why}. {way_in}",
                    **{"WWW-Authenticate": 'Bearer realm="fraud-cd reports"'})

    def same(given: str, expected: str) -> bool:
        return hmac.compare_digest(given.encode(), expected.encode())

    def page(request: Request) -> Response:
        asked = request.scope["path"].removeprefix("/")  # as sent, decoded (the route's match may drop a final newline)
        name = asked or "index.html"
        query = request.query_params
        if "token" in query:
            if not same(query["token"], token):
                return unauthorized("the token in the link is not this server's reports token")
            # the same address without the token (an address that is no report's: the index)
            rest = urlencode([(k, v) for k, v in query.multi_items() if k != "token"])
            where = "/" + (asked if REPORT_NAME.fullmatch(name) else "")
            where += f"?{rest}" if rest else ""
            out = RedirectResponse(where, status_code=303)
            out.set_cookie(cookie_name, cookie_value, httponly=True, samesite="strict", path="/")
            return out
        scheme, _, bearer = request.headers.get("authorization", "").partition(" ")
        if scheme.lower() == "bearer" and bearer.strip():
            if not same(bearer.strip(), token):
                return unauthorized("the bearer token is not this server's reports token")
        elif not same(request.cookies.get(cookie_name, ""), cookie_value):
            return unauthorized("no token was sent" if cookie_name not in request.cookies
                                else "the cookie is not this server's (the reports token changed?)")
        if not REPORT_NAME.fullmatch(name):
            return text(404, f"404 Not Found: only the release reports are served here: the index at / and "
                             f"<release id>.html; {name!r} is not one.\n")
        path = reports_dir / name
        try:
            body = path.read_bytes()
        except (FileNotFoundError, IsADirectoryError, NotADirectoryError):
            hint = ("`fraudcd report --all` writes it" if name == "index.html"
                    else f"`fraudcd report {name.removesuffix('.html')}` writes it, if that release exists")
            return text(404, f"404 Not Found: no {name} in {reports_dir} (yet): {hint}.\n")
        return Response(body, media_type="text/html; charset=utf-8")

    app = Starlette(routes=[Route("/{name:path}", page, methods=["GET", "HEAD"])])
    return _with_headers(app)


def _with_headers(app):
    """``app`` with HEADERS on every answer, Starlette's own (405, 500) included."""
    extra = [(k.lower().encode(), v.encode()) for k, v in HEADERS.items()]

    async def asgi(scope, receive, send):
        async def send_with_headers(message):
            if message["type"] == "http.response.start":
                message = {**message, "headers": [*message.get("headers", []), *extra]}
            await send(message)

        return await app(scope, receive, send_with_headers if scope["type"] == "http" else send)
    return asgi


def is_loopback(host: str) -> bool:
    """Whether ``host`` names this machine only (127.0.0.0/8, ::1, localhost)."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def listening_socket(host: str, port: int) -> socket.socket:
    """A socket bound to ``host:port`` and listening, or ReportsServeError saying why not (a port in use, an
    address this machine does not have, a name that does not resolve)."""
    try:
        family, kind, proto, _, address = socket.getaddrinfo(host.strip("[]"), port, type=socket.SOCK_STREAM,
                                                             flags=socket.AI_PASSIVE)[0]
    except socket.gaierror as e:
        raise ReportsServeError(f"--host {host!r} does not resolve to an address ({e.strerror}); give an address "
                                "of this machine, e.g. 127.0.0.1") from None
    sock = socket.socket(family, kind, proto)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # a restart need not wait out TIME_WAIT
        sock.bind(address)
        sock.listen(128)
    except OSError as e:
        sock.close()
        if e.errno == errno.EADDRINUSE:
            raise ReportsServeError(f"port {port} on {host} is in use (another `fraudcd report serve`, or another "
                                    "program); choose another with --port") from None
        raise ReportsServeError(f"cannot listen on {host}:{port}: {e.strerror}") from None
    return sock


def serve_reports(app, sock: socket.socket) -> None:
    """Serve ``app`` on the listening ``sock`` until SIGINT or SIGTERM. No access log: a request line may
    carry the token."""
    import uvicorn

    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", access_log=False, lifespan="off",
                                           server_header=False, timeout_graceful_shutdown=5))
    server.run(sockets=[sock])
