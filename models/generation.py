"""Code generator contracts: POST /api/generate, its workflow and activities, and the results."""

from __future__ import annotations

from typing import Any, Literal
from uuid import UUID

from pydantic import BaseModel, Field, model_validator

from models.common import ModelName, Public, Strict, UtcDatetime
from models.registry import JsonObject
from models.spec_view import SpecView, spec_view
from models.techniques import Mode, TechniqueOptions, check_options
from models.techniques.hierarchical_generation import SETTINGS as HIERARCHICAL
from models.techniques.retrieval_augmentation import SETTINGS as RETRIEVAL

GENERATION_WORKFLOW = "GenerationWorkflow"


class TemplateRef(Strict):
    name: str = Field(min_length=1, max_length=200)
    version: str | None = Field(None, max_length=64, description="No version: the latest")


class InlineTemplate(Strict):
    name: str = Field("inline", min_length=1, max_length=200)
    version: str = Field("0", max_length=64)
    description: str | None = None
    schema_: JsonObject = Field(alias="schema")


class GenerateRequest(Strict):
    instance_id: UUID | None = None
    template: TemplateRef | InlineTemplate | None = None
    values: JsonObject | None = None
    model: ModelName = "local_llama"
    techniques: list[str] = Field(default_factory=list, max_length=6)
    max_new_tokens: int = Field(256, ge=1, le=4096)
    n: int = Field(1, ge=1, le=8, description="Candidates")
    temperature: float = Field(0.0, ge=0.0, le=2.0)
    options: TechniqueOptions = Field(
        default_factory=TechniqueOptions,
        description="Parameters of the requested techniques, by technique (see GET /api/techniques)",
    )

    @model_validator(mode="after")
    def _one_source(self) -> "GenerateRequest":
        if (self.instance_id is None) == (self.template is None):
            raise ValueError("give either instance_id, or template with values")
        if self.template is not None and self.values is None:
            raise ValueError("template needs values")
        if self.instance_id is not None and self.values is not None:
            raise ValueError("values come from the instance; do not send them with instance_id")
        if self.instance_id is None or "techniques" in self.model_fields_set:  # else: with the project's
            check_options(self.techniques, self.options)  # (with_project_settings checks the merged request)
        return self


SETTINGS_FIELDS = ("model", "techniques", "max_new_tokens", "n", "options")  # what a project's settings give


def with_project_settings(body: GenerateRequest, project: Any) -> GenerateRequest:
    """The request with what it left unset taken from the project's effective settings (an
    EffectiveSettings): model, techniques, max_new_tokens, n, options. The project's options count only
    for the techniques the result uses; ValueError when the request's own options do not fit them."""
    update = {name: getattr(project, name) for name in SETTINGS_FIELDS if name not in body.model_fields_set}
    if "options" in update:
        techniques = update.get("techniques", body.techniques)
        mine = {name: getattr(project.options, name) for name in project.options.model_fields_set}
        update["options"] = TechniqueOptions(**{k: v for k, v in mine.items() if k in techniques})
    merged = body.model_copy(update=update)
    check_options(merged.techniques, merged.options)
    return merged


class SpecSnapshot(BaseModel):
    """The resolved spec a generation works from (kept in its provenance)."""

    template_id: UUID | None
    template_name: str
    template_version: str
    schema_: dict[str, Any] = Field(alias="schema")
    values: dict[str, Any]
    values_hash: str
    instance_id: UUID | None = None

    model_config = {"populate_by_name": True}


