"""A person's edit of a release's threshold set (``fraudcd thresholds edit`` and ``import``): a pending set's edit
changes its proposal, judged with the approved policy once decided (release.orchestration.cycle.
rejudge_approved_policy); a live edit moves money at once, so the release's contracts judge it first.

Light to import (the state store's approvals only): what judges a live edit is imported when one is judged, so a
pending set's edit from the CLI does not load the evaluation's modules."""
from __future__ import annotations

from release.core.settings import paths
from release.state import approvals


class LiveEditRefused(Exception):
    """A live threshold edit that the release's contracts stop, or that cannot be judged: nothing was applied."""


def edit_thresholds(release_id: str, edits, *, actor: str, reason: str, at: str, despite=(), unjudged: bool = False,
                    source: str = "cli") -> dict:
    """A person's threshold edit (``fraudcd thresholds edit`` and ``import``). A pending set's edit changes the
    proposal (the approved policy is judged once decided: rejudge_approved_policy). A live edit moves money at
    once, so it is judged first, as the approved policy was: the release's contracts kept at evaluation, on the
    evaluation's judging rows, on the live policy with these merchants changed. A gate that stops (a failure,
    or a gate left unjudged that stops) refuses it (LiveEditRefused, naming each verdict) unless its contract
    is waived for the release or named in ``despite`` (on the record: the audit row of the edit names them
    with the verdicts). A release with nothing to judge on (no evaluation kept) refuses a live edit unless
    ``unjudged``. Applied in one transaction, only if the live thresholds are still those judged."""
    s = approvals.latest_set(release_id)
    if s is None or s["status"] != approvals.APPROVED:
        if despite or unjudged:
            raise approvals.ThresholdInputError(
                [f"--despite and --unjudged are for live edits; the thresholds of {release_id} are "
                 f"{s['status'] if s else 'not suggested yet'}, not live (a pending set's edits are judged with "
                 "the policy once it is approved)"], "options")
        return approvals.edit(release_id, edits, actor=actor, reason=reason, at=at, source=source)
    values = approvals.validate_edits(edits, set(approvals.set_rows(s["id"])["merchant_id"]), release_id)
    judgement = judge_live_edit(release_id, s["model_id"], values, despite=despite, unjudged=unjudged)
    out = approvals.edit(release_id, values, actor=actor, reason=reason, at=at, source=source, judgement=judgement)
    if out["changed"] and (paths().reports / f"{release_id}.html").exists():
        from release.orchestration.cycle import _report_stage

        out["report_rewrite"] = _report_stage(release_id) is not None  # its live changes, for people to read
    return out


def judge_live_edit(release_id: str, model_id: str, values: dict[str, float], despite=(),
                    unjudged: bool = False) -> dict:
    """The judgement recorded with a live edit (see edit_thresholds): the change of the live thresholds it was
    judged against, each verdict in brief, the contracts it went ahead despite. Raises LiveEditRefused."""
    from analysis.evaluation import Evaluation
    from contracts.evaluator import gate_failures
    from release.orchestration.cycle import _judge_policy, release_contracts, release_dir
    from release.state.overrides import waived_contracts

    cs = release_contracts(release_id)  # read once: the names --despite may give and the set that judges
    names = cs.names()
    despite = sorted(set(despite))
    unknown = [c for c in despite if c not in names]
    if unknown:
        raise LiveEditRefused(f"--despite names no contract of release {release_id}: {', '.join(unknown)} "
                              f"(its contracts: {', '.join(names)}). Nothing was applied.")
    change = approvals.live_change(model_id)
    live = approvals.live_thresholds(model_id)
    folder = release_dir(release_id)
    ev = Evaluation.load(folder) if (folder / "evaluation.json").exists() else None
    if live is None or ev is None or ev.judging is None:
        why = ("no live thresholds for its model" if live is None else
               "no evaluation is kept in its folder" if ev is None else "its evaluation kept no judging rows")
        if not unjudged:
            raise LiveEditRefused(f"This live edit cannot be judged by the contracts of release {release_id}: {why}. "
                                  "Nothing was applied. To apply it unjudged, on the record, add --unjudged.")
        return {"change_id": change, "judged": False, "why": why, "verdicts": [], "despite": despite}
    g, per = live
    per = per.copy()
    for m, x in values.items():
        per[m] = x
    _, vs = _judge_policy(release_id, ev, g, per, "edited", cs)
    waived = waived_contracts(release_id)
    stops = gate_failures(vs, waived | set(despite))
    if stops:
        raise LiveEditRefused("The release's contracts stop this live edit; nothing was applied. "
                              + " ".join(f"[{v.contract}] {v.sentence}" for v in stops)
                              + " To apply it all the same, on the record: --despite CONTRACT for each.")
    return {"change_id": change, "judged": True, "despite": despite, "waived": sorted(waived & set(names)),
            "verdicts": [{"contract": v.contract, "slice": v.slice, "verdict": v.verdict, "stops": bool(v.stops),
                          **({"sentence": v.sentence} if v.stops else {})} for v in vs if v.gate]}
