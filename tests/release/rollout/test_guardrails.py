"""The guardrails of a rollout stage on planted cases with known truth: synthetic decision-log frames
(seeded numpy) where the candidate's shift, errors, latency and scores are set, judged over many seeds.

The world: five countries (30/20/20/15/15% of traffic), 200 merchants with equal traffic, spread over
the countries; 150 of them have an approved threshold (segments large/medium/small), the other 50 (a
quarter of the traffic) are "not in the approved set". Each transaction has a latent risk z; each model
sees it with its own noise (so they disagree on some rows) and blocks above its threshold: production
blocks 8% of every slice, the candidate 8% x its planted multiplier.
"""
from __future__ import annotations

import json
import re

import numpy as np
import pandas as pd
import pytest
from scipy.special import expit
from scipy.stats import norm

from contracts.base import FAIL, INSUFFICIENT, MS, PASS, PSI, RATE, RELATIVE
from release.rollout.guardrails import (BREACH, INCONCLUSIVE, NOT_IN_APPROVED_SET, PASSED, ErrorRateGuardrail,
                                        Guardrails, LatencyGuardrail, ScoreShiftGuardrail, ShiftGuardrail,
                                        error_rate_judgement, judge_stage, latency_judgement, psi, quantile_ci,
                                        score_shift_judgement, shift_judgement)
from release.rollout.ramp import routed_to_candidate
from release.core.settings import config_dir

COUNTRIES = np.array(["US", "GB", "FR", "DE", "BR"])
N_MERCHANTS = 200
MERCHANT_COUNTRY = COUNTRIES[np.searchsorted(np.cumsum([0.3, 0.2, 0.2, 0.15, 0.15]),
                                             (np.arange(N_MERCHANTS) + 0.5) / N_MERCHANTS)]
COUNTRY_CATEGORIES = sorted(COUNTRIES)
MERCHANT_COUNTRY_CODE = np.searchsorted(COUNTRY_CATEGORIES, MERCHANT_COUNTRY)
MERCHANT_IDS = np.array([f"m{i:03d}" for i in range(N_MERCHANTS)])
UNAPPROVED = np.arange(N_MERCHANTS) % 4 == 3  # a quarter of the merchants, in every country
SEGMENTS = {m: ("large", "medium", "small")[i % 3] for i, m in enumerate(MERCHANT_IDS) if not UNAPPROVED[i]}
BASE_RATE = 0.08
NOISE = 0.1  # each model's noise on the latent risk (sd); production and candidate agree on most rows
T0 = pd.Timestamp("2024-03-01T12:00:00Z")

SHIFT = {"max_relative_shift": 0.3, "min_absolute_shift": 0.003, "min_support": 300}


def guardrails(**kw) -> Guardrails:
    return Guardrails(**{"action_rate_shift": SHIFT, **kw})


def decision_log(seed: int, n: int, *, pct: float = 0.0, multiplier=None, score_shift: float = 0.0,
                 error_rate: float = 0.0, latency_scale: float = 1.0) -> pd.DataFrame:
    """``n`` decision-log rows of one stage. ``multiplier(frame) -> array``: the candidate's action rate
    over production's per row (1: neutral). ``pct`` 0: shadow (the candidate scores every row); > 0: the
    cards whose bucket is below it are routed to the candidate, which serves them unless it fails
    (``error_rate``), and production scores them in shadow. ``score_shift``: added to the candidate's
    logit. ``latency_scale``: the candidate's latency over production's (lognormal, p99 about 13 ms)."""
    rng = np.random.default_rng(seed)
    m = rng.integers(0, N_MERCHANTS, n)
    card = rng.integers(0, 200_000, n)
    df = pd.DataFrame({"card_id": card, "merchant_id": pd.Categorical.from_codes(m, MERCHANT_IDS),
                       "merchant_country": pd.Categorical.from_codes(MERCHANT_COUNTRY_CODE[m], COUNTRY_CATEGORIES),
                       "ts": T0 + pd.to_timedelta(np.linspace(0, 3600e6, n).astype(np.int64), unit="us")})
    z = rng.standard_normal(n)
    sd = np.sqrt(1 + NOISE ** 2)
    prod_latent = z + NOISE * rng.standard_normal(n)
    cand_latent = z + NOISE * rng.standard_normal(n)
    mult = np.ones(n) if multiplier is None else np.asarray(multiplier(df), dtype=float)
    df["production_score"] = expit(1.5 * prod_latent - 3)
    df["production_block"] = prod_latent >= sd * norm.ppf(1 - BASE_RATE)
    df["candidate_score"] = expit(1.5 * cand_latent - 3 + score_shift)
    levels, which = np.unique(mult, return_inverse=True)
    df["candidate_block"] = (cand_latent >= sd * norm.ppf(1 - BASE_RATE * levels)[which]).astype(object)
    routed = routed_to_candidate(card.astype(str), pct) if pct > 0 else np.zeros(n, dtype=bool)
    failed = routed & (rng.random(n) < error_rate)
    df["routed"] = routed
    df["ramp_pct"] = float(pct)
    df["candidate_error"] = pd.Categorical.from_codes(np.where(failed, 0, -1), ["ValueError: no_such_feature"])
    df.loc[failed, ["candidate_score", "candidate_block"]] = np.nan
    served = routed & ~failed
    df["served_by"] = pd.Categorical.from_codes(served.astype(int), ["production", "candidate"])
    lat = rng.lognormal(np.log(5.0), 0.4, n)
    df["latency_ms"] = np.where(served, lat * latency_scale, lat)
    return df


