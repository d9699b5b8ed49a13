"""Neural code generator: models, techniques, POST /api/generate (specification sheet 2)."""

from __future__ import annotations

import asyncio
import os
import re
from typing import Annotated, Any
from uuid import UUID, uuid4

from fastapi import APIRouter, Depends, HTTPException
from fastapi.responses import JSONResponse
from temporalio.service import RPCError

from api.deps import PoolDep, PrincipalDep, ResourcesDep
from api.errors import ServiceUnavailable
from codegen.base import ModelStatus
from codegen.manager import ModelManager
from models.auth import Principal
from models.common import GENERATION, INTEGRATION, KNOWLEDGE, MODEL_NAMES, Page, Role
from models.generation import (
    GENERATION_WORKFLOW,
    GenerateRequest,
    GenerationInput,
    GenerationPublic,
    GenerationResult,
    InlineTemplate,
    SpecSnapshot,
    generation_workflow_id,
)
from models.schema_rules import values_hash
from models.spec_view import spec_view
from models.techniques import TECHNIQUES, TechniqueInfo, resolve, supported_backends
from store import generations, instances, leases, model_workers, pipeline_settings, templates
from store.errors import Invalid

router = APIRouter(tags=["code generator"])


def _models(res: ResourcesDep) -> ModelManager:
    return res.extras["models"]


ModelsDep = Annotated[ModelManager, Depends(_models)]


_RANK = {"loaded": 0, "available": 1, "unavailable": 2}


def merged_status(own: ModelStatus, reports: list[model_workers.WorkerReport]) -> dict:
    """One model as GET /api/models shows it: the live generation workers' word when any reported it
    (loaded in one > available in one > unavailable in all, with their reasons), else the gateway's own
    status; `workers` lists the live reports."""
    entry = {
        "name": own.name,
        "backend": own.backend,
        "model": own.model,
        "state": own.state,
        "reason": own.reason,
        "details": own.details,
        "workers": [{"worker_id": r.worker_id, "state": r.state, "seen_at": r.seen_at} for r in reports],
    }
    if reports:
        best = min(reports, key=lambda r: _RANK[r.state])  # reports come newest first: the newest of the best
        reasons = list(dict.fromkeys(r.reason for r in reports if r.reason))
        entry.update(
            state=best.state,
            details=best.details,
            reason=("; ".join(reasons) or None) if best.state == "unavailable" else None,
        )
    return entry


@router.get("/models", response_model=Page[dict[str, Any]])
async def list_models(models: ModelsDep, pool: PoolDep, p: PrincipalDep):
    """Every seed model with its backend and whether it can serve; an unavailable one says why.
    The generation workers report their models (`loaded` is known only there); with no live report
    the gateway's own view answers (`available`: a worker can load it)."""
    reports = await model_workers.live(pool, within_s=model_workers.LIVE_WITHIN_S)
    merged = [merged_status(s, [r for r in reports if r.model == s.name]) for s in models.statuses()]
    return Page(items=merged if p.role.at_least(Role.admin) else [_public(m) for m in merged])


_HOST_PATH = re.compile(r"(?<![\w.~-])/(?:[^\s/'\"]+/)*[^\s/'\",;)]+")


def _unpath(text):
    return _HOST_PATH.sub("<path>", text) if isinstance(text, str) else text


def _public(entry: dict) -> dict:
    """What viewers and editors see of a model: no host paths, no worker host names or pids."""
    model = entry["model"]
    return {
        **entry,
        "model": os.path.basename(model.rstrip("/")) if model.startswith("/") else model,
        "reason": _unpath(entry["reason"]),
        "details": {
            k: v
            for k, v in entry["details"].items()
            if not (isinstance(v, str) and _HOST_PATH.search(v)) and not isinstance(v, (dict, list))
        },
        "workers": [{"state": w["state"], "seen_at": w["seen_at"]} for w in entry["workers"]],
    }


@router.get("/techniques", response_model=Page[TechniqueInfo])
async def list_techniques(models: ModelsDep, p: PrincipalDep):
    """Every technique: whether it is implemented, how it runs on each capability, its parameters, and the
    models whose backends declare a capability it can run on."""
    capabilities = {name: models.backend(name).capabilities for name in MODEL_NAMES}
    return Page(
        items=[t.model_copy(update={"backends": supported_backends(t.name, capabilities)}) for t in TECHNIQUES.values()]
    )


async def _resolve(pool, p: Principal, body: GenerateRequest) -> SpecSnapshot:
    if body.instance_id is not None:
        inst = await instances.get_instance(pool, tenant_id=p.tenant_id, instance_id=body.instance_id)
        tpl = await templates.get_template(pool, tenant_id=p.tenant_id, template_id=inst.template_id)
        values, instance_id = inst.values, inst.id
        template_id, name, version, schema = tpl.id, tpl.name, tpl.version, tpl.schema_
    elif isinstance(body.template, InlineTemplate):
        await templates.check_schema(body.template.schema_)  # off the loop, no fetching, with a deadline
        values, instance_id = body.values, None
        template_id, name, version, schema = None, body.template.name, body.template.version, body.template.schema_
    else:
        tpl = await templates.find_template(
            pool, tenant_id=p.tenant_id, name=body.template.name, version=body.template.version
        )
        values, instance_id = body.values, None
        template_id, name, version, schema = tpl.id, tpl.name, tpl.version, tpl.schema_
    await instances.check_values(schema, values)
    return SpecSnapshot(
        template_id=template_id,
        template_name=name,
        template_version=version,
        schema=schema,
        values=values,
        values_hash=values_hash(values),
        instance_id=instance_id,
    )


