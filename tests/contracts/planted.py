"""Planted candidates with a known truth, on a realistic evaluation window, for the release-gate battery
(tests/contracts/test_battery.py) and its benchmark (benchmarks/bench_battery.py).

The window: 20 days of card traffic, 15,000 transactions a day, 12 countries of very different size,
2,000 merchants with heavy-tailed volume (a few carry most traffic, hundreds see a handful a week), 3% of
them new (they first trade in the judging days), cards that are new or returning, a fraud risk that
depends on country, merchant, card and amount. The incumbent is the production model: it logged the
window, so what it blocked carries no label (censoring) except a logged exploration share, weighted by
1/propensity. Every row's true fraud flag is kept beside, so the harm of each planted candidate is known.

Candidates are scores built from the same latent risk with less (or more) noise: "better" ranks more
frauds above legitimate traffic. Each plant says which contract must stop it; ``truth_policy_shift``
measures the true action-rate shift of a policy on a fresh draw of the same world.
"""
from __future__ import annotations

import zlib
from collections import OrderedDict
from dataclasses import dataclass

import numpy as np
import pandas as pd

COUNTRIES = ["US", "GB", "DE", "FR", "BR", "IN", "MX", "ES", "NL", "IT", "PL", "LU"]
COUNTRY_WEIGHT = np.array([30, 14, 12, 10, 8, 7, 6, 5, 3, 3, 1.6, 0.4])
COUNTRY_RISK = np.array([0.0, 0.2, -0.2, 0.1, 0.5, 0.3, 0.2, 0.0, -0.3, 0.1, 0.2, 0.4])
MID_COUNTRY = "BR"  # a mid-sized country (8% of traffic)
THIN_COUNTRY = "LU"  # 0.4% of traffic: pooled with its peers
DAYS, FIT_DAYS = 20, 10
EXPLORATION = 0.05


@dataclass
class World:
    seed: int
    merchants: pd.DataFrame
    cards: pd.DataFrame


def make_world(seed: int, n_merchants: int = 2000, n_cards: int = 60_000) -> World:
    rng = np.random.default_rng([seed, 1])
    cw = COUNTRY_WEIGHT / COUNTRY_WEIGHT.sum()
    merchants = pd.DataFrame({
        "merchant_id": [f"m{i}" for i in range(n_merchants)],  # unpadded ids, as real logs have
        "merchant_country": rng.choice(COUNTRIES, n_merchants, p=cw),
        "merchant_category": rng.choice(["grocery", "fuel", "fashion", "electronics", "travel", "digital"],
                                        n_merchants),
        "volume": rng.pareto(1.2, n_merchants) + 0.02,
        "risk": rng.normal(0, 0.5, n_merchants),
        "new": rng.random(n_merchants) < 0.03,
    })
    # traffic goes to a country by its weight, then to its merchants by their (heavy-tailed) volume
    merchants["volume"] /= merchants.groupby("merchant_country")["volume"].transform("sum")
    merchants["volume"] *= merchants["merchant_country"].map(dict(zip(COUNTRIES, cw)))
    merchants["volume"] /= merchants["volume"].sum()
    cards = pd.DataFrame({"card_id": np.arange(n_cards), "card_country": rng.choice(COUNTRIES, n_cards, p=cw),
                          "age_days": rng.integers(0, 900, n_cards)})
    return World(seed, merchants, cards)


