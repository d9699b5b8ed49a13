"""Orchestrator: projects, their workflow-owned state, and tasks (specification sheet 4)."""

from __future__ import annotations

import asyncio
import contextlib
from typing import Annotated, Literal
from uuid import UUID

from fastapi import APIRouter, HTTPException, Query, Response
from fastapi.responses import JSONResponse
from temporalio.client import Client, WorkflowExecutionStatus, WorkflowUpdateFailedError
from temporalio.common import SearchAttributePair, TypedSearchAttributes
from temporalio.exceptions import ApplicationError
from temporalio.service import RPCError, RPCStatusCode

from api import availability
from api.deps import Cursor, Limit, PoolDep, PrincipalDep, ResourcesDep, SettingsDep, TemporalDep
from api.errors import ServiceUnavailable
from infra import tracing
from infra.temporal import tenant_priority
from models.common import (
    GENERATION,
    INTEGRATION,
    KNOWLEDGE,
    ORCHESTRATOR,
    SPEC_REGISTRY,
    TERMINAL_STATES,
    Page,
    ProjectState,
    Service,
    TaskStatus,
)
from models.orchestrator import (
    PROJECT_WORKFLOW,
    STATE_KEY,
    TENANT_KEY,
    CompleteSpecs,
    PipelineQueues,
    ProjectCreate,
    ProjectPublic,
    ProjectUpdate,
    ProjectWorkflowInput,
    StateChange,
    StateView,
    TaskCreate,
    TaskPublic,
    TaskUpdate,
)
from store import leases, pipeline_settings, projects, runs, tasks

router = APIRouter(tags=["orchestrator"])


@router.get("/projects", response_model=Page[ProjectPublic])
async def list_projects(
    pool: PoolDep,
    p: PrincipalDep,
    limit: Limit = 50,
    cursor: Cursor = None,
    state: ProjectState | None = None,
    order: Annotated[Literal["oldest", "newest"], Query(description="By creation time")] = "oldest",
    running_for_s: Annotated[
        int | None,
        Query(ge=0, le=10**7, description="Only projects in a running state not updated for this many seconds"),
    ] = None,
):
    items, nxt = await projects.list_projects(
        pool,
        tenant_id=p.tenant_id,
        state=state,
        limit=limit,
        cursor=cursor,
        newest_first=order == "newest",
        running_for_s=running_for_s,
    )
    return Page(items=items, next_cursor=nxt)


@router.post("/projects", response_model=ProjectPublic, status_code=201)
async def create_project(
    body: ProjectCreate, pool: PoolDep, p: PrincipalDep, temporal: TemporalDep, settings: SettingsDep
):
    async with projects.creating_project(pool, tenant_id=p.tenant_id, user_id=p.user_id, body=body) as project:
        try:
            handle = await temporal.start_workflow(
                PROJECT_WORKFLOW,
                ProjectWorkflowInput(
                    project_id=project.id, tenant_id=p.tenant_id, user_id=p.user_id, queues=pipeline_queues(settings)
                ),
                id=project.workflow_id,
                task_queue=settings.queue(ORCHESTRATOR),
                search_attributes=TypedSearchAttributes(
                    [
                        SearchAttributePair(TENANT_KEY, str(p.tenant_id)),
                        SearchAttributePair(STATE_KEY, ProjectState.initialization.value),
                    ]
                ),
                static_summary=f"project {project.name!r}",
                priority=tenant_priority(p.tenant_id),
            )
        except (RPCError, RuntimeError) as err:  # RuntimeError: the lazy client could not connect
            raise ServiceUnavailable("Temporal") from err
    run = await runs.started(
        pool,
        tenant_id=p.tenant_id,
        project_id=project.id,
        run_id=UUID(handle.result_run_id),
        scope="initial",
        state=ProjectState.initialization,
        instance_ids=None,
        trace_id=tracing.current_trace_id(),
    )
    return project.model_copy(update={"run_id": run.id})