def in_country(country: str, factor: float):
    return lambda df: np.where(df["merchant_country"].cat.codes == COUNTRY_CATEGORIES.index(country), factor, 1.0)


def unapproved(factor: float):
    return lambda df: np.where(UNAPPROVED[df["merchant_id"].cat.codes], factor, 1.0)


def reference(seed: int, n: int = 5000) -> np.ndarray:
    """The candidate's scores on a reference sample (the offline judging rows): its unshifted distribution."""
    rng = np.random.default_rng(10_000 + seed)
    return expit(1.5 * (rng.standard_normal(n) + NOISE * rng.standard_normal(n)) - 3)


def statuses(make, g: Guardrails, seeds=range(100), pct: float = 0.0, **kw) -> dict[str, int]:
    out = {PASSED: 0, BREACH: 0, INCONCLUSIVE: 0}
    for s in seeds:
        out[judge_stage(make(s), pct, g, **kw).status] += 1
    return out


# ---------------------------------------------------------------- action rate per country

def test_a_candidate_blocking_40pct_more_in_one_country_breaches():
    # US has 30% of 40,000 rows: 12,000 compared rows; the limit is ±30% of production's 8%
    got = statuses(lambda s: decision_log(s, 40_000, multiplier=in_country("US", 1.4)), guardrails())
    assert got[BREACH] >= 95 and got[PASSED] == 0, got
    j = next(j for j in (judge_stage(decision_log(s, 40_000, multiplier=in_country("US", 1.4)), 0, guardrails())
                         for s in range(10)) if j.status == BREACH)
    [us] = [v for v in j.verdicts if v.verdict == "fail"]
    assert (us.contract, us.slice, us.slice_type) == ("live_shadow_country_action_rate_shift", "US", "country")
    assert us.sentence.startswith("US: the candidate blocks") and "beyond the limit" in us.sentence
    assert j.details["breaches"] == [us.sentence] and j.details["guardrails"]["country_action_rate"]["status"] == BREACH


def test_a_neutral_candidate_passes_and_rarely_breaches():
    # 10,000 rows: the smallest countries have 1,500
    got = statuses(lambda s: decision_log(s, 10_000), guardrails())
    assert got[BREACH] <= 5 and got[PASSED] >= 90, got


def test_a_candidate_exactly_on_the_limit_breaches_at_about_the_nominal_level():
    # +30% in US, the limit itself: a breach is a false alarm, a pass a miss; each side of a 95% interval
    # errs 2.5% of the time, and most seeds are (rightly) undecided
    got = statuses(lambda s: decision_log(s, 20_000, multiplier=in_country("US", 1.3)), guardrails())
    assert got[BREACH] <= 5 and got[PASSED] <= 8 and got[INCONCLUSIVE] >= 85, got


def test_a_neutral_candidate_on_a_small_step_is_never_passed_and_rarely_breached():
    # 1% of 4,000 rows: about 40 rows reach the candidate, every country thin, the pool too
    got = statuses(lambda s: decision_log(s, 4_000, pct=1), guardrails(), pct=1)
    assert got[PASSED] == 0 and got[BREACH] <= 5, got


