"""Orchestrator contracts: projects, their state, workflow tasks, and workflow I/O."""
from __future__ import annotations

from datetime import datetime
from uuid import UUID

from pydantic import BaseModel, Field
from temporalio.common import SearchAttributeKey

from models.common import ProjectState, Public, Service, Strict, TaskStatus


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
    created_at: datetime
    updated_at: datetime
    workflow_id: str


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
    created_at: datetime
    updated_at: datetime


# --- workflow and activity I/O ----------------------------------------------------------


PROJECT_WORKFLOW = "ProjectWorkflow"
TENANT_KEY = SearchAttributeKey.for_keyword("SpecmillTenant")
STATE_KEY = SearchAttributeKey.for_keyword("SpecmillState")


def project_workflow_id(project_id: UUID) -> str:
    return f"project-{project_id}"


class ProjectWorkflowInput(BaseModel):
    project_id: UUID
    tenant_id: UUID
    user_id: UUID


class ProjectWorkflowResult(BaseModel):
    project_id: UUID
    state: ProjectState


class RecordStateInput(BaseModel):
    """Mirror one transition into the projects row and the outbox, exactly once."""

    tenant_id: UUID
    project_id: UUID
    from_state: ProjectState | None
    to_state: ProjectState
    seq: int = Field(description="Transition number within the workflow: the outbox dedup key.")
    reason: str | None = None


class RecordStateResult(BaseModel):
    applied: bool