@router.get("/projects/{project_id}", response_model=ProjectPublic)
async def get_project(project_id: UUID, pool: PoolDep, p: PrincipalDep):
    return await projects.get_project(pool, tenant_id=p.tenant_id, project_id=project_id)


@router.put("/projects/{project_id}", response_model=ProjectPublic)
async def update_project(project_id: UUID, body: ProjectUpdate, pool: PoolDep, p: PrincipalDep):
    return await projects.update_project(pool, tenant_id=p.tenant_id, project_id=project_id, body=body)


def pipeline_queues(settings) -> PipelineQueues:
    return PipelineQueues(
        orchestrator=settings.queue(ORCHESTRATOR),
        spec_registry=settings.queue(SPEC_REGISTRY),
        generation=settings.queue(GENERATION),
        knowledge=settings.queue(KNOWLEDGE),
        integration=settings.queue(INTEGRATION),
    )


@router.delete("/projects/{project_id}", status_code=204)
async def delete_project(project_id: UUID, pool: PoolDep, p: PrincipalDep, temporal: TemporalDep):
    """Cancels the project's workflow; the project stays readable in the `cancelled` state."""
    project = await projects.get_project(pool, tenant_id=p.tenant_id, project_id=project_id)
    if not await _cancel(project, temporal):
        return JSONResponse({"detail": "cancellation requested", "id": str(project_id)}, status_code=202)
    return Response(status_code=204)


async def _cancel(project: ProjectPublic, temporal: Client) -> bool:
    """Cancel the run and wait (10 s at most) until it has recorded `cancelled`; False if it has not yet."""
    if project.state in (ProjectState.completed, ProjectState.failed, ProjectState.cancelled):
        raise HTTPException(409, f"project is already {project.state.value}")
    handle = temporal.get_workflow_handle(project.workflow_id)
    try:
        await handle.cancel()
        for _ in range(100):
            desc = await handle.describe()
            if desc.status != WorkflowExecutionStatus.RUNNING:
                return True
            await asyncio.sleep(0.1)
    except (RPCError, RuntimeError) as err:
        raise _temporal_error(err) from err
    return False


@router.get("/projects/{project_id}/state", response_model=StateView)
async def get_state(project_id: UUID, pool: PoolDep, p: PrincipalDep, temporal: TemporalDep):
    project = await projects.get_project(pool, tenant_id=p.tenant_id, project_id=project_id)
    return await _query_state(project, temporal)


async def _query_state(project: ProjectPublic, temporal: Client) -> StateView:
    try:
        return await temporal.get_workflow_handle(project.workflow_id).query("state", result_type=StateView)
    except (RPCError, RuntimeError) as err:
        raise _temporal_error(err) from err


@router.put("/projects/{project_id}/state", response_model=StateView)
async def set_state(project_id: UUID, body: StateChange, res: ResourcesDep, p: PrincipalDep, temporal: TemporalDep):
    """code_generation is spec.complete (as POST .../specs/complete); cancelled cancels (as DELETE); the
    pipeline moves through the other states itself, so asking for them is a 409 with what is allowed."""
    project = await projects.get_project(res.pool, tenant_id=p.tenant_id, project_id=project_id)
    if body.state == ProjectState.code_generation:
        return await _complete_specs(res, p, project, temporal)
    if body.state == ProjectState.cancelled and project.state not in TERMINAL_STATES:
        await _cancel(project, temporal)
        return StateView(state=ProjectState.cancelled, allowed_next=[])
    view = await _query_state(project, temporal)
    return JSONResponse(
        {
            "detail": f"cannot move from {view.state.value} to {body.state.value}"
            + ("" if view.state in TERMINAL_STATES else ": the pipeline moves through its states itself"),
            "state": view.state.value,
            "allowed_next": [s.value for s in view.allowed_next],
        },
        status_code=409,
    )


