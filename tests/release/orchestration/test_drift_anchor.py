"""The drift budget's anchor: production before the releases shipped in the window, found by following the
lineage of production back through the state store (release.orchestration.cycle.shipped_lineage and
drift_anchor), on a store holding a history with a bootstrap, a rollback and releases outside the window."""
from __future__ import annotations

import datetime as dt

import pandas as pd
import pytest

from tests.contracts.tidy import slice_rows, table


def _metrics(inc: float, pol: float) -> pd.DataFrame:
    return table(slice_rows("all", "all", "fpr", "dm", {"incumbent": inc, "policy": pol,
                                                        "policy-incumbent": pol - inc}))


@pytest.fixture
def history(tmp_path, monkeypatch):
    """Releases, oldest first: A (the first, over a bootstrap) ships M1; C ships M2 (+10% FPR, approved;
    its offline judgement said +50%, which is not what shipped); D's M3 was rolled back; E ships M4 over M2
    (+20%). Production is M4."""
    from analysis.evaluation import Evaluation
    from release.state.store import releases, transaction

    monkeypatch.setenv("FRAUDCD_HOME", str(tmp_path / "home"))
    rows = [("rel-2026-01-04", "B0", "M1", "promoted", True, None),
            ("rel-2026-03-01", "M1", "M2", "promoted", False, (0.010, 0.011)),
            ("rel-2026-04-12", "M2", "M3", "rolled_back", False, (0.011, 0.015)),
            ("rel-2026-05-10", "M2", "M4", "promoted", False, (0.011, 0.0132))]
    empty = pd.DataFrame({"at": pd.Series([], dtype=str)})
    from release.core.settings import paths

    with transaction() as conn:
        for rid, inc, cand, status, boot, fpr in rows:
            conn.execute(releases.insert().values(id=rid, as_of=rid[4:], status=status, snapshot_hash="s",
                                                  candidate_model_id=cand, incumbent_model_id=inc,
                                                  incumbent_bootstrap=boot, updated_at="t0"))
            if fpr is None:
                continue
            folder = paths().releases / rid
            offline = _metrics(fpr[0], fpr[0] * 1.5)
            for where, m in ((folder, offline), (folder / "approved", _metrics(*fpr))):
                Evaluation(overall={}, slices=empty, recall_diff={}, operating_fpr=0.01, candidate_threshold=0.5,
                           suggestions=pd.DataFrame({"merchant_id": pd.Series([], dtype=str)}), metrics=m).save(where)
    return rows


def test_the_lineage_follows_production_back_past_a_rollback_to_the_first_non_bootstrap(history):
    from release.orchestration.cycle import shipped_lineage

    got = shipped_lineage("M4", dt.date(2026, 6, 7), 182, "fpr", "dm")
    assert [h["release_id"] for h in got] == ["rel-2026-05-10", "rel-2026-03-01"]  # D rolled back; A over a bootstrap
    assert [h["ratio"] for h in got] == pytest.approx([1.2, 1.1])  # what the approved policies shipped


def test_the_window_bounds_the_lineage_and_the_anchor_is_production_before_it(history):
    from contracts.evaluator import load_contracts
    from release.orchestration.cycle import drift_anchor, shipped_lineage
    from release.core.settings import contracts_file

    assert [h["release_id"] for h in shipped_lineage("M4", dt.date(2026, 6, 7), 60, "fpr", "dm")] == ["rel-2026-05-10"]
    cs = load_contracts(contracts_file())
    a = drift_anchor(cs, {"incumbent_model_id": "M4", "as_of": "2026-06-07"})
    assert (a["model_id"], a["since"], a["releases"]) == ("M1", "2026-03-01", ["rel-2026-03-01", "rel-2026-05-10"])
    assert a["over_bootstrap"] == "rel-2026-01-04"  # M1 shipped over the bootstrap: the chain ends there
    # a release judged before E shipped: only C in its lineage
    b = drift_anchor(cs, {"incumbent_model_id": "M2", "as_of": "2026-04-12"})
    assert (b["model_id"], b["releases"]) == ("M1", ["rel-2026-03-01"])
    # a production no release shipped (the bootstrap, or a model put back by hand): the anchor is itself
    c = drift_anchor(cs, {"incumbent_model_id": "B0", "as_of": "2026-06-07"})
    assert (c["model_id"], c["releases"], c["since"], c["over_bootstrap"]) == ("B0", [], None, None)
    d = drift_anchor(cs, {"incumbent_model_id": "M1", "as_of": "2026-02-01"})  # the first release after it
    assert (d["model_id"], d["releases"], d["over_bootstrap"]) == ("M1", [], "rel-2026-01-04")


def test_a_shipped_release_whose_evaluation_is_gone_is_said_not_skipped(history):
    import shutil

    from release.core.settings import paths
    from release.orchestration.cycle import shipped_lineage

    shutil.rmtree(paths().releases / "rel-2026-05-10")
    got = shipped_lineage("M4", dt.date(2026, 6, 7), 182, "fpr", "dm")
    assert [(h["release_id"], h["ratio"]) for h in got][0] == ("rel-2026-05-10", None)