def test_forty_candidate_rows_are_inconclusive_and_say_what_is_missing():
    log = decision_log(3, 4_000, pct=1)
    j = judge_stage(log, 1, guardrails())
    assert j.status == INCONCLUSIVE and not j.breached and not j.passed
    d = j.details
    n = d["candidate_rows"]
    assert 20 <= n <= 70 and d["rows"] == 4_000 and d["compared_rows"] == n
    [v] = j.verdicts
    assert (v.contract, v.slice, v.verdict) == ("live_ramp_1pct_country_action_rate_shift", "other countries",
                                                "insufficient data")
    assert d["missing"] == [f"other countries (5: BR, DE, FR, GB, US): {n} of 300 candidate rows"]
    assert d["guardrails"]["country_action_rate"] == {
        "support": n, "needed": 300, "slices": {"other countries": {"support": n, "verdict": "insufficient data"}},
        "status": INCONCLUSIVE}
    assert 0 < d["span_seconds"] <= 3600
    json.dumps(d)  # JSON as it is, no default=


def test_only_the_routed_rows_count_in_a_ramp_step():
    # 10,000 rows of a 1% step: about 100 routed to the candidate, below the 300 a country needs
    log = decision_log(7, 10_000, pct=1)
    j = judge_stage(log, 1, guardrails())
    assert j.status == INCONCLUSIVE
    assert j.details["rows"] == 10_000 and j.details["candidate_rows"] == int(log["routed"].sum()) < 200
    assert all(v.support < 300 for v in j.verdicts)
    # the same rows counted whole (the old mistake): every country has its support
    whole = judge_stage(log.assign(routed=True), 1, guardrails()).details["guardrails"]["country_action_rate"]
    assert whole["support"] == 10_000 and min(s["support"] for s in whole["slices"].values()) >= 1_000


def test_a_candidate_blocking_everything_breaches_even_on_a_few_rows():
    log = decision_log(1, 4_000, pct=1)
    log.loc[log["routed"], "candidate_block"] = True
    j = judge_stage(log, 1, guardrails())
    assert j.status == BREACH and j.details["candidate_rows"] < 100


def counted(rows: dict[str, tuple[int, int, int, int]]) -> pd.DataFrame:
    """A shadow log with exact counts per country: (rows, production blocks, candidate-only blocks,
    production-only blocks)."""
    parts = []
    for country, (n, blocks, c_only, p_only) in rows.items():
        prod = np.arange(n) < blocks
        cand = prod.copy()
        cand[blocks:blocks + c_only] = True
        cand[:p_only] = False
        parts.append(pd.DataFrame({"merchant_country": country, "merchant_id": "m000", "production_block": prod,
                                   "candidate_block": cand, "production_score": 0.5, "candidate_score": 0.5,
                                   "routed": False, "ts": T0}))
    return pd.concat(parts, ignore_index=True)


def test_an_undecided_country_says_what_it_needs_and_a_thin_remainder_is_judged_with_the_thinnest_country():
    g = guardrails(action_rate_shift={**SHIFT, "min_support": 500})
    # US judged on its own: +29% (limit ±30%), its interval reaches both sides; FR and DE pooled (450 rows,
    # below the 500 needed): the pool is judged with US, the thinnest country that has the support (1,050)
    log = counted({"US": (600, 48, 14, 0), "FR": (250, 20, 0, 0), "DE": (200, 16, 0, 0)})
    j = judge_stage(log, 0, g)
    assert j.status == INCONCLUSIVE and {v.slice: v.verdict for v in j.verdicts} == {
        "US": "insufficient data", "other countries with US": "pass"}
    [us] = j.details["missing"]
    assert us.startswith("country US: 600 candidate rows, and its interval still reaches both sides of the limit; "
                         "about ") and us.endswith(" would decide it")
    assert int(us.split("about ")[1].split(" ")[0].replace(",", "")) > 600
    [v] = [v for v in j.verdicts if v.slice == "other countries with US"]
    assert v.support == 1050 and "(2: DE, FR; with US for support)" in v.sentence
    # with enough rows every country is judged on its own
    log = counted({"US": (6000, 480, 20, 20), "FR": (2500, 200, 0, 0), "DE": (2000, 160, 0, 0)})
    assert judge_stage(log, 0, g).status == PASSED


