"""Neural code generator: models, techniques, POST /api/generate (specification sheet 2)."""

from __future__ import annotations

import asyncio
from typing import Annotated, Any
from uuid import UUID

from fastapi import APIRouter, Query
from fastapi.responses import JSONResponse
from temporalio.service import RPCError

from api import admission, availability
from api.deps import Cursor, Limit, PoolDep, PrincipalDep, ResourcesDep
from api.errors import ServiceUnavailable
from infra.training import start_tree_training
from infra.training import workflow_id as training_workflow_id
from models.common import MODEL_NAMES, Page, Role
from models.generation import (
    GenerateRequest,
    GenerationFailed,
    GenerationPublic,
    GenerationResult,
    GenerationStatus,
    GenerationSummary,
)
from models.techniques import TECHNIQUES, TechniqueInfo, supported_backends
from models.techniques.tree_transformers import TECHNIQUE as TREE
from models.training import TrainTreeInput, TrainTreeRequest
from store import generations, model_workers, projects
from store.errors import Invalid

router = APIRouter(tags=["code generator"])


@router.get("/models", response_model=Page[dict[str, Any]])
async def list_models(res: ResourcesDep, p: PrincipalDep):
    """Every seed model with its backend and whether it can serve this tenant now; an unavailable one
    says why and what to do (api/availability.py has the rule: a key for API models, the platform's or
    the tenant's; an answering server for vLLM over VLLM_BASE_URL). The generation workers report their
    models, and what their backends are and need; a model no live worker reports is unavailable."""
    merged = await availability.statuses(res, p.tenant_id)
    return Page(items=merged if p.role.at_least(Role.admin) else [availability.public(m) for m in merged])


@router.get("/techniques", response_model=Page[TechniqueInfo])
async def list_techniques(res: ResourcesDep, p: PrincipalDep):
    """Every technique: whether it is implemented, how it runs on each capability, its parameters, and the
    models whose backends declare a capability it can run on (as the live generation workers report them)."""
    reports = await model_workers.live(res.pool, within_s=model_workers.LIVE_WITHIN_S)
    capabilities = {
        name: frozenset(declared.capabilities)
        for name in MODEL_NAMES
        if (declared := availability.declared([r for r in reports if r.model == name])) is not None
    }
    implemented = [t.name for t in TECHNIQUES.values() if t.implemented]
    reasons = await admission.unavailable_techniques(res.settings, implemented)
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
async def train_tree(body: TrainTreeRequest, res: ResourcesDep, p: PrincipalDep):
    """Train the tenant's own tree_transformers checkpoint from its knowledge base: the built-in one
    fine-tuned on its Python snippets and the generated code that passed its tests, against their mutants.
    Runs on the `training` worker (one run per tenant at a time: a second request while one runs answers
    with the same run); the tenant's generations use the new checkpoint once it is written. A tenant with
    too little code keeps the built-in one, and the run's result says so. Admins only."""
    missing = (await admission.unavailable_techniques(res.settings, [TREE.name]))[TREE.name]
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
async def generate(body: GenerateRequest, res: ResourcesDep, p: PrincipalDep):
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
    admitted = await admission.plan(res, p, body)  # every 422, before anything is written
    gid, handle = await admission.start(res, p, admitted)  # the tenant's slot (429), the row, the workflow
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
