"""Runs of a project: start a new one from any terminal state, list them, read one.

A project's first run starts with the project (POST /api/projects). Once a run has ended (completed,
failed or cancelled), POST .../runs starts the next with the project's current settings, for the
instances its scope chooses; POST .../regenerate is the same with scope `changed` (its older shape).
"""

from __future__ import annotations

from uuid import UUID

from fastapi import APIRouter, HTTPException, Response
from temporalio.common import SearchAttributePair, TypedSearchAttributes, WorkflowIDReusePolicy
from temporalio.exceptions import WorkflowAlreadyStartedError
from temporalio.service import RPCError

from api import availability
from api.deps import Cursor, Limit, PoolDep, PrincipalDep, ResourcesDep, TemporalDep
from api.errors import ServiceUnavailable
from api.routes.projects import pipeline_queues
from infra import tracing
from infra.temporal import tenant_priority
from models.common import ORCHESTRATOR, TERMINAL_STATES, Page, ProjectState
from models.orchestrator import (
    PROJECT_WORKFLOW,
    STATE_KEY,
    TENANT_KEY,
    PipelineSettings,
    ProjectChanges,
    ProjectPublic,
    ProjectWorkflowInput,
    Regenerate,
    RegenerateAccepted,
    RunCreate,
    RunPublic,
)
from models.outcome import RunScope, feedback_of
from models.schema_rules import values_hash
from store import artifacts, instances, pipeline_settings, projects, runs
from store.errors import Conflict

router = APIRouter(tags=["orchestrator"])
_PASSING = ("passed", "no_tests")
_TESTED_FAILING = ("failed", "error", "timeout")


async def _changes(pool, tenant_id: UUID, project_id: UUID, specs=None) -> ProjectChanges:
    """By the hash of each instance's values against its current artifact's (`specs`: read if not given)."""
    if specs is None:
        specs = await instances.project_specs(pool, tenant_id=tenant_id, project_id=project_id)
    generated = await artifacts.current_values_hashes(pool, tenant_id=tenant_id, project_id=project_id)
    changed = [s.id for s in specs if s.id in generated and generated[s.id] != values_hash(s.values)]
    new = [s.id for s in specs if s.id not in generated]
    return ProjectChanges(stale=bool(generated) and bool(changed or new), changed=changed, new=new)


@router.get("/projects/{project_id}/changes", response_model=ProjectChanges)
async def get_changes(project_id: UUID, pool: PoolDep, p: PrincipalDep):
    """Instances changed since their code was generated (by the hash of their values): stale when any."""
    await projects.get_project(pool, tenant_id=p.tenant_id, project_id=project_id)
    return await _changes(pool, p.tenant_id, project_id)


async def _chosen(pool, tenant_id: UUID, project_id: UUID, scope: str, specs, changes: ProjectChanges) -> list[UUID]:
    """The instances a run of this scope generates; a 409 that says what to do when there are none."""
    if not specs:
        raise Conflict("the project has no spec instances: create at least one")
    if scope == "all":
        return [s.id for s in specs]
    if scope == "changed":
        if not (changes.changed or changes.new):
            raise Conflict(
                "nothing changed since the last generation: no instance's values differ "
                '(scope "failed" runs the failing instances again, "all" every instance)'
            )
        return changes.changed + changes.new
    statuses = await artifacts.current_test_statuses(pool, tenant_id=tenant_id, project_id=project_id)
    failing = [s.id for s in specs if statuses.get(s.id) not in _PASSING]
    if not failing:
        raise Conflict('every instance passes its tests: nothing failed (scope "all" runs every instance again)')
    return failing


def _ended(project: ProjectPublic) -> ProjectPublic:
    """A project whose last run has ended; else a 409 with the state and the id of the run that is going
    (checked again, atomically, when the run is claimed)."""
    if project.state not in TERMINAL_STATES:
        raise Conflict(
            f"project is {project.state.value}: a run is going; start another once it has ended",
            extra={"state": project.state.value, "run_id": str(project.run_id) if project.run_id else None},
        )
    return project


def _last_failures(project: ProjectPublic, chosen: list[UUID], changes: ProjectChanges) -> dict[UUID, str]:
    """The last failure of each chosen instance whose code was tested and whose values have not changed
    since: the new run's first round is told it, as a repair round is told the round before's."""
    if project.outcome is None:
        return {}
    wanted = set(chosen) - set(changes.changed)
    return {
        i.instance_id: feedback_of(i)
        for i in project.outcome.instances
        if i.status in _TESTED_FAILING and i.instance_id in wanted
    }


async def _plan(pool, tenant_id: UUID, project_id: UUID, scope: str) -> tuple[list[UUID], ProjectChanges]:
    """The instances a run of `scope` generates, and the changes they were chosen from (one read of each)."""
    specs = await instances.project_specs(pool, tenant_id=tenant_id, project_id=project_id)
    changes = await _changes(pool, tenant_id, project_id, specs)
    return await _chosen(pool, tenant_id, project_id, scope, specs, changes), changes


