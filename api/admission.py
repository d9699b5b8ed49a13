"""Admission of a generation (POST /api/generate): whether it may start, and the one place that takes
and gives back the tenant's generation slot.

- `plan`: the spec the request names (an instance's, or a template's with values), what it leaves out
  taken from the instance's project's settings, the token budget (GENERATE_TOKEN_BUDGET), the techniques
  (known, implemented, able to run on the model's declared capabilities, this spec's language and these
  settings, and what they need present) and the model's availability for the tenant (api/availability.py).
  Each refusal is a 422 with its reason, before anything is written. The workers' reports, the tenant's
  provider keys and its generation_concurrency are read in one statement (store/admission.py).
- `start`: one of the tenant's generation slots (at most its generation_concurrency, never more than its
  share of the platform's, TENANT_SLOT_SHARE: 429 when all are taken) and the generation's row, in one
  transaction; then the generation workflow, which holds the slot by its id until record_generation frees
  it (or it expires). When Temporal does not take the workflow, the slot is given back here and the
  generation recorded as failed (503).
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from uuid import UUID, uuid4

from fastapi import HTTPException
from temporalio.client import WorkflowHandle
from temporalio.service import RPCError

from api import availability
from api.deps import Resources
from api.errors import ServiceUnavailable
from codegen import technique_steps
from infra import tracing
from infra.temporal import tenant_priority
from models.auth import Principal
from models.common import GENERATION, INTEGRATION, KNOWLEDGE, ORCHESTRATOR
from models.generation import (
    GENERATION_WORKFLOW,
    GenerateRequest,
    GenerationInput,
    GenerationResult,
    InlineTemplate,
    SpecSnapshot,
    generation_job,
    generation_workflow_id,
    with_project_settings,
)
from models.schema_rules import values_hash
from models.settings import Settings
from models.spec_view import SpecView, spec_view
from models.techniques import Mode, active, resolve
from store import admission, generations, instances, leases, pipeline_settings, templates
from store.errors import Invalid


@dataclass(frozen=True)
class Plan:
    """An admitted request: what the generation runs, checked."""

    body: GenerateRequest  # with the project's settings where the request left them out
    spec: SpecSnapshot
    project_id: UUID | None  # the instance's project, if the spec is an instance
    view: SpecView  # the one reading of the spec: the job carries it
    modes: dict[str, Mode]  # the techniques, each with how it runs on this model
    concurrency: int  # the tenant's generation_concurrency


async def plan(res: Resources, p: Principal, body: GenerateRequest) -> Plan:
    """Every check POST /api/generate makes before anything runs, in its order; each refusal a 422."""
    spec, project_id = await _resolve(res, p, body)
    body = await _with_project(res, p, body, project_id)
    check_budget(res.settings, body)
    facts = await admission.read(res.pool, tenant_id=p.tenant_id)
    reports = [r for r in facts.reports if r.model == body.model]
    declared = availability.declared(reports)
    if declared is None:  # no live worker says what the model can do: no technique could be checked for it
        availability.refuse(availability.merged_status(body.model, reports))
    view = spec_view(spec.schema_, spec.values)
    modes = _techniques(body, frozenset(declared.capabilities if declared else ()), view.language)
    _refusals(body, view)
    missing = [why for why in (await unavailable_techniques(res.settings, list(modes))).values() if why]
    if missing:
        raise Invalid(missing[0])
    availability.refuse(await availability.judge(res, facts, body.model))
    return Plan(body, spec, project_id, view, modes, facts.generation_concurrency)


async def start(res: Resources, p: Principal, admitted: Plan) -> tuple[UUID, WorkflowHandle]:
    """Take the tenant's slot with the generation's row, and start the generation workflow (the module)."""
    if res.temporal is None:
        raise ServiceUnavailable("Temporal")
    body, gid = admitted.body, uuid4()
    tracing.annotate(generation_id=gid)
    holder = generation_workflow_id(gid)
    limit = min(admitted.concurrency, res.settings.tenant_slots("generation"))
    taken = await admission.take_generation_slot(
        res.pool,
        tenant_id=p.tenant_id,
        holder=holder,
        limit=limit,
        ttl_s=res.settings.generate_lease_ttl_seconds,
        generation_id=gid,
        user_id=p.user_id,
        model=body.model,
        techniques=list(admitted.modes),
        request=body.model_dump(mode="json", by_alias=True),
        project_id=admitted.project_id,
        instance_id=admitted.spec.instance_id,
    )
    if not taken:
        raise HTTPException(
            429,
            f"all {limit} of the tenant's generation slots are busy (generation_concurrency in /api/settings, "
            "at most the tenant's share of the platform, TENANT_SLOT_SHARE); try again when one finishes",
            headers={"Retry-After": "10"},
        )
    job = _job(res.settings, p, admitted, gid)
    try:
        handle = await res.temporal.start_workflow(
            GENERATION_WORKFLOW,
            job,
            id=holder,
            task_queue=res.settings.queue(GENERATION),
            result_type=GenerationResult,
            static_summary=f"{job.spec.template_name}@{job.spec.template_version} with {job.model}",
            priority=tenant_priority(p.tenant_id),
        )
    except (RPCError, RuntimeError) as err:
        await _give_back(res, p, job)
        raise ServiceUnavailable("Temporal") from err
    return gid, handle


async def _give_back(res: Resources, p: Principal, job: GenerationInput) -> None:
    """The workflow did not start: its slot is free again and its generation failed."""
    await leases.release(res.pool, tenant_id=p.tenant_id, holder=generation_workflow_id(job.generation_id))
    await generations.finish_generation(
        res.pool,
        generation_id=job.generation_id,
        tenant_id=p.tenant_id,
        spec=job.spec,
        model=job.model,
        techniques=job.techniques,
        result=None,
        error="could not start: Temporal unavailable",
    )


def _job(settings: Settings, p: Principal, admitted: Plan, gid: UUID) -> GenerationInput:
    body = admitted.body
    return generation_job(
        admitted.spec,
        generation_id=gid,
        tenant_id=p.tenant_id,
        user_id=p.user_id,
        model=body.model,
        techniques=list(admitted.modes),
        max_new_tokens=body.max_new_tokens,
        n=body.n,
        temperature=body.temperature,
        options=body.options,
        modes=admitted.modes,
        view=admitted.view,
        knowledge_queue=settings.queue(KNOWLEDGE),
        integration_queue=settings.queue(INTEGRATION),
        lease_queue=settings.queue(ORCHESTRATOR),
    )


async def _resolve(res: Resources, p: Principal, body: GenerateRequest) -> tuple[SpecSnapshot, UUID | None]:
    """The spec the request names, and the project it belongs to (an instance's; None otherwise)."""
    pool, project_id = res.pool, None
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


async def _with_project(
    res: Resources, p: Principal, body: GenerateRequest, project_id: UUID | None
) -> GenerateRequest:
    """An instance's generation: what the request leaves unset comes from its project's effective settings."""
    if project_id is None:
        return body
    project = await pipeline_settings.effective_settings(res.pool, tenant_id=p.tenant_id, project_id=project_id)
    try:
        return with_project_settings(body, project)
    except ValueError as err:
        raise Invalid(f"{err} (the other settings are the project's)") from err


def check_budget(settings: Settings, body: GenerateRequest) -> None:
    budget = settings.generate_token_budget
    if body.n * body.max_new_tokens > budget:
        raise Invalid(
            f"n × max_new_tokens = {body.n} × {body.max_new_tokens} = {body.n * body.max_new_tokens} "
            f"tokens is over the budget of {budget} per request (GENERATE_TOKEN_BUDGET)"
        )


def _techniques(body: GenerateRequest, capabilities: frozenset[str], language: str) -> dict[str, Mode]:
    """The requested techniques, checked: unknown, unimplemented, or not for this model (its backend's
    declared capabilities), this spec's language or these settings is a 422."""
    try:
        return resolve(body.techniques, model=body.model, capabilities=capabilities, language=language, n=body.n)
    except ValueError as err:
        raise Invalid(str(err)) from err


def _refusals(body: GenerateRequest, view: SpecView) -> None:
    """A technique that cannot serve this spec with these settings is a 422 before anything runs."""
    chosen = active(body.techniques)
    for technique in chosen:
        why = technique.refuses(
            technique.settings(body.options), view, [t for t in chosen if t is not technique], body.options
        )
        if why:
            raise Invalid(why)


async def unavailable_techniques(settings: Settings, techniques: list[str]) -> dict[str, str | None]:
    """Why each technique cannot run on this machine, or None (what it needs is looked for off the loop)."""
    path = settings.models_path
    return await asyncio.to_thread(lambda: {name: technique_steps.unavailable(name, path) for name in techniques})
