"""Hostile files and failing machines: every bad input is a clear error, a killed run leaves nothing half
done, and every file fraud-cd writes has the one permission policy (release/core/io.py).

Tables of input -> expected error where the input is a file a person or a client hands us; real
subprocesses killed with SIGKILL where the fault is a dying machine.
"""
from __future__ import annotations

import io
import os
import signal
import stat
import subprocess
import sys
import textwrap
from pathlib import Path

import pandas as pd
import pytest
from pydantic import BaseModel, ConfigDict

from release.state.approvals import ThresholdInputError, create_set, edit, export_csv, import_csv, set_items
from release.core.config import ConfigError, load_yaml_model
from release.core.io import file_sha256
from release.state.registry import register_model
from release.state.store import audit_log

PROJECT_ROOT = Path(__file__).resolve().parents[3]


def mode(path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


def python(code: str, **kw) -> subprocess.Popen:
    """A real Python process running ``code`` from the project root."""
    return subprocess.Popen([sys.executable, "-c", textwrap.dedent(code)], cwd=PROJECT_ROOT, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, **kw)


# ---- CSV: spreadsheet formula injection, ids taken exactly, oversized cells ------------------------------

def _model() -> str:
    return register_model("model\n", workflow={"name": "wf"}, features=["amount"], snapshot_hash="cd" * 32,
                          code_version="t", metrics={}, at="t0", actor="trainer").id


HOSTILE_IDS = ["=HYPERLINK(\"http://x\",\"y\")", "+1+1", "-2+3", "@SUM(A1)", "\tcmd", "\rcmd", "'=quoted", "''",
               "-5", "M001002"]


def _hostile_set(home):
    sugg = pd.DataFrame({"merchant_id": HOSTILE_IDS, "suggested_threshold": [0.5] * 9 + [-0.0],
                         "current_threshold": [0.25] * 10, "support": 500, "segment": "=1+1",
                         "reason": ["-1+1|cmd", "@x", "+x", "=x", "-12.5", "ok", "ok", "ok", "ok", "ok"]})
    return create_set(_model(), "rel-1", sugg, 0.8, at="t1", actor="fraud-cd pipeline", reason="suggested")


def test_csv_export_escapes_every_formula_like_cell_and_leaves_numbers_numbers(home):
    _hostile_set(home)
    text = export_csv("rel-1")
    cells = [c for row in pd.read_csv(io.StringIO(text), dtype=str, keep_default_na=False).itertuples(index=False)
             for c in row]
    formula_like = [c for c in cells if c[:1] in ("=", "+", "-", "@", "\t", "\r")]
    # what is left starting with a formula character is a plain number ("-12.5", "-5"), never a formula
    assert sorted(set(formula_like)) == ["-12.5", "-5"]
    by_id = pd.read_csv(io.StringIO(text), dtype=str, keep_default_na=False)["merchant_id"].tolist()
    assert "'=HYPERLINK(\"http://x\",\"y\")" in by_id and "'\tcmd" in by_id and "''=quoted" in by_id
    assert "'''" in by_id  # a cell of two quotes gets a third: the escaping undoes exactly


def test_an_unmodified_export_always_imports_unchanged(home):
    set_id = _hostile_set(home)
    before = set_items(set_id).set_index("merchant_id")["proposed"]
    out = import_csv("rel-1", export_csv("rel-1"), actor="dana", reason="re-import", at="t2")
    assert (out["changed"], out["unchanged"]) == (0, len(HOSTILE_IDS))
    after = set_items(set_id).set_index("merchant_id")["proposed"]
    assert after.to_dict() == before.to_dict()


def test_an_edited_export_changes_exactly_the_edited_hostile_rows(home):
    set_id = _hostile_set(home)
    df = pd.read_csv(io.StringIO(export_csv("rel-1")), dtype=str, keep_default_na=False)
    df.loc[df["merchant_id"] == "'=HYPERLINK(\"http://x\",\"y\")", "threshold"] = "0.75"
    df.loc[df["merchant_id"] == "-5", "threshold"] = "0.125"
    out = import_csv("rel-1", df.to_csv(index=False, lineterminator="\r\n"), actor="dana", reason="review", at="t2")
    assert out["changed"] == 2
    proposed = set_items(set_id).set_index("merchant_id")["proposed"]
    assert proposed["=HYPERLINK(\"http://x\",\"y\")"] == 0.75 and proposed["-5"] == 0.125
    # a spreadsheet drops the escaping quote when it saves: the bare id still matches exactly
    bare = "merchant_id,threshold\n\"=HYPERLINK(\"\"http://x\"\",\"\"y\"\")\",0.7\n"
    assert import_csv("rel-1", bare, actor="dana", reason="excel", at="t3")["changed"] == 1


@pytest.mark.parametrize("csv_text, errors", [
    ("merchant_id,threshold\n M001002 ,0.5\n",
     ["row 2, column merchant_id: ' M001002 ' is not among the 10 suggestions of rel-1; ids are taken exactly as "
      "written, and this one has spaces around it"]),
    ("merchant_id,threshold\nM001002,0.5\nM001003," + "x" * 200_000 + "\n",
     ["row 3: a cell is longer than 131,072 characters; no merchant id or threshold is that long"]),
    ("merchant_id,threshold\n" + "M" * 300 + ",0.5\n",
     ["row 2, column merchant_id: '" + "M" * 119 + "... (302 characters) is not among the 10 suggestions of rel-1"]),
    ("merchant_id,threshold\nM001002," + "9" * 500 + "\n",
     ["row 2, column threshold: '" + "9" * 119 + "... (502 characters) is out of range; expected a number in "
      "[0, 1]"]),
    ("merchant_id,threshold\nM001002,=1/2\n", ["row 2, column threshold: '=1/2' is not a number; expected a number "
                                               "in [0, 1]"]),
    ("merchant_id,threshold\nM001002,-0.5\n", ["row 2, column threshold: -0.5 is out of range; expected a number in "
                                               "[0, 1]"]),
])
def test_hostile_csv_input_is_a_clear_error_naming_the_row(home, csv_text, errors):
    set_id = _hostile_set(home)
    with pytest.raises(ThresholdInputError, match="nothing was applied") as e:
        import_csv("rel-1", csv_text, actor="dana", reason="x", at="t2")
    assert e.value.errors == errors
    assert set_items(set_id).set_index("merchant_id").loc["M001002", "proposed"] == -0.0


def test_a_spreadsheets_byte_order_mark_is_not_part_of_the_header(home):
    set_id = _hostile_set(home)
    import_csv("rel-1", "\ufeffmerchant_id,threshold\nM001002,0.5\n", actor="dana", reason="x", at="t2")
    assert set_items(set_id).set_index("merchant_id").loc["M001002", "proposed"] == 0.5


# ---- YAML: strict everywhere ------------------------------------------------------------------------------

class Gate(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str = "g"
    gate: bool = True
    min_support: int = 100
    rate: float = 0.5


BOMB = "a: &a [x, x, x, x, x, x, x, x, x, x]\n" + "".join(
    f"{chr(98 + i)}: &{chr(98 + i)} [{', '.join(['*' + chr(97 + i)] * 10)}]\n" for i in range(8))


@pytest.mark.parametrize("text, message", [
    ("gate: true\ngate: false\n", "duplicate key 'gate'"),
    ("min_support: true\n", "min_support: Input should be a valid integer (got True)"),
    ("gate: 'off'\n", "gate: Input should be a valid boolean (got 'off'); write true or false"),
    ("gate: off\n", "gate: Input should be a valid boolean (got 'off'); write true or false"),
    ("gate: yes\n", "gate: Input should be a valid boolean (got 'yes')"),
    ("gate: 1\n", "gate: Input should be a valid boolean (got 1)"),
    ("min_support: '100'\n", "min_support: Input should be a valid integer (got '100')"),
    ("min_support: 100.0\n", "min_support: Input should be a valid integer (got 100.0)"),
    ("rate: '0.5'\n", "rate: Input should be a valid number (got '0.5')"),
    ("name: 12\n", "name: Input should be a valid string (got 12)"),
    ("base: &b {gate: true}\nother: *b\n", "found the alias *b; aliases"),
    ("base: &b {gate: true}\n<<: *b\n", "found the alias *b; aliases (and merge keys '<<: *b')"),
    (BOMB, "found the alias *a; aliases"),
    ("? [a]\n: 1\n", "a key must be a plain value (text or a number); got a list"),
    ("a: " + "[" * 5000 + "]" * 5000 + "\n", "nested too deeply to be a configuration file"),
    ("min_support: " + "x" * 200_000 + "\n", "min_support: Input should be a valid integer (got 'xxx"),
])
def test_strict_yaml_table(tmp_path, text, message):
    p = tmp_path / "conf.yaml"
    p.write_text(text)
    with pytest.raises(ConfigError, match="conf.yaml") as e:
        load_yaml_model(p, Gate)
    assert message in str(e.value)
    assert len(str(e.value)) < 2000  # a 200 KB value is cut, not echoed


@pytest.mark.parametrize("text, expected", [
    ("gate: false\nmin_support: 5\nrate: 1\n", Gate(gate=False, min_support=5, rate=1.0)),
    ("gate: False\n", Gate(gate=False)),
    ("name: no\n", Gate(name="no")),  # YAML 1.1's "no" is a plain string: Norway stays Norway
    ("name: off\n", Gate(name="off")),
])
def test_strict_yaml_still_reads_what_it_should(tmp_path, text, expected):
    p = tmp_path / "conf.yaml"
    p.write_text(text)
    assert load_yaml_model(p, Gate) == expected


def test_a_billion_laughs_alias_bomb_fails_fast_in_a_real_process(tmp_path):
    p = tmp_path / "bomb.yaml"
    p.write_text(BOMB)  # 10 leaves under a, each level 10 aliases of the one before: 10**9 under i
    proc = python(f"""
        from pydantic import BaseModel
        from release.core.config import ConfigError, load_yaml_model
        class Any_(BaseModel):
            model_config = {{"extra": "allow"}}
        try:
            load_yaml_model({str(p)!r}, Any_)
        except ConfigError as e:
            print(str(e).splitlines()[0])
        """)
    out, err = proc.communicate(timeout=60)  # a hang or a memory blow-up fails here, not a timing assert
    assert proc.returncode == 0, err
    assert "found the alias *a; aliases" in out


@pytest.mark.parametrize("name", ["pipeline.yaml", "ramp.yaml", "service.yaml", "source.example.yaml",
                                  "thresholds.yaml", "workflows/default.yaml", "workflows/bootstrap.yaml",
                                  "../contracts/release.yaml"])
def test_every_shipped_yaml_loads_strictly(name):
    from analysis.thresholds import ThresholdConfig
    from contracts.evaluator import ContractSet
    from release.core.pipeline import PipelineConfig
    from release.rollout.ramp import RampPlan
    from release.serving.service import ServiceConfig
    from release.data.source import SourceMapping
    from release.modeling.training import Workflow

    model = {"pipeline.yaml": PipelineConfig, "ramp.yaml": RampPlan, "service.yaml": ServiceConfig,
             "source.example.yaml": SourceMapping, "thresholds.yaml": ThresholdConfig,
             "workflows/default.yaml": Workflow, "workflows/bootstrap.yaml": Workflow,
             "../contracts/release.yaml": ContractSet}[name]
    assert load_yaml_model(PROJECT_ROOT / "config" / name, model)


# ---- workflows ---------------------------------------------------------------------------------------------

WF = "name: x\nfeatures: [amount, category_code]\ncategorical_features: [category_code]\n"


@pytest.mark.parametrize("tail, message", [
    ("features: [amount, amount]\n", "features: Value error, feature(s) ['amount'] listed more than once"),
    ("categorical_features: [hour]\n", "categorical_features: Value error, ['hour'] not in features"),
    ("lightgbm: {learnig_rate: 0.1}\n", "lightgbm.learnig_rate: not a LightGBM parameter (did you mean "
                                        "'learning_rate'?)"),
    ("lightgbm: {num_leaves: 1.5}\n", 'lightgbm.num_leaves: LightGBM refuses 1.5: Parameter num_leaves should be '
                                      'of type int, got "1.5"'),
    ("lightgbm: {num_leaves: 1}\n", "lightgbm.num_leaves: LightGBM refuses 1: Check failed: (num_leaves) > (1)"),
    ("lightgbm: {bagging_fraction: 2}\n", "lightgbm.bagging_fraction: LightGBM refuses 2: Check failed: "
                                          "(bagging_fraction) <= (1.0)"),
    ("lightgbm: {eta: 0.1, learning_rate: 0.2}\n", "lightgbm.learning_rate: sets learning_rate again (already set "
                                                   "as 'eta')"),
    ("lightgbm: {num_rounds: 10}\n", "lightgbm.num_rounds (LightGBM's num_iterations): set it with the workflow's "
                                     "num_boost_round key"),
    ("lightgbm: {num_threads: 100000}\n", "lightgbm.num_threads: must be a number in [0, 256]"),
    ("lightgbm: {max_bin: 100000000}\n", "lightgbm.max_bin: must be a number in [2, 65535]"),
    ("lightgbm: {learning_rate: '0.1'}\n", "lightgbm.learning_rate: '0.1' is a number written as a string"),
    ("lightgbm: {objective: regression}\n", "the objective must be one of ['binary', 'cross_entropy', 'xentropy']"),
    ("lightgbm: {output_model: /tmp/m.txt}\n", "lightgbm.output_model: a LightGBM command-line parameter"),
    ("lightgbm: {num_leaves: {a: 1}}\n", "lightgbm.num_leaves: expected a number, a string, true/false or a list"),
    ("lightgbm: {num_class: 3}\n", "lightgbm.num_class: LightGBM refuses 3: Number of classes must be 1"),
])
def test_bad_workflows_fail_at_load_time_naming_the_key(tmp_path, tail, message):
    from release.modeling.training import load_workflow

    p = tmp_path / "wf.yaml"
    text = WF
    for line in tail.splitlines():  # the tail replaces a key of the base workflow
        key = line.split(":")[0]
        text = "".join(x + "\n" for x in text.splitlines() if not x.startswith(key + ":")) + line + "\n"
    p.write_text(text)
    with pytest.raises(ConfigError, match=r"wf\.yaml: ") as e:
        load_workflow(p)
    assert message in str(e.value)


# ---- permissions: one policy -------------------------------------------------------------------------------

@pytest.mark.parametrize("umask, file_mode, dir_mode", [(0o022, 0o640, 0o750), (0o002, 0o640, 0o750),
                                                        (0o077, 0o600, 0o700)])
def test_files_and_folders_fraudcd_writes_follow_one_policy(tmp_path, umask, file_mode, dir_mode):
    from release.core.io import atomic_write_parquet, atomic_write_text, owned_temp_dir

    old = os.umask(umask)
    try:
        atomic_write_text("<html>report</html>", tmp_path / "reports" / "r.html")
        atomic_write_parquet(pd.DataFrame({"card_id": [1]}), tmp_path / "events" / "day=x" / "part-0.parquet")
        with owned_temp_dir(tmp_path / "snaps", ".tmp-") as tmp:
            made = mode(tmp)
    finally:
        os.umask(old)
    assert mode(tmp_path / "reports" / "r.html") == file_mode
    assert mode(tmp_path / "events" / "day=x" / "part-0.parquet") == file_mode
    assert mode(tmp_path / "reports") == mode(tmp_path / "events" / "day=x") == made == dir_mode


def test_a_simulated_world_is_group_readable_and_closed_to_others(tmp_path):
    from simulation.world import WorldConfig, simulate

    old = os.umask(0o022)
    try:
        simulate(WorldConfig(days=2, tx_per_day=20, n_merchants=5, n_cards=20), tmp_path / "events")
    finally:
        os.umask(old)
    files = [p for p in (tmp_path / "events").rglob("*") if p.is_file()]
    assert files and {mode(p) for p in files} == {0o640}
    assert {mode(p) for p in (tmp_path / "events").rglob("*") if p.is_dir()} | {mode(tmp_path / "events")} == {0o750}


# ---- killed runs: a simulation and a training-set build -----------------------------------------------------

SIM = """
    import sys, time
    from simulation.world import WorldConfig, simulate
    def progress(done, total):
        print(done, flush=True)
        if done == {pause_at}:
            time.sleep(120)  # held mid-run until the test kills it
    simulate(WorldConfig(seed={seed}, days=12, tx_per_day=60, n_merchants=10, n_cards=100), {out!r}, progress)
    print("done", flush=True)
"""


def all_bytes(folder: Path) -> dict:
    return {str(p.relative_to(folder)): file_sha256(p) for p in sorted(folder.rglob("*")) if p.is_file()}


def test_a_simulation_killed_mid_run_leaves_the_previous_world_whole_and_the_next_run_cleans_up(tmp_path):
    out = tmp_path / "events"
    first = python(SIM.format(pause_at=-1, seed=1, out=str(out)))
    assert first.communicate(timeout=120)[0].splitlines()[-1] == "done"
    old_world = all_bytes(out)
    assert len(old_world) > 30

    killed = python(SIM.format(pause_at=6, seed=2, out=str(out)))
    for line in killed.stdout:
        if line.strip() == "6":
            break
    killed.send_signal(signal.SIGKILL)
    killed.wait(timeout=30)
    assert all_bytes(out) == old_world  # not a single file of the new world landed
    leftovers = list(tmp_path.glob(".events.tmp-*"))
    assert len(leftovers) == 1 and any(leftovers[0].rglob("*.parquet"))  # half a world, out of sight

    rerun = python(SIM.format(pause_at=-1, seed=2, out=str(out)))
    assert rerun.communicate(timeout=120)[0].splitlines()[-1] == "done"
    assert list(tmp_path.glob(".events.tmp-*")) == []
    new_world = all_bytes(out)
    assert new_world != old_world and len(new_world) > 30


def test_a_running_simulations_temp_folder_is_never_swept(tmp_path):
    from release.core.io import remove_stale_temp_dirs

    out = tmp_path / "events"
    running = python(SIM.format(pause_at=2, seed=1, out=str(out)))
    try:
        for line in running.stdout:
            if line.strip() == "2":
                break
        assert remove_stale_temp_dirs(tmp_path, ".events.tmp-") == []
        assert len(list(tmp_path.glob(".events.tmp-*"))) == 1
    finally:
        running.kill()
        running.wait(timeout=30)
    assert len(remove_stale_temp_dirs(tmp_path, ".events.tmp-")) == 1


BUILD = """
    import time
    import release.data.training_set as ts
    real = ts.check_data_contract
    def held(*args, **kwargs):  # the data file is in the temp folder; hold here until killed
        print("building", flush=True)
        time.sleep(120)
        return real(*args, **kwargs)
    ts.check_data_contract = held
    import datetime as dt
    ts.build_training_set({events!r}, {snaps!r}, dt.date.fromisoformat({as_of!r}), maturity_days={maturity},
                          history_days={history})
"""


def test_a_training_set_build_killed_mid_run_leaves_a_temp_folder_the_next_build_removes(tiny, tiny_events,
                                                                                         tmp_path):
    from release.data.training_set import build_training_set, latest_snapshot

    snaps = tmp_path / "snaps"
    killed = python(BUILD.format(events=str(tiny_events), snaps=str(snaps), as_of=tiny.as_of.isoformat(),
                                 maturity=tiny.maturity_days, history=tiny.history_days))
    assert killed.stdout.readline().strip() == "building"
    killed.send_signal(signal.SIGKILL)
    killed.wait(timeout=30)
    stale = list(snaps.glob(".tmp-*"))
    assert len(stale) == 1 and (stale[0] / "data.parquet").exists()
    assert latest_snapshot(snaps) is None  # the killed build never landed

    snap = build_training_set(tiny_events, snaps, tiny.as_of, maturity_days=tiny.maturity_days,
                              history_days=tiny.history_days)
    assert sorted(p.name for p in snaps.iterdir()) == [snap.hash]
    assert mode(snap.path) & 0o007 == 0  # the policy: closed to other users


# ---- a rerun never drops a person's threshold edits silently -------------------------------------------------

def test_a_rerun_keeps_pending_edits_and_audits_the_ones_it_cannot_keep(home):
    m = _model()
    sugg = pd.DataFrame({"merchant_id": ["M1", "M2"], "suggested_threshold": [0.6, 0.9]})
    create_set(m, "rel-1", sugg, 0.8, at="t1", actor="fraud-cd pipeline", reason="suggested")
    edit("rel-1", {"M1": 0.55, "M2": 0.95}, actor="dana", reason="known merchants", at="t2")
    rerun = pd.DataFrame({"merchant_id": ["M1", "M3"], "suggested_threshold": [0.61, 0.7]})
    new_id = create_set(m, "rel-1", rerun, 0.8, at="t3", actor="fraud-cd pipeline", reason="suggested again")
    items = set_items(new_id).set_index("merchant_id")
    assert items.loc["M1", ["proposed", "suggested", "edited"]].tolist() == [0.55, 0.61, True]
    rows = {r["action"]: r for r in audit_log()}
    superseded = rows["thresholds_superseded"]
    assert "1 edit(s) dropped: M2 by dana (the rerun suggests no threshold for this merchant)" in superseded["reason"]
    assert '"edited_value": 0.95' in superseded["after_json"] and '"edited_by": "dana"' in superseded["after_json"]
    assert '"edited_by": "dana"' in rows["thresholds_edits_carried_over"]["after_json"]
