"""`fraudcd up` / `fraudcd down` with real processes: the four Airflow components start detached on a free
port, report healthy, and a task runs through scheduler -> LocalExecutor -> task runner -> the API server's
execution API (signed with the shared JWT secret: without it every task failed with `Invalid auth token`).
The DAG run is triggered through the REST API with the configured admin's generated password. `down`
leaves none of the started processes alive; both commands are idempotent.

The CLI answers a waiting approval through the REST API only, as the user of its own token: a stand-in for
the release DAG (its dag and task ids, the real ThresholdApprovalOperator) parks on a pending threshold set,
and `fraudcd thresholds approve` answers it with no access to Airflow's metadata database at all.

A person answers one in Airflow's UI: headless Chromium (the system's, as in tests/analysis/test_report_browser.py)
signs in as an approver, opens Required Actions and approves; the state store and the REST API say the answer
arrived, by whom, and that the run went on."""
from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from release.core.procs import alive as _alive

pytestmark = [pytest.mark.slow]

DAG = '''
import pendulum
from airflow.sdk import dag, task


@dag(schedule=None, start_date=pendulum.datetime(2026, 1, 1, tz="UTC"), catchup=False)
def up_down_probe():
    @task
    def probe():
        print("a real task ran")

    probe()


up_down_probe()
'''


STAND_IN = '''
"""A stand-in for the release DAG around its approval task (same dag and task ids; manual runs only)."""
from datetime import timedelta

import pendulum
from airflow.sdk import dag, task

from release.orchestration.approval_task import ThresholdApprovalOperator


@dag(dag_id="release", schedule=None, start_date=pendulum.datetime(2026, 1, 1, tz="UTC"), catchup=False)
def release():
    @task
    def request_approval(data_interval_end=None) -> str:
        from release.orchestration.cycle import as_date, release_id_for

        return release_id_for(as_date(data_interval_end))

    approve = ThresholdApprovalOperator(task_id="approve_thresholds", release_task_id="request_approval",
                                        retries=0, response_timeout=timedelta(seconds=600))

    @task
    def after(rid: str) -> None:
        from release.orchestration.cycle import get_release

        print("RELEASE_STATUS=" + get_release(rid)["status"])

    request_approval() >> approve
    after(approve.output)


release()
'''


CADENCE = '''
"""Probes of the release DAG's schedule: a publisher of the training-set asset (the date it publishes is the
run's conf), and a DAG scheduled on that asset whose first task is the release DAG's gate."""
import pendulum
from airflow.sdk import dag, task

from release.orchestration.assets import TRAINING_SET


@dag(schedule=None, start_date=pendulum.datetime(2026, 1, 1, tz="UTC"), catchup=False)
def publish_probe():
    @task(outlets=[TRAINING_SET])
    def build(outlet_events=None, dag_run=None):
        from release.orchestration.cycle import published_extra

        outlet_events[TRAINING_SET].extra = published_extra(dag_run.conf["as_of"], None, "ab" * 32)

    build()


@dag(schedule=[TRAINING_SET], start_date=pendulum.datetime(2026, 1, 1, tz="UTC"), catchup=False)
def gate_probe():
    @task
    def snapshot(triggering_asset_events=None, data_interval_end=None, dag_run=None) -> str:
        from release.orchestration.cycle import release_day_or_skip

        return release_day_or_skip(triggering_asset_events, data_interval_end, dag_run.run_after).isoformat()

    @task
    def after(day: str) -> None:
        print("RELEASE_DAY=" + day)

    after(snapshot())


publish_probe()
gate_probe()
'''


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _fraudcd(env: dict, *args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run([str(Path(sys.executable).with_name("fraudcd")), *args], env=env, capture_output=True,
                          text=True, timeout=timeout)


def _session_members(leader: int) -> set[int]:
    out = set()
    for p in Path("/proc").iterdir():
        if p.name.isdigit():
            try:
                text = (p / "stat").read_text()
            except OSError:
                continue
            if int(text[text.rindex(")") + 2:].split()[3]) == leader:
                out.add(int(p.name))
    return out


@pytest.fixture(scope="module")
def airflow_up(tmp_path_factory):
    """`fraudcd up` on its defaults: Airflow's metadata and the state store in the data folder's own PostgreSQL
    (the pgserver wheel). The data folder held a SQLite state store before (as after `make demo`'s way of
    working): `up` moves it there."""
    root = tmp_path_factory.mktemp("up-down")
    home, dags = root / "home", root / "dags"
    dags.mkdir()
    (dags / "up_down_probe.py").write_text(DAG)
    (dags / "release_stand_in.py").write_text(STAND_IN)
    (dags / "cadence_probes.py").write_text(CADENCE)
    (home / "airflow").mkdir(parents=True)
    port = _free_port()
    env = dict(os.environ, FRAUDCD_HOME=str(home), AIRFLOW__CORE__DAGS_FOLDER=str(dags),
               AIRFLOW__LOGGING__BASE_LOG_FOLDER=str(home / "airflow" / "logs"))
    for var in ("AIRFLOW__API_AUTH__JWT_SECRET", "AIRFLOW__CORE__FERNET_KEY", "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN",
                "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN_ASYNC", "FRAUDCD_STATE_URL",
                "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE", "AIRFLOW__CORE__EXECUTION_API_SERVER_URL"):
        env.pop(var, None)
    subprocess.run([sys.executable, "-c", "from release.state.store import create_store; "
                    "create_store(actor='ops', reason='the store before up')"], env=env, check=True)
    t0 = time.monotonic()
    try:
        done = _fraudcd(env, "up", "--port", str(port), "--timeout", "150")
        yield home, port, env, done, time.monotonic() - t0
    finally:  # whatever failed, nothing outlives the tests
        _fraudcd(env, "down", "--timeout", "20")


def _request(url: str, body: dict | None = None, token: str | None = None, method: str | None = None) -> dict:
    headers = {"Content-Type": "application/json"}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    req = urllib.request.Request(url, data=None if body is None else json.dumps(body).encode(), headers=headers,
                                 method=method)
    with urllib.request.urlopen(req, timeout=15) as r:
        return json.loads(r.read())


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args, **kwargs):
        return None


