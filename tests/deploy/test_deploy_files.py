"""The deployment files past one machine (deploy/): they cannot run here (no Kubernetes, no container runtime), so
this checks what can be checked: the Helm values parse, run the same DAGs on the CeleryExecutor with PostgreSQL and
Redis, take every secret from a Kubernetes Secret (no literal), point at the DAGs where the image puts them, and
name the Airflow this project installs; the image installs every package the project ships and the Celery extra,
and its default command is a `fraudcd serve` this CLI accepts."""
from __future__ import annotations

import re
from importlib.metadata import version
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
VALUES = ROOT / "deploy" / "helm" / "values.yaml"
DOCKERFILE = ROOT / "deploy" / "Dockerfile"


@pytest.fixture(scope="module")
def values() -> dict:
    return yaml.safe_load(VALUES.read_text())


def _walk(node, path=()):
    if isinstance(node, dict):
        for k, v in node.items():
            yield from _walk(v, (*path, str(k)))
    elif isinstance(node, list):
        for i, v in enumerate(node):
            yield from _walk(v, (*path, str(i)))
    else:
        yield path, node


def test_the_helm_values_run_the_dags_on_celery_with_postgresql_and_redis(values):
    assert values["executor"] == "CeleryExecutor"
    assert values["postgresql"]["enabled"] is False  # a managed PostgreSQL, by Secret
    assert values["data"]["metadataSecretName"] and values["data"]["brokerUrlSecretName"]
    assert values["redis"]["enabled"] is True and values["redis"]["passwordSecretName"]
    assert values["workers"]["replicas"] >= 2
    assert values["dagProcessor"]["enabled"] is True
    assert values["airflowVersion"] == version("apache-airflow")  # the Airflow this project pins and tests
    # the DAGs are the image's: the folder the Dockerfile installs the project in
    workdir = re.search(r"^WORKDIR (\S+)$", DOCKERFILE.read_text(), re.M).group(1)
    assert values["config"]["core"]["dags_folder"] == f"{workdir}/dags"
    assert values["dags"]["gitSync"]["enabled"] is False and values["dags"]["persistence"]["enabled"] is False
    assert values["config"]["core"]["dags_are_paused_at_creation"] == "True"
    # the data folder every worker shares, and the state store
    env = {e["name"]: e["value"] for e in values["env"]}
    mounts = {m["mountPath"] for m in values["volumeMounts"]}
    assert any(env["FRAUDCD_HOME"].startswith(m + "/") for m in mounts)
    claims = {v["name"]: v["persistentVolumeClaim"]["claimName"] for v in values["volumes"]}
    assert {m["name"] for m in values["volumeMounts"]} <= claims.keys()


def test_every_secret_comes_from_a_kubernetes_secret(values):
    # the chart's keys that would carry a literal secret are unset; the *SecretName ones are set
    for literal in ("fernetKey", "apiSecretKey", "jwtSecret"):
        assert values.get(literal) is None
    for literal in ("metadataConnection", "resultBackendConnection", "brokerUrl"):
        assert values["data"].get(literal) is None
    for where in ("apiServer", "webserver"):  # the chart's default user has a literal password
        assert values[where]["defaultUser"]["enabled"] is False
    named = {values["fernetKeySecretName"], values["apiSecretKeySecretName"], values["jwtSecretName"],
             values["data"]["metadataSecretName"], values["data"]["brokerUrlSecretName"],
             values["redis"]["passwordSecretName"], *(s["secretName"] for s in values["secret"])}
    header = VALUES.read_text().split("\nimages:")[0]
    for name in named:  # each Secret the install needs is listed, with its key, in the file's header
        assert re.search(rf"^#\s+{re.escape(name)}\s+key `[\w-]+`", header, re.M), name
    assert {s["envName"] for s in values["secret"]} == {"FRAUDCD_STATE_URL"}
    for path, value in _walk(values):
        if isinstance(value, str):
            assert not re.search(r"://[^/\s]*:[^@/\s]+@", value), (path, "a URL with a password")
            assert not re.search(r"(?i)(password|secret|token)", path[-1]) or path[-1].endswith(
                ("SecretName", "secretName", "secretKey")) or value == "", path


def test_the_image_installs_the_project_and_serves_by_default():
    text = DOCKERFILE.read_text()
    assert re.search(r"^FROM python:3\.11[-\w.]*$", text, re.M)  # the project's Python
    assert "pip install --no-cache-dir -e '.[celery,s3]'" in text
    copied = set(re.findall(r"^COPY (\S+) \./\1$", text, re.M))
    import tomllib

    packages = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"]["find"]["include"]
    assert {p.rstrip("*") for p in packages} | {"dags", "config"} <= copied  # config: release/core/defaults links to it
    assert "libgomp1" in text  # LightGBM's OpenMP runtime, which a slim image lacks
    cmd = yaml.safe_load(re.search(r"^CMD (\[.*\])$", text, re.M).group(1))
    assert cmd[:2] == ["fraudcd", "serve"]

    from typer.testing import CliRunner

    from release.cli.main import app

    helped = CliRunner().invoke(app, ["serve", "--help"], env={"COLUMNS": "200"})
    assert helped.exit_code == 0
    for option in cmd[2::2]:
        assert option in helped.output, option
