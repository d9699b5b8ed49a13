"""Neural code generator: models, techniques, POST /api/generate (specification sheet 2)."""

from __future__ import annotations

import asyncio
from typing import Annotated, Any
from uuid import UUID, uuid4

from fastapi import APIRouter, Depends, HTTPException, Query
from fastapi.responses import JSONResponse
from temporalio.service import RPCError

from api import availability
from api.deps import Cursor, Limit, PoolDep, PrincipalDep, ResourcesDep
from api.errors import ServiceUnavailable
from codegen import technique_steps
from codegen.manager import ModelManager
from infra import tracing
from infra.temporal import tenant_priority
from infra.training import start_tree_training
from infra.training import workflow_id as training_workflow_id
from models.auth import Principal
from models.common import GENERATION, INTEGRATION, KNOWLEDGE, MODEL_NAMES, ORCHESTRATOR, Page, Role
from models.generation import (
    GENERATION_WORKFLOW,
    GenerateRequest,
    GenerationFailed,
    GenerationInput,
    GenerationPublic,
    GenerationResult,
    GenerationStatus,
    GenerationSummary,
    InlineTemplate,
    SpecSnapshot,
    generation_job,
    generation_workflow_id,
    with_project_settings,
)
from models.schema_rules import values_hash
from models.spec_view import spec_view
from models.techniques import TECHNIQUES, Mode, TechniqueInfo, active, resolve, supported_backends
from models.techniques.tree_transformers import TECHNIQUE as TREE
from models.training import TrainTreeInput, TrainTreeRequest
from store import generations, instances, leases, pipeline_settings, projects, templates
from store.errors import Invalid

router = APIRouter(tags=["code generator"])


def _models(res: ResourcesDep) -> ModelManager:
    return availability.manager(res)


ModelsDep = Annotated[ModelManager, Depends(_models)]


@router.get("/models", response_model=Page[dict[str, Any]])
async def list_models(res: ResourcesDep, p: PrincipalDep):
    """Every seed model with its backend and whether it can serve this tenant now; an unavailable one
    says why and what to do (api/availability.py has the rule: a key for API models, the platform's or
    the tenant's; an answering server for vLLM over VLLM_BASE_URL). The generation workers report their
    models (`loaded` is known only there); with no live report the gateway's own view answers."""
    merged = await availability.statuses(res, p.tenant_id)
    return Page(items=merged if p.role.at_least(Role.admin) else [availability.public(m) for m in merged])


@router.get("/techniques", response_model=Page[TechniqueInfo])
async def list_techniques(models: ModelsDep, p: PrincipalDep):
    """Every technique: whether it is implemented, how it runs on each capability, its parameters, and the
    models whose backends declare a capability it can run on."""
    capabilities = {name: models.backend(name).capabilities for name in MODEL_NAMES}
    reasons = await _unavailable(models, [t.name for t in TECHNIQUES.values() if t.implemented])
    return Page(
        items=[
            t.model_copy(update={"backends": supported_backends(t.name, capabilities), "unavailable": reasons[t.name]})
            if t.implemented
            else t
            for t in TECHNIQUES.values()
        ]
    )


@router.post(
    f"/techniques/{TREE.name}/train",
    status_code=202,
    responses={422: {"description": "A parameter out of range, or no built-in checkpoint to start from"}},
)
async def train_tree(body: TrainTreeRequest, res: ResourcesDep, models: ModelsDep, p: PrincipalDep):
    """Train the tenant's own tree_transformers checkpoint from its knowledge base: the built-in one
    fine-tuned on its Python snippets and the generated code that passed its tests, against their mutants.
    Runs on the `training` worker (one run per tenant at a time: a second request while one runs answers
    with the same run); the tenant's generations use the new checkpoint once it is written. A tenant with
    too little code keeps the built-in one, and the run's result says so. Admins only."""
    missing = (await _unavailable(models, [TREE.name]))[TREE.name]
    if missing:
        raise Invalid(missing)
    if res.temporal is None:
        raise ServiceUnavailable("Temporal")
    inp = TrainTreeInput(tenant_id=p.tenant_id, params=body.params)
    try:
        await start_tree_training(res.temporal, res.settings, inp)
    except RPCError as err:
        raise ServiceUnavailable("Temporal") from err
    return {"id": training_workflow_id(inp), "status": "running"}


async def _unavailable(models: ModelManager, techniques: list[str]) -> dict[str, str | None]:
    """Why each technique cannot run on this machine, or None (what it needs is looked for off the loop)."""
    path = models.settings.models_path
    return await asyncio.to_thread(lambda: {name: technique_steps.unavailable(name, path) for name in techniques})


