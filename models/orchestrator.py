"""Orchestrator contracts: projects, their state, workflow tasks, and workflow I/O."""

from __future__ import annotations

from typing import Any, Literal
from uuid import UUID, uuid5

from pydantic import BaseModel, Field
from temporalio.common import SearchAttributeKey

from models.common import (
    GENERATION,
    INTEGRATION,
    KNOWLEDGE,
    ORCHESTRATOR,
    SPEC_REGISTRY,
    ProjectState,
    Public,
    Service,
    Strict,
    TaskStatus,
    UtcDatetime,
)
from models.generation import GenerationResult, SpecSnapshot
from models.outcome import Outcome, RunScope
from models.pipeline import ProjectSettingsUpdate
from models.progress import RunProgress
from models.techniques import TechniqueOptions


class ProjectCreate(Strict):
    name: str = Field(min_length=1, max_length=200)
    description: str | None = Field(None, max_length=10_000)


class ProjectUpdate(Strict):
    name: str | None = Field(None, min_length=1, max_length=200)
    description: str | None = Field(None, max_length=10_000)


class ProjectPublic(Public):
    id: UUID
    tenant_id: UUID
    name: str
    description: str | None
    state: ProjectState
    user_id: UUID
    created_at: UtcDatetime
    updated_at: UtcDatetime
    workflow_id: str
    run_id: UUID | None = Field(None, description="The latest run (GET .../runs/{run_id})")
    reason: str | None = Field(None, description="Why the latest run ended as it did")
    outcome: Outcome | None = Field(None, description="The latest run's outcome, once it has ended")
    model: str | None = Field(None, description="The model its next run uses (its own setting, else the tenant's)")
    progress: RunProgress | None = Field(
        None, description="The latest run's progress (models/progress.py), once its code generation started"
    )


class RunCreate(Strict):
    """POST /api/projects/{id}/runs: which instances the new run generates again, and optionally new
    settings (saved as PUT .../settings would, before the run reads them)."""

    scope: Literal["failed", "changed", "all"] = Field(
        "failed",
        description="failed: every instance whose tests do not pass now (or that has no code); "
        "changed: those whose values changed since their code was generated, and new ones; all: every instance",
    )
    settings: ProjectSettingsUpdate | None = None


class RunPublic(Public):
    id: UUID = Field(description="The Temporal run id of the project's workflow")
    project_id: UUID
    scope: RunScope
    instance_ids: list[UUID] | None = Field(None, description="The instances it generates (null: all, run 1)")
    state: ProjectState
    settings: dict[str, Any] | None = Field(
        None, description="What it runs with: fixed when it starts (a later run) or when its specs complete (run 1)"
    )
    progress: RunProgress | None = Field(
        None, description="How far it got (models/progress.py), as its workflow records it"
    )
    outcome: Outcome | None = None
    reason: str | None = None
    created_at: UtcDatetime
    updated_at: UtcDatetime
    ended_at: UtcDatetime | None = None
    duration_s: float | None = Field(None, description="From start to its terminal state")
    trace_id: str | None = Field(None, description="The trace of the request that started it (when traces are on)")


class StateChange(Strict):
    state: ProjectState


class StateView(BaseModel):
    state: ProjectState
    allowed_next: list[ProjectState]


class TaskCreate(Strict):
    project_id: UUID
    service: Service
    task_type: str = Field(min_length=1, max_length=100, pattern=r"^[a-z][a-z0-9_.\-]*$")
    status: TaskStatus = TaskStatus.pending


class TaskUpdate(Strict):
    status: TaskStatus


class TaskPublic(Public):
    id: UUID
    project_id: UUID
    tenant_id: UUID
    service: Service
    task_type: str
    status: TaskStatus
    created_at: UtcDatetime
    updated_at: UtcDatetime


# --- workflow and activity I/O ----------------------------------------------------------


PROJECT_WORKFLOW = "ProjectWorkflow"
SANDBOX_UNAVAILABLE = "SandboxUnavailable"  # run_spec_tests' error type when the worker has no sandbox
TENANT_KEY = SearchAttributeKey.for_keyword("SpecmillTenant")
STATE_KEY = SearchAttributeKey.for_keyword("SpecmillState")


def project_workflow_id(project_id: UUID) -> str:
    return f"project-{project_id}"


class PipelineQueues(BaseModel):
    """The task queues a project's run uses (with the deployment's TASK_QUEUE_PREFIX applied)."""

    orchestrator: str = ORCHESTRATOR
    spec_registry: str = SPEC_REGISTRY
    generation: str = GENERATION
    knowledge: str = KNOWLEDGE
    integration: str = INTEGRATION


class Regenerate(BaseModel):
    """A later run of a project (POST .../runs or .../regenerate): only these instances, from the state the
    last run left."""

    instance_ids: list[UUID]
    from_state: ProjectState
    scope: RunScope = "changed"
    feedback: dict[UUID, str] = Field(
        default_factory=dict, description="Instance -> its last failure, told to the model in this run's first round"
    )
    settings: PipelineSettings | None = Field(
        default=None, description="The settings it runs with, read when it was claimed (None: runs from before)"
    )


class ProjectWorkflowInput(BaseModel):
    project_id: UUID
    tenant_id: UUID
    user_id: UUID
    queues: PipelineQueues = Field(default_factory=PipelineQueues)
    regenerate: Regenerate | None = None


class ProjectWorkflowResult(BaseModel):
    project_id: UUID
    state: ProjectState
    reasons: list[str] = Field(default_factory=list, description="Why it failed, when it did")
    outcome: Outcome | None = None


