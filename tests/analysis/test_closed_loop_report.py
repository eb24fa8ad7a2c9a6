"""The closed loop's summary page (analysis/closed_loop_report.py) from cycle rows: the figures across the run
(outcomes, planted cases, when the new pattern was learned, exploration's cost, the estimates' gap to the truth),
the runs compared side by side, and the link from the report index."""
from __future__ import annotations

import pytest


def _row(cycle, status="promoted", planted=None, new=None, est_ipw=0.5, est_plain=0.3, truth=0.6, explored=4):
    return {"cycle": cycle, "as_of": f"2026-04-{10 + cycle:02d}", "release_id": f"rel-2026-04-{10 + cycle:02d}",
            "status": status, "reason": "" if status == "promoted" else f"Stopped <b>{cycle}</b>", "error": None,
            "planted": planted, "true_recall": 0.5, "true_fpr": 0.01, "true_action_rate": 0.02,
            "new_pattern_frauds": 0 if new is None else 30, "new_pattern_blocked": new, "explored_frauds": explored,
            "explored_fraud_amount": 10.0 * explored, "est_incumbent_recall_ipw": est_ipw,
            "est_incumbent_recall_plain": est_plain, "true_incumbent_recall": truth, "policies": ["m-1"],
            "readiness": [{"segment": "large", "share_unedited": 1.0}]}


def test_the_summary_says_what_the_run_did_and_compares_runs_of_the_same_world(home):
    from analysis.closed_loop_report import LEARNED_SHARE, write_summary
    from release.orchestration.closed_loop import LoopConfig

    on = [_row(1, planted="bad edit", status="stopped"), _row(2, new=0.0), _row(3, new=LEARNED_SHARE - 0.01),
          _row(4, new=LEARNED_SHARE, status="stopped", planted="bad candidate")]
    off = [_row(k, est_ipw=None, est_plain=0.2, truth=0.6, explored=0, new=0.0 if k > 1 else None) for k in (1, 2, 3, 4)]
    reports = home / "reports"
    page = write_summary(on, LoopConfig(cycles=4), reports, compare={"exploration 0 (off)": off}).read_text()
    text = " ".join(page.split())
    assert "releases: 2 promoted, 2 stopped" in text
    assert "planted bad edit (cycle 1): <strong>stopped</strong>. Stopped &lt;b&gt;1&lt;/b&gt;" in text  # escaped
    # learned from the first cycle at LEARNED_SHARE, not the one just below it
    assert "first in cycle 2; learned (the deployed decisions block at least 15% of it) from cycle 4 (2 cycles" in text
    assert "exploration let through 16 frauds (160.00 in amount)" in text
    assert "mean absolute gap: IPW 10.0%, plain 30.0%" in text
    assert '<table id="compare">' in page and "exploration 0 (off)" in page and page.count("<svg") == 2
    assert ">40.0%</td>" in page  # the run without exploration: plain estimates 40 points under the truth
    assert 'href="closed-loop.html"' in (reports / "index.html").read_text()

    alone = write_summary(on, LoopConfig(cycles=4), reports).read_text()
    assert '<table id="compare">' not in alone and alone.count("<svg") == 1


@pytest.mark.parametrize("content", ["{not json", '{"config": {}}', '{"config": {"exploration": 0}, "cycles": 3}'])
def test_an_earlier_run_that_is_not_one_is_refused_saying_where(tmp_path, content):
    from release.orchestration.closed_loop import earlier_run

    (tmp_path / "closed_loop").mkdir()
    (tmp_path / "closed_loop" / "cycles.json").write_text(content)
    with pytest.raises(ValueError, match="closed_loop/cycles.json: not the rows of a closed-loop run"):
        earlier_run(tmp_path)