async def start_run(
    pool,
    temporal,
    settings,
    p,
    project: ProjectPublic,
    scope: RunScope,
    instance_ids: list[UUID],
    changes: ProjectChanges,
) -> RunPublic:
    """Claim the project (it leaves its terminal state first: a second rerun is a 409), start the run,
    and record it with the settings it runs with (read as it was claimed: a setting written after reaches
    the next run); a run that cannot start gives the project back its last state."""
    feedback = _last_failures(project, instance_ids, changes)
    last_state, last_run, effective = await runs.claim_rerun(
        pool, tenant_id=p.tenant_id, project_id=project.id, max_running=settings.max_running_projects_per_tenant
    )
    run_settings = PipelineSettings.model_validate(effective.model_dump())
    try:
        handle = await temporal.start_workflow(
            PROJECT_WORKFLOW,
            ProjectWorkflowInput(
                project_id=project.id,
                tenant_id=p.tenant_id,
                user_id=p.user_id,
                queues=pipeline_queues(settings),
                regenerate=Regenerate(
                    instance_ids=instance_ids,
                    from_state=last_state,
                    scope=scope,
                    feedback=feedback,
                    settings=run_settings,
                ),
            ),
            id=project.workflow_id,
            task_queue=settings.queue(ORCHESTRATOR),
            id_reuse_policy=WorkflowIDReusePolicy.ALLOW_DUPLICATE,
            search_attributes=TypedSearchAttributes(
                [
                    SearchAttributePair(TENANT_KEY, str(p.tenant_id)),
                    SearchAttributePair(STATE_KEY, ProjectState.code_generation.value),
                ]
            ),
            static_summary=f"project {project.name!r}: run ({scope}) of {len(instance_ids)} instance(s)",
            priority=tenant_priority(p.tenant_id),
        )
    except BaseException as err:
        await runs.release_rerun(pool, tenant_id=p.tenant_id, project_id=project.id, state=last_state, run_id=last_run)
        if isinstance(err, WorkflowAlreadyStartedError):
            raise HTTPException(409, "a run of this project is already going") from err
        if isinstance(err, (RPCError, RuntimeError)):
            raise ServiceUnavailable("Temporal") from err
        raise
    return await runs.started(
        pool,
        tenant_id=p.tenant_id,
        project_id=project.id,
        run_id=UUID(handle.result_run_id),
        scope=scope,
        state=ProjectState.code_generation,
        instance_ids=instance_ids,
        settings=run_settings.model_dump(mode="json"),
        trace_id=tracing.current_trace_id(),
    )


@router.post(
    "/projects/{project_id}/runs",
    response_model=RunPublic,
    status_code=202,
    responses={
        409: {"description": "A run is going (its id in `run_id`), or the scope chose no instance"},
        429: {"description": "The tenant runs its most projects at once (MAX_RUNNING_PROJECTS_PER_TENANT)"},
    },
)
async def create_run(
    project_id: UUID, body: RunCreate, response: Response, res: ResourcesDep, p: PrincipalDep, temporal: TemporalDep
):
    """A new run of a project whose last run has ended, with the project's current settings (`settings`
    here are saved first, as PUT .../settings would). Answers 202 with the run, already in
    code_generation, and the settings it runs with: GET .../state and GET .../runs/{id} (with its
    `progress`) show this run from now on. A model that cannot
    serve this tenant now, named here or already the project's, is a 422 with the reason; so are settings
    whose n × max_new_tokens × (debug_rounds + 1) is over PROJECT_TOKEN_BUDGET. A tenant already running
    MAX_RUNNING_PROJECTS_PER_TENANT projects gets a 429 (Retry-After) until one ends."""
    pool = res.pool
    project = _ended(await projects.get_project(pool, tenant_id=p.tenant_id, project_id=project_id))
    budget = res.settings.project_token_budget
    if body.settings is not None:
        await availability.require_project_model(res, p.tenant_id, project_id, body.settings.model)
        await pipeline_settings.put_project_settings(
            pool, tenant_id=p.tenant_id, project_id=project_id, update=body.settings, token_budget=budget
        )
    else:
        runnable = await pipeline_settings.runnable_settings(
            pool, tenant_id=p.tenant_id, project_id=project_id, token_budget=budget
        )
        await availability.require_available(res, p.tenant_id, runnable.model)
    chosen, changes = await _plan(pool, p.tenant_id, project_id, body.scope)
    run = await start_run(pool, temporal, res.settings, p, project, body.scope, chosen, changes)
    response.headers["Location"] = f"/api/projects/{project_id}/runs/{run.id}"
    return run


@router.get("/projects/{project_id}/runs", response_model=Page[RunPublic])
async def list_runs(project_id: UUID, pool: PoolDep, p: PrincipalDep, limit: Limit = 50, cursor: Cursor = None):
    """The project's runs, oldest first: scope, settings, state, outcome, reason and duration."""
    await projects.get_project(pool, tenant_id=p.tenant_id, project_id=project_id)
    items, nxt = await runs.list_runs(pool, tenant_id=p.tenant_id, project_id=project_id, limit=limit, cursor=cursor)
    return Page(items=items, next_cursor=nxt)


@router.get("/projects/{project_id}/runs/{run_id}", response_model=RunPublic)
async def get_run(project_id: UUID, run_id: UUID, pool: PoolDep, p: PrincipalDep):
    return await runs.get_run(pool, tenant_id=p.tenant_id, project_id=project_id, run_id=run_id)


@router.post("/projects/{project_id}/regenerate", response_model=RegenerateAccepted, status_code=202)
async def regenerate(project_id: UUID, response: Response, res: ResourcesDep, p: PrincipalDep, temporal: TemporalDep):
    """A new run for the changed and new instances only: POST .../runs with scope `changed`, answering
    with the changes (the run's id is in the Location header and in GET .../runs)."""
    pool = res.pool
    project = _ended(await projects.get_project(pool, tenant_id=p.tenant_id, project_id=project_id))
    runnable = await pipeline_settings.runnable_settings(
        pool, tenant_id=p.tenant_id, project_id=project_id, token_budget=res.settings.project_token_budget
    )
    await availability.require_available(res, p.tenant_id, runnable.model)
    chosen, changes = await _plan(pool, p.tenant_id, project_id, "changed")
    run = await start_run(pool, temporal, res.settings, p, project, "changed", chosen, changes)
    response.headers["Location"] = f"/api/projects/{project_id}/runs/{run.id}"
    return RegenerateAccepted(**changes.model_dump(), run_id=run.id)
