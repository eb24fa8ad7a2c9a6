"""How the CLI finds a running Airflow's REST API and who it is there (release.orchestration.airflow_api).
The calls themselves run against a real API server in tests/dags/test_up_down.py."""
from __future__ import annotations

import base64
import json
import socket

import pytest

from release.core.config import ConfigError
from release.orchestration import airflow_api


def _jwt(claims: dict) -> str:
    def part(obj) -> str:
        return base64.urlsafe_b64encode(json.dumps(obj).encode()).decode().rstrip("=")

    return f"{part({'alg': 'HS512', 'typ': 'JWT'})}.{part(claims)}.signature"


@pytest.fixture
def no_airflow(monkeypatch, home):
    for var in ("FRAUDCD_AIRFLOW_URL", "FRAUDCD_AIRFLOW_TOKEN", "FRAUDCD_AIRFLOW_USER", "FRAUDCD_AIRFLOW_PASSWORD"):
        monkeypatch.delenv(var, raising=False)
    return monkeypatch


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]  # closed again when the block ends: nothing listens there


def test_the_token_names_its_user():
    assert airflow_api.token_subject(_jwt({"sub": "analyst", "role": "user"})) == "analyst"
    assert airflow_api.token_subject(_jwt({"role": "user"})) is None
    assert airflow_api.token_subject("not a token") is None
    assert airflow_api.token_subject("a.%%%.c") is None


def test_no_api_server_configured_or_running_is_the_harness(no_airflow):
    assert airflow_api.connect() is None


def test_an_api_server_that_does_not_answer_is_said(no_airflow):
    no_airflow.setenv("FRAUDCD_AIRFLOW_URL", f"http://127.0.0.1:{_closed_port()}")
    no_airflow.setenv("FRAUDCD_AIRFLOW_TOKEN", _jwt({"sub": "analyst"}))
    with pytest.raises(airflow_api.AirflowAPIError, match="does not answer"):
        airflow_api.connect()


def test_an_api_server_without_credentials_asks_who_you_are(no_airflow):
    no_airflow.setenv("FRAUDCD_AIRFLOW_URL", f"http://127.0.0.1:{_closed_port()}")
    with pytest.raises(airflow_api.AirflowAPIError, match="FRAUDCD_AIRFLOW_TOKEN"):
        airflow_api.connect()
    no_airflow.setenv("FRAUDCD_AIRFLOW_USER", "analyst")  # a login needs its password too
    with pytest.raises(airflow_api.AirflowAPIError, match="FRAUDCD_AIRFLOW_PASSWORD"):
        airflow_api.connect()


@pytest.mark.parametrize("url", ["127.0.0.1:8080", "ftp://example.org", "file:///etc/passwd"])
def test_a_url_that_is_not_http_is_a_configuration_error(no_airflow, url):
    no_airflow.setenv("FRAUDCD_AIRFLOW_URL", url)
    with pytest.raises(ConfigError, match="FRAUDCD_AIRFLOW_URL"):
        airflow_api.connect()