class GenerationInput(BaseModel):
    generation_id: UUID
    tenant_id: UUID
    user_id: UUID
    spec: SpecSnapshot
    model: str
    techniques: list[str]
    max_new_tokens: int
    n: int
    temperature: float
    retrieval_query: str = Field(default="", description="The spec's description and signature, for retrieval")
    knowledge_queue: str = "knowledge"
    feedback: str | None = Field(default=None, description="A debugging round: the previous code's test failure")
    project_id: UUID | None = Field(default=None, description="Set when a project's pipeline asked for this generation")
    concurrency_limit: int | None = Field(
        default=None, description="A pipeline generation: at most this many of the tenant's call a model at once"
    )
    lease_queue: str | None = Field(
        default=None, description="The queue whose worker grants those leases (orchestrator)"
    )
    options: TechniqueOptions = Field(default_factory=TechniqueOptions)
    visible_tests: list[str] | None = Field(
        default=None,
        description="The tests candidates are ranked by (None: the spec's own `tests`); never a benchmark's "
        "hidden tests",
    )
    integration_queue: str = "integration"
    view: SpecView | None = Field(
        default=None, description="The spec as the generator reads it, read once (None: a job recorded before it)"
    )
    modes: dict[str, Mode] | None = Field(
        default=None, description="How each technique runs on the model, when the caller resolved them (the API)"
    )

    def spec_view(self) -> SpecView:
        return self.view if self.view is not None else spec_view(self.spec.schema_, self.spec.values)

    def task(self) -> ModelTask:
        """What the generation's model calls need of it."""
        return ModelTask(
            tenant_id=self.tenant_id,
            model=self.model,
            techniques=self.techniques,
            modes=self.modes,
            max_new_tokens=self.max_new_tokens,
            n=self.n,
            temperature=self.temperature,
            options=self.options,
            feedback=self.feedback,
            view=self.spec_view(),
        )


class ModelTask(BaseModel):
    """The input of a generation's model calls (plan, candidates, bodies): the spec as read once, the model
    and its decoding, the techniques (and how each runs, when the caller resolved them); not the job's
    schema, values or placement."""

    tenant_id: UUID
    model: str
    techniques: list[str]
    modes: dict[str, Mode] | None = None
    max_new_tokens: int
    n: int
    temperature: float
    options: TechniqueOptions = Field(default_factory=TechniqueOptions)
    feedback: str | None = None
    view: SpecView


def visible_tests_of(view: SpecView) -> list[str]:
    """What candidates are ranked by: the spec's `tests`, each after the spec's test `setup` lines (a test
    runs on its own in the sandbox, so each carries its setup)."""
    return ["\n".join([*view.setup, test]) for test in view.tests] if view.setup else list(view.tests)


def generation_job(
    spec: SpecSnapshot,
    *,
    generation_id: UUID,
    tenant_id: UUID,
    user_id: UUID,
    model: str,
    techniques: list[str],
    max_new_tokens: int,
    n: int,
    temperature: float = 0.0,
    options: Any = None,
    modes: dict[str, Mode] | None = None,
    feedback: str | None = None,
    visible_tests: list[str] | None = None,
    view: SpecView | None = None,
    **placement: Any,
) -> GenerationInput:
    """The one constructor of a generation job: POST /api/generate, a project's pipeline (inside its workflow:
    this is pure) and `make eval` all call it. The spec is read here, once (`view`); its retrieval query and
    its visible tests come from that reading (`visible_tests` replaces the latter: the eval's docstring
    examples). `view`: the caller's reading of this spec, when it needed one first (the API checks the
    techniques against its language). `placement`: the queues, and a pipeline's project, concurrency
    limit and lease queue."""
    view = view if view is not None else spec_view(spec.schema_, spec.values)
    return GenerationInput(
        generation_id=generation_id,
        tenant_id=tenant_id,
        user_id=user_id,
        spec=spec,
        model=model,
        techniques=techniques,
        max_new_tokens=max_new_tokens,
        n=n,
        temperature=temperature,
        options=options if options is not None else TechniqueOptions(),
        modes=modes,
        feedback=feedback,
        retrieval_query=view.query(),
        visible_tests=visible_tests if visible_tests is not None else visible_tests_of(view),
        view=view,
        **placement,
    )


class Reference(BaseModel):
    id: UUID
    content: str
    score: float | None = Field(default=None, description="The similarity search's score, where it found it")


