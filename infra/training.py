"""Starting a training run of tree_transformers' encoder (workflows/training.py), for the CLI and the API."""

from __future__ import annotations

from temporalio.client import Client, WorkflowHandle
from temporalio.common import Priority, WorkflowIDConflictPolicy

from infra.temporal import tenant_priority
from models.common import TRAINING
from models.settings import Settings
from models.training import TRAIN_TREE_WORKFLOW, TrainTreeInput, TrainTreeResult


def workflow_id(inp: TrainTreeInput) -> str:
    return f"tree-training-{inp.tenant_id or 'builtin'}"


async def start_tree_training(client: Client, settings: Settings, inp: TrainTreeInput) -> WorkflowHandle:
    """The run for this checkpoint: one at a time each (a second start while one runs finds the first)."""
    return await client.start_workflow(
        TRAIN_TREE_WORKFLOW,
        inp,
        id=workflow_id(inp),
        task_queue=settings.queue(TRAINING),
        result_type=TrainTreeResult,
        id_conflict_policy=WorkflowIDConflictPolicy.USE_EXISTING,
        static_summary=f"train the tree encoder: {inp.tenant_id or 'built-in'}",
        priority=tenant_priority(inp.tenant_id) if inp.tenant_id else Priority.default,
    )
