"""Airflow's REST API, as the CLI talks to a running Airflow: no database, no route functions.

Where the API server is and who is calling come from the environment (``release.core.settings.airflow_api``):

- ``FRAUDCD_AIRFLOW_URL``: the API server (``http://host:port``). Unset, the API server that `fraudcd up` runs
  on this machine for this ``FRAUDCD_HOME`` is used when it is running;
- ``FRAUDCD_AIRFLOW_TOKEN``: a bearer token issued to the person (by Airflow's ``POST /auth/token``, or the
  auth manager in front of it), or ``FRAUDCD_AIRFLOW_USER`` and ``FRAUDCD_AIRFLOW_PASSWORD``, exchanged for
  one at ``POST /auth/token``.

Who answers a question in Airflow is the token's user, as Airflow records it (``responded_by``), never a typed
name; the state store's audit row carries the same user (``airflow_user``) beside the OS login.

With no API server configured and none running, ``connect`` returns None: that is the `airflow dags test`
harness of `make demo` and the end-to-end tests, which runs no API server (release.orchestration.hitl answers
through Airflow's own handler in-process there, and only there).
"""
from __future__ import annotations

import base64
import functools
import json
import urllib.error
import urllib.parse
from dataclasses import dataclass

from release.core.settings import airflow_api
from release.orchestration.airflow_up import call_json, running


class AirflowAPIError(RuntimeError):
    """A call to Airflow's REST API failed; the message says which call, the status and Airflow's answer."""

    def __init__(self, message: str, status: int | None = None):
        super().__init__(message)
        self.status = status


def _json(url: str, method: str, body: dict | None, token: str | None, timeout_s: float) -> dict:
    """airflow_up.call_json, its failures said as AirflowAPIError (which call, the status, Airflow's answer)."""
    try:
        return call_json(url, method, body, token, timeout_s)
    except urllib.error.HTTPError as e:
        detail = e.read().decode(errors="replace")[:500]
        raise AirflowAPIError(f"{method} {url}: HTTP {e.code}: {detail}", e.code) from None
    except (urllib.error.URLError, TimeoutError, ConnectionError) as e:
        raise AirflowAPIError(f"{method} {url}: the Airflow API server does not answer ({e})") from None


def token_subject(token: str) -> str | None:
    """The ``sub`` claim of a JWT (Airflow's auth managers put the user name there). Read, not verified:
    ``connect`` only trusts it after the API server accepted the token."""
    try:
        payload = token.split(".")[1]
        claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    except (IndexError, ValueError):
        return None
    sub = claims.get("sub") if isinstance(claims, dict) else None
    return str(sub) if sub is not None else None


@dataclass(frozen=True)
class AirflowAPI:
    base: str  # http://host:port, no trailing slash
    token: str
    user: str  # the token's user, as the API server accepted it
    timeout_s: float = 15.0

    def call(self, method: str, path: str, body: dict | None = None, **query) -> dict:
        """``path`` under /api/v2; ``query`` values that are lists repeat the parameter."""
        qs = urllib.parse.urlencode({k: v for k, v in query.items() if v is not None}, doseq=True)
        return _json(f"{self.base}/api/v2/{path.lstrip('/')}" + (f"?{qs}" if qs else ""), method, body, self.token,
                     self.timeout_s)


def _default_url() -> str | None:
    """The API server `fraudcd up` runs for this FRAUDCD_HOME, when it is running."""
    rec = running().get("api-server")
    return f"http://127.0.0.1:{rec['port']}" if rec and rec.get("port") else None


def connect() -> AirflowAPI | None:
    """The REST API of the Airflow that runs for real, with the caller's token; None when none is configured
    or running (the `airflow dags test` harness). Raises AirflowAPIError when an API server is there but no
    credentials are configured, or it refuses them."""
    cfg = airflow_api()
    url = cfg.url or _default_url()
    if url is None:
        return None
    return _connect(url.rstrip("/"), cfg.token, cfg.user, cfg.password)


@functools.lru_cache(maxsize=8)
def _connect(url: str, token: str | None, login: str | None, password: str | None) -> AirflowAPI:
    """One login and one check per API server and credentials in a process (a CLI command asks who the caller
    is, then finds and answers the question: one token, not three). A failure is not kept: it raises."""
    if token is None:
        if not (login and password):
            raise AirflowAPIError(
                f"Airflow runs at {url}: say who you are to it with FRAUDCD_AIRFLOW_TOKEN (a token issued to you), "
                "or FRAUDCD_AIRFLOW_USER and FRAUDCD_AIRFLOW_PASSWORD (your Airflow login)")
        token = _json(f"{url}/auth/token", "POST", {"username": login, "password": password}, None,
                      15.0).get("access_token")
        if not token:
            raise AirflowAPIError(f"POST {url}/auth/token gave no access_token for {login!r}")
    # one authenticated call: the token is accepted before its user is believed
    _json(f"{url}/api/v2/dags?limit=1", "GET", None, token, 15.0)
    user = token_subject(token)
    if not user:
        raise AirflowAPIError(f"the token for {url} names no user (no 'sub' claim)")
    return AirflowAPI(base=url, token=token, user=user)
