"""Event payloads of the specification sheets; the class's `schema_name` is the seed's schema."""

from __future__ import annotations

from typing import ClassVar, Literal
from uuid import UUID

from pydantic import BaseModel, Field

from models.common import ProjectState, Service, TaskStatus
from models.outcome import Outcome
from models.progress import RunProgress


class EventPayload(BaseModel):
    schema_name: ClassVar[str]


class spec_template_event(EventPayload):
    schema_name: ClassVar[str] = "spec_template_event"
    template_id: UUID
    tenant_id: UUID
    name: str
    version: str
    user_id: UUID | None = None


class spec_instance_event(EventPayload):
    schema_name: ClassVar[str] = "spec_instance_event"
    instance_id: UUID
    template_id: UUID
    project_id: UUID
    tenant_id: UUID
    user_id: UUID
    values_hash: str


class project_event(EventPayload):
    schema_name: ClassVar[str] = "project_event"
    project_id: UUID
    tenant_id: UUID
    user_id: UUID
    name: str
    state: ProjectState
    workflow_id: str


class project_state_event(EventPayload):
    schema_name: ClassVar[str] = "project_state_event"
    project_id: UUID
    tenant_id: UUID
    from_state: ProjectState | None
    to_state: ProjectState
    reason: str | None = None
    run_id: UUID | None = None
    outcome: Outcome | None = Field(None, description="On a terminal state: the run's outcome, by instance name")
    progress: RunProgress | None = Field(None, description="The run's progress, once its code generation started")


class run_progress_event(EventPayload):
    """run.progress: the run's progress changed within a state (an instance's code made, a round tested)."""

    schema_name: ClassVar[str] = "run_progress_event"
    project_id: UUID
    tenant_id: UUID
    run_id: UUID
    progress: RunProgress


class complete_spec_event(EventPayload):
    """spec.complete: a project's specs were checked and handed to code generation."""

    schema_name: ClassVar[str] = "complete_spec_event"
    project_id: UUID
    tenant_id: UUID
    instances: dict[UUID, str]  # instance id -> hash of its values


class task_event(EventPayload):
    schema_name: ClassVar[str] = "task_event"
    task_id: UUID
    project_id: UUID
    tenant_id: UUID
    service: Service
    task_type: str
    status: TaskStatus


class knowledge_update_event(EventPayload):
    schema_name: ClassVar[str] = "knowledge_update_event"
    tenant_id: UUID
    kind: Literal["snippet", "knowledge"]
    action: Literal["created", "updated", "deleted"]
    id: UUID
    project_id: UUID | None = None
    key: str | None = None
    language: str | None = None
    user_id: UUID | None = None


class code_generation_result(EventPayload):
    schema_name: ClassVar[str] = "code_generation_result"
    generation_id: UUID
    tenant_id: UUID
    status: Literal["completed", "failed"]
    model: str
    techniques: list[str]
    template_id: UUID | None = None
    instance_id: UUID | None = None
    project_id: UUID | None = None  # the project it was made for (its pipeline, or an instance's)
    values_hash: str | None = None
    files: list[str] = []
    parses: bool | None = None
    retrieved_snippets: list[UUID] = []