@router.post(
    "/generate",
    response_model=GenerationResult,
    responses={202: {"description": "Still running: poll GET /api/generations/{id}"}},
)
async def generate(body: GenerateRequest, res: ResourcesDep, models: ModelsDep, p: PrincipalDep):
    """Counted against the tenant's generation_concurrency (one slot from here until the outcome is
    recorded: 429 while all are taken), and n × max_new_tokens is capped by GENERATE_TOKEN_BUDGET."""
    budget = res.settings.generate_token_budget
    if body.n * body.max_new_tokens > budget:
        raise Invalid(
            f"n × max_new_tokens = {body.n} × {body.max_new_tokens} = {body.n * body.max_new_tokens} "
            f"tokens is over the budget of {budget} per request (GENERATE_TOKEN_BUDGET)"
        )
    spec = await _resolve(res.pool, p, body)
    view = spec_view(spec.schema_, spec.values)
    try:  # unknown, unimplemented, or not for this model, this spec's language or these settings
        how = resolve(
            body.techniques,
            model=body.model,
            capabilities=_capabilities(models, body),
            language=view.language,
            n=body.n,
        )
    except ValueError as err:
        raise Invalid(str(err)) from err
    techniques = list(how)
    reports = await model_workers.live(res.pool, within_s=model_workers.LIVE_WITHIN_S, model=body.model)
    status = merged_status(models.backend(body.model).status(), reports)
    if status["state"] == "unavailable":
        raise HTTPException(503, f"model {body.model} is unavailable: {status['reason']}")
    if res.temporal is None:
        raise ServiceUnavailable("Temporal")
    gid = uuid4()
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
        )
    except BaseException:
        await leases.release(res.pool, tenant_id=p.tenant_id, holder=generation_workflow_id(gid))
        raise
    s = res.settings
    try:
        handle = await res.temporal.start_workflow(
            GENERATION_WORKFLOW,
            GenerationInput(
                generation_id=gid,
                tenant_id=p.tenant_id,
                user_id=p.user_id,
                spec=spec,
                model=body.model,
                techniques=techniques,
                max_new_tokens=body.max_new_tokens,
                n=body.n,
                temperature=body.temperature,
                knowledge_queue=s.queue(KNOWLEDGE),
                integration_queue=s.queue(INTEGRATION),
                retrieval_query=view.query(),
                options=body.options,
            ),
            id=generation_workflow_id(gid),
            task_queue=s.queue(GENERATION),
            result_type=GenerationResult,
            static_summary=f"{spec.template_name}@{spec.template_version} with {body.model}",
        )
    except (RPCError, RuntimeError) as err:
        await leases.release(res.pool, tenant_id=p.tenant_id, holder=generation_workflow_id(gid))
        await generations.finish_generation(
            res.pool,
            generation_id=gid,
            tenant_id=p.tenant_id,
            spec=spec,
            model=body.model,
            techniques=techniques,
            result=None,
            error="could not start: Temporal unavailable",
        )
        raise ServiceUnavailable("Temporal") from err
    try:
        return await asyncio.wait_for(asyncio.shield(handle.result()), s.generate_wait_seconds)
    except asyncio.TimeoutError:
        return JSONResponse(
            {"id": str(gid), "status": "running", "detail": "still generating", "href": f"/api/generations/{gid}"},
            status_code=202,
        )


def _capabilities(models: ModelManager, body: GenerateRequest) -> frozenset[str]:
    return frozenset(models.backend(body.model).capabilities)


async def _take_slot(res, p: Principal, gid: UUID) -> None:
    """One of the tenant's generation slots, shared with its projects' generations (store/leases.py).
    Held by the generation workflow's id; record_generation frees it, or it expires."""
    limit = (await pipeline_settings.get_tenant_settings(res.pool, tenant_id=p.tenant_id)).generation_concurrency
    if not await leases.acquire(
        res.pool,
        tenant_id=p.tenant_id,
        holder=generation_workflow_id(gid),
        limit=limit,
        ttl_s=res.settings.generate_lease_ttl_seconds,
    ):
        raise HTTPException(
            429,
            f"all {limit} of the tenant's generation slots are busy (generation_concurrency "
            "in /api/settings); try again when one finishes",
            headers={"Retry-After": "10"},
        )


@router.get("/generations/{generation_id}", response_model=GenerationPublic)
async def get_generation(generation_id: UUID, pool: PoolDep, p: PrincipalDep):
    return await generations.get_generation(pool, tenant_id=p.tenant_id, generation_id=generation_id)
