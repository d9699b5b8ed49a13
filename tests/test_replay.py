"""Recorded workflow histories replay against today's workflow code (a determinism check).

tests/histories/ holds histories of real runs (recorded by the pipeline tests with
SPECMILL_SAVE_HISTORIES=1). A change to a workflow that would make Temporal's replay of a running
workflow diverge (another activity, a reordered command) fails here; such a change needs
`workflow.patched(...)` or a new workflow type, and new recordings are added beside the old ones,
which are never rewritten (tests/test_histories.py fails on any edit).

pipeline-prelease-* were recorded before the tenant generation lease (2026-11-25) and recovered from
git: their generation workflows ran without lease activities, and they replay because the lease is
gated by the input that starts a run (`lease_queue`, absent from every input made before the
change), not by a patch. A patch added now would break the runs recorded since, which carry the
lease activities without a marker; every later change is patched.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from temporalio.client import WorkflowHistory
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.worker import Replayer

from workflows.generation import GenerationWorkflow
from workflows.knowledge import KnowledgeIndexWorkflow, KnowledgeReindexWorkflow
from workflows.project import ProjectWorkflow

HISTORIES = sorted((Path(__file__).parent / "histories").glob("*.json"))


def test_there_are_recorded_histories():
    assert len(HISTORIES) >= 2, "record them: SPECMILL_SAVE_HISTORIES=1 pytest tests/test_pipeline.py"


@pytest.mark.parametrize("path", HISTORIES, ids=[p.stem for p in HISTORIES])
async def test_recorded_history_replays(path: Path):
    record = json.loads(path.read_text())
    history = WorkflowHistory.from_json(record["workflow_id"], record["history"])
    replayer = Replayer(
        workflows=[ProjectWorkflow, GenerationWorkflow, KnowledgeIndexWorkflow, KnowledgeReindexWorkflow],
        data_converter=pydantic_data_converter,
    )
    await replayer.replay_workflow(history)