def _draw(world: World, draw: int, tx_per_day: int, exploration: float, inc_block_rate: float) -> dict:
    """The arrays of one window of the world, in the window's row order (by day, then card; stable), and
    the incumbent's thresholds in force: the one source of ``draw_window`` and ``truth_policy_shift``."""
    rng = np.random.default_rng([world.seed, 2, draw])
    m, c = world.merchants, world.cards
    n = tx_per_day * DAYS
    day = rng.integers(0, DAYS, n)
    vol = m["volume"].to_numpy()
    mi = rng.choice(len(m), n, p=vol)
    # new merchants trade only in the judging days: moved to a judging day
    new = m["new"].to_numpy()[mi]
    day = np.where(new, rng.integers(FIT_DAYS, DAYS, n), day)
    ci = rng.integers(0, len(c), n)
    country_idx = pd.Categorical(m["merchant_country"], categories=COUNTRIES).codes[mi]  # per merchant, then row
    amount = np.round(rng.lognormal(3.6, 1.0, n), 2) + 0.5
    new_card = c["age_days"].to_numpy()[ci] < 30
    risk = (-6.4 + COUNTRY_RISK[country_idx] + m["risk"].to_numpy()[mi] + 0.9 * new_card
            + 0.4 * np.log(amount / 40) + rng.normal(0, 1.6, n))
    fraud = rng.random(n) < 1 / (1 + np.exp(-risk))
    inc = _score(risk, 1.3, rng)
    # the incumbent's thresholds in force: one global threshold, its own for the 30 largest merchants
    g = float(np.quantile(inc, 1 - inc_block_rate))
    big = m["merchant_id"].to_numpy()[np.argsort(-vol)[:30]]
    own = pd.Series(np.clip(g + np.random.default_rng([world.seed, 9]).normal(0, 0.02, len(big)), 0.01, 0.99), index=big)
    m_thr = m["merchant_id"].map(own).fillna(g).to_numpy()  # per merchant, taken per row below
    blocked = inc >= m_thr[mi]
    explored = blocked & (rng.random(n) < exploration)
    labelled = ~blocked | explored
    card_id = c["card_id"].to_numpy()[ci]
    # by day, then card (ids 0..n-1: one integer key); stable: rows of one day and card keep their drawn order
    order = np.argsort(day.astype(np.int64) * len(c) + card_id, kind="stable")
    return {"day": day[order], "mi": mi[order], "ci": ci[order], "card_id": card_id[order],
            "amount": amount[order], "fraud": fraud[order], "risk": risk[order], "inc": inc[order],
            "labelled": labelled[order], "explored": explored[order], "inc_thresholds": own, "inc_default": g}


def draw_window(world: World, draw: int = 0, tx_per_day: int = 15_000, exploration: float = EXPLORATION,
                inc_block_rate: float = 0.02) -> pd.DataFrame:
    """One 20-day window of the world: rows with day, ids, slices, amount, true fraud, the latent risk,
    the incumbent's score and threshold in force, and what the logging incumbent left labelled."""
    d = _draw(world, draw, tx_per_day, exploration, inc_block_rate)
    m, c = world.merchants, world.cards
    mi, ci = d["mi"], d["ci"]
    truth = d["fraud"].astype(float)
    df = pd.DataFrame({
        "day": pd.Timestamp("2031-05-01") + pd.to_timedelta(d["day"], unit="D"),
        "card_id": d["card_id"], "card_country": c["card_country"].to_numpy()[ci],
        "card_age_days": c["age_days"].to_numpy()[ci],
        "merchant_id": m["merchant_id"].to_numpy()[mi], "merchant_country": m["merchant_country"].to_numpy()[mi],
        "merchant_category": m["merchant_category"].to_numpy()[mi], "amount": d["amount"],
        "truth": truth, "risk": d["risk"], "incumbent_score": d["inc"],
        "label": np.where(d["labelled"], truth, np.nan),
        "weight": np.where(d["explored"], 1 / exploration, np.where(d["labelled"], 1.0, np.nan)),
    })
    df.attrs.update(inc_thresholds=d["inc_thresholds"], inc_default=d["inc_default"])
    return df


def _score(risk: np.ndarray, noise: float, rng: np.random.Generator) -> np.ndarray:
    """A model's score: a probability that ranks by the latent risk seen through ``noise``."""
    return 1 / (1 + np.exp(-(risk + rng.normal(0, noise, len(risk)) + 2.0)))