def test_a_thin_pool_with_no_country_to_join_says_what_it_needs():
    g = guardrails(action_rate_shift={**SHIFT, "min_support": 500})
    j = judge_stage(counted({"FR": (250, 20, 0, 0), "DE": (200, 16, 0, 0)}), 0, g)
    assert j.status == INCONCLUSIVE and j.details["missing"] == ["other countries (2: DE, FR): 450 of 500 candidate rows"]
    [v] = j.verdicts
    assert "within the limit so far, but 450 transactions are fewer than the 500 needed to pass" in v.sentence


def test_a_shift_in_a_thin_remainder_is_not_lost_by_joining_a_country():
    """The remainder's shift moves the joint slice: 36 more blocks on FR and DE's 450 rows, with US's 600
    unchanged, is +43% on the 1,050 (limit ±30%)."""
    g = guardrails(action_rate_shift={**SHIFT, "min_support": 500})
    j = judge_stage(counted({"US": (600, 48, 0, 0), "FR": (250, 20, 20, 0), "DE": (200, 16, 16, 0)}), 0, g)
    assert {v.slice: v.verdict for v in j.verdicts}["other countries with US"] != "pass" and j.status != PASSED


def test_a_thin_country_with_an_overwhelming_shift_fails_on_its_own():
    # ten thin countries pooled (2,960 rows); BR's candidate blocks 30 more of its 60: the pool's
    # change (+1 point) is within the limit, BR on its own is beyond it even at 99.99%
    thin = {f"C{i}": (290, 23, 0, 0) for i in range(10)}
    log = counted({"US": (20_000, 1600, 10, 10), **thin, "BR": (60, 5, 30, 0)})
    j = judge_stage(log, 0, guardrails())
    assert j.status == BREACH
    assert {v.slice: v.verdict for v in j.verdicts if v.slice != "BR"} == {"US": "pass", "other countries": "pass"}
    [v] = [v for v in j.verdicts if v.verdict == "fail"]
    assert v.slice == "BR" and "judged on its own because its whole interval is beyond the limit" in v.sentence


# ---------------------------------------------------------------- action rate per segment

def test_a_shift_hidden_in_the_merchants_without_an_approved_threshold_is_caught_by_segment():
    g_country = guardrails()
    g_both = guardrails(segment_action_rate_shift=SHIFT)
    make = lambda s: decision_log(s, 20_000, multiplier=unapproved(1.6))  # noqa: E731
    # every country moves by a quarter of 60% (+15%): inside the ±30% limit, the country guardrail never
    # breaches (and mostly passes)
    got = statuses(make, g_country, seeds=range(20))
    assert got[BREACH] == 0 and got[PASSED] >= 15, got
    got = statuses(make, g_both, seeds=range(20), segments=SEGMENTS)
    assert got[BREACH] == 20, got
    j = judge_stage(make(0), 0, g_both, segments=SEGMENTS)
    failed = [v for v in j.verdicts if v.verdict == "fail"]
    assert [(v.contract, v.slice_type, v.slice) for v in failed] == [
        ("live_shadow_segment_action_rate_shift", "segment", NOT_IN_APPROVED_SET)]
    assert failed[0].sentence.startswith("Segment not in the approved set: the candidate blocks")
    assert not [v for v in j.verdicts if v.slice_type == "country" and v.verdict != "pass"]
    assert set(j.details["guardrails"]["segment_action_rate"]["slices"]) == {"large", "medium", "small",
                                                                           NOT_IN_APPROVED_SET}


def test_a_neutral_candidate_passes_the_segment_guardrail():
    got = statuses(lambda s: decision_log(s, 20_000), guardrails(segment_action_rate_shift=SHIFT),
                   seeds=range(20), segments=SEGMENTS)
    assert got[BREACH] <= 1 and got[PASSED] >= 18, got


