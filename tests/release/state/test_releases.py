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
