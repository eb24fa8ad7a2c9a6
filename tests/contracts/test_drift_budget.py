"""drift_budget: the policy against production before a window's releases, on the same judging rows.

Hand-built tidy rows with known answers (tests/contracts/tidy.py); the anchor's scoring is tested in
tests/analysis/test_evaluation.py, its lineage in tests/release/orchestration/test_drift_anchor.py, and the
budget's verdicts on planted windows with a known truth in test_drift_budget_planted below."""
from __future__ import annotations

import pytest

from contracts.base import FAIL, INSUFFICIENT, PASS
from contracts.drift_budget import DriftBudget
from contracts.evaluator import load_contracts
from tests.contracts.tidy import interval_rule, slice_rows, table

BUDGET = DriftBudget(name="fpr_drift_budget", kind="drift_budget", max_relative_drift=0.25)
ANCHOR = {"model_id": "m-old", "window_days": 182, "since": "2026-06-01",
          "releases": ["rel-2026-06-01", "rel-2026-06-15", "rel-2026-06-29"],
          "changes": {"rel-2026-06-01": 1.08, "rel-2026-06-29": 1.12}}


def fpr_rows(anchor: float, policy: float, d_lo: float, d_hi: float, incumbent: float | None = None,
             own_lo: float | None = None, own_hi: float | None = None, **kw):
    """All-traffic FPR rows (dm): the anchor's, the policy's and their difference's interval; the incumbent
    (production now) and the policy's own change against it."""
    inc = policy if incumbent is None else incumbent
    own = policy - inc
    models = {"anchor": anchor, "policy": policy, "policy-anchor": (policy - anchor, d_lo, d_hi),
              "incumbent": inc, "policy-incumbent": (own, own if own_lo is None else own_lo,
                                                     own if own_hi is None else own_hi)}
    return table(slice_rows("all", "all", "fpr", "dm", models, **kw))


def judge(metrics, windows=None, budget=BUDGET, what="policy"):
    vs = budget.check(metrics, windows if windows is not None else {"drift_anchor": ANCHOR}, what)
    assert len(vs) == 1
    return vs[0]


@pytest.mark.parametrize("policy, lo, hi, expected", [
    (0.0110, 0.0004, 0.0016, PASS),     # +10% (CI +4%..+16%): inside +25%
    (0.0140, 0.0032, 0.0048, FAIL),     # +40% (CI +32%..+48%): wholly beyond
    (0.0122, 0.0012, 0.0033, INSUFFICIENT),  # +22% (CI +12%..+33%): reaches beyond
    (0.0080, -0.0030, -0.0010, PASS),   # lower than the anchor
])
def test_the_policy_over_the_anchor_is_judged_by_its_interval(policy, lo, hi, expected):
    own = policy - 0.0100  # production is the anchor here: the drift is this release's own change
    v = judge(fpr_rows(0.0100, policy, lo, hi, incumbent=0.0100, own_lo=own + lo - (policy - 0.01),
                       own_hi=own + hi - (policy - 0.01)))
    assert v.verdict == expected, v.sentence
    assert interval_rule(v) == expected
    scale = 1.6449 / 1.9600  # the table's 95% intervals rescaled to the contract's 90% (contracts.base.wide_metric)
    d = policy - 0.01
    assert v.effect == pytest.approx(d / 0.01)
    assert (v.effect_lo, v.effect_hi) == pytest.approx(((d - scale * (d - lo)) / 0.01, (d + scale * (hi - d)) / 0.01),
                                                       abs=1e-3)
    assert v.allowed_hi == 0.25 and v.allowed_lo is None and v.effect_unit == "relative"
    assert v.stops == (expected != PASS)  # on_insufficient: stop
    # each shipped release with what it shipped, where its evaluation said
    assert "(rel-2026-06-01 +8%, rel-2026-06-15, rel-2026-06-29 +12%)" in v.sentence and "since 2026-06-01" in v.sentence


