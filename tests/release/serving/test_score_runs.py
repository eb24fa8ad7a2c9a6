"""Deciding requests in runs (ScoringService.score_many: admitted in turn, the serving model scoring a run's rows
in one call, then recorded in turn) decides exactly as one request at a time (ScoringService.score): two services
on the same world, with the candidate serving half the cards and shadowing the rest, are sent the same day of
transactions with retries, conflicting copies, refused times and a row the candidate fails on mixed in. One is
sent them one at a time, the other in runs of random length (the same tx_id twice in one run included). The
answers must be equal (every score bit for bit), and so must the decision logs, the counters and the cards'
history they leave."""
from __future__ import annotations

import datetime as dt

import numpy as np
import pandas as pd
import pytest

import deployment_world as dw
from release.rollout import ramp
from release.serving.decision_log import read_decision_log
from release.serving.replay import day_requests

pytestmark = pytest.mark.slow

POISON = 4321.5  # the candidate fails on a row with this amount (one at a time, and any batch holding it)


def ctl(fn, *args):
    return fn(*args, at=dt.datetime.now(dt.timezone.utc).isoformat(), actor="on-call (test)", reason="test")


def models_fail_when(monkeypatch, fails) -> None:
    """Scorer.score and Scorer.score_many raise ValueError("... cannot score ...") where ``fails(scorer, f, shadow)``
    holds (a batch: for any of its rows); otherwise they score as they do."""
    from release.serving.service import Scorer

    real_one, real_many = Scorer.score, Scorer.score_many

    def score(self, f, shadow=False):
        if fails(self, f, shadow):
            raise ValueError(f"{self.model_id} cannot score this row")
        return real_one(self, f, shadow)

    def score_many(self, fs, shadow=False):
        if any(fails(self, f, shadow) for f in fs):
            raise ValueError(f"{self.model_id} cannot score this batch")
        return real_many(self, fs, shadow)

    monkeypatch.setattr(Scorer, "score", score)
    monkeypatch.setattr(Scorer, "score_many", score_many)


@pytest.fixture
def world(home, tiny, tiny_events, tiny_snapshot):
    w = dw.make_world(home, tiny, tiny_events, tiny_snapshot)
    ctl(ramp.start_shadow, dw.RELEASE, w.candidate)
    ctl(ramp.set_pct, 50)
    return w