class RetrieveInput(BaseModel):
    tenant_id: UUID
    query: str
    top_k: int = RETRIEVAL.top_k


class PlanItem(BaseModel):
    """One function or class of a hierarchical_generation plan."""

    kind: Literal["function", "class"]
    name: str
    signature: str = Field(description="The header line: `def name(args) -> T` or `class Name(Base)`")
    docstring: str = ""


class Plan(BaseModel):
    """The checked plan of hierarchical_generation, and what asking for it cost."""

    items: list[PlanItem]
    attempts: int = Field(1, description="Answers asked for until one was valid")
    tokens_in: int = 0
    tokens_out: int = 0
    latency_s: float = 0.0


class PlanInput(BaseModel):
    task: ModelTask | None = None
    job: GenerationInput | None = Field(default=None, description="Recorded before `task`: the whole job")
    attempts: int = HIERARCHICAL.plan_attempts

    def model_task(self) -> ModelTask:
        return _task_of(self.task, self.job)


class CandidatesInput(BaseModel):
    task: ModelTask | None = None
    job: GenerationInput | None = Field(default=None, description="Recorded before `task`: the whole job")
    references: list[Reference] = Field(default_factory=list)
    round: int = 1
    plan: Plan | None = Field(None, description="hierarchical_generation: one body per planned item")

    def model_task(self) -> ModelTask:
        return _task_of(self.task, self.job)


def _task_of(task: ModelTask | None, job: GenerationInput | None) -> ModelTask:
    if task is not None:
        return task
    if job is None:
        raise ValueError("a model call needs its task")
    return job.task()


class CandidateTests(BaseModel):
    """A candidate against the spec's visible tests, in the sandbox. Tests run in order and the first
    failure ends the run: `passed` counts the tests before it."""

    passed: int
    total: int
    status: str = Field(description="passed | failed | timeout | error")
    failure: str | None = None


class SpanShare(BaseModel):
    label: str = Field(description="The labelled part of the prompt: description, signature, test:1, snippet:<id>, ...")
    share: float = Field(description="Its share of the line's reliance (the line's shares sum to 1)")


class LineReliance(BaseModel):
    line: int = Field(description="The line of the code, from 1")
    text: str
    spans: list[SpanShare] = Field(description="The parts this line relied on most, largest share first")


class SpanReliance(BaseModel):
    label: str
    tokens: int = Field(description="Its length in the model's tokens")
    chars: int = Field(description="Its length in characters")
    share: float = Field(description="Its share of the whole code's reliance")
    relied_on: bool = Field(description="Whether any line put at least a tenth of its reliance on it")


class Reliance(BaseModel):
    """multi_head_attention: which labelled parts of the prompt each line of the code relied on."""

    method: Literal["exact", "estimate"]
    measure: str = Field(description="What the shares are: model reliance, exact (leave-one-out) or estimated")
    spans: list[SpanReliance]
    lines: list[LineReliance]
    forward_passes: int
    seconds: float
    note: str | None = Field(default=None, description="What was not explained, and why")


class Candidate(BaseModel):
    model: str
    techniques: list[str]
    code: str
    tokens_in: int
    tokens_out: int
    latency_s: float
    parses: bool | None
    finish_reason: str
    round: int = 1
    missing_items: list[str] = Field(
        default_factory=list, description="hierarchical_generation: planned items the model did not write"
    )
    score: float | None = Field(
        default=None, description="syntax_aware_beam_search: the beam's log-probability / length ** length_penalty"
    )
    mean_logprob: float | None = Field(
        default=None, description="The mean log-probability of its tokens, where the model reports them (local models)"
    )
    tree_score: float | None = Field(default=None, description="tree_transformers: the syntax-tree encoder's score")
    selection_score: float | None = Field(
        default=None, description="tree_transformers: the score it was chosen by (the highest is kept)"
    )
    attempts: int = Field(default=1, description="Answers asked for (hybrid_grammar_neural's check-and-retry)")
    tests: CandidateTests | None = Field(default=None, description="Its result on the visible tests, when they ran")
    notes: list[str] = Field(default_factory=list, description="What decoding observed (pruned beams, dead ends)")
    reliance: Reliance | None = Field(
        default=None, description="multi_head_attention: what each line of the code relied on in the prompt"
    )