def _status(url: str, token: str | None = None, cookie: str | None = None) -> tuple[int, str, str | None]:
    """(status, body, Location) of a GET, redirects not followed."""
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    if cookie:
        headers["Cookie"] = f"_token={cookie}"
    try:
        with urllib.request.build_opener(_NoRedirect).open(urllib.request.Request(url, headers=headers),
                                                           timeout=15) as r:
            return r.status, r.read().decode(), r.headers.get("Location")
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode(errors="replace"), e.headers.get("Location")


def _login(home: Path, user: str) -> dict:
    """The environment of a person at a terminal: their Airflow login, and no way into Airflow's database."""
    password = json.loads((home / "airflow" / "passwords.json").read_text())[user]
    return {"FRAUDCD_AIRFLOW_USER": user, "FRAUDCD_AIRFLOW_PASSWORD": password,
            "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"sqlite:///{home / 'no-such-folder' / 'airflow.db'}"}


def _admin_token(home: Path, base: str) -> str:
    return _request(f"{base}/auth/token", {"username": "admin", "password": json.loads(
        (home / "airflow" / "passwords.json").read_text())["admin"]})["access_token"]


def _logs(home: Path) -> str:
    """The Airflow components' own logs (`fraudcd up` writes them under FRAUDCD_HOME/airflow/run)."""
    return "".join(p.read_text(errors="replace") for p in (home / "airflow" / "run").glob("*.log"))


def _to_the_approval(home: Path, base: str, day: str) -> tuple[str, dict, str]:
    """The release of ``day`` awaiting its threshold approval in the state store (FRAUDCD_HOME must be
    ``home``), and a run of the release DAG (the stand-in) triggered to ask for it (``_parked`` waits until
    it does). Returns (release id, the DAG run, an admin token)."""
    import pandas as pd

    from release.orchestration.cycle import _update_release, start_release
    from release.state import approvals
    from release.state.registry import register_model

    rid = f"rel-{day}"
    m = register_model("model\n", workflow={"name": "wf"}, features=["amount"], snapshot_hash="cd" * 32,
                       code_version="t", metrics={}, at="t0", actor="trainer").id
    start_release(pd.Timestamp(day).date(), "cd" * 32)
    _update_release(rid, candidate_model_id=m)
    for st in ("trained", "evaluated", "contracts_passed", "awaiting_approval"):
        _update_release(rid, status=st)
    approvals.create_set(m, rid, pd.DataFrame({"merchant_id": ["M1", "M2"], "suggested_threshold": [0.6, 0.9],
                                               "support": [900, 500], "segment": "large", "reason": "r"}),
                         0.8, at="t1", actor="fraud-cd pipeline", reason="suggested")

    admin = _admin_token(home, base)
    run = _request(f"{base}/api/v2/dags/release/dagRuns", {"logical_date": f"{day}T00:00:00Z"}, admin)
    return rid, run, admin


def _parked(home: Path, base: str, run: dict, admin: str) -> None:
    """Once the run's approval task waits for an answer (awaiting input), ready to be answered."""
    waiting, deadline = [], time.monotonic() + 120
    while not waiting and time.monotonic() < deadline:
        time.sleep(1)
        waiting = [h for h in _request(f"{base}/api/v2/dags/release/dagRuns/~/hitlDetails?response_received=false",
                                       token=admin)["hitl_details"]
                   if h["task_instance"]["state"] == "awaiting_input"
                   and h["task_instance"]["dag_run_id"] == run["dag_run_id"]]
    assert waiting, f"the approval task never parked\n{_logs(home)[-3000:]}"
    # A person answers minutes later; the tests answer at once. Airflow 3.3's scheduler must first take in the
    # parked workload's end ("executor event with state success"): a resumed task queued before it is marked
    # failed (seen once on a loaded machine: "TI was not in the running state"). Wait for that line, bounded.
    parked = (f"Received executor event with state success for task instance TaskInstanceKey(dag_id='release', "
              f"task_id='approve_thresholds', run_id='{run['dag_run_id']}'")
    until = time.monotonic() + 60
    while parked not in (home / "airflow" / "run" / "scheduler.log").read_text(errors="replace") and \
            time.monotonic() < until:
        time.sleep(0.5)


def _finished(base: str, run: dict, token: str, timeout: float = 120) -> str:
    """The DAG run's state once it ended (or where it stands at ``timeout``)."""
    state, deadline = run["state"], time.monotonic() + timeout
    while state not in ("success", "failed") and time.monotonic() < deadline:
        time.sleep(1)
        state = _request(f"{base}/api/v2/dags/release/dagRuns/{run['dag_run_id']}", token=token)["state"]
    return state


def _approved_rows(rid: str) -> list[dict]:
    """The audit rows of the approval of ``rid``'s thresholds (each test approves its own release)."""
    from release.state.store import audit_log

    return [a for a in audit_log() if a["action"] == "thresholds_approved"
            and json.loads(a["after_json"])["release_id"] == rid]


def test_the_cli_answers_an_approval_over_rest_as_its_token_user(airflow_up, monkeypatch):
    from release.orchestration.cycle import get_release
    from release.state import approvals

    home, port, env, done, _ = airflow_up
    assert done.returncode == 0, done.stdout + done.stderr
    base = f"http://127.0.0.1:{port}"
    monkeypatch.setenv("FRAUDCD_HOME", str(home))  # the state store the tasks of this Airflow use
    rid, run, admin = _to_the_approval(home, base, "2026-03-01")
    _parked(home, base, run, admin)

    cli = dict(env)
    cli.pop("FRAUDCD_AIRFLOW_USER", None)
    # Airflow runs here, and nobody said who they are to it: refused, nothing recorded
    no_db = {"AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": _login(home, "analyst")["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"]}
    r = _fraudcd({**cli, **no_db}, "thresholds", "approve", "--release", rid, "--as", "Dana", "--reason",
                 "looks right")
    assert r.returncode == 2 and "FRAUDCD_AIRFLOW_TOKEN" in r.stderr and "nothing was changed" in r.stderr, r.stderr
    # a wrong password: refused by Airflow, nothing recorded
    r = _fraudcd({**cli, **_login(home, "analyst"), "FRAUDCD_AIRFLOW_PASSWORD": "wrong"}, "thresholds", "approve",
                 "--release", rid, "--as", "Dana", "--reason", "looks right")
    assert r.returncode == 2 and "auth/token" in r.stderr, r.stderr
    assert approvals.latest_set(rid)["status"] == approvals.PENDING

    # the analyst's own login, and no name typed: the person is the token's user, recorded in the state store as
    # such and answered over REST as them
    r = _fraudcd({**cli, **_login(home, "analyst")}, "thresholds", "approve", "--release", rid,
                 "--reason", "looks right")
    said = " ".join(r.stdout.split() + r.stderr.split())
    assert r.returncode == 0, r.stdout + r.stderr
    assert f"no --as given: recorded as 'analyst' (your Airflow user at {base})" in said, said
    assert f"answered Airflow task release.approve_thresholds (run {run['dag_run_id']}) as analyst: Approve all" \
        in said, said
    assert _finished(base, run, admin) == "success", _logs(home)[-3000:]
    answered = _request(f"{base}/api/v2/dags/release/dagRuns/{run['dag_run_id']}/hitlDetails", token=admin)
    (h,) = answered["hitl_details"]
    assert h["responded_by_user"]["name"] == "analyst" and h["chosen_options"] == ["Approve all"]
    assert approvals.latest_set(rid)["status"] == approvals.APPROVED
    assert approvals.latest_set(rid)["decided_by"] == "analyst"
    assert get_release(rid)["status"] == "approved"
    # the scheduler wrote what became of the release into the run's note (a green run is not a shipped release)
    note = _request(f"{base}/api/v2/dags/release/dagRuns/{run['dag_run_id']}", token=admin)["note"]
    assert note == f"**{rid}: the run ended (success) with the release still approved.** No report yet.", note
    (row,) = _approved_rows(rid)
    ctx = json.loads(row["context_json"])
    assert row["via"] == "cli" and row["actor"] == "analyst"
    assert ctx["airflow_user"] == "analyst" and ctx["airflow_url"] == base and ctx["actor_source"] == "airflow_user"

    # the plugin: the release's reports, served by Airflow's API server to Airflow's users only
    from analysis.report import write_index
    from release.core.settings import paths

    write_index(paths().reports)  # the real index: it lists this release
    analyst = _request(f"{base}/auth/token", {"username": "analyst", "password": json.loads(
        (home / "airflow" / "passwords.json").read_text())["analyst"]})["access_token"]
    reports = f"{base}/fraudcd/reports"
    assert _status(f"{reports}/")[0] == 401  # no identity
    assert _status(f"{reports}/", token="not-a-token")[0] in (401, 403)
    code, body, _ = _status(f"{reports}/", token=analyst)
    assert code == 200 and rid in body
    assert _status(f"{reports}/index.html", cookie=analyst)[0] == 200  # the UI's session cookie
    for bad in ("passwords.json", "..%2Fairflow%2Fpasswords.json", "%2E%2E%2Fstate.db", "index.htm"):
        assert _status(f"{reports}/{bad}", token=analyst)[0] == 404, bad
    # the run's report: a redirect to the release it is about; 404 until the report exists
    code, _, where = _status(f"{reports}/runs/{run['dag_run_id']}", token=analyst)
    assert code == 307 and where == f"/fraudcd/reports/{rid}.html"
    assert _status(f"{base}{where}", token=analyst)[0] == 404
    (paths().reports / f"{rid}.html").write_text("<html>the report</html>")
    assert _status(f"{base}{where}", token=analyst) == (200, "<html>the report</html>", None)
    # ... and a link to it on the task where the person decided
    links = _request(f"{base}/api/v2/dags/release/dagRuns/{run['dag_run_id']}/taskInstances/approve_thresholds/links",
                     token=analyst)
    assert links["extra_links"] == {"Release report": where}, links
    (plugin,) = [p for p in _request(f"{base}/api/v2/plugins", token=admin)["plugins"] if p["name"] == "fraudcd"]
    assert [v["href"] for v in plugin["external_views"]] == ["fraudcd/reports/"]  # "Release reports" in the nav


CHROMIUM = os.environ.get("FRAUDCD_CHROMIUM", "/usr/bin/chromium")  # the system's (make browser installs it)
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync"]


@pytest.mark.browser
def test_an_approver_answers_the_approval_in_airflows_ui(airflow_up, monkeypatch, request):
    """A person in Airflow's UI: headless Chromium signs in through the login form as the analyst (role
    "user", allowed to answer human-in-the-loop tasks; not the admin), opens Browse > Required Actions, then
    this release's approval, fills in the reason the form requires and chooses "Approve all". What happened
    is read from elsewhere: the state store (the set, the release, the audit row naming the Airflow user) and
    Airflow's REST API (the response, the DAG run going on past the approval task). Screenshots are kept
    under var/test-artifacts/approval-browser/."""
    from playwright.sync_api import expect, sync_playwright

    from release.orchestration.cycle import get_release
    from release.state import approvals

    home, port, env, done, _ = airflow_up
    assert done.returncode == 0, done.stdout + done.stderr
    base = f"http://127.0.0.1:{port}"
    monkeypatch.setenv("FRAUDCD_HOME", str(home))  # the state store the tasks of this Airflow use
    artifacts = request.config.rootpath / "var" / "test-artifacts" / "approval-browser"
    artifacts.mkdir(parents=True, exist_ok=True)
    rid, run, admin = _to_the_approval(home, base, "2026-03-15")  # the scheduler parks it while we sign in
    password = json.loads((home / "airflow" / "passwords.json").read_text())["analyst"]
    reason = "suggestions look right (reviewed in the Airflow UI)"
    run_url = f"{base}/api/v2/dags/release/dagRuns/{run['dag_run_id']}"

    errors: list[tuple[str, str, str]] = []  # (when, message, the URL it is about)
    when = ["before sign-in"]
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 900})
            wait = 30_000  # ms; a loaded machine: the UI's API server shares the CPU with the scheduler and tasks
            page.set_default_timeout(wait)
            page.on("console", lambda m: errors.append((when[0], m.text, m.location.get("url", "")))
                    if m.type == "error" else None)
            page.on("pageerror", lambda e: errors.append((when[0], f"uncaught: {e}", "")))

            page.goto(f"{base}/")  # nobody signed in: Airflow's UI sends the browser to its login form
            page.get_by_label("Username").fill("analyst")
            page.get_by_label("Password").fill(password)
            page.screenshot(path=str(artifacts / "1-login.png"))
            when[0] = "signed in"
            page.get_by_role("button", name="Sign in").click()
            page.get_by_role("button", name="Browse").wait_for()  # signed in: the navigation shows
            _parked(home, base, run, admin)
            assert approvals.latest_set(rid)["status"] == approvals.PENDING

            def required_actions():  # the navigation's Browse menu, as a person finds it
                page.get_by_role("button", name="Browse").click()
                page.get_by_role("menuitem", name="Required Actions").click()
                page.wait_for_url(f"{base}/required_actions")
                return page.get_by_role("row").filter(has_text=f"thresholds of {rid}")

            item = required_actions()
            expect(item).to_contain_text("Response Required", timeout=wait)
            page.screenshot(path=str(artifacts / "2-required-actions.png"))

            item.get_by_role("link", name=f"Approve per-merchant thresholds of {rid}").click()
            page.wait_for_url("**/dags/release/runs/*/tasks/approve_thresholds/required_actions")
            approve = page.get_by_test_id("hitl-option-Approve all")
            expect(approve).to_be_disabled(timeout=wait)  # the form requires a reason: no answer without one
            page.locator('input[name="element_reason"]').fill(reason)
            expect(approve).to_be_enabled(timeout=wait)
            approve.scroll_into_view_if_needed()
            page.screenshot(path=str(artifacts / "3-form-filled.png"))
            approve.click()
            expect(page.get_by_text("approve_thresholds response successful")).to_be_visible(timeout=wait)

            # what happened, from Airflow's REST API and the state store (not the browser)
            states, deadline = {}, time.monotonic() + 120
            while time.monotonic() < deadline and states.get("after") not in ("running", "success", "failed",
                                                                               "upstream_failed"):
                time.sleep(0.5)
                states = {t["task_id"]: t["state"] for t in _request(f"{run_url}/taskInstances",
                                                                     token=admin)["task_instances"]}
            # on past the approval: the task after it started (or already ended well)
            assert states.get("approve_thresholds") == "success" and states.get("after") in ("running", "success"), \
                f"{states}\n{_logs(home)[-3000:]}"
            (h,) = _request(f"{run_url}/hitlDetails", token=admin)["hitl_details"]
            assert h["responded_by_user"]["name"] == "analyst" and h["chosen_options"] == ["Approve all"], h
            assert h["params_input"]["reason"] == reason
            s = approvals.latest_set(rid)
            assert (s["status"], s["decided_by"], s["reason"]) == (approvals.APPROVED, "analyst (via Airflow)",
                                                                   reason)
            assert get_release(rid)["status"] == "approved"
            (row,) = _approved_rows(rid)
            ctx = json.loads(row["context_json"])
            assert (row["actor"], row["via"], row["reason"]) == ("analyst (via Airflow)", "airflow", reason)
            assert ctx["airflow_user"] == "analyst" and ctx["airflow"]["dag_run_id"] == run["dag_run_id"]

            # the result as the person sees it: the question answered
            expect(required_actions()).to_contain_text("Response Received", timeout=wait)
            page.screenshot(path=str(artifacts / "4-result.png"))
        finally:
            browser.close()

    # Console errors, all printed. Airflow's UI, opened before anyone signed in, first asks its API for its
    # config (GET /ui/config), is refused (401) and only then goes to the login form; Chromium logs each
    # refused request as "Failed to load resource: ... 401". That is how Airflow finds out nobody is signed in,
    # not a fault, so 401s on this Airflow's routes before sign-in are filtered. Anything after sign-in (where
    # fraud-cd's plugin shows: its navigation entry, the report link on this task), any uncaught exception and
    # any other error fail the test.
    print("console errors:", *errors, sep="\n  ")
    noise = [e for e in errors if e[0] == "before sign-in" and "status of 401" in e[1] and e[2].startswith(base)]
    assert [e for e in errors if e not in noise] == []