def requests(world, seed: int) -> list:
    """The day's transactions in time order, with copies mixed in after their first: retries (the same body),
    conflicts (another amount), a few right after their first (so in the same run), times far off the clock,
    and one transaction whose amount the candidate fails on."""
    from release.serving.service import ScoreRequest

    rng = np.random.default_rng(seed)
    bodies = day_requests(world.home / "events", world.day)
    out = list(bodies)
    for k in rng.choice(len(bodies), 40, replace=False):
        copy = dict(bodies[k])
        if rng.random() < 0.4:
            copy["amount"] = float(copy["amount"]) + 1.0  # a conflict: same tx_id, another body
        at = k + 1 if rng.random() < 0.3 else int(rng.integers(k + 1, len(bodies) + 1))
        out.insert(out.index(bodies[k]) + (at - k), copy)
    for j in rng.choice(len(out), 8, replace=False):
        far = dict(out[j], tx_id=f"far-{j}", ts=(pd.Timestamp(world.day, tz="UTC") + pd.Timedelta(days=400)).isoformat())
        out.insert(int(j), far)
    poisoned = dict(bodies[len(bodies) // 2], tx_id="poisoned", amount=POISON)
    out.insert(len(out) // 2, poisoned)
    return [ScoreRequest(**b) for b in out]


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_deciding_in_runs_decides_as_one_at_a_time(world, tmp_path, monkeypatch, seed):
    from release.serving.service import ScoringService, load_service_config

    models_fail_when(monkeypatch,
                     lambda scorer, f, shadow: scorer.model_id == world.candidate and f["amount"] == POISON)
    cfg = load_service_config(world.config)
    reqs = requests(world, seed)
    one = ScoringService(cfg, seed_day=world.day, log_folder=tmp_path / "one")
    many = ScoringService(cfg, seed_day=world.day, log_folder=tmp_path / "many")
    rng = np.random.default_rng(seed)
    try:
        for svc in (one, many):
            svc.start()
        assert one.deployment.pct == 50 and one.deployment.candidate is not None
        singly = [one.score(r, "till") for r in reqs]
        in_runs, i = [], 0
        while i < len(reqs):
            n = int(rng.integers(1, 48))
            in_runs += many.score_many([(r, "till") for r in reqs[i:i + n]])
            i += n
    finally:
        for svc in (one, many):
            svc.stop()
    assert in_runs == singly
    codes = pd.Series([c for c, _ in singly]).value_counts().to_dict()
    assert codes.get(409, 0) > 5 and codes.get(422, 0) >= 8 and codes[200] > 250, codes
    served = pd.Series([b.get("served_by") for c, b in singly if c == 200 and not b.get("retry")])
    assert set(served) == {"production", "candidate"}

    def log(folder):
        df = read_decision_log(folder).drop(columns=["served_at", "latency_ms"])
        return df.sort_values("tx_id").reset_index(drop=True)

    a, b = log(tmp_path / "one"), log(tmp_path / "many")
    pd.testing.assert_frame_equal(a, b)
    assert a.loc[a["tx_id"] == "poisoned", "candidate_error"].str.contains("cannot score").all()
    assert (a["shadow"] == "scored").sum() > 100
    assert one.state()["counters"] | {"started_at": None} == many.state()["counters"] | {"started_at": None}
    assert {c: h.ts for c, h in one.features._cards.items()} == {c: h.ts for c, h in many.features._cards.items()}


@pytest.mark.parametrize("in_runs", [False, True])
def test_a_transaction_production_failed_to_score_is_not_in_the_history_its_retry_sees(world, tmp_path, monkeypatch,
                                                                                        in_runs):
    """Production raising on a row (a 500) gives no decision: the transaction leaves the card's and merchant's
    history again, so its retry, and every later transaction of the card, sees it once. Compared with a service
    that never failed: the same answers after the failure (bit for bit) and the same histories."""
    from release.serving.service import ScoreRequest, ScoringService, load_service_config

    broken = {"on": False}
    # both models, in the request path (a candidate's failure falls back to production)
    models_fail_when(monkeypatch, lambda scorer, f, shadow: broken["on"] and not shadow and f["amount"] == POISON)
    bodies = day_requests(world.home / "events", world.day)
    k = next(i for i in range(len(bodies) // 3, len(bodies))  # a card that comes back later in the day
             if any(b["card_id"] == bodies[i]["card_id"] for b in bodies[i + 1:]))
    bodies[k] = dict(bodies[k], amount=POISON)
    reqs = [ScoreRequest(**b) for b in bodies]
    cfg = load_service_config(world.config)
    failed = ScoringService(cfg, seed_day=world.day, log_folder=tmp_path / "failed")
    clean = ScoringService(cfg, seed_day=world.day, log_folder=tmp_path / "clean")
    try:
        for svc in (failed, clean):
            svc.start()
        got_failed = [failed.score(r, "t") for r in reqs[:k]]
        broken["on"] = True
        mates = reqs[k - 3:k] if in_runs else []  # in a run: the rows beside it are decided, it alone fails
        if in_runs:
            out = failed.score_many([(r, "t") for r in [*mates, reqs[k]]])
            assert all(o[1].get("retry") for o in out[:3]) and isinstance(out[3], ValueError)
        else:
            with pytest.raises(ValueError, match="cannot score"):
                failed.score(reqs[k], "t")
        broken["on"] = False
        got_failed += [failed.score(r, "t") for r in reqs[k:]]  # the retry first
        got_clean = [clean.score(r, "t") for r in reqs]
    finally:
        for svc in (failed, clean):
            svc.stop()
    assert [c for c, _ in got_failed] == [200] * len(reqs)
    assert got_failed == got_clean
    assert {c: h.ts for c, h in failed.features._cards.items()} == {c: h.ts for c, h in clean.features._cards.items()}
    assert {m: h.ts for m, h in failed.features._merchants.items()} == {
        m: h.ts for m, h in clean.features._merchants.items()}
