"""Shared vocabulary: roles, project states, pages, task enums."""

from __future__ import annotations

from datetime import datetime, timezone
from enum import Enum
from typing import Annotated, Generic, Literal, TypeVar, get_args

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, PlainSerializer, WithJsonSchema

T = TypeVar("T")

# The task queues, by their base name (a deployment's TASK_QUEUE_PREFIX goes before it, Settings.queue)
ORCHESTRATOR, SPEC_REGISTRY, INTEGRATION, KNOWLEDGE, GENERATION, TRAINING = (
    "orchestrator",
    "spec-registry",
    "integration",
    "knowledge",
    "generation",
    "training",
)
QUEUES = (ORCHESTRATOR, SPEC_REGISTRY, INTEGRATION, KNOWLEDGE, GENERATION, TRAINING)

# The models a request may name; what each can do right now is GET /api/models.
ModelName = Literal["local_llama", "deepseek_8b", "openai_api", "anthropic_api"]
MODEL_NAMES: tuple[str, ...] = get_args(ModelName)


class Strict(BaseModel):
    """Request bodies: unknown fields are an error, not silently dropped."""

    model_config = ConfigDict(extra="forbid")


def as_utc(value: datetime) -> datetime:
    """The columns are `timestamp` holding UTC without a zone: a naive value is UTC, an aware one is converted."""
    return value.replace(tzinfo=timezone.utc) if value.tzinfo is None else value.astimezone(timezone.utc)


# Every timestamp a response carries: RFC 3339 with its zone (`2026-12-01T10:00:00.123456+00:00`).
UtcDatetime = Annotated[
    datetime,
    AfterValidator(as_utc),
    PlainSerializer(datetime.isoformat, return_type=str, when_used="json"),
    WithJsonSchema({"type": "string", "format": "date-time"}, mode="serialization"),
]


class Public(BaseModel):
    """Response bodies, built from database rows (their timestamps are UtcDatetime)."""

    model_config = ConfigDict(from_attributes=True)


class Page(BaseModel, Generic[T]):
    """Every list the API answers: one page of items, and the cursor of the next page (null: the last, or a
    list too small to page)."""

    items: list[T]
    next_cursor: str | None = Field(
        default=None, description="Pass as `cursor` for the next page; null on the last page"
    )


class Role(str, Enum):
    viewer = "viewer"
    editor = "editor"
    admin = "admin"
    owner = "owner"

    @property
    def rank(self) -> int:
        return _ROLE_RANK[self]

    def at_least(self, other: "Role") -> bool:
        return self.rank >= other.rank


_ROLE_RANK = {Role.viewer: 0, Role.editor: 1, Role.admin: 2, Role.owner: 3}


class ProjectState(str, Enum):
    initialization = "initialization"
    spec_definition = "spec_definition"
    code_generation = "code_generation"
    integration = "integration"
    debugging = "debugging"
    completed = "completed"
    failed = "failed"
    cancelled = "cancelled"


# A run ends in one of these (workflows/project.py moves through the others; a regeneration is a new run).
TERMINAL_STATES = frozenset({ProjectState.completed, ProjectState.failed, ProjectState.cancelled})
# Which run a spec or setting written now reaches (store/runs.py: applies_to).
AppliesTo = Literal["this run", "next run"]
# A project in one of these is running: it counts against MAX_RUNNING_PROJECTS_PER_TENANT.
RUNNING_STATES = frozenset({ProjectState.code_generation, ProjectState.integration, ProjectState.debugging})


class TaskStatus(str, Enum):
    pending = "pending"
    running = "running"
    completed = "completed"
    failed = "failed"
    cancelled = "cancelled"


class Service(str, Enum):
    """The five services of the specification sheets, by their service_name."""

    spec_registry = "spec_registry"
    neural_code_generator = "neural_code_generator"
    knowledge_base = "knowledge_base"
    workflow_orchestrator = "workflow_orchestrator"
    api_gateway = "api_gateway"
