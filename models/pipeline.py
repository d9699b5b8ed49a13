"""Pipeline contracts: tenant and project generation settings, attached templates, artifacts.

Updates name their model from `ModelName` (a 422 lists the choices); techniques are checked where
they are stored (store/pipeline_settings.py, with models.techniques.check).
"""

from __future__ import annotations

from typing import Any, Literal
from uuid import UUID

from pydantic import BaseModel, Field

from models.common import AppliesTo, ModelName, Public, Strict, UtcDatetime
from models.generation import Reliance
from models.techniques import TechniqueOptions

TestStatus = Literal["passed", "failed", "error", "timeout", "no_tests"]
TEST_STATUSES: tuple[str, ...] = ("passed", "failed", "error", "timeout", "no_tests")


class DefaultTemplate(Strict):
    """A template a new project is given: by name, and version (none: the latest at attach time)."""

    name: str = Field(min_length=1, max_length=200)
    version: str | None = Field(None, min_length=1, max_length=64)


class TenantSettings(BaseModel):
    """A tenant's pipeline defaults (GET/PUT /api/settings); a tenant that set nothing has these."""

    default_templates: list[DefaultTemplate] = Field(
        default_factory=list,
        max_length=50,
        description="Attached to every new project; empty: the latest version of every built-in template",
    )
    generation_concurrency: int = Field(default=2, ge=1, le=16, description="Instances generated at once per project")
    debug_rounds: int = Field(default=2, ge=0, le=10, description="Repair rounds after failing tests")
    model: str = Field(default="local_llama", min_length=1, max_length=100)
    techniques: list[str] = Field(default_factory=list, max_length=6)
    max_new_tokens: int = Field(default=384, ge=16, le=4096)
    n: int = Field(
        default=1,
        ge=1,
        le=8,
        description="Candidates per generation; the one that passes most of the spec's tests is kept",
    )
    options: TechniqueOptions = Field(
        default_factory=TechniqueOptions,
        description="Parameters of the techniques, by technique (see GET /api/techniques)",
    )


class TenantSettingsUpdate(Strict):
    """PUT /api/settings merges: fields left out keep their value; null resets one to its default."""

    default_templates: list[DefaultTemplate] | None = Field(None, max_length=50)
    generation_concurrency: int | None = Field(None, ge=1, le=16)
    debug_rounds: int | None = Field(None, ge=0, le=10)
    model: ModelName | None = None
    techniques: list[str] | None = Field(None, max_length=6)
    max_new_tokens: int | None = Field(None, ge=16, le=4096)
    n: int | None = Field(None, ge=1, le=8)
    options: TechniqueOptions | None = None


class ProjectSettingsUpdate(Strict):
    """PUT /api/projects/{id}/settings merges: fields left out keep their value; null: the tenant's default."""

    model: ModelName | None = None
    techniques: list[str] | None = Field(None, max_length=6)
    max_new_tokens: int | None = Field(None, ge=16, le=4096)
    debug_rounds: int | None = Field(None, ge=0, le=10)
    n: int | None = Field(None, ge=1, le=8)
    options: TechniqueOptions | None = None


class EffectiveSettings(BaseModel):
    """What a project's run uses: the project's own choice, else the tenant's, else the default."""

    model: str
    techniques: list[str]
    max_new_tokens: int
    debug_rounds: int
    generation_concurrency: int
    n: int = 1
    options: TechniqueOptions = Field(default_factory=TechniqueOptions)


class SavedSettings(EffectiveSettings):
    """PUT .../settings: what the project's runs use from now on, and which run that is (store/fixed.py)."""

    applies_to: AppliesTo = Field(
        description="`this run`: the run that is going has not fixed its settings yet; `next run`: it keeps its own"
    )
    note: str = Field(description="The same, in a sentence")


def over_token_budget(settings: TenantSettings | EffectiveSettings, budget: int) -> str | None:
    """Why these settings let one instance ask for more than `budget` tokens in a run (None: they do
    not): every round generates n candidates of up to max_new_tokens, the first and each repair."""
    tokens = settings.n * settings.max_new_tokens * (settings.debug_rounds + 1)
    if tokens <= budget:
        return None
    return (
        f"n × max_new_tokens × (debug_rounds + 1) = {settings.n} × {settings.max_new_tokens} × "
        f"({settings.debug_rounds} + 1) = {tokens} tokens per instance and run is over the budget of "
        f"{budget} (PROJECT_TOKEN_BUDGET): lower n, max_new_tokens or debug_rounds"
    )


class AttachedTemplate(BaseModel):
    id: UUID
    name: str
    version: str
    builtin: bool


class ArtifactPublic(Public):
    id: UUID
    tenant_id: UUID
    project_id: UUID
    instance_id: UUID
    path: str
    content: str
    content_hash: str = Field(description="sha256 (hex) of content")
    values_hash: str = Field(description="Hash of the instance's values the code was generated from")
    template_id: UUID | None
    template_name: str
    template_version: str
    model: str
    techniques: list[str]
    retrieved_snippets: list[Any]
    generation_id: UUID | None
    round: int
    checks: dict[str, Any]
    test_status: TestStatus | None
    tests: dict[str, Any] | None
    current: bool
    created_at: UtcDatetime
    updated_at: UtcDatetime
    reliance: Reliance | None = Field(
        default=None, description="multi_head_attention: what each line of the code relied on in its prompt"
    )