def test_a_published_training_set_starts_a_release_only_on_the_cadence(airflow_up):
    """The release DAG's schedule under a real scheduler: each published training set creates a run of the
    DAG scheduled on it, whose gate keeps the days the release cadence (every 14 days from 2026-01-01)
    falls on and skips the rest, with everything after it."""
    home, port, env, done, _ = airflow_up
    assert done.returncode == 0, done.stdout + done.stderr
    base = f"http://127.0.0.1:{port}"
    admin = _admin_token(home, base)

    def finished(dag_id: str, n: int) -> list[dict]:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            runs = _request(f"{base}/api/v2/dags/{dag_id}/dagRuns?order_by=run_after", token=admin)["dag_runs"]
            if len(runs) >= n and all(r["state"] in ("success", "failed") for r in runs):
                return runs
            time.sleep(1)
        raise AssertionError(f"{dag_id}: {n} finished runs expected; got {runs}")

    def states(dag_id: str, run_id: str) -> dict:
        tis = _request(f"{base}/api/v2/dags/{dag_id}/dagRuns/{run_id}/taskInstances", token=admin)
        return {t["task_id"]: t["state"] for t in tis["task_instances"]}

    for n, as_of in enumerate(["2026-06-04", "2026-06-05"], start=1):
        _request(f"{base}/api/v2/dags/publish_probe/dagRuns", {"logical_date": None, "conf": {"as_of": as_of}},
                 admin)
        assert finished("publish_probe", n)[-1]["state"] == "success"
        gate = finished("gate_probe", n)[-1]
        assert gate["run_type"] == "asset_triggered", gate
        assert gate["state"] == "success"
        got = states("gate_probe", gate["dag_run_id"])
        # 2026-06-04 is a release day (2026-01-01 + 11 x 14 days); 2026-06-05 is not: skipped, and what follows
        assert got == ({"snapshot": "success", "after": "success"} if as_of == "2026-06-04" else
                       {"snapshot": "skipped", "after": "skipped"}), (as_of, got)


