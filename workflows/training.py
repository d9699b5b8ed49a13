"""TrainTreeWorkflow (task queue `training`): one training run of tree_transformers' encoder, durably.

Its one activity (activities/training.py) trains on a thread, heartbeating, and checkpoints each phase into
a work directory named after this workflow; a worker killed mid-run makes the activity time out on its
heartbeat, and the retry, on any training worker that sees the same models directory, resumes from the last
checkpoint. Bad data or a missing built-in checkpoint fail at once, saying why.
"""

from __future__ import annotations

from datetime import timedelta

from temporalio import workflow
from temporalio.common import RetryPolicy

from workflows.calls import execute

with workflow.unsafe.imports_passed_through():
    from models.activities import TRAIN_TREE
    from models.training import TRAIN_TREE_WORKFLOW, TrainTreeInput, TrainTreeResult

TRAIN_RETRY = RetryPolicy(
    maximum_attempts=5,
    initial_interval=timedelta(seconds=2),
    non_retryable_error_types=["TrainingInvalid", "TechniqueUnavailable"],
)


@workflow.defn(name=TRAIN_TREE_WORKFLOW)
class TrainTreeWorkflow:
    @workflow.run
    async def run(self, inp: TrainTreeInput) -> TrainTreeResult:
        who = f"tenant {inp.tenant_id}" if inp.tenant_id else "the built-in checkpoint"
        return await execute(
            TRAIN_TREE,
            inp,
            tenant_id=inp.tenant_id,
            start_to_close_timeout=timedelta(hours=6),
            heartbeat_timeout=timedelta(seconds=30),
            retry_policy=TRAIN_RETRY,
            summary=f"train the tree encoder: {who}",
        )
