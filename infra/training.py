"""Starting a training run of tree_transformers' encoder (workflows/training.py), for the CLI and the API."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass

from temporalio.client import Client, WorkflowHandle
from temporalio.common import Priority, WorkflowIDConflictPolicy

from infra.temporal import tenant_priority
from models.activities import TRAIN_TREE
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


REPORT_S = 1.0  # how often a training run reports its (phase, step, loss) to the server


@dataclass(frozen=True)
class Report:
    phase: str  # "contrastive" (phase 1) or "ranking" (phase 2)
    step: int  # steps done in this phase
    loss: float


async def last_report(client: Client, handle: WorkflowHandle) -> Report | None:
    """What the run's training activity last reported in its heartbeat; None before its first step."""
    desc = await handle.describe()
    for pending in desc.raw_description.pending_activities:
        if pending.activity_type.name == TRAIN_TREE.name and pending.heartbeat_details.payloads:
            details = await client.data_converter.decode(pending.heartbeat_details.payloads)
            if len(details) == 3:
                return Report(str(details[0]), int(details[1]), float(details[2]))
    return None


def phase_steps(inp: TrainTreeInput) -> dict[str, int]:
    """The steps of each phase the run trains: a tenant's checkpoint trains phase 1 only (codegen/tree/build.py)."""
    steps = {"contrastive": inp.params.contrastive_steps}
    if inp.tenant_id is None:
        steps["ranking"] = inp.params.ranking_steps
    return steps


async def follow(
    client: Client, handle: WorkflowHandle, on_report: Callable[[Report], None], every: float = REPORT_S
) -> TrainTreeResult:
    """The run's result, calling `on_report` with each new report while it trains."""
    result = asyncio.ensure_future(handle.result())
    last = None
    try:
        while True:
            done, _ = await asyncio.wait({result}, timeout=every)
            if done:
                return result.result()
            report = await last_report(client, handle)
            if report is not None and report != last:
                on_report(report)
                last = report
    finally:
        result.cancel()