def _boost(score: np.ndarray, mask: np.ndarray, factor: float) -> np.ndarray:
    """Raise the odds of ``score`` by ``factor`` where ``mask``: the model blocks more there at any threshold."""
    odds = score / (1 - score)
    return np.where(mask, odds * factor / (1 + odds * factor), score)


def _plant_shift(df: pd.DataFrame, score: np.ndarray, country: np.ndarray, shift: float) -> np.ndarray:
    """``score`` boosted at the country's thinnest merchants just enough that, in the judging days, the
    country's blocks at one global threshold are ``shift`` times the unboosted model's: a planted harm of
    a known size, placed where per-merchant thresholds reach least. The merchants boosted are the new ones
    and those with fewer than N fitting rows, N the smallest of 10, 20, 50, 100, 200 whose traffic can
    carry the shift at an odds factor of at most 1,000 (200 when none can: the shift is then smaller; a
    seed's truth says so, see JUDGED_BY_TRUTH) (a thin merchant's threshold is pulled to its
    segment's; the more fitting rows, the more of a shift there its own threshold absorbs). The global
    threshold is the one that blocks 2% of the fitting days (the incumbent's block rate)."""
    judging = (df["day"] >= pd.Timestamp("2031-05-01") + pd.Timedelta(days=FIT_DAYS)).to_numpy()
    t = float(np.quantile(score[~judging], 0.98))
    here = judging & country
    target = shift * int((score[here] >= t).sum())
    for min_rows in (10, 20, 50, 100, 200):
        where = thin_or_new(df, MID_COUNTRY, min_rows) & country
        if (_boost(score, where, 1e3)[here] >= t).sum() >= target:
            break
    lo, hi = 0.0, np.log(1e3)  # log of the odds factor
    for _ in range(40):
        mid = (lo + hi) / 2
        if (_boost(score, where, np.exp(mid))[here] >= t).sum() < target:
            lo = mid
        else:
            hi = mid
    return _boost(score, where, np.exp(hi))


def thin_or_new(df: pd.DataFrame, country: str, min_rows: int) -> np.ndarray:
    """Rows of ``country``'s merchants that are new (no fitting rows) or thin (fewer than ``min_rows`` fitting rows)."""
    from analysis.metrics import by_value

    fit = df["day"] < pd.Timestamp("2031-05-01") + pd.Timedelta(days=FIT_DAYS)
    n_fit = df[fit].groupby("merchant_id").size()
    rows = by_value(df["merchant_id"], lambda m: m.map(n_fit)).fillna(0).to_numpy()  # each merchant looked up once
    return (df["merchant_country"] == country).to_numpy(dtype=bool) & (rows < min_rows)


def candidate(df: pd.DataFrame, case: str, draw: int = 0) -> np.ndarray:
    """The planted candidate's score for ``case`` on the window ``df`` (seeded by the world and ``draw``)."""
    rng = np.random.default_rng([int(df.attrs.get("seed", 0)), 3, draw, zlib.crc32(case.encode())])
    risk = df["risk"].to_numpy()
    better = _score(risk, 0.35, rng)

    def country(name: str) -> np.ndarray:  # compared where the strings are (Arrow), not copied out row by row
        return (df["merchant_country"] == name).to_numpy(dtype=bool)

    if case in ("better", "approval_edit_cut"):
        return better
    if case == "country_shift":  # blocks ~40% more in a mid-sized country at any threshold
        return _boost(better, country(MID_COUNTRY), 2.2)
    if case == "shift_thin_new":  # the same +40%, all of it at the country's thin and new merchants
        return _plant_shift(df, better, country(MID_COUNTRY), 1.4)
    if case == "fpr_for_recall":  # the incumbent's ranking exactly (a monotone transform of its score)
        s = df["incumbent_score"].to_numpy()
        return s ** 0.8
    if case == "recall_collapse":  # better everywhere, blind to fraud in one country
        gb = np.flatnonzero(country("GB"))
        out = better.copy()
        out[gb] = better[rng.permutation(gb)]  # the same scores, shuffled: no signal left in GB
        return out
    if case == "worse":
        return _score(risk, 2.2, rng)
    if case == "neutral":  # the same model retrained: the incumbent's ranking, on another score scale
        return df["incumbent_score"].to_numpy() ** 1.25
    if case == "thin_country_shift":  # a thin country whose traffic the candidate blocks ~4x as often since the
        judging = (df["day"] >= pd.Timestamp("2031-05-01") + pd.Timedelta(days=FIT_DAYS)).to_numpy()  # fitting days
        return _boost(better, country(THIN_COUNTRY) & judging, 4.0)
    raise ValueError(f"Unknown planted case {case!r}.")