def test_a_ratchet_of_small_releases_is_stopped_though_this_one_moves_little():
    """Production already drifted +30% over the anchor; this release adds +5%: the policy is +36% over the
    anchor, beyond the budget. Its own change shown above zero: a failure. Its own change undecided around
    zero: insufficient data (the drift is production's; whether this release adds to it is not shown), and
    it stops all the same, for a person to decide."""
    v = judge(fpr_rows(0.0100, 0.0136, 0.0028, 0.0044, incumbent=0.0130, own_lo=0.0002, own_hi=0.0010))
    assert v.verdict == FAIL and v.stops
    assert "+36%" in v.sentence and "Its own change against production (1.30%): +5%" in v.sentence
    v = judge(fpr_rows(0.0100, 0.0136, 0.0028, 0.0044, incumbent=0.0130, own_lo=-0.0004, own_hi=0.0016))
    assert v.verdict == INSUFFICIENT and v.stops and "cannot be told from zero" in v.sentence


def test_a_release_that_does_not_raise_fpr_passes_even_beyond_the_budget():
    """Production drifted beyond the budget before; a release that clearly lowers FPR is the way back."""
    v = judge(fpr_rows(0.0100, 0.0128, 0.0020, 0.0036, incumbent=0.0140, own_lo=-0.0018, own_hi=-0.0006))
    assert v.verdict == PASS and not v.stops
    assert "moves back toward the budget" in v.sentence
    # the same drift, its own change undecided (could be a rise): stops
    v = judge(fpr_rows(0.0100, 0.0128, 0.0020, 0.0036, incumbent=0.0140, own_lo=-0.0018, own_hi=0.0006))
    assert v.verdict == INSUFFICIENT and v.stops  # +28% over the anchor, 90% CI +21%..+35%


def test_no_anchor_in_the_metrics_is_never_a_pass():
    rows = table(slice_rows("all", "all", "fpr", "dm", {"incumbent": 0.01, "policy": 0.011,
                                                         "policy-incumbent": (0.001, 0.0, 0.002)}))
    v = judge(rows)
    assert v.verdict == INSUFFICIENT and v.stops and "did not score the anchor" in v.sentence
    assert judge(rows.iloc[0:0]).verdict == INSUFFICIENT
    assert BUDGET.check(None)[0].verdict == INSUFFICIENT


def test_an_anchor_that_could_not_be_scored_is_never_a_pass():
    """The pipeline could not score the anchor (its features are not built any more): the rows' anchor figures
    are the incumbent's stand-in, not the anchor's, and the budget says why it cannot judge."""
    why = "the anchor m-old reads features these rows do not have (merchant_fraud_rate_30d)"
    v = judge(fpr_rows(0.0100, 0.0101, -0.0004, 0.0006), windows={"drift_anchor": {**ANCHOR, "error": why}})
    assert v.verdict == INSUFFICIENT and v.stops and why in v.sentence


def test_too_few_explored_frauds_for_the_counterfactual_fpr_is_insufficient():
    thin = fpr_rows(0.0100, 0.0105, -0.0002, 0.0012, explored_frauds=0, ess_frauds=0.0)
    v = judge(thin, windows={"drift_anchor": ANCHOR})  # no outcome model named: judged on the row itself
    assert v.verdict == INSUFFICIENT and "too few explored rows" in v.sentence
    ok = {"drift_anchor": ANCHOR, "outcome_model": {"explored_frauds": 40, "ess_frauds": 90.0}}
    assert judge(thin, windows=ok).verdict == PASS  # dm rests on where its outcome model was fitted
    plain = DriftBudget(name="b", kind="drift_budget", max_relative_drift=0.25, estimator="plain")
    rows = table(slice_rows("all", "all", "fpr", "plain", {"anchor": 0.01, "policy": 0.0105, "incumbent": 0.0105,
                                                          "policy-anchor": (0.0005, -0.0002, 0.0012),
                                                          "policy-incumbent": 0.0}, explored_frauds=0))
    assert plain.check(rows, {})[0].verdict == PASS


