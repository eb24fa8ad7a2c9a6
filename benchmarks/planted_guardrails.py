"""Planted live-traffic cases with a known truth, judged by the rollout's guardrails over 100 seeds: how
often each is passed, breached or left inconclusive. The decision logs are the ones
tests/release/rollout/test_guardrails.py plants (seeded numpy); the tests assert bounds on these counts, this prints
them. Run: .venv/bin/python benchmarks/planted_guardrails.py"""
from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "tests" / "release"), str(ROOT / "tests")]

import test_guardrails as T  # noqa: E402

CASES = {
    "harmful: US blocks x1.4, 40,000 rows": (lambda s: T.decision_log(s, 40_000, multiplier=T.in_country("US", 1.4)),
                                             {}),
    "good: neutral candidate, 10,000 rows": (lambda s: T.decision_log(s, 10_000), {}),
    "on the limit: US x1.3, 20,000 rows": (lambda s: T.decision_log(s, 20_000, multiplier=T.in_country("US", 1.3)),
                                           {}),
    "thin: neutral, a 1% step of 4,000 rows": (lambda s: T.decision_log(s, 4_000, pct=1), {"pct": 1}),
}

if __name__ == "__main__":
    for name, (make, kw) in CASES.items():
        print(f"{name}: {T.statuses(make, T.guardrails(), **kw)} of 100 seeds")
