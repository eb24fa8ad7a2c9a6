"""The release gates against planted candidates with a known truth (tests/contracts/planted.py), over ten
seeds each: every harmful case is stopped by the contract that names its harm in at least 95% of seeds,
the good candidate in at most 5%. The window is realistic in shape (20 days of 40,000 card transactions,
12 countries, 2,000 heavy-tailed merchants, new merchants, censoring by the incumbent that logged it, 5%
exploration); thresholds are fitted on its first ten days and every gate judges the last ten.
benchmarks/bench_battery.py runs the same battery over more seeds and prints the table. In a session
with other tests, conftest.py starts the battery in the background when the session begins and runs
these tests last."""
from __future__ import annotations

import re

import pytest

from contracts.base import FAIL, PASS

from planted import (CASES, JUDGED_BY_TRUTH, MID_COUNTRY, THIN_COUNTRY, Battery, action_rate_limit, battery_table,
                     gating_contracts, harmful)

SEEDS = range(10)
pytestmark = pytest.mark.slow
STARTED = pytest.StashKey[Battery]()  # the battery conftest.py started ahead of the other tests


def start(nice: int = 0) -> Battery:
    """Every planted case over SEEDS, on two processes (see conftest.py: started when the session begins)."""
    return Battery(list(SEEDS), contracts=gating_contracts(), workers=2, nice=nice)


@pytest.fixture(scope="module")
def battery(request):
    started = request.config.stash.get(STARTED, None)
    return (started or start()).result()


def runs(battery, case):
    return [r for (c, _), r in battery.items() if c == case]


@pytest.mark.parametrize("case", [c for c, e in CASES.items() if e not in (None, "consistent")
                                  and c not in JUDGED_BY_TRUTH])
def test_every_harmful_case_is_stopped_by_the_contract_named_for_its_harm(battery, case):
    rs = runs(battery, case)
    rate = sum(CASES[case] in r["stopped_by"] for r in rs) / len(rs)
    assert len(rs) >= 10 and rate >= 0.95, (case, rate, [sorted(r["stopped_by"]) for r in rs])


def test_the_incumbents_own_ranking_is_stopped_as_no_gain_whenever_it_truly_gains_nothing(battery):
    """The neutral candidate is the incumbent's ranking on another scale, at one global threshold fitted to the
    incumbent's FPR. Against the incumbent's per-merchant thresholds that global threshold truly catches a
    little more fraud in about half the worlds (``truth_recall_gain`` on four fresh draws: +0.01 to +0.17
    points on seeds 100-199): passing those is what the contract promises. A seed whose true gain is not
    above zero must be stopped by the fixed-FPR contract as "no gain" (seeds 100-199: 49 of 51). And the
    gains are too small to show on one window, so nearly every seed is stopped all the same (seeds 0-9: 10 of
    10, 3 of them with no true gain; seeds 100-199: 93 of 100)."""
    rs, h = runs(battery, "neutral"), harmful(battery, "neutral", action_rate_limit())
    assert len(h) >= 2, [round(r["truth"] * 100, 2) for r in rs]
    rate = sum("fixed_fpr_higher_recall" in r["stopped_by"] for r in h) / len(h)
    assert rate >= 0.95, (rate, [(round(r["truth"] * 100, 2), sorted(r["stopped_by"])) for r in h])
    assert sum("fixed_fpr_higher_recall" in r["stopped_by"] for r in rs) >= 0.9 * len(rs)


def test_a_shift_at_thin_and_new_merchants_is_stopped_whenever_the_policy_keeps_it(battery):
    """+40% in the mid-sized country, all at its thinnest merchants (tests/contracts/planted.py). Their
    thresholds are pulled to the segment's, but each merchant's own fitting rows still move them: in some
    worlds the fitted policy absorbs most of the plant (true shift +10% to +17% in 7 of seeds 100-199). A
    seed is harmful when the policy's true shift on fresh draws is beyond the limit; those must be stopped
    by the action-rate contract, and the plant must be harmful in most seeds for that to mean anything."""
    limit = action_rate_limit()
    rs, h = runs(battery, "shift_thin_new"), harmful(battery, "shift_thin_new", limit)
    assert len(h) >= 0.7 * len(rs), [round(r["truth"], 3) for r in rs]
    rate = sum("country_action_rate_shift" in r["stopped_by"] for r in h) / len(h)
    assert rate >= 0.95, (rate, [(round(r["truth"], 3), sorted(r["stopped_by"])) for r in h])


def test_a_strictly_better_model_with_equal_action_rates_passes_every_gate(battery):
    rs = runs(battery, "better")
    stopped = [sorted(r["stopped_by"]) for r in rs if r["stopped_by"]]
    assert len(stopped) / len(rs) <= 0.05, stopped


def test_a_neutral_model_is_stopped_saying_no_gain_was_shown(battery):
    """The incumbent's own ranking: at one global threshold it can only lose a little against the
    incumbent's per-merchant thresholds, so the gain is either not shown or shown to be below zero."""
    for r in runs(battery, "neutral"):
        v = next(v for v in r["offline"] if v.contract == "fixed_fpr_higher_recall" and v.slice == "operating point")
        assert v.stops and ("No gain shown" in v.sentence or "It must catch more" in v.sentence), v.sentence


def test_an_fpr_for_recall_trade_fails_on_the_approved_policy(battery):
    for r in runs(battery, "fpr_for_recall"):
        v = next(v for v in r["rejudged"] if v.contract == "fixed_fpr_higher_recall" and v.slice == "policy")
        assert v.verdict == FAIL and "trades FPR for recall" in v.sentence


def test_a_country_shift_reports_the_raw_shift_and_passes_only_when_the_policy_holds_it(battery):
    for r in runs(battery, "country_shift"):
        v = next(v for v in r["offline"] if v.contract == "country_action_rate_shift" and v.slice == MID_COUNTRY)
        raw = re.search(r"At one global threshold the candidate would block [\d.]+% \(\+(\d+)%\)", v.sentence)
        assert raw and int(raw.group(1)) >= 30, v.sentence  # the raw shift, before the thresholds absorb it
        assert "absorb" in v.sentence
        if v.verdict == PASS:  # judged within the limit: on fresh traffic the policy's true shift is too
            assert abs(r["truth"]) <= 0.25, (v.sentence, r["truth"])


def test_a_thin_country_with_a_large_shift_is_pooled_and_never_passes_in_silence(battery):
    for r in runs(battery, "thin_country_shift"):
        own = [v for v in r["offline"] if v.contract == "country_action_rate_shift" and v.slice == THIN_COUNTRY]
        pooled = [v for v in r["offline"] if v.contract == "country_action_rate_shift"
                  and v.slice.startswith("other countries")]
        assert pooled and THIN_COUNTRY not in {v.slice for v in r["offline"] if v.verdict == PASS}
        assert own and own[0].verdict == FAIL, [v.sentence for v in own + pooled]


def test_approval_edits_are_stopped_by_the_re_judgement_before_any_traffic(battery):
    for r in runs(battery, "approval_edit_cut"):
        # the suggested policy holds the country; the edit moves it, and only the re-judgement sees that
        offline = next(v for v in r["offline"] if v.contract == "country_action_rate_shift" and v.slice == MID_COUNTRY)
        assert offline.verdict != FAIL
        v = next(v for v in r["rejudged"] if v.contract == "country_action_rate_shift" and v.slice == MID_COUNTRY)
        assert v.verdict == FAIL and "approved policy" in v.sentence


def test_the_table_reports_every_case(battery):
    t = battery_table(battery)
    assert list(t["case"]) == list(CASES) and (t["seeds"] == len(SEEDS)).all()
