"""release.orchestration.cycle.backtest_outcome: what the backtest (the approved policies replayed on recent history
before shadow) records. A country beyond the limit stops the release; an undecided one does not stop it
(shadow judges every guarded slice on live traffic, where unjudged never passes) but is named: an
undecided backtest is never recorded as passed."""
from __future__ import annotations

import numpy as np
import pandas as pd

from release.orchestration.cycle import backtest_outcome
from release.rollout.shadow import decision_diffs, online_action_rate_verdicts


def traffic(countries: dict[str, tuple[int, float, float]], seed: int = 0) -> pd.DataFrame:
    """Replayed traffic: per country (rows, production's block rate, candidate's), the candidate blocking
    what production blocks and, on top, the extra share on other rows (or fewer where it is lower)."""
    rng = np.random.default_rng(seed)
    parts = []
    for c, (n, p, q) in countries.items():
        u = rng.random(n)
        parts.append(pd.DataFrame({"merchant_country": c, "merchant_category": "grocery", "amount": 20.0,
                                   "production_action": u < p, "candidate_action": u < q}))
    return pd.concat(parts, ignore_index=True)


def verdicts(countries):
    return online_action_rate_verdicts(decision_diffs(traffic(countries)), "backtest_country_action_rate_shift",
                                       max_relative_shift=0.25, min_absolute_shift=0.0, min_support=500)


def test_every_country_within_the_limit_is_recorded_as_passed():
    vs = verdicts({"FR": (40_000, 0.03, 0.031), "DE": (30_000, 0.03, 0.029)})
    failed, reason = backtest_outcome(vs, 70_000, 14)
    assert not failed and reason.endswith("passed: every country (2) within the limit")


def test_an_undecided_country_goes_on_but_is_named_and_not_called_passed():
    # DE: +30% on 1,500 rows (about 45 blocks): its interval reaches both sides of the 25% limit
    vs = verdicts({"FR": (40_000, 0.03, 0.031), "DE": (1_500, 0.03, 0.039)})
    assert {v.slice: v.verdict for v in vs} == {"FR": "pass", "DE": "insufficient data"}
    failed, reason = backtest_outcome(vs, 41_500, 14)
    assert not failed
    assert "passed:" not in reason and "not passed" in reason and "1 of 2 undecided (DE)" in reason
    assert "shadow" in reason


def test_a_country_beyond_the_limit_stops_the_release_with_its_sentence():
    vs = verdicts({"FR": (40_000, 0.03, 0.031), "DE": (30_000, 0.03, 0.048)})  # DE +60%
    failed, reason = backtest_outcome(vs, 70_000, 14)
    assert [v.slice for v in failed] == ["DE"]
    assert reason.startswith("Stopped by the backtest on the last 14 days: DE:")


def test_a_backtest_with_nothing_to_judge_is_not_passed():
    failed, reason = backtest_outcome([], 0, 14)
    assert not failed and "not passed" in reason and "passed:" not in reason
