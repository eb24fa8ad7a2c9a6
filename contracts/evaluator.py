"""Load the contracts in force and turn an evaluation into verdicts."""
from __future__ import annotations

from pathlib import Path
from typing import Annotated, Union

from pydantic import BaseModel, ConfigDict, Field, model_validator

from contracts.action_rate_shift import ActionRateShift
from contracts.base import Verdict
from contracts.data_contract import DataContract
from contracts.drift_budget import DriftBudget
from contracts.fixed_fpr_higher_recall import FixedFprHigherRecall
from contracts.merchant_block_rate_stability import MerchantBlockRateStability
from contracts.ranking_regression import RankingRegression
from contracts.slice_recall_regression import SliceRecallRegression
from release.core.config import load_yaml_model

Contract = Annotated[Union[ActionRateShift, FixedFprHigherRecall, SliceRecallRegression,
                           MerchantBlockRateStability, RankingRegression, DataContract, DriftBudget],
                     Field(discriminator="kind")]


class ContractSet(BaseModel):
    model_config = ConfigDict(extra="forbid")

    contracts: list[Contract] = Field(min_length=1)

    @model_validator(mode="after")
    def _unique(self) -> "ContractSet":
        names = [c.name for c in self.contracts]
        dup = sorted({n for n in names if names.count(n) > 1})
        if dup:
            raise ValueError(f"contract names must be unique; repeated: {dup}")
        windows = sorted({c.window_days for c in self.drift_budgets()})
        if len(windows) > 1:  # an evaluation scores one anchor (release.orchestration.cycle.drift_anchor)
            raise ValueError(f"every drift_budget must share one window_days (one anchor per evaluation); got "
                             f"{windows}")
        return self

    def names(self) -> list[str]:
        return [c.name for c in self.contracts]

    def pools(self) -> set[tuple[str, str, int]]:
        """The pooled slice types the contracts read: (slice type, support measure, minimum support)."""
        return {c.pool() for c in self.contracts if hasattr(c, "pool")}

    def detailed_slices(self) -> set[str]:
        """The slice types on which some contract reads more than the action rate (recall, FPR, ranking): an
        evaluation may report only action rates on the others' thousands of slices (merchants)."""
        rates_only = (ActionRateShift, MerchantBlockRateStability, DataContract)
        return {getattr(c, "slice", "all") for c in self.contracts if not isinstance(c, rates_only)}

    def drift_budgets(self) -> list[DriftBudget]:
        """The contracts that judge the policy against production as it was before the releases of a
        window: an evaluation scores their anchor (release.orchestration.cycle, analysis.evaluation)."""
        return [c for c in self.contracts if isinstance(c, DriftBudget)]


def load_contracts(path: str | Path, text: str | None = None) -> ContractSet:
    """The contract set of the file at ``path`` (``text``: its text as already read)."""
    return load_yaml_model(path, ContractSet, text)


# how a verdict's sentence names the policy judged, by the evaluation's policy_source
POLICY_NAMES = {"approved": "approved policy", "edited": "policy as edited live"}


def evaluate_contracts(cs: ContractSet, evaluation, manifest: dict | None = None) -> list[Verdict]:
    """``evaluation`` is an analysis.evaluation.Evaluation: the tidy metrics of one policy judged on rows
    that did not fit it (``evaluation.metrics``) and the fitting/judging windows; ``manifest`` the
    training-set snapshot's manifest (for data contracts). Every contract returns at least one verdict."""
    out: list[Verdict] = []
    what = POLICY_NAMES.get(getattr(evaluation, "policy_source", "suggested"), "policy")
    for c in cs.contracts:
        if isinstance(c, DataContract):
            out.extend(c.check(manifest))
        elif isinstance(c, DriftBudget):
            out.extend(c.check(evaluation.metrics, getattr(evaluation, "windows", None), what))
        elif isinstance(c, (FixedFprHigherRecall, SliceRecallRegression)):  # they read where DM was fitted
            out.extend(c.check(evaluation.metrics, getattr(evaluation, "windows", None)))
        elif isinstance(c, ActionRateShift):
            out.extend(c.check(evaluation.metrics, what))
        else:
            out.extend(c.check(evaluation.metrics))
    return out


def gate_failures(verdicts: list[Verdict], waived: set[str] | frozenset[str] = frozenset()) -> list[Verdict]:
    """The verdicts that stop the release: gating failures, and gating contracts that could not be judged
    and stop then (``on_insufficient: stop``), less those of contracts a named person waived for this
    release."""
    return [v for v in verdicts if v.stops and v.contract not in waived]