def test_up_runs_a_real_task_and_down_stops_everything(airflow_up):
    home, port, env, done, took = airflow_up
    assert done.returncode == 0, done.stdout + done.stderr
    print(f"fraudcd up: healthy and DAGs unpaused in {took:.1f}s")
    unpaused = next(line for line in done.stdout.splitlines() if line.startswith("unpaused: "))
    assert set(unpaused.removeprefix("unpaused: ").split(", ")) == {"release", "up_down_probe", "publish_probe",
                                                                  "gate_probe"}
    base = f"http://127.0.0.1:{port}"

    # the stores: the SQLite state store moved into the local PostgreSQL, where Airflow's metadata is too
    said = " ".join(done.stdout.split())
    assert f"state store moved from {home / 'state.db'} into the local PostgreSQL: audit 1 rows" in said, said
    assert "stores (postgres): Airflow's metadata postgresql+psycopg://postgres:***@/airflow?host=" in said, said
    assert "the state store postgresql+psycopg://postgres:***@/fraudcd_state?host=" in said, said
    assert json.loads((home / "stores.json").read_text())["kind"] == "postgres"
    from release.core import local_postgres

    assert local_postgres.running_pid(home) is not None

    h = _request(f"{base}/api/v2/monitor/health")
    assert {k: h[k]["status"] for k in ("metadatabase", "scheduler", "triggerer", "dag_processor")} == dict.fromkeys(
        ("metadatabase", "scheduler", "triggerer", "dag_processor"), "healthy")

    secrets_file = home / "airflow" / "secrets.json"
    assert secrets_file.stat().st_mode & 0o777 == 0o600
    assert set(json.loads(secrets_file.read_text())) == {"jwt_secret", "fernet_key"}
    before = (secrets_file.read_bytes(), secrets_file.stat().st_mtime_ns)
    passwords = home / "airflow" / "passwords.json"
    assert passwords.stat().st_mode & 0o777 == 0o600

    # a real DAG run, triggered through the REST API as the configured admin
    token = _request(f"{base}/auth/token", {"username": "admin",
                                            "password": json.loads(passwords.read_text())["admin"]})["access_token"]
    run = _request(f"{base}/api/v2/dags/up_down_probe/dagRuns", {"logical_date": None}, token)
    deadline = time.monotonic() + 90
    state = run["state"]
    while state not in ("success", "failed") and time.monotonic() < deadline:
        time.sleep(1)
        state = _request(f"{base}/api/v2/dags/up_down_probe/dagRuns/{run['dag_run_id']}", token=token)["state"]
    logs = "".join(p.read_text(errors="replace") for p in (home / "airflow" / "run").glob("*.log"))
    assert state == "success", f"the DAG run ended {state}\n{logs[-4000:]}"
    assert "Invalid auth token" not in logs

    # the scoring service waited for event logs to seed its history from, and said so
    assert "scoring service: not started: no transactions in" in " ".join(done.stdout.split())
    from simulation.world import WorldConfig, simulate

    simulate(WorldConfig(days=3, tx_per_day=200, n_merchants=20, n_cards=500), home / "events")

    # up again: Airflow is up, changes nothing there; the scoring service starts beside it
    service_port = _free_port()
    again = _fraudcd(env, "up", "--port", str(port), "--service-port", str(service_port))
    assert again.returncode == 0 and "already up and healthy" in again.stdout, again.stdout + again.stderr
    assert (secrets_file.read_bytes(), secrets_file.stat().st_mtime_ns) == before
    said = " ".join(again.stdout.split())
    assert f"scoring service: http://127.0.0.1:{service_port}" in said and "no production model yet" in said
    tokens_file = home / "service" / "tokens.json"
    tokens = json.loads(tokens_file.read_text())
    assert tokens_file.stat().st_mode & 0o777 == 0o600
    assert set(tokens) == {"FRAUDCD_SCORING_TOKEN", "FRAUDCD_OPERATOR_TOKEN"}
    svc = f"http://127.0.0.1:{service_port}"
    assert _status(f"{svc}/healthz")[0] == 503  # listening; no production model to score with yet
    assert _status(f"{svc}/state")[0] == 401
    assert _status(f"{svc}/state", token=tokens["FRAUDCD_OPERATOR_TOKEN"])[0] == 200
    third = _fraudcd(env, "up", "--port", str(port))  # the running service's port is remembered
    assert f"scoring service: already running, {svc}" in " ".join(third.stdout.split()), third.stdout
    assert json.loads(tokens_file.read_text()) == tokens

    # the port is taken by our own API server: another Airflow there is refused, clearly
    other = dict(env, FRAUDCD_HOME=str(home.parent / "other-home"))
    refused = _fraudcd(other, "up", "--port", str(port), "--timeout", "5")
    assert refused.returncode == 2 and "in use" in refused.stderr, refused.stdout + refused.stderr
    assert not (home.parent / "other-home" / "postgres").exists()  # refused before anything started

    run_dir = home / "airflow" / "run"
    leaders = [json.loads(p.read_text())["pid"] for p in run_dir.glob("*.pid")]
    assert len(leaders) == 5  # Airflow's four and the scoring service
    started = set(leaders).union(*(_session_members(pid) for pid in leaders))
    stopped = _fraudcd(env, "down", "--timeout", "20")
    assert stopped.returncode == 0, stopped.stdout + stopped.stderr
    assert [pid for pid in started if _alive(pid)] == []
    assert list(run_dir.glob("*.pid")) == []
    postgres = local_postgres.running_pid(home)
    assert postgres is None and "stopped the local PostgreSQL" in stopped.stdout, stopped.stdout
    second = _fraudcd(env, "down")
    assert second.returncode == 0 and "not running" in second.stdout