@router.post("/projects/{project_id}/specs/complete", response_model=StateView)
async def complete_specs(project_id: UUID, res: ResourcesDep, p: PrincipalDep, temporal: TemporalDep):
    """spec.complete: checks every instance (409 with the problems) and starts code generation; a model
    that cannot serve this tenant now, or settings over PROJECT_TOKEN_BUDGET, is a 422 with the reason,
    before anything starts. A tenant already running MAX_RUNNING_PROJECTS_PER_TENANT projects gets a 429."""
    project = await projects.get_project(res.pool, tenant_id=p.tenant_id, project_id=project_id)
    return await _complete_specs(res, p, project, temporal)


async def _complete_specs(res, p, project: ProjectPublic, temporal: Client):
    """The complete_specs update; a project about to run is first checked against the token budget and
    holds a place among the tenant's running projects until the workflow has recorded code_generation."""
    settings, user_id = res.settings, p.user_id
    admission = contextlib.nullcontext()  # any other state: the workflow answers 409
    if project.state == ProjectState.spec_definition:
        runnable = await pipeline_settings.runnable_settings(
            res.pool, tenant_id=p.tenant_id, project_id=project.id, token_budget=settings.project_token_budget
        )
        await availability.require_available(res, p.tenant_id, runnable.model)
        admission = leases.admitting_run(
            res.pool,
            tenant_id=p.tenant_id,
            project_id=project.id,
            limit=settings.max_running_projects_per_tenant,
            ttl_s=settings.update_timeout_seconds + 30,
        )
    handle = temporal.get_workflow_handle(project.workflow_id)
    try:
        async with admission:
            return await asyncio.wait_for(
                handle.execute_update("complete_specs", CompleteSpecs(requested_by=user_id), result_type=StateView),
                settings.update_timeout_seconds,
            )
    except WorkflowUpdateFailedError as err:
        cause = err.cause
        if isinstance(cause, ApplicationError) and cause.type in ("TransitionNotAllowed", "SpecsIncomplete"):
            info = cause.details[0] if cause.details else {}
            return JSONResponse({"detail": cause.message, **info}, status_code=409)
        raise ServiceUnavailable("the orchestrator") from err
    except asyncio.TimeoutError as err:
        raise ServiceUnavailable("the orchestrator worker") from err
    except (RPCError, RuntimeError) as err:
        if isinstance(err, RPCError) and err.status == RPCStatusCode.NOT_FOUND:  # ended: its state is final
            return JSONResponse(
                {
                    "detail": f"project is {project.state.value}; no transition is allowed",
                    "state": project.state.value,
                    "allowed_next": [],
                },
                status_code=409,
            )
        raise _temporal_error(err) from err


def _temporal_error(err: Exception) -> Exception:
    if isinstance(err, RPCError) and err.status == RPCStatusCode.NOT_FOUND:
        return HTTPException(404, "the project's workflow was not found")
    return ServiceUnavailable("Temporal")


@router.get("/tasks", response_model=Page[TaskPublic])
async def list_tasks(
    pool: PoolDep,
    p: PrincipalDep,
    limit: Limit = 50,
    cursor: Cursor = None,
    project_id: UUID | None = None,
    status: TaskStatus | None = None,
    service: Service | None = None,
):
    items, nxt = await tasks.list_tasks(
        pool, tenant_id=p.tenant_id, project_id=project_id, status=status, service=service, limit=limit, cursor=cursor
    )
    return Page(items=items, next_cursor=nxt)


@router.post("/tasks", response_model=TaskPublic, status_code=201)
async def create_task(body: TaskCreate, pool: PoolDep, p: PrincipalDep):
    return await tasks.create_task(pool, tenant_id=p.tenant_id, body=body)


@router.get("/tasks/{task_id}", response_model=TaskPublic)
async def get_task(task_id: UUID, pool: PoolDep, p: PrincipalDep):
    return await tasks.get_task(pool, tenant_id=p.tenant_id, task_id=task_id)


@router.put("/tasks/{task_id}", response_model=TaskPublic)
async def update_task(task_id: UUID, body: TaskUpdate, pool: PoolDep, p: PrincipalDep):
    return await tasks.update_task(pool, tenant_id=p.tenant_id, task_id=task_id, body=body)
