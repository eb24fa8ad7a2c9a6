"""An outside world: the transaction simulator of the public Fraud Detection Handbook.

This is a vectorised re-implementation, written from its published description, of the simulator in
Le Borgne, Siblini, Lebichot, Bontempi, "Reproducible Machine Learning for Credit Card Fraud Detection -
Practical Handbook" (Université Libre de Bruxelles / Worldline), chapter 3 "Transaction data simulator".
It is the handbook's design, not ours: it shares nothing with the project's own world
(``simulation/world.py``) and exists so that the pipeline and its baselines can be tried on data whose
shape and fraud mechanics someone else chose.

The world
---------
- Customers: location (x, y) uniform on [0, 100]^2, mean amount uniform on [5, 100], amount standard
  deviation mean / 2, mean number of transactions per day uniform on [0, 4].
- Terminals: location (x, y) uniform on [0, 100]^2.
- A customer uses only the terminals within Euclidean distance ``radius`` (5) of its location (the
  handbook's ``get_list_terminals_within_radius``: strictly less than r). A customer with none makes no
  transaction.
- Each day each customer makes Poisson(mean_nb_tx_per_day) transactions. A transaction's second of the
  day is ``int(normal(43200, 20000))``; as in the handbook, draws outside (0, 86400) are dropped, not
  clipped (so about 3% of drawn transactions never happen). The amount is normal(mean, std); a negative
  draw is redrawn once as uniform(0, 2 * mean), as the handbook does; amounts are rounded to cents. The
  terminal is uniform among the customer's available terminals.
- Transactions are ordered by time and numbered 0, 1, ... (TRANSACTION_ID).

The three fraud scenarios (applied in this order, a later one overriding an earlier one's scenario
label, as in the handbook's ``add_frauds``)
---------------------------------------------------------------------------------------------------
1. Every transaction whose amount is above 220 is a fraud (a trivial rule a model should learn).
2. Each day d (every day but the last), 2 terminals drawn at random are compromised: all their
   transactions on days d .. d+27 are frauds (learnable from the terminal's recent fraud history,
   once the labels arrive).
3. Each day d (every day but the last), 3 customers drawn at random are compromised: over days
   d .. d+13, a random third (``int(n / 3)``) of their transactions have their amount multiplied by 5
   and are frauds (learnable from the customer's spending history). Windows of one customer may
   overlap, and a transaction picked twice is multiplied twice, as in the handbook.

Since scenario 3 only raises the amounts of frauds, every transaction with a final amount above 220 is a
fraud. The handbook's default world (5000 customers, 10000 terminals, 183 days from 2018-04-01) has
about 1.75M transactions and a fraud rate a little under 1%.

Output: one row per transaction with TRANSACTION_ID, TX_DATETIME (naive), CUSTOMER_ID, TERMINAL_ID
(unpadded decimal strings, or hostile strings carrying a comma, a double quote and non-ASCII letters
with ``hostile_ids=True``), TX_AMOUNT, TX_FRAUD (0/1) and TX_FRAUD_SCENARIO (0..3, for analysis only:
a real log has no such column, and :func:`write_log` leaves it out unless asked).

Differences from the handbook's code, all in how the randomness is drawn, none in the design: one
``numpy.random.default_rng(seed)`` stream drives everything (the handbook reseeds the legacy global
generators per customer and per day), so the same seed does not give the handbook's exact rows.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

SECONDS_PER_DAY = 86_400
FRAUD_AMOUNT = 220.0          # scenario 1: amount strictly above this is fraud
TERMINALS_PER_DAY = 2         # scenario 2
TERMINAL_DAYS = 28
CUSTOMERS_PER_DAY = 3         # scenario 3
CUSTOMER_DAYS = 14
CUSTOMER_SHARE_DIVISOR = 3    # a third of the compromised customer's transactions
CUSTOMER_MULTIPLIER = 5.0

HOSTILE_CUSTOMER_PREFIX = 'cüst,"'
HOSTILE_TERMINAL_PREFIX = 'tërm,"'

LOG_COLUMNS = ["TRANSACTION_ID", "TX_DATETIME", "CUSTOMER_ID", "TERMINAL_ID", "TX_AMOUNT", "TX_FRAUD"]
COLUMNS = LOG_COLUMNS + ["TX_FRAUD_SCENARIO"]


@dataclass(frozen=True)
class HandbookWorld:
    """Everything one run drew: the profiles, the compromises and the transactions.

    ``customers``: CUSTOMER_ID, x, y, mean_amount, std_amount, mean_nb_tx_per_day, nb_terminals.
    ``terminals``: TERMINAL_ID, x, y.
    ``compromised_terminals`` / ``compromised_customers``: TERMINAL_ID / CUSTOMER_ID, day (0-based day
    index of the first compromised day), start and end (naive timestamps, end exclusive).
    ``transactions``: the :data:`COLUMNS` frame.
    """
    customers: pd.DataFrame
    terminals: pd.DataFrame
    compromised_terminals: pd.DataFrame
    compromised_customers: pd.DataFrame
    transactions: pd.DataFrame


def _ids(n: int, prefix: str) -> np.ndarray:
    return np.array([f"{prefix}{i}" for i in range(n)], dtype=object)


def _terminals_within_radius(cxy: np.ndarray, txy: np.ndarray, radius: float,
                             chunk: int = 512) -> tuple[np.ndarray, np.ndarray]:
    """CSR lists (indptr, indices) of the terminals strictly within ``radius`` of each customer, in
    terminal order."""
    indptr = np.zeros(len(cxy) + 1, dtype=np.int64)
    parts = []
    r2 = radius * radius
    for lo in range(0, len(cxy), chunk):
        c = cxy[lo:lo + chunk]
        d2 = (c[:, None, 0] - txy[None, :, 0]) ** 2 + (c[:, None, 1] - txy[None, :, 1]) ** 2
        # the handbook compares the square root with r; compare squares, except on the exact boundary
        near = d2 < r2
        edge = np.isclose(d2, r2)
        if edge.any():
            near = np.where(edge, np.sqrt(d2) < radius, near)
        rows, cols = np.nonzero(near)
        parts.append(cols)
        indptr[lo + 1:lo + len(c) + 1] = np.cumsum(np.bincount(rows, minlength=len(c)))
        indptr[lo + 1:lo + len(c) + 1] += indptr[lo]
    indices = np.concatenate(parts) if parts else np.zeros(0, dtype=np.int64)
    return indptr, indices


def simulate(n_customers: int = 5000, n_terminals: int = 10000, start: str = "2018-04-01",
             n_days: int = 183, radius: float = 5.0, seed: int = 0,
             hostile_ids: bool = False) -> HandbookWorld:
    """Draw a whole handbook world: profiles, transactions and the three fraud scenarios."""
    if n_customers < CUSTOMERS_PER_DAY or n_terminals < TERMINALS_PER_DAY or n_days < 1:
        raise ValueError("need at least 3 customers, 2 terminals and 1 day")
    rng = np.random.default_rng(seed)
    start_ts = pd.Timestamp(start)
    if start_ts.tz is not None:
        raise ValueError("start must be a naive date or timestamp")

    # --- profiles
    cxy = rng.uniform(0, 100, size=(n_customers, 2))
    mean_amount = rng.uniform(5, 100, size=n_customers)
    std_amount = mean_amount / 2
    mean_nb_tx = rng.uniform(0, 4, size=n_customers)
    txy = rng.uniform(0, 100, size=(n_terminals, 2))
    indptr, avail = _terminals_within_radius(cxy, txy, radius)
    n_avail = np.diff(indptr)

    # --- transactions: counts per customer and day, then one draw per drawn transaction
    counts = rng.poisson(np.broadcast_to(mean_nb_tx[:, None], (n_customers, n_days)))
    counts[n_avail == 0] = 0                      # no terminal, no transaction
    flat = counts.ravel()                         # customer-major: (customer, day)
    cust = np.repeat(np.repeat(np.arange(n_customers), n_days), flat)
    day = np.repeat(np.tile(np.arange(n_days), n_customers), flat)
    n = len(cust)
    second = np.trunc(rng.normal(SECONDS_PER_DAY / 2, 20000, size=n)).astype(np.int64)
    amount = rng.normal(mean_amount[cust], std_amount[cust])
    negative = amount < 0
    amount[negative] = rng.uniform(0, 2 * mean_amount[cust[negative]])
    amount = np.round(amount, 2)
    pick = np.floor(rng.uniform(0, 1, size=n) * n_avail[cust]).astype(np.int64)
    pick = np.minimum(pick, np.maximum(n_avail[cust] - 1, 0))
    term = avail[indptr[cust] + pick] if n else np.zeros(0, dtype=np.int64)
    keep = (second > 0) & (second < SECONDS_PER_DAY)
    cust, day, second, amount, term = cust[keep], day[keep], second[keep], amount[keep], term[keep]
    t_sec = day * SECONDS_PER_DAY + second
    order = np.lexsort((cust, t_sec))             # by time, ties by customer
    cust, day, t_sec, amount, term = cust[order], day[order], t_sec[order], amount[order], term[order]
    n = len(cust)

    # --- scenario 1
    fraud = amount > FRAUD_AMOUNT
    scenario = np.where(fraud, 1, 0).astype(np.int8)

    # --- scenario 2: the handbook loops over range(max day), i.e. every day but the last one with data
    last_day = int(day.max()) if n else 0
    comp_days = np.arange(last_day)
    comp_term = np.array([rng.choice(n_terminals, TERMINALS_PER_DAY, replace=False) for _ in comp_days],
                         dtype=np.int64).reshape(-1)
    comp_term_day = np.repeat(comp_days, TERMINALS_PER_DAY)
    hit = np.zeros((n_terminals, n_days + TERMINAL_DAYS), dtype=np.int32)
    np.add.at(hit, (comp_term, comp_term_day), 1)
    np.add.at(hit, (comp_term, comp_term_day + TERMINAL_DAYS), -1)
    compromised_now = np.cumsum(hit, axis=1)[:, :n_days] > 0
    s2 = compromised_now[term, day]
    fraud |= s2
    scenario[s2] = 2

    # --- scenario 3: events in day order; a third of the customer's transactions in the window
    comp_cust = np.array([rng.choice(n_customers, CUSTOMERS_PER_DAY, replace=False) for _ in comp_days],
                         dtype=np.int64).reshape(-1)
    comp_cust_day = np.repeat(comp_days, CUSTOMERS_PER_DAY)
    by_cust = np.argsort(cust, kind="stable")     # within a customer, still in time order
    cust_ptr = np.searchsorted(cust[by_cust], np.arange(n_customers + 1))
    for c, d in zip(comp_cust, comp_cust_day):
        rows = by_cust[cust_ptr[c]:cust_ptr[c + 1]]
        rdays = day[rows]
        rows = rows[(rdays >= d) & (rdays < d + CUSTOMER_DAYS)]
        k = len(rows) // CUSTOMER_SHARE_DIVISOR
        if k == 0:
            continue
        chosen = rng.choice(rows, k, replace=False)
        amount[chosen] = amount[chosen] * CUSTOMER_MULTIPLIER
        fraud[chosen] = True
        scenario[chosen] = 3

    # --- frames
    cprefix = HOSTILE_CUSTOMER_PREFIX if hostile_ids else ""
    tprefix = HOSTILE_TERMINAL_PREFIX if hostile_ids else ""
    cnames, tnames = _ids(n_customers, cprefix), _ids(n_terminals, tprefix)
    base = np.datetime64(start_ts.to_datetime64(), "ns")
    tx = pd.DataFrame({
        "TRANSACTION_ID": np.arange(n, dtype=np.int64),
        "TX_DATETIME": base + t_sec.astype("timedelta64[s]").astype("timedelta64[ns]"),
        "CUSTOMER_ID": pd.array(cnames[cust], dtype="str"),
        "TERMINAL_ID": pd.array(tnames[term], dtype="str"),
        "TX_AMOUNT": amount,
        "TX_FRAUD": fraud.astype(np.int64),
        "TX_FRAUD_SCENARIO": scenario.astype(np.int64),
    })
    customers = pd.DataFrame({"CUSTOMER_ID": cnames, "x": cxy[:, 0], "y": cxy[:, 1],
                              "mean_amount": mean_amount, "std_amount": std_amount,
                              "mean_nb_tx_per_day": mean_nb_tx, "nb_terminals": n_avail})
    terminals = pd.DataFrame({"TERMINAL_ID": tnames, "x": txy[:, 0], "y": txy[:, 1]})

    def events(key: str, names: np.ndarray, idx: np.ndarray, d: np.ndarray, length: int) -> pd.DataFrame:
        s = start_ts + pd.to_timedelta(d, unit="D")
        return pd.DataFrame({key: names[idx], "day": d, "start": s, "end": s + pd.Timedelta(days=length)})

    return HandbookWorld(
        customers=customers, terminals=terminals,
        compromised_terminals=events("TERMINAL_ID", tnames, comp_term, comp_term_day, TERMINAL_DAYS),
        compromised_customers=events("CUSTOMER_ID", cnames, comp_cust, comp_cust_day, CUSTOMER_DAYS),
        transactions=tx)


def generate(n_customers: int = 5000, n_terminals: int = 10000, start: str = "2018-04-01",
             n_days: int = 183, radius: float = 5.0, seed: int = 0,
             hostile_ids: bool = False) -> pd.DataFrame:
    """The handbook's transaction log (the :data:`COLUMNS` frame), deterministic in ``seed``."""
    return simulate(n_customers, n_terminals, start, n_days, radius, seed, hostile_ids).transactions


def write_log(df: pd.DataFrame, path: str | Path, with_scenario: bool = False) -> Path:
    """Write the log as a team would export it: UTF-8 CSV with a header, no index, timestamps as
    ``YYYY-MM-DD HH:MM:SS``, fields holding a comma or a quote quoted (quotes doubled). The
    simulation-only TX_FRAUD_SCENARIO column is left out unless ``with_scenario``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    cols = COLUMNS if with_scenario else LOG_COLUMNS
    df[cols].to_csv(path, index=False, encoding="utf-8", date_format="%Y-%m-%d %H:%M:%S",
                    lineterminator="\n")
    return path
