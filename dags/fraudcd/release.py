"""
### release

With nobody starting it: when the daily `training_set` DAG publishes a snapshot on a release date (the release
cadence of the pipeline configuration, `schedule.release`: every 14 days from its start date, anchored there;
on other days the run skips at once, saying when the next release falls), or when a person starts a run for a
date: snapshot -> incumbent (bootstrap on the first cycle) ->
candidate -> evaluation vs the incumbent on slices -> release contracts -> per-merchant threshold
suggestions -> a person approves all, approves some, edits or rejects them (`approve_thresholds`, a
human-in-the-loop task: the Airflow UI's Required actions, or `fraudcd thresholds approve|edit|reject`)
-> `rejudge`: the contracts judge the approved policy (edits, partial approvals) again on the same
judging rows, and a failure stops the release before any traffic moves -> release report -> `backtest`:
the last days of history replayed offline through both models (never touches live traffic) -> `deploy`: the
candidate goes into shadow in the running scoring service -> `rollout`: one task that waits (deferred on a
timer between looks, no worker held) on the service's decision log, judges each stage's guardrails on the
candidate's own decisions, steps the ramp (config/ramp.yaml), rolls back at once on a breach, and each time
a stage stays inconclusive past its bound asks a person in Required actions (extend, promote anyway on the
record, roll back; or `fraudcd ramp extend | promote --anyway | rollback`); promotion after the last step
follows the plan's policy -> `finish`: the report of the outcome.
On-call controls (`fraudcd ramp pause | resume | set | rollback`) go through the same state machine; the
rollout task obeys them (a paused rollout is guarded, never advanced).

Every gate judges the policy that would go live on rows that did not fit its thresholds (the earlier half
of the evaluation window fits, the later half judges); an unjudged gate ("insufficient data") stops the
release unless its contract says `on_insufficient: warn`.

The approval waits at most `FRAUDCD_APPROVAL_TIMEOUT_S` (3 days by default); with no decision by then
nothing goes live and the release stops, its report saying so.

A gating contract failure stops the release before any traffic moves; the report says why. A named
person can waive a failed contract for this release only (`fraudcd override`, or the `overrides` param
when triggering), then rerun the release for the same date. Tasks pass a release id; everything else is
in the state store and the release folder.
"""
from __future__ import annotations

from datetime import timedelta
from pathlib import Path

from airflow.sdk import Param, dag, task

from release.orchestration.approval_task import ThresholdApprovalOperator
from release.orchestration.assets import TRAINING_SET, dag_start
from release.orchestration.rollout_task import RolloutOperator
from release.core.pipeline import pipeline, rollout_poll_seconds
from release.core.settings import waits

SCHEDULE = pipeline().schedule.release  # start date and cadence: config/pipeline.yaml
POLL_S = rollout_poll_seconds()  # how often the rollout task looks: config/ramp.yaml poll_seconds
# How long the approval and the rollout's questions wait for a person, and a whole rollout at most (every stage is
# bounded by its max_wait_seconds, then asks): release.core.settings.waits, from the environment.
WAITS = waits()


@dag(
    dag_id=Path(__file__).stem,
    # a published training set, on the days the cadence falls on (the snapshot task decides; see above)
    schedule=[TRAINING_SET],
    start_date=dag_start(SCHEDULE),
    catchup=False,
    max_active_runs=1,
    tags=["fraud-cd", "release"],
    default_args={"retries": 1, "retry_delay": timedelta(minutes=5)},
    params={"workflow": Param(None, type=["null", "string"],
                              description="training workflow YAML; default config/workflows/default.yaml"),
            "overrides": Param([], type="array",
                               description='waive failed contracts for this release only: '
                                           '[{"contract": NAME, "by": PERSON, "reason": WHY}]')},
    doc_md=__doc__,
)
def release():
    @task
    def snapshot(data_interval_end=None, dag_run=None, triggering_asset_events=None) -> str:
        from release.orchestration.cycle import build_snapshot, release_day_or_skip

        # a training set published on a day no release falls on: this task, and the run, skip
        return build_snapshot(release_day_or_skip(triggering_asset_events, data_interval_end,
                                                  getattr(dag_run, "run_after", None)))

    @task
    def start(snapshot_hash: str, data_interval_end=None, dag_run=None, params=None,
              triggering_asset_events=None) -> str:
        from release.orchestration.cycle import release_date, start_release

        params = params or {}
        as_of = release_date(triggering_asset_events, data_interval_end, getattr(dag_run, "run_after", None))
        return start_release(as_of, snapshot_hash, params.get("workflow"), params.get("overrides"))

    @task
    def incumbent(rid: str) -> str:
        from release.orchestration.cycle import ensure_incumbent

        ensure_incumbent(rid)
        return rid

    @task
    def train(rid: str) -> str:
        from release.orchestration.cycle import train_candidate

        train_candidate(rid)
        return rid

    @task
    def evaluate(rid: str) -> str:
        from release.orchestration.cycle import evaluate_release

        evaluate_release(rid)
        return rid

    @task.branch
    def contracts(rid: str) -> str:
        from release.orchestration.cycle import check_contracts

        return "request_approval" if check_contracts(rid) else "stopped_report"

    @task
    def stopped_report(rid: str) -> str:
        from release.orchestration.cycle import announce_outcome, write_release_report

        report = write_release_report(rid)
        announce_outcome(rid)
        return report

    @task
    def request_approval(rid: str) -> str:
        from release.orchestration.cycle import request_threshold_approval

        request_threshold_approval(rid)
        return rid

    # a person's decision is not retried; the response timeout bounds the wait
    approve_thresholds = ThresholdApprovalOperator(task_id="approve_thresholds", release_task_id="request_approval",
                                                   response_timeout=timedelta(seconds=WAITS.approval_s), retries=0)

    @task
    def rejudge(rid: str) -> str:
        from release.orchestration.cycle import rejudge_approved_policy

        rejudge_approved_policy(rid)
        return rid

    @task
    def report(rid: str) -> str:
        from release.orchestration.cycle import write_release_report

        write_release_report(rid)
        return rid

    @task
    def backtest(rid: str) -> str:
        from release.orchestration.cycle import run_backtest

        run_backtest(rid)
        return rid

    @task
    def deploy(rid: str) -> str:
        from release.orchestration.cycle import deploy_candidate, write_release_report

        deploy_candidate(rid)
        write_release_report(rid)  # the report shows the candidate in shadow while it is
        return rid

    # drives the rollout on the scoring service's decision log, looking every poll_seconds (deferred between
    # looks: no worker is held); asks a person each time the rollout needs one (inconclusive past its bound,
    # or ready to promote); unanswered, the candidate is rolled back. Done when the rollout is over.
    rollout = RolloutOperator(task_id="rollout", release_task_id="deploy", poll_seconds=POLL_S,
                              rollout_timeout=timedelta(seconds=WAITS.rollout_s),
                              response_timeout=timedelta(seconds=WAITS.decision_s), retries=2,
                              retry_delay=timedelta(seconds=POLL_S))

    @task
    def finish(rid: str) -> str:
        from release.orchestration.cycle import announce_outcome, finish as finish_release, write_release_report

        finish_release(rid)
        report = write_release_report(rid)
        announce_outcome(rid)
        return report

    rid = incumbent(start(snapshot()))
    evaluated = evaluate(train(rid))
    gate = contracts(evaluated)
    stopped = stopped_report(evaluated)
    asked = request_approval(evaluated)
    gate >> [stopped, asked]
    asked >> approve_thresholds
    deploy(backtest(report(rejudge(approve_thresholds.output)))) >> rollout
    finish(rollout.output)

release()