# case -> (the contract that must stop it, or None for a good case that must pass every gate)
# Judged against its truth: a case whose planted harm the policy may absorb (thin merchants' own fitting
# rows move their thresholds), so a seed is harmful only if the policy's true shift (``truth_policy_shift``)
# is beyond the contract's limit; the target (>= 95% stopped by the named contract) is over those seeds.
# The neutral case (the incumbent's ranking) is judged by its true recall gain at the operating point
# (``truth_recall_gain``): harmful, no gain to ship, unless that gain is above zero.
JUDGED_BY_TRUTH = {"shift_thin_new", "neutral"}
CASES = {
    "better": None,
    "country_shift": "consistent",  # stopped only if the judged policy shift is beyond the limit
    "shift_thin_new": "country_action_rate_shift",
    "fpr_for_recall": "fixed_fpr_higher_recall",
    "recall_collapse": "country_recall_regression",
    "worse": "fixed_fpr_higher_recall",
    "neutral": "fixed_fpr_higher_recall",
    "thin_country_shift": "country_action_rate_shift",
    "approval_edit_cut": "country_action_rate_shift",
}


MANIFEST_OK = {"rows": 1, "data_contract": [{"name": n, "passed": True, "observed": 1, "sentence": f"{n} fine"}
                                            for n in ("schema", "min_rows", "both_labels", "fraud_rate_band",
                                                      "no_null_features", "volume_change")]}


def approval_edits(case: str, world: World, suggestions: pd.DataFrame) -> pd.Series | None:
    """The thresholds people approve: every suggestion, edited for the cases whose harm is an edit."""
    per = suggestions.set_index("merchant_id")["suggested_threshold"].copy()
    if case == "approval_edit_cut":  # an approver multiplies one country's thresholds by 0.4
        ids = set(world.merchants.loc[world.merchants["merchant_country"] == MID_COUNTRY, "merchant_id"])
        per[per.index.isin(ids)] *= 0.4
    elif case == "fpr_for_recall":  # lower thresholds everywhere: more fraud caught, a third more legit declined
        per *= 0.55
    return per


def judge_case(case: str, seed: int, contracts, n_boot: int = 200, tx_per_day: int = 40_000,
               exploration: float = EXPLORATION, ranking: bool = False, window: tuple | None = None):
    """Run the release gates on one planted case: the offline judgement of the suggested policy, then the
    re-judgement of the approved one. Ranking figures (ROC-AUC, PR-AUC: warn-only contracts) are left out
    unless ``ranking``: they cost most of an evaluation's time and gate nothing. ``window``: (world, drawn
    window) to reuse across cases of one seed. Returns (offline verdicts, re-judged verdicts, evaluation,
    window)."""
    from analysis.evaluation import evaluate, judge_policy
    from contracts.evaluator import evaluate_contracts

    if window is None:
        world = make_world(seed)
        window = (world, draw_window(world, tx_per_day=tx_per_day, exploration=exploration))
    world, base = window
    df = base.copy()
    df.attrs = dict(base.attrs, seed=seed)
    df["candidate_score"] = candidate(df, case)
    ev = evaluate(df.drop(columns=["truth", "risk"]), df.attrs["inc_thresholds"], df.attrs["inc_default"],
                  slice_names=["country"], n_boot=n_boot, seed=seed, pools=contracts.pools(), ranking=ranking)
    offline = evaluate_contracts(contracts, ev, MANIFEST_OK)
    per = approval_edits(case, world, ev.suggestions)
    if per.equals(ev.suggestions.set_index("merchant_id")["suggested_threshold"]):
        return offline, offline, ev, df  # approved as suggested: the same policy, the same judgement
    judged = judge_policy(ev.judging, ev.candidate_threshold, ev.candidate_threshold, per,
                          slice_names=["country"], n_boot=n_boot, seed=seed,
                          pools=contracts.pools(), source="approved", windows=ev.windows, ranking=ranking)
    rejudged = evaluate_contracts(contracts, judged, MANIFEST_OK)
    return offline, rejudged, ev, df


