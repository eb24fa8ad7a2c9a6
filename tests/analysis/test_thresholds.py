"""analysis.thresholds.suggest_thresholds: per-merchant candidate thresholds that keep each merchant's
incumbent block rate; thin merchants shrunk toward the global threshold."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from analysis.metrics import thresholds_for
from analysis.thresholds import suggest_thresholds

GLOBAL_T = 0.8
INC_THRESHOLDS = {"BIG1": 0.9, "BIG2": 0.7, "THIN": 0.9, "NEVER": 0.9, "ALL": 0.9}


def _merchant(rng, name: str, n: int, blocked: int) -> pd.DataFrame:
    """``n`` rows of which exactly ``blocked`` have an incumbent score above the 0.9 / 0.7 thresholds."""
    inc = rng.uniform(0.0, 0.6, n)
    inc[:blocked] = rng.uniform(0.95, 1.0, blocked)
    return pd.DataFrame({"merchant_id": name, "incumbent_score": inc,
                         "candidate_score": rng.uniform(0.0, 0.999, n)})  # continuous: no ties


@pytest.fixture
def scored() -> pd.DataFrame:
    rng = np.random.default_rng(11)
    parts = [
        _merchant(rng, "BIG1", 400, 26),    # 6.5% blocked
        _merchant(rng, "BIG2", 300, 12),    # 4% blocked
        _merchant(rng, "THIN", 50, 5),      # 10% blocked, but only 50 transactions
        _merchant(rng, "NEVER", 250, 0),    # the incumbent blocked none of it
        _merchant(rng, "ALL", 210, 210),    # the incumbent blocked all of it
    ]
    return pd.concat(parts, ignore_index=True).sample(frac=1.0, random_state=3).reset_index(drop=True)


def _suggest(scored, **kw):
    inc_thr = thresholds_for(scored["merchant_id"], INC_THRESHOLDS, 0.5)
    return suggest_thresholds(scored, inc_thr, GLOBAL_T, **kw).set_index("merchant_id")


def _desc_scores(scored, merchant):
    return np.sort(scored.loc[scored["merchant_id"] == merchant, "candidate_score"].to_numpy())[::-1]


def test_one_row_per_merchant_with_support_and_incumbent_block_rate(scored):
    out = _suggest(scored)
    assert sorted(out.index) == ["ALL", "BIG1", "BIG2", "NEVER", "THIN"]
    assert out["support"].to_dict() == {"ALL": 210, "BIG1": 400, "BIG2": 300, "NEVER": 250, "THIN": 50}
    assert out.loc["BIG1", "incumbent_block_rate"] == pytest.approx(26 / 400)
    assert out.loc["BIG2", "incumbent_block_rate"] == pytest.approx(12 / 300)
    assert out.loc["THIN", "incumbent_block_rate"] == pytest.approx(5 / 50)
    assert out.loc["NEVER", "incumbent_block_rate"] == 0.0
    assert out.loc["ALL", "incumbent_block_rate"] == 1.0
    assert out["shrunk"].to_dict() == {"ALL": False, "BIG1": False, "BIG2": False, "NEVER": False, "THIN": True}


@pytest.mark.parametrize("merchant,blocked", [("BIG1", 26), ("BIG2", 12)])
def test_large_merchant_keeps_exactly_its_number_of_blocks(scored, merchant, blocked):
    out = _suggest(scored)
    t = out.loc[merchant, "suggested_threshold"]
    s = _desc_scores(scored, merchant)
    assert int((s >= t).sum()) == blocked  # the candidate blocks exactly as many rows as the incumbent did
    assert s[blocked] < t <= s[blocked - 1]  # between the k-th and (k+1)-th highest candidate scores
    assert out.loc[merchant, "expected_block_rate"] == pytest.approx(blocked / len(s))
    assert out.loc[merchant, "expected_block_rate"] == pytest.approx(out.loc[merchant, "incumbent_block_rate"])


def test_thin_merchant_is_shrunk_toward_the_global_threshold(scored):
    out = _suggest(scored, min_support=200, prior_strength=200.0)
    s = _desc_scores(scored, "THIN")
    raw = (s[4] + s[5]) / 2  # midway between the 5th and 6th highest: would keep its 5 blocks
    w = 50 / (50 + 200)
    t = out.loc["THIN", "suggested_threshold"]
    assert t == pytest.approx(w * raw + (1 - w) * GLOBAL_T)
    assert abs(t - GLOBAL_T) < abs(raw - GLOBAL_T)
    # the expected block rate is what the shrunk threshold really blocks, not the incumbent's rate
    assert out.loc["THIN", "expected_block_rate"] == pytest.approx((s >= t).mean())
    assert out.loc["THIN", "reason"].startswith("Thin merchant (50 transactions): keeps its block rate of 10.0%")
    assert "shrunk toward the global threshold" in out.loc["THIN", "reason"]


def test_more_prior_strength_pulls_a_thin_merchant_closer_to_global(scored):
    weak = _suggest(scored, prior_strength=10.0).loc["THIN", "suggested_threshold"]
    strong = _suggest(scored, prior_strength=1000.0).loc["THIN", "suggested_threshold"]
    assert abs(strong - GLOBAL_T) < abs(weak - GLOBAL_T)


def test_min_support_decides_who_is_thin(scored):
    out = _suggest(scored, min_support=10)
    assert not out["shrunk"].any()
    s = _desc_scores(scored, "THIN")
    t = out.loc["THIN", "suggested_threshold"]
    assert int((s >= t).sum()) == 5  # not shrunk any more: keeps exactly its 5 blocks
    out = _suggest(scored, min_support=301)
    assert out["shrunk"].to_dict() == {"ALL": True, "BIG1": False, "BIG2": True, "NEVER": True, "THIN": True}


def test_merchant_the_incumbent_never_blocked_stays_unblocked(scored):
    out = _suggest(scored)
    s = _desc_scores(scored, "NEVER")
    t = out.loc["NEVER", "suggested_threshold"]
    assert t > s[0]  # above its highest candidate score ...
    assert np.nextafter(t, -np.inf) == s[0]  # ... but only just
    assert out.loc["NEVER", "expected_block_rate"] == 0.0
    assert out.loc["NEVER", "reason"] == "Keeps the merchant's block rate of 0.0% under the new model."


def test_merchant_the_incumbent_blocked_entirely_stays_blocked(scored):
    out = _suggest(scored)
    s = _desc_scores(scored, "ALL")
    assert out.loc["ALL", "suggested_threshold"] <= s[-1]
    assert out.loc["ALL", "expected_block_rate"] == 1.0


def test_current_thresholds_are_reported_per_merchant(scored):
    out = _suggest(scored, current={"BIG1": 0.9, "BIG2": 0.7, "GHOST": 0.4})
    assert out.loc["BIG1", "current_threshold"] == 0.9
    assert out.loc["BIG2", "current_threshold"] == 0.7
    assert out[["current_threshold"]].drop(["BIG1", "BIG2"])["current_threshold"].isna().all()
    assert "GHOST" not in out.index  # no traffic, no suggestion
    assert _suggest(scored)["current_threshold"].isna().all()


def test_reason_reports_the_preserved_block_rate(scored):
    out = _suggest(scored)
    assert out.loc["BIG1", "reason"] == "Keeps the merchant's block rate of 6.5% under the new model."
    assert out.loc["BIG2", "reason"] == "Keeps the merchant's block rate of 4.0% under the new model."