def test_without_the_approved_set_the_segment_guardrail_is_inconclusive():
    j = judge_stage(decision_log(0, 20_000), 0, guardrails(segment_action_rate_shift=SHIFT), segments=None)
    assert j.status == INCONCLUSIVE
    assert j.details["missing"] == ["segment: the candidate's approved threshold set was not given"]
    # an empty approved set is known: every merchant is "not in the approved set"
    j = judge_stage(decision_log(0, 20_000), 0, guardrails(segment_action_rate_shift=SHIFT), segments={})
    assert j.status == PASSED
    assert set(j.details["guardrails"]["segment_action_rate"]["slices"]) == {NOT_IN_APPROVED_SET}


# ---------------------------------------------------------------- score distribution

def test_a_shifted_score_distribution_breaches_and_an_unshifted_one_passes():
    g = guardrails(score_shift={"max_psi": 0.2, "min_rows": 500})
    ref = {s: reference(s) for s in range(20)}
    j = judge_stage(decision_log(0, 3_000, score_shift=1.0), 0, g, reference_scores=None)
    assert j.details["guardrails"]["score_shift"]["status"] == INCONCLUSIVE  # no reference: never a pass
    assert "score shift: no reference sample of the candidate's scores was given" in j.details["missing"]
    got = {PASSED: 0, BREACH: 0, INCONCLUSIVE: 0}
    same = dict(got)
    for s in range(20):
        for out, shift in ((got, 1.0), (same, 0.0)):
            j = judge_stage(decision_log(s, 3_000, score_shift=shift), 0, g, reference_scores=ref[s])
            out[j.details["guardrails"]["score_shift"]["status"]] += 1
            assert j.status != PASSED or shift == 0.0
    assert got[BREACH] == 20 and same[PASSED] == 20, (got, same)
    j = judge_stage(decision_log(0, 3_000, score_shift=1.0), 0, g, reference_scores=ref[0])
    [v] = [v for v in j.verdicts if v.kind == "score_shift"]
    assert v.contract == "live_shadow_score_shift" and v.candidate_value > 0.2
    assert "above the limit of 0.2" in v.sentence
    json.dumps(j.details)


def test_too_few_live_scores_are_inconclusive():
    g = guardrails(score_shift={"max_psi": 0.2, "min_rows": 500})
    j = judge_stage(decision_log(0, 20_000, pct=1), 1, g, reference_scores=reference(0))
    n = j.details["candidate_rows"]
    assert j.status == INCONCLUSIVE and f"score shift: {n} of 500 candidate scores" in j.details["missing"]


def test_psi_of_a_sample_against_itself_is_small_and_grows_with_the_shift():
    rng = np.random.default_rng(0)
    a, b = rng.standard_normal(5000), rng.standard_normal(1000)
    assert psi(a, b)[0] < 0.05
    assert 0.15 < psi(a, b + 0.5)[0] < 0.4 < psi(a, b + 1.0)[0]


# ---------------------------------------------------------------- error rate and latency

def test_an_error_rate_above_the_limit_breaches_and_a_healthy_one_passes():
    g = guardrails(error_rate={"max_rate": 0.01, "min_requests": 200})
    j = judge_stage(decision_log(0, 40_000, pct=5, error_rate=0.05), 5, g)
    assert j.status == BREACH
    [v] = [v for v in j.verdicts if v.kind == "error_rate"]
    assert v.contract == "live_ramp_5pct_error_rate" and v.verdict == "fail"
    assert v.sentence.startswith("Share of requests that failed on the candidate (")
    assert "above the limit of 1.00%" in v.sentence
    assert judge_stage(decision_log(0, 40_000, pct=5), 5, g).details["guardrails"]["error_rate"]["status"] == PASSED
    # a healthy candidate on 120 requests: too few to pass, and what is missing
    j = judge_stage(decision_log(0, 12_000, pct=1), 1, g)
    n = j.details["candidate_rows"]
    assert f"error rate: {n} of 200 candidate requests" in j.details["missing"]


def test_a_candidate_failing_every_request_breaches_at_once():
    g = guardrails(error_rate={"max_rate": 0.01, "min_requests": 200})
    j = judge_stage(decision_log(0, 4_000, pct=1, error_rate=1.0), 1, g)
    assert j.status == BREACH and j.details["candidate_rows"] < 100