def gating_contracts(path=None):
    """The contracts in force that can stop a release (the warn-only ones cannot change a battery verdict)."""
    from contracts.evaluator import load_contracts
    from release.core.settings import contracts_file

    cs = load_contracts(path or contracts_file())
    cs.contracts = [c for c in cs.contracts if c.gate and c.kind != "data_contract"]
    return cs


def stopped_by(verdicts) -> set[str]:
    return {v.contract for v in verdicts if v.stops}


_FRESH: OrderedDict = OrderedDict()  # the last few fresh windows: a seed's truths (three cases) read the same draws
_FRESH_KEPT = 4  # draws a truth pools (``draws``): one pass of them stays, not more (each is tens of MB)


def _fresh(world: World, case: str, seed: int, draw: int, tx_per_day: int) -> tuple[dict, np.ndarray]:
    """A fresh window of the world (``_draw``) and the planted candidate's scores on it: the rows in their
    order (the candidate's noise follows it), with only the columns a planted candidate reads. The window
    depends on the world and the draw, not on the case: the last few are kept (read only), so the truths of
    a seed's cases draw each window once."""
    key = (world.seed, len(world.merchants), len(world.cards), seed, draw, tx_per_day)
    if key not in _FRESH:
        m = world.merchants
        d = _draw(world, draw, tx_per_day, EXPLORATION, 0.02)
        mi = d["mi"]
        df = pd.DataFrame({"day": pd.Timestamp("2031-05-01") + pd.to_timedelta(d["day"], unit="D"),
                           "merchant_id": m["merchant_id"].to_numpy()[mi],
                           "merchant_country": m["merchant_country"].to_numpy()[mi],
                           "risk": d["risk"], "incumbent_score": d["inc"]})
        df.attrs["seed"] = seed
        _FRESH[key] = (d, df)
        while len(_FRESH) > _FRESH_KEPT:
            _FRESH.popitem(last=False)
    _FRESH.move_to_end(key)
    d, df = _FRESH[key]
    return d, candidate(df, case, draw=draw)


def truth_recall_gain(case: str, seed: int, ev, evaluated: pd.DataFrame, tx_per_day: int = 40_000,
                      draws: int = 4) -> float:
    """The true recall gain at the operating point: the candidate at the global threshold the evaluation
    fitted against the incumbent at its thresholds in force, on every fraud of the judging days of
    ``draws`` fresh windows of the same world (pooled; blocked or not: the world knows them all). What the
    fixed-FPR contract claims when it passes. For the neutral case (the incumbent's ranking) it is not
    always zero: one global threshold on that ranking can catch a little more than the incumbent's
    per-merchant thresholds at the same false-positive rate."""
    from analysis.metrics import thresholds_for

    world = make_world(seed)
    inc_m = thresholds_for(world.merchants["merchant_id"], evaluated.attrs["inc_thresholds"],
                           evaluated.attrs["inc_default"])
    frauds = inc_caught = cand_caught = 0
    for draw in range(1, draws + 1):
        d, cand = _fresh(world, case, seed, draw, tx_per_day)
        here = (d["day"] >= FIT_DAYS) & d["fraud"]  # the judging days' frauds
        frauds += int(here.sum())
        inc_caught += int((d["inc"][here] >= inc_m[d["mi"]][here]).sum())
        cand_caught += int((cand[here] >= ev.candidate_threshold).sum())
    return (cand_caught - inc_caught) / frauds


