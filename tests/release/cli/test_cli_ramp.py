"""`fraudcd ramp ...`: the on-call controls, their exit codes (0 ok, 1 refused, 2 bad input), --json,
and the audit trail they leave."""
from __future__ import annotations

import json

import pytest

from release.rollout import ramp
from release.state import registry
from release.state.registry import move_tag, register_model
from release.state.store import audit_log
from tests.release.cli.runner import fraudcd


@pytest.fixture
def shadowing(home):
    def reg(text):
        return register_model(text, workflow={"name": "wf"}, features=["amount"], snapshot_hash="ef" * 32,
                              code_version="t", metrics={}, at="t0", actor="trainer").id

    prod, cand = reg("prod\n"), reg("cand\n")
    move_tag("production", prod, at="t0", actor="setup", reason="initial production model")
    ramp.start_shadow("rel-1", cand, at="t1", actor="pipeline", reason="thresholds approved")
    return prod, cand


def test_an_on_call_walk_through_the_ramp(shadowing):
    prod, cand = shadowing
    r = fraudcd("ramp", "set", "5", "--as", "ana", "--reason", "first step by hand", "--json")
    assert r.exit_code == 0, r.output
    assert {k: json.loads(r.output)[k] for k in ("state", "pct", "updated_by")} == {
        "state": "ramping", "pct": 5.0, "updated_by": "ana"}
    assert fraudcd("ramp", "pause", "--as", "bo", "--reason", "merchant complaint").exit_code == 0
    st = json.loads(fraudcd("ramp", "status", "--json").output)
    assert (st["state"], st["pct"], st["production_model_id"]) == ("paused", 5.0, prod)
    assert fraudcd("ramp", "resume", "--as", "bo", "--reason", "complaint unrelated").exit_code == 0
    assert fraudcd("ramp", "set", "100", "--as", "ana", "--reason", "all good").exit_code == 0
    r = fraudcd("ramp", "promote", "--as", "ana", "--reason", "every step passed")
    assert r.exit_code == 0 and "promoted" in r.output
    assert registry.tagged("production").id == cand and registry.tagged("previous").id == prod
    r = fraudcd("ramp", "rollback", "--as", "bo", "--reason", "chargebacks up after promotion")
    assert r.exit_code == 0 and "rolled back" in r.output
    assert registry.tagged("production").id == prod
    trail = [(a["action"], a["actor"], a["reason"]) for a in audit_log(entity_prefix="ramp")]
    assert trail[1:] == [("ramp_set", "ana", "first step by hand"), ("ramp_pause", "bo", "merchant complaint"),
                         ("ramp_resume", "bo", "complaint unrelated"), ("ramp_set", "ana", "all good"),
                         ("promote", "ana", "every step passed"),
                         ("model_rollback", "bo", "chargebacks up after promotion")]


def test_status_reads_as_a_sentence(shadowing):
    r = fraudcd("ramp", "status")
    text = " ".join(r.output.split())  # the terminal wraps long lines
    assert r.exit_code == 0
    assert "ramp: shadow at 0% - release rel-1" in text and "last change by pipeline: thresholds approved" in text
    assert f"production: {shadowing[0]}" in text


@pytest.mark.parametrize("args, code, message", [
    (["ramp", "set", "150", "--as", "ana", "--reason", "x"], 2, "PCT must be a percentage in [0, 100]; got 150"),
    (["ramp", "set", "5", "--reason", "x"], 2, "say who you are with --as NAME"),
    (["ramp", "set", "5", "--as", "ana", "--reason", " "], 2, "give a reason with --reason"),
    (["ramp", "promote", "--as", "ana", "--reason", "x"], 1, "Only a candidate ramped to 100% can be promoted"),
    (["ramp", "resume", "--as", "ana", "--reason", "x"], 1, "Only a paused ramp can be resumed"),
])
def test_bad_input_exits_2_and_a_refusal_exits_1(shadowing, args, code, message):
    n = len(audit_log())
    r = fraudcd(*args)
    assert r.exit_code == code, r.output
    assert message in " ".join(r.output.split())
    assert len(audit_log()) == n  # nothing changed


def test_nothing_to_ramp_is_refused(home):
    r = fraudcd("ramp", "set", "5", "--as", "ana", "--reason", "x")
    assert r.exit_code == 2 and "No state store at" in r.output and not (home / "state.db").exists()
    assert fraudcd("db", "--create", "--as", "ana").exit_code == 0
    r = fraudcd("ramp", "set", "5", "--as", "ana", "--reason", "x")
    assert r.exit_code == 1 and "nothing to ramp" in r.output


def test_rollback_is_one_command_and_defaults_to_your_login(shadowing):
    fraudcd("ramp", "set", "50", "--as", "ana", "--reason", "half")
    r = fraudcd("ramp", "rollback", "--reason", "3 a.m. page: declines up in BR")
    assert r.exit_code == 0
    st = ramp.current()
    assert (st["state"], st["pct"], st["reason"]) == ("rolled_back", 0.0, "3 a.m. page: declines up in BR")
    from release.state.store import os_user

    assert st["updated_by"] == os_user()  # the login of whoever typed it, said out loud
    assert f"no --as given: recorded as {os_user()!r} (your OS login)" in " ".join(r.output.split())
    row = audit_log()[-1]
    assert (row["actor"], row["os_user"], row["via"]) == (os_user(), os_user(), "cli")
    assert json.loads(row["context_json"])["actor_source"] == "os_user"
