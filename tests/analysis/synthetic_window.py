"""A small synthetic evaluation window shared by test_evaluation and test_report."""
from __future__ import annotations

import numpy as np
import pandas as pd

INC_PER_MERCHANT = {"M1": 0.55, "M2": 0.6}
INC_DEFAULT = 0.5


def make_scored(seed: int = 0, n: int = 900) -> pd.DataFrame:
    """A small evaluation window: four merchants (one thin), two countries, IPW weights on explored
    rows, a quarter of rows unlabelled (blocked by the policy of the day, or not matured)."""
    rng = np.random.default_rng(seed)
    merchant = rng.choice(["M1", "M2", "M3", "M4"], n, p=[0.35, 0.3, 0.3, 0.05])
    country = np.where(np.isin(merchant, ["M1", "M3"]), "FR", "DE")
    fraud = (rng.random(n) < 0.1).astype(float)
    labelled = rng.random(n) < 0.75
    explored = rng.random(n) < 0.1
    return pd.DataFrame({
        "merchant_id": merchant,
        "merchant_country": country,
        "merchant_category": rng.choice(["grocery", "travel"], n),
        "card_country": rng.choice(["FR", "DE", "US"], n),
        "card_id": rng.integers(0, 400, n),
        "amount": np.round(rng.gamma(2.0, 50.0, n), 2),
        "label": np.where(labelled, fraud, np.nan),
        "weight": np.where(labelled, np.where(explored, 20.0, 1.0), np.nan),
        "incumbent_score": np.clip(rng.normal(0.35 + 0.2 * fraud, 0.15), 0, 1),
        "candidate_score": np.clip(rng.normal(0.35 + 0.3 * fraud, 0.15), 0, 1),
    })