async def _resolve(pool, p: Principal, body: GenerateRequest) -> tuple[SpecSnapshot, UUID | None]:
    """The spec the request names, and the project it belongs to (an instance's; None otherwise)."""
    project_id = None
    if body.instance_id is not None:
        inst = await instances.get_instance(pool, tenant_id=p.tenant_id, instance_id=body.instance_id)
        tpl = await templates.get_template(pool, tenant_id=p.tenant_id, template_id=inst.template_id)
        values, instance_id, project_id = inst.values, inst.id, inst.project_id
        template_id, name, version, schema = tpl.id, tpl.name, tpl.version, tpl.schema_
    elif isinstance(body.template, InlineTemplate):
        await templates.check_schema(body.template.schema_)  # off the loop, no fetching, with a deadline
        values, instance_id = body.values, None
        template_id, name, version, schema = None, body.template.name, body.template.version, body.template.schema_
    else:
        assert body.template is not None  # GenerateRequest's validator: instance_id, or a template with values
        tpl = await templates.find_template(
            pool, tenant_id=p.tenant_id, name=body.template.name, version=body.template.version
        )
        values, instance_id = body.values, None
        template_id, name, version, schema = tpl.id, tpl.name, tpl.version, tpl.schema_
    assert values is not None  # GenerateRequest's validator: a template comes with its values
    await instances.check_values(schema, values)
    spec = SpecSnapshot(
        template_id=template_id,
        template_name=name,
        template_version=version,
        schema=schema,
        values=values,
        values_hash=values_hash(values),
        instance_id=instance_id,
    )
    return spec, project_id


async def _with_project(pool, p: Principal, body: GenerateRequest, project_id: UUID | None) -> GenerateRequest:
    """An instance's generation: what the request leaves unset comes from its project's effective settings."""
    if project_id is None:
        return body
    project = await pipeline_settings.effective_settings(pool, tenant_id=p.tenant_id, project_id=project_id)
    try:
        return with_project_settings(body, project)
    except ValueError as err:
        raise Invalid(f"{err} (the other settings are the project's)") from err


def _check_budget(res, body: GenerateRequest) -> None:
    budget = res.settings.generate_token_budget
    if body.n * body.max_new_tokens > budget:
        raise Invalid(
            f"n × max_new_tokens = {body.n} × {body.max_new_tokens} = {body.n * body.max_new_tokens} "
            f"tokens is over the budget of {budget} per request (GENERATE_TOKEN_BUDGET)"
        )


def _techniques(models: ModelManager, body: GenerateRequest, language: str) -> dict[str, Mode]:
    """The requested techniques, checked: unknown, unimplemented, or not for this model, this spec's
    language or these settings is a 422."""
    try:
        how = resolve(
            body.techniques,
            model=body.model,
            capabilities=frozenset(models.backend(body.model).capabilities),
            language=language,
            n=body.n,
        )
    except ValueError as err:
        raise Invalid(str(err)) from err
    return how


def _refusals(body: GenerateRequest, view) -> None:
    """A technique that cannot serve this spec with these settings is a 422 before anything runs."""
    chosen = active(body.techniques)
    for technique in chosen:
        why = technique.refuses(
            technique.settings(body.options), view, [t for t in chosen if t is not technique], body.options
        )
        if why:
            raise Invalid(why)


@router.post(
    "/generate",
    response_model=GenerationResult,
    responses={
        202: {"description": "Still running: poll GET /api/generations/{id}"},
        502: {
            "model": GenerationFailed,
            "description": "The generation ran and failed (`detail` says why); GET /api/generations/{id} keeps it",
        },
    },
)
async def generate(body: GenerateRequest, res: ResourcesDep, models: ModelsDep, p: PrincipalDep):
    """Generate code for a spec: a template with values, or an instance (`instance_id`).

    - With `instance_id`, whatever the request leaves out of model, techniques, max_new_tokens, n and
      options comes from the instance's project's effective settings (GET /api/projects/{id}/settings);
      what it sets wins. The generation is listed under the project (GET /api/generations?project_id=).
    - A model that cannot serve this tenant now (no API key, its server not answering) is a 422 up front,
      with the reason (the rule of GET /api/models).
    - 200 only for a completed generation. One that ran and failed answers 502 with `detail`, `id`,
      `status: "failed"` and `href`; the record stays at GET /api/generations/{id}. 202: still running.
    - Counted against the tenant's generation_concurrency (one slot from here until the outcome is
      recorded: 429 while all are taken), and n × max_new_tokens is capped by GENERATE_TOKEN_BUDGET.
    """
    spec, project_id = await _resolve(res.pool, p, body)
    body = await _with_project(res.pool, p, body, project_id)
    _check_budget(res, body)
    view = spec_view(spec.schema_, spec.values)  # the one reading of the spec: the job carries it
    how = _techniques(models, body, view.language)
    _refusals(body, view)
    techniques = list(how)
    missing = [why for why in (await _unavailable(models, techniques)).values() if why]
    if missing:
        raise Invalid(missing[0])
    await availability.require_available(res, p.tenant_id, body.model)
    if res.temporal is None:
        raise ServiceUnavailable("Temporal")
    gid = uuid4()
    tracing.annotate(generation_id=gid)
    await _take_slot(res, p, gid)
    try:
        await generations.create_generation(
            res.pool,
            generation_id=gid,
            tenant_id=p.tenant_id,
            user_id=p.user_id,
            model=body.model,
            techniques=techniques,
            request=body.model_dump(mode="json", by_alias=True),
            project_id=project_id,
            instance_id=spec.instance_id,
        )
    except BaseException:
        await leases.release(res.pool, tenant_id=p.tenant_id, holder=generation_workflow_id(gid))
        raise
    job = generation_job(
        spec,
        generation_id=gid,
        tenant_id=p.tenant_id,
        user_id=p.user_id,
        model=body.model,
        techniques=techniques,
        max_new_tokens=body.max_new_tokens,
        n=body.n,
        temperature=body.temperature,
        options=body.options,
        modes=how,
        view=view,
        knowledge_queue=res.settings.queue(KNOWLEDGE),
        integration_queue=res.settings.queue(INTEGRATION),
        lease_queue=res.settings.queue(ORCHESTRATOR),
    )
    handle = await _start(res, p, job)
    try:
        result = await asyncio.wait_for(asyncio.shield(handle.result()), res.settings.generate_wait_seconds)
    except asyncio.TimeoutError:
        return JSONResponse(
            {"id": str(gid), "status": "running", "detail": "still generating", "href": f"/api/generations/{gid}"},
            status_code=202,
        )
    if result.status == "failed":
        failed = GenerationFailed(
            detail=f"generation failed: {result.note or 'no reason was recorded'}",
            id=gid,
            href=f"/api/generations/{gid}",
        )
        return JSONResponse(failed.model_dump(mode="json"), status_code=502)
    return result