class RecordStateInput(BaseModel):
    """Mirror one transition into the projects row and the outbox, exactly once."""

    tenant_id: UUID
    project_id: UUID
    from_state: ProjectState | None
    to_state: ProjectState
    seq: int = Field(description="Transition number within the run: with run_id, the outbox dedup key.")
    run_id: str = ""
    reason: str | None = None
    specs_completed: dict[UUID, str] | None = Field(
        None, description="Set on spec_definition -> code_generation: spec.complete goes out with the transition"
    )
    scope: RunScope | None = Field(None, description="The run's scope (its project_runs row); None: before runs")
    settings: PipelineSettings | None = Field(None, description="Set when the specs are checked: what the run uses")
    outcome: Outcome | None = Field(None, description="Set on a terminal state")
    progress: RunProgress | None = Field(None, description="The run's progress, once its code generation started")


class RecordProgressInput(BaseModel):
    """record_run_progress: the run's progress changed within a state; `progress.instances` holds those that
    changed since the workflow's last record (runs recorded before: every instance)."""

    tenant_id: UUID
    project_id: UUID
    run_id: str
    progress: RunProgress


class RecordStateResult(BaseModel):
    applied: bool


# --- the pipeline: what the project workflow's states hand to their activities ------------------


class PipelineSettings(BaseModel):
    """The settings a run uses (the project's over the tenant's), read once when the specs complete."""

    model: str = "local_llama"
    techniques: list[str] = Field(default_factory=list)
    max_new_tokens: int = 384
    debug_rounds: int = 2
    generation_concurrency: int = 2
    n: int = 1
    options: TechniqueOptions = Field(default_factory=TechniqueOptions)


class ProjectRef(BaseModel):
    tenant_id: UUID
    project_id: UUID
    only: list[UUID] | None = Field(default=None, description="check_specs: these instances only (a regeneration)")
    settings: PipelineSettings | None = Field(
        default=None, description="check_specs: the run's settings, fixed before (a later run); None: read them now"
    )


class AttachTemplatesResult(BaseModel):
    template_ids: list[UUID]


class SpecProblem(BaseModel):
    instance_id: UUID | None = None
    template: str | None = None
    path: str = "$"
    message: str


class SpecsCheckResult(BaseModel):
    """spec.complete's check: the problems (none: the specs can be generated), the specs and settings."""

    problems: list[SpecProblem] = Field(default_factory=list)
    specs: list[SpecSnapshot] = Field(default_factory=list)
    settings: PipelineSettings = Field(default_factory=PipelineSettings)


class CompleteSpecs(BaseModel):
    """The spec.complete update (POST /api/projects/{id}/specs/complete, or PUT state code_generation)."""

    requested_by: UUID | None = None


class InstanceOutput(BaseModel):
    """One spec instance's generation in a round, as the integration step receives it."""

    spec: SpecSnapshot
    generation: GenerationResult | None = None
    error: str | None = None


class IntegrateInput(BaseModel):
    tenant_id: UUID
    project_id: UUID
    round: int
    model: str
    techniques: list[str]
    outputs: list[InstanceOutput]


class ArtifactRef(BaseModel):
    instance_id: UUID
    artifact_id: UUID | None = Field(default=None, description="None: nothing was generated for this instance")
    path: str
    parses: bool | None = None
    problems: list[str] = Field(default_factory=list, description="Static check findings")


class IntegrateResult(BaseModel):
    artifacts: list[ArtifactRef]


class DebugRoundInput(BaseModel):
    tenant_id: UUID
    project_id: UUID
    round: int
    task_id: UUID = Field(description="The round's workflow_tasks row (made by the workflow: a retry reuses it)")
    artifacts: list[ArtifactRef]
    specs: list[SpecSnapshot]


class InstanceTestResult(BaseModel):
    instance_id: UUID
    artifact_id: UUID | None
    status: str  # passed | failed | error (also: undefined names, no test ran) | timeout | no_tests | missing
    failure: str | None = Field(
        default=None, description="What the next generation round is told: assertion, traceback, output"
    )
    test: str | None = Field(default=None, description="The failing test's source (a setup line, when one failed)")
    error: str | None = Field(
        default=None, description="e.g. AssertionError, NameError: name 'datetime' is not defined, or the limit it hit"
    )
    actual: str | None = Field(default=None, description="A failed comparison's left side, as a repr (capped)")
    expected: str | None = Field(default=None, description="A failed comparison's right side, as a repr (capped)")
    problems: list[str] = Field(
        default_factory=list, description="Integration's static findings (for a missing artifact: why)"
    )


class DebugRoundResult(BaseModel):
    results: list[InstanceTestResult]

    @property
    def failing(self) -> list[InstanceTestResult]:
        return [r for r in self.results if r.status not in ("passed", "no_tests")]


class PublishInput(BaseModel):
    """Artifacts that passed their tests, to become the tenant's snippets (flagged `generated`)."""

    tenant_id: UUID
    user_id: UUID
    project_id: UUID
    artifact_ids: list[UUID]


class PublishResult(BaseModel):
    snippet_ids: list[UUID]


def generated_snippet_id(artifact_id: UUID) -> UUID:
    """The snippet an artifact becomes: one id per artifact, so a retried publish finds it."""
    return uuid5(artifact_id, "specmill:generated-snippet")


class ProjectChanges(BaseModel):
    """What changed since the last generation, by the hash of each instance's values."""

    stale: bool
    changed: list[UUID] = Field(description="Instances whose values differ from those their current artifact came from")
    new: list[UUID] = Field(description="Instances without a current artifact")


class RegenerateAccepted(ProjectChanges):
    """POST .../regenerate: the changes, and the run it started for them."""

    run_id: UUID