def test_a_slow_candidate_breaches_latency_and_a_fast_one_passes():
    g = guardrails(latency={"max_p99_ms": 25, "min_requests": 200})
    j = judge_stage(decision_log(0, 40_000, pct=5, latency_scale=3.0), 5, g)
    assert j.status == BREACH
    [v] = [v for v in j.verdicts if v.kind == "latency"]
    assert v.contract == "live_ramp_5pct_latency_p99" and v.sentence.startswith("The candidate's p99 latency was")
    j = judge_stage(decision_log(0, 40_000, pct=5), 5, g)
    assert j.details["guardrails"]["latency_p99"]["status"] == PASSED
    json.dumps(j.details)
    # below min_requests a latency is never judged, however slow (the first requests are warm-up)
    j = judge_stage(decision_log(0, 10_000, pct=1, latency_scale=100.0), 1, g)
    n = j.details["guardrails"]["latency_p99"]["support"]
    assert j.details["guardrails"]["latency_p99"]["status"] == INCONCLUSIVE
    assert f"latency p99: {n} of 368 requests served by the candidate" in j.details["missing"]


def test_latency_is_not_applicable_in_shadow():
    j = judge_stage(decision_log(0, 20_000), 0, guardrails(latency={"max_p99_ms": 25}))
    assert j.status == PASSED and "latency_p99" not in j.details["guardrails"]
    assert any(s.startswith("latency: the candidate serves nothing in shadow") for s in j.details["not_checked"])


def test_the_p99_interval_covers_the_true_p99():
    rng = np.random.default_rng(1)
    true = float(np.exp(np.log(5.0) + 0.4 * norm.ppf(0.99)))
    covered = sum(lo <= true <= hi for lo, hi in (quantile_ci(rng.lognormal(np.log(5.0), 0.4, 2000), 0.99, 0.95)
                                                   for _ in range(200)))
    assert covered >= 185  # nominal 95%: 190 of 200


# ---------------------------------------------------------------- configuration and callers

def test_the_shipped_ramp_plan_loads_into_these_guardrails():
    import yaml

    raw = yaml.safe_load((config_dir() / "ramp.yaml").read_text())
    g = Guardrails.model_validate(raw["guardrails"])
    assert g.action_rate_shift.min_support >= 1
    minimal = Guardrails.model_validate({"action_rate_shift": {"max_relative_shift": 0.3}})
    assert (minimal.segment_action_rate_shift, minimal.score_shift, minimal.error_rate, minimal.latency) == (
        None, None, None, None)
    assert Guardrails.model_validate({**raw["guardrails"], "score_shift": {}}).score_shift.max_psi == 0.2
    with pytest.raises(Exception, match="extra"):
        Guardrails.model_validate({**raw["guardrails"], "typo": 1})
    with pytest.raises(Exception, match="max_psi"):
        Guardrails.model_validate({**raw["guardrails"], "score_shift": {"max_psi": -1}})


def test_an_empty_stage_is_inconclusive():
    g = guardrails(error_rate={"max_rate": 0.01}, latency={"max_p99_ms": 25},
                   segment_action_rate_shift=SHIFT, score_shift={})
    j = judge_stage(decision_log(0, 0, pct=5), 5, g, segments=SEGMENTS, reference_scores=reference(0))
    assert j.status == INCONCLUSIVE and j.details["span_seconds"] is None
    assert len(j.details["missing"]) == 5
    json.dumps(j.details)


# ---------------------------------------------------------------- the effect each verdict carries

