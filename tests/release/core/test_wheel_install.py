"""The configuration is found through settings in any install, not only in a checkout (issue 18).

A wheel is built from this tree and unpacked into a folder; a Python without this project's editable finder
(``-S``: no site-packages processing, so no ``__editable__`` hook) imports the package from that folder alone and
loads every shipped configuration file through ``settings``. The data folder then defaults to a per-user place,
never to site-packages.
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

from release.core.settings import PROJECT_ROOT

PROBE = r"""
import json, sys
from release.core import settings
from release.core.pipeline import load_pipeline
from release.modeling.training import load_workflow
from release.rollout.ramp import load_plan
from release.serving.service import load_service_config
from analysis.thresholds import load_threshold_config
from contracts.evaluator import load_contracts

cfg = settings.config_dir()
load_pipeline(cfg / "pipeline.yaml")
wfs = sorted(p.name for p in (cfg / "workflows").glob("*.yaml"))
for p in (cfg / "workflows").glob("*.yaml"):
    load_workflow(p)
load_plan(cfg / "ramp.yaml")
load_service_config(cfg / "service.yaml")
load_threshold_config(cfg / "thresholds.yaml")
cs = load_contracts(settings.contracts_file())
print(json.dumps({"release": settings.__file__, "config": str(cfg), "workflows": wfs,
                  "contracts": str(settings.contracts_file()), "n_contracts": len(cs.contracts),
                  "home": str(settings.paths().home), "in_checkout": settings.in_checkout()}))
"""


def test_a_wheel_finds_its_configuration_and_keeps_data_out_of_site_packages(tmp_path):
    # Built from a copy: setuptools writes build/ and *.egg-info beside the sources, and a stale build/ would
    # leak old files into the wheel.
    src = tmp_path / "src"
    shutil.copytree(PROJECT_ROOT, src, symlinks=True, ignore=shutil.ignore_patterns(
        ".git", ".venv", "var", "build", "*.egg-info", "logs", "__pycache__", ".pytest_cache", "node_modules"))
    out = tmp_path / "dist"
    subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation", "-w", str(out),
                    str(src)], check=True, capture_output=True, text=True, timeout=300)
    (wheel,) = out.glob("fraud_cd-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    shipped = sorted(p.relative_to(PROJECT_ROOT / "config").as_posix()
                     for p in (PROJECT_ROOT / "config").rglob("*.yaml"))
    assert sorted(n.removeprefix("release/core/defaults/") for n in names
                  if n.startswith("release/core/defaults/")) == shipped
    assert "contracts/release.yaml" in names

    site = tmp_path / "site"
    zipfile.ZipFile(wheel).extractall(site)
    deps = sysconfig.get_paths()["purelib"]
    env = {k: v for k, v in os.environ.items() if not k.startswith("FRAUDCD_")}
    env.update(PYTHONPATH=os.pathsep.join([str(site), deps]), XDG_DATA_HOME=str(tmp_path / "xdg"),
               PYTHONDONTWRITEBYTECODE="1")
    r = subprocess.run([sys.executable, "-S", "-c", PROBE], cwd=tmp_path, env=env, capture_output=True, text=True,
                       timeout=300)
    assert r.returncode == 0, r.stderr
    got = json.loads(r.stdout.strip().splitlines()[-1])
    assert Path(got["release"]).is_relative_to(site), got  # the wheel's code, not this checkout's
    assert Path(got["config"]) == site / "release" / "core" / "defaults"
    assert got["workflows"] == sorted(p.name for p in (PROJECT_ROOT / "config" / "workflows").glob("*.yaml"))
    assert Path(got["contracts"]) == site / "contracts" / "release.yaml" and got["n_contracts"] > 0
    assert got["in_checkout"] is False
    assert Path(got["home"]) == tmp_path / "xdg" / "fraud-cd"


def test_a_checkout_reads_config_from_its_own_folder(monkeypatch):
    from release.core import settings

    monkeypatch.delenv("FRAUDCD_CONFIG", raising=False)
    assert settings.in_checkout()
    assert settings.config_dir() == (PROJECT_ROOT / "config").resolve()
    monkeypatch.delenv("FRAUDCD_HOME", raising=False)
    assert settings.paths().home == (PROJECT_ROOT / "var").resolve()