def truth_policy_shift(case: str, seed: int, ev, evaluated: pd.DataFrame, country: str = MID_COUNTRY,
                       tx_per_day: int = 40_000, draws: int = 4) -> float:
    """The true relative action-rate change in ``country`` of the policy the evaluation fitted (its
    per-merchant suggestions, the global threshold elsewhere) on fresh draws of the same world: what
    the policy would do to next weeks' traffic.

    The blocks of ``draws`` fresh windows are pooled. One fresh window the size of the judged one is as
    noisy as the judgement it checks (for a 6% country with ~550 incumbent blocks, one window's shift of
    a fixed policy has a standard deviation of ~5 points, the judgement's bootstrap ~4.7), so a single
    draw would make a sound judgement look 8-18 points off; four halve that noise."""
    from analysis.metrics import thresholds_for

    world = make_world(seed)
    m = world.merchants
    ids = m["merchant_id"]
    # each merchant's thresholds (analysis.metrics.thresholds_for on the merchant table), taken per row:
    # the incumbent's in force when the policy was judged (a fresh draw does not change them), the policy's
    inc_m = thresholds_for(ids, evaluated.attrs["inc_thresholds"], evaluated.attrs["inc_default"])
    pol_m = thresholds_for(ids, ev.suggestions.set_index("merchant_id")["suggested_threshold"], ev.candidate_threshold)
    in_country = (m["merchant_country"] == country).to_numpy()
    inc_blocks = pol_blocks = 0
    for draw in range(1, draws + 1):
        d, cand = _fresh(world, case, seed, draw, tx_per_day)
        mi = d["mi"]
        here = (d["day"] >= FIT_DAYS) & in_country[mi]  # the judging days, in ``country``
        inc_blocks += int((d["inc"][here] >= inc_m[mi][here]).sum())
        pol_blocks += int((cand[here] >= pol_m[mi][here]).sum())
    return float(pol_blocks / inc_blocks - 1)


def _seed_battery(seed: int, cases: list[str], contracts, kw: dict) -> dict:
    """Every case of one seed on one drawn window (the window is the costly part to draw)."""
    world = make_world(seed)
    base = draw_window(world, tx_per_day=kw.get("tx_per_day", 40_000), exploration=kw.get("exploration", EXPLORATION))
    kw = dict(kw)
    truths = {"country_shift"} | JUDGED_BY_TRUTH
    out = {}
    for case in cases:
        off, rej, ev, _ = judge_case(case, seed, contracts, window=(world, base), **kw)
        # verdicts only cross the process boundary: plain dataclasses
        r = {"offline": off, "rejudged": rej, "stopped_by": stopped_by(off) | stopped_by(rej)}
        if case in truths:
            truth = truth_recall_gain if case == "neutral" else truth_policy_shift
            r["truth"] = truth(case, seed, ev, base, tx_per_day=kw.get("tx_per_day", 40_000))
        out[case, seed] = r
    return out


def run_battery(seeds, cases=None, contracts=None, workers: int = 1, **kw) -> dict:
    """{(case, seed): {"offline", "rejudged", "stopped_by", "truth"}} over the planted cases, seeds spread
    over ``workers`` processes. "truth" (``truth_policy_shift``) for country_shift and JUDGED_BY_TRUTH."""
    contracts = contracts or gating_contracts()
    cases = list(cases or CASES)
    if workers <= 1:
        out = {}
        for seed in seeds:
            out.update(_seed_battery(seed, cases, contracts, kw))
        return out
    return Battery(seeds, cases, contracts, workers, **kw).result()