def test_the_sentence_says_what_the_anchor_is():
    rows = fpr_rows(0.0100, 0.0110, 0.0004, 0.0016)
    assert "no release history was looked up" in judge(rows, windows={}).sentence
    alone = judge(rows, windows={"drift_anchor": {**ANCHOR, "releases": [], "since": None}}).sentence
    assert "no release shipped in the 182 days before this one" in alone
    first = judge(rows, windows={"drift_anchor": {**ANCHOR, "releases": [], "since": None,
                                                  "over_bootstrap": "rel-2026-01-04"}}).sentence
    assert "production (shipped by rel-2026-01-04 over a bootstrap stand-in; drift counts from it)" in first
    assert judge(rows, what="approved policy").sentence.startswith("The approved policy's FPR is 1.10% against 1.00%")


def test_an_action_rate_budget_reads_the_engines_ratio_interval():
    budget = DriftBudget(name="ar", kind="drift_budget", metric="action_rate", max_relative_drift=0.2)
    rows = table(slice_rows("all", "all", "action_rate", "all", {
        "anchor": 0.010, "policy": 0.0118, "incumbent": 0.0115, "policy-anchor": (0.0018, 0.0010, 0.0026),
        "policy/anchor": (1.18, 1.09, 1.27), "policy-incumbent": (0.0003, -0.0004, 0.0010)}))
    v = budget.check(rows, {"drift_anchor": ANCHOR})[0]
    assert v.verdict == INSUFFICIENT  # the ratio's own interval (+9%..+27%) reaches beyond +20%
    assert v.effect_hi == pytest.approx(0.27, abs=0.02)  # rescaled from 95% to the contract's 90%


def test_drift_budgets_share_one_window(tmp_path):
    p = tmp_path / "c.yaml"
    p.write_text("contracts:\n"
                 "  - {name: a, kind: drift_budget, max_relative_drift: 0.2}\n"
                 "  - {name: b, kind: drift_budget, metric: action_rate, max_relative_drift: 0.3, window_days: 90}\n")
    with pytest.raises(Exception, match="share one window_days"):
        load_contracts(p)
    p.write_text("contracts:\n  - {name: a, kind: drift_budget, max_relative_drift: 0}\n")
    with pytest.raises(Exception, match="max_relative_drift"):
        load_contracts(p)
    p.write_text("contracts:\n  - {name: a, kind: drift_budget, max_relative_drift: 0.2}\n")
    (a,) = load_contracts(p).contracts
    assert (a.metric, a.estimator, a.window_days, a.confidence, a.on_insufficient, a.gate) == \
        ("fpr", "dm", 182, 0.90, "stop", True)


@pytest.mark.slow
@pytest.mark.parametrize("factor, step", [(1.2, 1.12), (1.0, 1.0)])
def test_drift_budget_planted(factor, step):
    """Planted windows with a known truth (tests/contracts/planted.py judge_drift), six seeds. A ratchet step:
    production already declines 1.2x the legitimate transactions of the anchor, and the approved policy
    declines 1.12x production's (true drift about +34%, beyond the budget, the release's own change +12%):
    stopped in every seed. No drift (the anchor is the incumbent, the better candidate's policy as
    suggested): passes in every seed. The benchmark runs 100 seeds and the cases between
    (benchmarks/bench_drift_budget.py, README)."""
    from tests.contracts.planted import judge_drift

    for seed in range(6):
        r = judge_drift(seed, factor, step)
        v = r["verdict"]
        if factor > 1:
            assert r["truth"] > 0.25 and r["own_truth"] > 0 and v.stops, (seed, r, v.sentence)
        else:
            assert r["truth"] < 0.1 and v.verdict == PASS, (seed, r, v.sentence)
        assert v.effect_lo <= v.effect <= v.effect_hi