def test_a_country_shift_carries_the_ratios_interval_and_passes_exactly_inside_the_relative_limit():
    """Production blocks 800 of 10,000 in each country; the candidate 840, 1,040 and 1,200, disagreeing on
    b + c rows. The ratio's interval by hand: (C/P) x exp(±1.96 sqrt((b + c) / (C P))) (the delta method on
    the log ratio); ±30% allowed."""
    counts = pd.DataFrame({"transactions": 10_000, "production_blocks": 800, "candidate_blocks": [840, 1040, 1200],
                           "candidate_only_blocks": [90, 290, 450], "production_only_blocks": 50},
                          index=["FR", "GB", "US"])
    g = ShiftGuardrail(max_relative_shift=0.3, min_absolute_shift=0.003, min_support=300)
    vs, _, _ = shift_judgement(counts, g, name="live_shadow_country_action_rate_shift", slice_type="country")
    got = {v.slice: v for v in vs}
    for country, want in (("FR", PASS), ("GB", INSUFFICIENT), ("US", FAIL)):
        v, r = got[country], counts.loc[country]
        c, p = r["candidate_blocks"], r["production_blocks"]
        half = 1.959964 * np.sqrt((r["candidate_only_blocks"] + r["production_only_blocks"]) / (c * p))
        assert (v.effect, v.effect_lo, v.effect_hi) == (pytest.approx(c / p - 1),
                                                        pytest.approx(c / p * np.exp(-half) - 1),
                                                        pytest.approx(c / p * np.exp(half) - 1))
        assert (v.allowed_lo, v.allowed_hi, v.effect_unit) == (-0.3, 0.3, RELATIVE)
        inside, beyond = -0.3 <= v.effect_lo and v.effect_hi <= 0.3, v.effect_lo > 0.3 or v.effect_hi < -0.3
        assert v.verdict == want == (PASS if inside else FAIL if beyond else INSUFFICIENT)
        m = re.search(r"\(([+-]\d+)%, 95% CI ([+-]\d+)%\.\.([+-]\d+)%\)", v.sentence)
        assert tuple(map(int, m.groups())) == tuple(round(100 * x) for x in (v.effect, v.effect_lo, v.effect_hi))


@pytest.mark.parametrize("errors, want", [(3, PASS), (10, INSUFFICIENT), (40, FAIL)])
def test_an_error_rate_carries_its_exact_interval_against_the_limit(errors, want):
    from scipy.stats import beta

    (v,), _, _ = error_rate_judgement(errors, 1000, ErrorRateGuardrail(max_rate=0.01), name="live_ramp_5pct_error_rate")
    lo, hi = beta.ppf(0.025, errors, 1001 - errors), beta.ppf(0.975, errors + 1, 1000 - errors)  # Clopper-Pearson
    assert (v.effect, v.effect_lo, v.effect_hi) == (errors / 1000, pytest.approx(lo), pytest.approx(hi))
    assert (v.allowed_lo, v.allowed_hi, v.effect_unit) == (None, 0.01, RATE)
    assert f"(95% CI {100 * lo:.2f}%..{100 * hi:.2f}%)" in v.sentence
    assert v.verdict == want == (PASS if hi <= 0.01 else FAIL if lo > 0.01 else INSUFFICIENT)


@pytest.mark.parametrize("limit, want", [(2000, PASS), (500, FAIL), (990, INSUFFICIENT)])
def test_a_p99_latency_carries_its_order_statistic_interval_and_an_unbounded_end_is_none(limit, want):
    # 1..1,000 ms: the count below the p99 is Binomial(1000, 0.99), 990 ± 1.96 x 3.15, so the 983rd and
    # 997th requests bound it
    (v,), _, _ = latency_judgement(np.arange(1.0, 1001.0), LatencyGuardrail(max_p99_ms=limit), name="live_latency_p99")
    assert (v.effect, v.effect_lo, v.effect_hi) == (pytest.approx(990.01), 983.0, 997.0)
    assert "(95% CI 983.0..997.0 ms)" in v.sentence
    assert (v.allowed_lo, v.allowed_hi, v.effect_unit) == (None, limit, MS)
    assert v.verdict == want
    # 200 requests cannot bound a p99 from above at 95% (368 can): the interval is unbounded above
    (v,), _, _ = latency_judgement(np.arange(1.0, 201.0), LatencyGuardrail(max_p99_ms=100), name="live_latency_p99")
    assert v.verdict == FAIL and "..inf ms" in v.sentence and (v.effect_lo, v.effect_hi) == (195.0, None)


def test_a_score_shift_is_a_point_against_the_psi_limit():
    rng = np.random.default_rng(3)
    ref = rng.standard_normal(5000)
    for live, want in ((rng.standard_normal(5000), PASS), (rng.standard_normal(5000) + 1.0, FAIL)):
        (v,), _, _ = score_shift_judgement(live, ref, ScoreShiftGuardrail(), name="live_shadow_score_shift")
        assert v.verdict == want and (v.effect_lo, v.effect_hi) == (None, None)
        assert (v.effect, v.allowed_lo, v.allowed_hi, v.effect_unit) == (pytest.approx(psi(ref, live)[0]), None, 0.2,
                                                                         PSI)
        assert f" is {v.effect:.3f}" in v.sentence and (v.effect <= v.allowed_hi) == (want == PASS)