async def _start(res, p: Principal, job: GenerationInput):
    """Start the generation workflow; Temporal not answering records the generation failed and is a 503."""
    gid, spec = job.generation_id, job.spec
    try:
        return await res.temporal.start_workflow(
            GENERATION_WORKFLOW,
            job,
            id=generation_workflow_id(gid),
            task_queue=res.settings.queue(GENERATION),
            result_type=GenerationResult,
            static_summary=f"{spec.template_name}@{spec.template_version} with {job.model}",
            priority=tenant_priority(p.tenant_id),
        )
    except (RPCError, RuntimeError) as err:
        await leases.release(res.pool, tenant_id=p.tenant_id, holder=generation_workflow_id(gid))
        await generations.finish_generation(
            res.pool,
            generation_id=gid,
            tenant_id=p.tenant_id,
            spec=spec,
            model=job.model,
            techniques=job.techniques,
            result=None,
            error="could not start: Temporal unavailable",
        )
        raise ServiceUnavailable("Temporal") from err


async def _take_slot(res, p: Principal, gid: UUID) -> None:
    """One of the tenant's generation slots, shared with its projects' generations (store/leases.py): at
    most its generation_concurrency, and never more than its share of the platform's (TENANT_SLOT_SHARE).
    Held by the generation workflow's id; record_generation frees it, or it expires."""
    wanted = (await pipeline_settings.get_tenant_settings(res.pool, tenant_id=p.tenant_id)).generation_concurrency
    limit = min(wanted, res.settings.tenant_slots("generation"))
    if not await leases.acquire(
        res.pool,
        tenant_id=p.tenant_id,
        holder=generation_workflow_id(gid),
        limit=limit,
        ttl_s=res.settings.generate_lease_ttl_seconds,
    ):
        raise HTTPException(
            429,
            f"all {limit} of the tenant's generation slots are busy (generation_concurrency in /api/settings, "
            "at most the tenant's share of the platform, TENANT_SLOT_SHARE); try again when one finishes",
            headers={"Retry-After": "10"},
        )


@router.get(
    "/generations",
    response_model=Page[GenerationSummary],
    responses={404: {"description": "project_id is not a project of the tenant"}},
)
async def list_generations(
    pool: PoolDep,
    p: PrincipalDep,
    project_id: Annotated[UUID | None, Query(description="Only the generations made for this project")] = None,
    status: Annotated[GenerationStatus | None, Query(description="Only generations in this status")] = None,
    limit: Limit = 50,
    cursor: Cursor = None,
):
    """The tenant's generations, newest first (POST /api/generate's and its projects' pipelines'), without
    their code: GET /api/generations/{id} has the result."""
    if project_id is not None:
        await projects.get_project(pool, tenant_id=p.tenant_id, project_id=project_id)
    items, next_cursor = await generations.list_generations(
        pool, tenant_id=p.tenant_id, project_id=project_id, status=status, limit=limit, cursor=cursor
    )
    return Page(items=items, next_cursor=next_cursor)


@router.get("/generations/{generation_id}", response_model=GenerationPublic)
async def get_generation(generation_id: UUID, pool: PoolDep, p: PrincipalDep):
    return await generations.get_generation(pool, tenant_id=p.tenant_id, generation_id=generation_id)