class Battery:
    """A battery being computed by ``workers`` processes (one seed at a time each), started on creation:
    ``result()`` waits for it and returns what ``run_battery`` returns. ``nice``: the workers' niceness,
    so that a battery started ahead of its tests only takes CPU time nothing else wants; ``result()``
    puts them back to the caller's priority when it starts waiting (where the system allows it)."""

    def __init__(self, seeds, cases=None, contracts=None, workers: int = 2, nice: int = 0, **kw):
        import multiprocessing as mp
        from concurrent.futures import ProcessPoolExecutor

        contracts = contracts or gating_contracts()
        cases = list(cases or CASES)
        ctx = mp.get_context("spawn")
        self._pids = ctx.SimpleQueue()  # each worker's pid, to renice or stop it
        self._pool = ProcessPoolExecutor(workers, mp_context=ctx, initializer=_battery_worker,
                                         initargs=(nice, self._pids))
        self._parts = [self._pool.submit(_seed_battery, seed, cases, contracts, kw) for seed in seeds]
        self._known: list[int] = []

    def _workers(self) -> list[int]:
        while not self._pids.empty():
            self._known.append(self._pids.get())
        return self._known

    def result(self) -> dict:
        import os

        for pid in self._workers():
            try:
                os.setpriority(os.PRIO_PROCESS, pid, os.getpriority(os.PRIO_PROCESS, 0))
            except OSError:  # gone, or not allowed to raise a priority: it runs niced
                pass
        out = {}
        try:
            for part in self._parts:  # in seed order
                out.update(part.result())
        finally:
            self.cancel()
        return out

    def cancel(self) -> None:
        """Stop the workers (a no-op once the battery is done)."""
        import os
        import signal

        self._pool.shutdown(wait=False, cancel_futures=True)
        if not all(p.done() for p in self._parts):
            for pid in self._workers():
                try:
                    os.kill(pid, signal.SIGTERM)
                except OSError:
                    pass
        self._pool.shutdown(wait=True)


def _battery_worker(nice: int, pids) -> None:
    import os

    if nice:
        os.nice(nice)
    pids.put(os.getpid())


def action_rate_limit(contracts=None) -> float:
    """The country action-rate contract's limit in force (its ``max_relative_shift``)."""
    cs = contracts or gating_contracts()
    return float(next(c for c in cs.contracts if c.name == "country_action_rate_shift").max_relative_shift)


def harmful(results: dict, case: str, limit: float) -> list[dict]:
    """The runs of ``case`` whose planted harm is real: every run, or for JUDGED_BY_TRUTH the runs whose
    truth shows it: a true policy shift beyond ``limit``; for the neutral case, no true recall gain."""
    rs = [r for (c, _), r in results.items() if c == case]
    if case == "neutral":
        return [r for r in rs if r["truth"] <= 0]
    return [r for r in rs if abs(r["truth"]) > limit] if case in JUDGED_BY_TRUTH else rs


def battery_table(results: dict, limit: float | None = None) -> pd.DataFrame:
    """Per case: the contract that must stop it, the share of seeds it did, and the share stopped at all;
    for a case judged by its truth, also how many seeds were harmful and the share of those stopped by it."""
    limit = action_rate_limit() if limit is None else limit
    rows = []
    for case, expected in CASES.items():
        rs = [r for (c, _), r in results.items() if c == case]
        if not rs:
            continue
        stopped = np.mean([bool(r["stopped_by"]) for r in rs])
        named = np.mean([expected in r["stopped_by"] for r in rs]) if expected not in (None, "consistent") else np.nan
        row = {"case": case, "must be stopped by": expected or "(good: must pass)", "seeds": len(rs),
               "stopped by it": named, "stopped at all": stopped, "harmful seeds": np.nan,
               "harmful stopped by it": np.nan}
        if case in JUDGED_BY_TRUTH:
            h = harmful(results, case, limit)
            row.update({"harmful seeds": len(h),
                        "harmful stopped by it": np.mean([expected in r["stopped_by"] for r in h]) if h else np.nan})
        rows.append(row)
    return pd.DataFrame(rows)