class CandidatesResult(BaseModel):
    candidates: list[Candidate]
    path: str
    language: str


class TestCandidatesInput(BaseModel):
    tenant_id: UUID
    codes: list[str]
    tests: list[str]


class TestCandidatesResult(BaseModel):
    results: list[CandidateTests]


class TechniqueStepInput(BaseModel):
    """A technique's own work on the generation worker (models/techniques/base.py: `Technique.activities`)."""

    tenant_id: UUID
    technique: str
    step: str
    payload: dict[str, Any]


class TechniqueStepResult(BaseModel):
    payload: dict[str, Any]


class GeneratedFile(BaseModel):
    path: str
    content: str


class Provenance(BaseModel):
    template_id: UUID | None
    template_name: str
    template_version: str
    values_hash: str
    instance_id: UUID | None
    retrieved_snippets: list[UUID]
    snippet_scores: dict[str, float] = Field(
        default_factory=dict, description="The similarity score each retrieved snippet was found with, by its id"
    )
    techniques: dict[str, Any] = Field(
        default_factory=dict, description="What the techniques recorded, by technique (scores, reranked snippets)"
    )


class GenerationResult(BaseModel):
    id: UUID
    status: Literal["completed", "failed"]
    files: list[GeneratedFile]
    candidates: list[Candidate]
    parses: bool | None = Field(description="Whether the chosen candidate parses")
    note: str | None = None
    provenance: Provenance
    plan: Plan | None = Field(default=None, description="hierarchical_generation: the checked plan")


GenerationStatus = Literal["running", "completed", "failed"]


class GenerationSummary(Public):  # timestamps in RFC 3339 with their zone
    """One generation in GET /api/generations: what it was for and how it went, without its code."""

    id: UUID
    status: GenerationStatus
    model: str
    techniques: list[str]
    project_id: UUID | None = Field(None, description="The project it was made for (its pipeline, or an instance's)")
    instance_id: UUID | None = None
    created_at: UtcDatetime
    updated_at: UtcDatetime
    error: str | None = None
    tokens_in: int = Field(0, description="The prompt tokens of all its candidates, every round")
    tokens_out: int = Field(0, description="The tokens its candidates generated, every round")


class GenerationPublic(GenerationSummary):
    result: GenerationResult | None = None
    request: dict[str, Any] | None = Field(
        None,
        description="What it was asked: POST /api/generate's body, or for a project's pipeline the spec's values, "
        "their hash and the failure a repair round was told",
    )


class GenerationFailed(BaseModel):
    """POST /api/generate's answer (HTTP 502) when the generation ran and failed; the record stays readable."""

    detail: str = Field(description="Why it failed (the model's or the workflow's own words)")
    id: UUID
    status: Literal["failed"] = "failed"
    href: str = Field(description="GET this for the stored generation")


class RecordGenerationInput(BaseModel):
    inp: GenerationInput
    result: GenerationResult
    error: str | None = None


def generation_workflow_id(generation_id: UUID) -> str:
    return f"generation-{generation_id}"


class LeaseInput(BaseModel):
    """A slot of a tenant (store/leases.py): `generation`, held by one generation workflow while it calls a
    model, or `sandbox`, held around one sandboxed test activity. `limit` caps the tenant's leases of the
    kind below its share of the platform's slots (None: the share alone)."""

    tenant_id: UUID
    holder: str
    limit: int | None = 1
    ttl_s: float = 900.0
    kind: Literal["generation", "sandbox"] = "generation"
