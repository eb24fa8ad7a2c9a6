"""contracts.base: limits judged by intervals (wholly inside passes, wholly beyond fails, anything else is
insufficient data), what data would decide it, which verdicts stop a release, and why adding slices never
makes a gate more lenient."""
from __future__ import annotations

import math

import numpy as np
import pytest

from contracts.base import (EFFECT_UNITS, FAIL, INSUFFICIENT, PASS, POINTS, Verdict, data_to_decide, effect_fields,
                            judge_at_least, judge_at_most, judge_two_sided, pooled_type, shift_ci, stops)

NAN = float("nan")


@pytest.mark.parametrize("lo,hi,want", [
    (-0.1, 0.1, PASS), (-0.25, 0.25, PASS), (0.26, 0.4, FAIL), (-0.5, -0.3, FAIL),
    (0.1, 0.3, INSUFFICIENT), (-0.3, 0.3, INSUFFICIENT), (NAN, 0.1, INSUFFICIENT), (-0.1, NAN, INSUFFICIENT),
    (-math.inf, 0.0, INSUFFICIENT),
])
def test_two_sided_limit_by_interval(lo, hi, want):
    assert judge_two_sided(lo, hi, 0.25) == want


@pytest.mark.parametrize("lo,hi,want", [(0.01, 0.05, PASS), (0.0, 0.1, PASS), (-0.02, 0.03, INSUFFICIENT),
                                        (-0.04, -0.01, FAIL), (NAN, NAN, INSUFFICIENT)])
def test_at_least_a_floor(lo, hi, want):
    assert judge_at_least(lo, hi, 0.0) == want


@pytest.mark.parametrize("lo,hi,want", [(-0.02, 0.0001, PASS), (0.0003, 0.01, FAIL), (-0.01, 0.001, INSUFFICIENT)])
def test_at_most_a_ceiling(lo, hi, want):
    assert judge_at_most(lo, hi, 0.0002) == want


def test_the_data_that_would_decide_an_interval():
    # point +0.20, half-width 0.10, limit 0.25: the half-width must shrink to 0.05, so (0.10/0.05)^2 = 4x
    assert data_to_decide(0.20, 0.10, 0.30, [0.25, -0.25], 1000, "transactions") == (
        "about 4.0x the data (~4,000 transactions) would decide it")
    assert "sits on the limit itself" in data_to_decide(0.25, 0.2, 0.3, [0.25], 100, "frauds")
    assert data_to_decide(NAN, NAN, NAN, [0.1], 0, "frauds") == "no figure could be computed from 0 frauds"


def test_the_paired_interval_by_hand():
    # 30 more blocks one way, 10 the other, on 2,000: d = 0.01, var = (40/2000 - 0.0001)/2000
    lo, hi = shift_ci(30, 10, 2000)
    half = 1.959964 * math.sqrt((0.02 - 0.0001) / 2000)
    assert (lo, hi) == (pytest.approx(0.01 - half), pytest.approx(0.01 + half))


def v(verdict, gate=True, on="stop"):
    return Verdict("c", "k", gate, "country", "X", verdict, None, None, None, 1, "s", None, on)


def test_which_verdicts_stop_a_release():
    assert v(FAIL).stops and v(INSUFFICIENT).stops
    assert not v(INSUFFICIENT, on="warn").stops and not v(PASS).stops and not v(FAIL, gate=False).stops
    # rows read back from the store; a NULL on_insufficient (written before migration 0003) stops
    assert stops({"gate": True, "verdict": INSUFFICIENT, "on_insufficient": None})
    assert not stops({"gate": True, "verdict": INSUFFICIENT, "on_insufficient": "warn"})


def test_a_verdict_built_by_position_has_no_effect_and_the_effect_fields_are_floats_or_none():
    assert (v(PASS).effect, v(PASS).effect_lo, v(PASS).allowed_hi, v(PASS).effect_unit) == (None, None, None, None)
    assert v(PASS).as_dict()["on_insufficient"] == "stop"  # the fields before them keep their places
    f = effect_fields(POINTS, np.float64(0.039), 0.01, math.inf, allowed_lo=-0.05, allowed_hi=NAN)
    assert f == {"effect": 0.039, "effect_lo": 0.01, "effect_hi": None, "allowed_lo": -0.05, "allowed_hi": None,
                 "effect_unit": "points"}
    assert type(f["effect"]) is float  # a plain float, whatever numpy type the contract computed it in
    assert EFFECT_UNITS == ("relative", "points", "rate", "auc", "ms", "psi")
    with pytest.raises(ValueError, match="effect_unit must be one of relative, points, rate, auc, ms, psi. Got 'pct'"):
        effect_fields("pct", 0.1)


def test_adding_slices_never_makes_a_gate_more_lenient():
    """Each slice is judged on its own interval: a release stopped by some slices stays stopped whatever
    slices are added (with Benjamini-Hochberg, adding quiet slices could turn a failure into a pass)."""
    rng = np.random.default_rng(0)
    for _ in range(300):
        k = rng.integers(1, 8)
        centre = rng.normal(0, 0.3, k)
        half = rng.uniform(0.01, 0.3, k)
        verdicts = [judge_two_sided(c - h, c + h, 0.25) for c, h in zip(centre, half)]
        stopped = any(x != PASS for x in verdicts)
        more = verdicts + [judge_two_sided(c - h, c + h, 0.25) for c, h in
                           zip(rng.normal(0, 0.05, 20), rng.uniform(0.01, 0.05, 20))]
        assert any(x != PASS for x in more) >= stopped


def test_pooled_slice_type_names():
    assert pooled_type("country", "actions", 500) == "country|actions>=500"
    assert pooled_type("all", "frauds", 30) == "all"