def judge_drift(seed: int, factor: float, step: float = 1.0, contracts=None, tx_per_day: int = 15_000,
                n_boot: int = 200) -> dict:
    """A drift budget on a planted window with a known truth. Production is the window's incumbent (it logged
    the window, censoring what it blocked). The drift anchor, production before a half year's releases,
    served the same ranking with a higher threshold, declining ``factor`` times fewer legitimate transactions
    than the incumbent (``factor`` 1: no release shipped, the anchor is the incumbent). The candidate is the
    "better" plant; its policy is the evaluation's suggestion, or with ``step`` != 1 the suggestion with every
    threshold scaled by one factor chosen so that the policy declines ``step`` times the incumbent's
    legitimate transactions (an approved policy that takes one more step of the ratchet), re-judged as the
    approved policy is. Returns the verdict, the true drift (the policy's FPR over the anchor's) and the true
    own change (over the incumbent's), on the judging rows' true labels: what the two policies decline of this
    traffic's legitimate transactions, the estimand of the judgement."""
    from analysis.evaluation import evaluate, judge_policy
    from analysis.metrics import thresholds_for
    from contracts.evaluator import load_contracts
    from release.core.settings import contracts_file

    cs = contracts or load_contracts(contracts_file())
    (budget,) = cs.drift_budgets()
    world = make_world(seed)
    df = draw_window(world, tx_per_day=tx_per_day)
    df.attrs["seed"] = seed
    df["tx_id"] = np.arange(len(df)).astype(str)
    df["candidate_score"] = candidate(df, "better")
    legit = (df["truth"] == 0).to_numpy()
    score = df["incumbent_score"].to_numpy()
    if factor != 1.0:
        inc_thr = thresholds_for(df["merchant_id"], df.attrs["inc_thresholds"], df.attrs["inc_default"])
        target = (score[legit] >= inc_thr[legit]).mean() / factor
        df["anchor_score"] = score
        df["anchor_threshold"] = float(np.quantile(score[legit], 1 - target))
    ev = evaluate(df.drop(columns=["truth", "risk"]), df.attrs["inc_thresholds"], df.attrs["inc_default"],
                  slice_names=["country"], n_boot=n_boot, seed=seed, pools=cs.pools(), ranking=False, anchored=True)
    j = ev.judging
    lg = df["truth"].to_numpy()[j["tx_id"].astype(int).to_numpy()] == 0
    per = ev.suggestions.set_index("merchant_id")["suggested_threshold"]
    cand, merchants = j["candidate_score"].to_numpy()[lg], j["merchant_id"][lg]
    inc = (j["incumbent_score"].to_numpy() >= j["incumbent_threshold"].to_numpy())[lg].mean()

    def fpr(k: float) -> float:
        return float((cand >= thresholds_for(merchants, per * k, ev.candidate_threshold * k)).mean())

    k = 1.0
    if step != 1.0:  # the one scale of every threshold that declines step x the incumbent's legitimate rows
        lo, hi = 0.05, 3.0
        for _ in range(40):
            k = (lo + hi) / 2
            lo, hi = (k, hi) if fpr(k) > step * inc else (lo, k)
        ev = judge_policy(j, ev.candidate_threshold, ev.candidate_threshold * k, per * k, slice_names=["country"],
                          n_boot=n_boot, seed=seed, pools=cs.pools(), source="approved", windows=ev.windows,
                          ranking=False, anchored=True)
    (v,) = budget.check(ev.metrics, ev.windows, "approved policy" if step != 1.0 else "policy")
    own = "anchor_score" in j
    anc = (j["anchor_score" if own else "incumbent_score"].to_numpy()
           >= j["anchor_threshold" if own else "incumbent_threshold"].to_numpy())[lg].mean()
    pol = fpr(k)
    return {"verdict": v, "truth": float(pol / anc - 1), "own_truth": float(pol / inc - 1)}
