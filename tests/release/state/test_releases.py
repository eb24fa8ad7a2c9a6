"""The release view a report is written from (release.state.releases)."""
from __future__ import annotations

import pytest

A, B = "rel-2026-01-01", "rel-2026-01-15"


def _world():
    from release.state.store import overrides, releases, transaction, write_audit

    w = dict(at="2026-01-02T00:00:00+00:00", actor="fraud-cd pipeline")
    with transaction() as c:
        for rid, cand in ((A, "m-a"), (B, "m-b")):
            c.execute(releases.insert().values(id=rid, as_of=rid[4:], status="shadow", candidate_model_id=cand,
                                               incumbent_bootstrap=False, updated_at=w["at"]))
        c.execute(overrides.insert().values(release_id=A, contract="ranking_regression", actor="Head of risk",
                                            reason="drill", at=w["at"]))
        # about A
        write_audit(c, **w, action="release_status", entity=f"release:{A}", after={"status": "started"}, reason="go")
        write_audit(c, **w, action="register_model", entity="model:m-a", after={"sha256": "x"}, reason="trained")
        write_audit(c, **w, action="ramp_shadow", entity="ramp", after={"release_id": A, "state": "shadow"},
                    reason="shadowing")
        write_audit(c, **w, action="move_tag", entity="tag:shadow", before={"model_id": None},
                    after={"model_id": "m-a"}, reason="shadowing")
        # about B, though their text names A or its model
        write_audit(c, **w, action="ramp_shadow", entity="ramp", before={"release_id": A},
                    after={"release_id": B, "state": "shadow"}, reason=f"{A} is over; shadowing m-b after m-a")
        write_audit(c, **w, action="release_status", entity=f"release:{B}", after={"status": "started"},
                    reason=f"started after {A}")
        write_audit(c, **w, action="move_tag", entity="tag:candidate", before={"model_id": None},
                    after={"model_id": "m-b"}, reason=f"the candidate of {B}, not m-a")


def test_the_trail_holds_what_is_about_the_release_not_rows_whose_text_names_it(home):
    from release.state.releases import release_view

    _world()
    view = release_view(A)
    assert [(t["action"], t["entity"]) for t in view["trail"]] == [
        ("release_status", f"release:{A}"), ("register_model", "model:m-a"), ("ramp_shadow", "ramp"),
        ("move_tag", "tag:shadow")]
    assert view["release"]["candidate_model_id"] == "m-a"
    assert [o["contract"] for o in view["overrides"]] == ["ranking_regression"]
    assert view["threshold_set"] is None and view["verdicts"] == [] and view["ramp_steps"] == []
    assert [(t["action"], t["entity"]) for t in release_view(B)["trail"]] == [
        ("ramp_shadow", "ramp"), ("release_status", f"release:{B}"), ("move_tag", "tag:candidate")]


def test_an_unknown_release_is_a_clear_error(home):
    from release.state.releases import release_view

    with pytest.raises(KeyError, match="No release 'rel-1999-01-01' in the state store"):
        release_view("rel-1999-01-01")


def test_a_verdicts_effect_round_trips_through_the_store_and_a_row_written_before_reads_none(home):
    """The offline verdicts (release.orchestration.cycle) and a stage's live ones (release.rollout.driver)
    keep their effect, interval, allowed region and unit; a row written before migration 0005 has none."""
    import dataclasses

    from contracts.base import MS, POINTS, Verdict
    from release.orchestration.cycle import _store_verdicts
    from release.rollout.driver import _record
    from release.state.releases import release_view
    from release.state.store import transaction, verdicts

    _world()
    at = "2026-01-03T00:00:00+00:00"
    offline = Verdict("country_recall", "slice_recall_regression", True, "country", "GB", "fail", 0.41, 0.552, 0.05,
                      87, "GB: the candidate catches 41.0% of fraud vs 55.2% (-14.2 pts, 95% CI -21.0..-7.4), ...",
                      None, "stop", effect=-0.142, effect_lo=-0.21, effect_hi=-0.074, allowed_lo=-0.05,
                      allowed_hi=None, effect_unit=POINTS)
    live = Verdict("live_ramp_5pct_latency_p99", "latency", True, "all", "all", "fail", 198.01, None, 100.0, 200,
                   "The candidate's p99 latency was 198.0 ms on 200 requests (95% CI 195.0..inf ms), ...",
                   on_insufficient="stop", effect=198.01, effect_lo=195.0, effect_hi=None, allowed_hi=100.0,
                   effect_unit=MS)
    _store_verdicts(A, "offline", [offline], at)
    _record(A, "ramp", 1, 5.0, None, {}, [live], at)
    with transaction() as c:  # as code of 0004 wrote it: no effect columns
        c.execute(verdicts.insert().values(release_id=A, stage="offline", contract="old_gate",
                                           kind="ranking_regression", gate=False, slice_type="all", slice="all",
                                           verdict="pass", support=120, sentence="An old verdict.",
                                           on_insufficient="stop"))
    rows = release_view(A)["verdicts"]
    fields = [f.name for f in dataclasses.fields(Verdict)]
    assert [Verdict(**{k: r[k] for k in fields}) for r in rows[:2]] == [offline, live]
    assert [rows[2][k] for k in ("effect", "effect_lo", "effect_hi", "allowed_lo", "allowed_hi", "effect_unit")] == \
        [None] * 6
