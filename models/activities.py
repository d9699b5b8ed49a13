"""Every activity, once: its name, the queue whose worker serves it, its argument and its result type.

Workflows call activities through this table (workflows/calls.py), never by string literals; the
activities are defined under the same names (`@activity.defn(name=X.name)`), and each worker
registers exactly what the table says its queue serves (workers/queues.py). tests/test_activity_table.py
checks the three against each other and against the recorded histories.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Generic, TypeVar

from models.common import GENERATION, INTEGRATION, KNOWLEDGE, ORCHESTRATOR, SPEC_REGISTRY, TRAINING
from models.generation import (
    CandidatesInput,
    CandidatesResult,
    LeaseInput,
    Plan,
    PlanInput,
    RecordGenerationInput,
    Reference,
    RetrieveInput,
    TechniqueStepInput,
    TechniqueStepResult,
    TestCandidatesInput,
    TestCandidatesResult,
)
from models.knowledge import IndexInput, IndexResult, ReindexPage, ReindexPageInput
from models.orchestrator import (
    AttachTemplatesResult,
    DebugRoundInput,
    DebugRoundResult,
    IntegrateInput,
    IntegrateResult,
    ProjectRef,
    PublishInput,
    PublishResult,
    RecordProgressInput,
    RecordStateInput,
    RecordStateResult,
    SpecsCheckResult,
)
from models.training import TrainTreeInput, TrainTreeResult

A = TypeVar("A")
R = TypeVar("R")


@dataclass(frozen=True)
class ActivityType(Generic[A, R]):
    name: str
    queue: str
    arg: type[A]
    result: type[R] | None  # the result's type (Temporal decodes it as this); None for no result


RECORD_PROJECT_STATE = ActivityType("record_project_state", ORCHESTRATOR, RecordStateInput, RecordStateResult)
RECORD_RUN_PROGRESS = ActivityType("record_run_progress", ORCHESTRATOR, RecordProgressInput, bool)
ACQUIRE_GENERATION_SLOT = ActivityType("acquire_generation_slot", ORCHESTRATOR, LeaseInput, bool)
RELEASE_GENERATION_SLOT: ActivityType[LeaseInput, None] = ActivityType(
    "release_generation_slot", ORCHESTRATOR, LeaseInput, None
)
ATTACH_TEMPLATES = ActivityType("attach_templates", SPEC_REGISTRY, ProjectRef, AttachTemplatesResult)
CHECK_SPECS = ActivityType("check_specs", SPEC_REGISTRY, ProjectRef, SpecsCheckResult)
INTEGRATE_ARTIFACTS = ActivityType("integrate_artifacts", INTEGRATION, IntegrateInput, IntegrateResult)
RUN_SPEC_TESTS = ActivityType("run_spec_tests", INTEGRATION, DebugRoundInput, DebugRoundResult)
TEST_CANDIDATES = ActivityType("test_candidates", INTEGRATION, TestCandidatesInput, TestCandidatesResult)
INDEX_ITEMS = ActivityType("index_items", KNOWLEDGE, IndexInput, IndexResult)
LIST_TENANT_ITEMS = ActivityType("list_tenant_items", KNOWLEDGE, ReindexPageInput, ReindexPage)
PRUNE_TENANT_POINTS = ActivityType("prune_tenant_points", KNOWLEDGE, ReindexPageInput, int)
RETRIEVE_REFERENCES = ActivityType("retrieve_references", KNOWLEDGE, RetrieveInput, list[Reference])
PUBLISH_GENERATED = ActivityType("publish_generated", KNOWLEDGE, PublishInput, PublishResult)
GENERATE_CANDIDATES = ActivityType("generate_candidates", GENERATION, CandidatesInput, CandidatesResult)
PLAN_MODULE = ActivityType("plan_module", GENERATION, PlanInput, Plan)
GENERATE_BODIES = ActivityType("generate_bodies", GENERATION, CandidatesInput, CandidatesResult)
RECORD_GENERATION: ActivityType[RecordGenerationInput, None] = ActivityType(
    "record_generation", GENERATION, RecordGenerationInput, None
)
TECHNIQUE_STEP = ActivityType("technique_step", GENERATION, TechniqueStepInput, TechniqueStepResult)
TRAIN_TREE = ActivityType("train_tree", TRAINING, TrainTreeInput, TrainTreeResult)

ACTIVITIES: dict[str, ActivityType] = {a.name: a for a in list(globals().values()) if isinstance(a, ActivityType)}


def served_by(queue: str) -> list[ActivityType]:
    """What the worker of `queue` serves."""
    return [a for a in ACTIVITIES.values() if a.queue == queue]
