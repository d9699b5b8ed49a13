"""Projects: the rows the orchestrator's workflows mirror their state into."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from uuid import UUID, uuid4

import asyncpg

from models.common import RUNNING_STATES, TERMINAL_STATES, ProjectState
from models.events import complete_spec_event, project_event, project_state_event, run_progress_event
from models.orchestrator import (
    ProjectCreate,
    ProjectPublic,
    ProjectUpdate,
    RecordProgressInput,
    RecordStateInput,
    project_workflow_id,
)
from models.pipeline import TenantSettings
from store import events, runs
from store.db import returned, tenant_tx
from store.errors import NotFound
from store.paging import keyset, page

# the model its next run uses: the project's own setting, else the tenant's default, else the platform's
_MODEL = f"""coalesce((select ps.model from project_settings ps where ps.project_id = projects.id),
    (select ts.model from tenant_settings ts where ts.tenant_id = projects.tenant_id), '{TenantSettings().model}')"""
_COLS = (
    "id, tenant_id, name, description, state, user_id, created_at, updated_at, run_id, reason, outcome, "
    f"{_MODEL} as model, "
    "(select r.progress from project_runs r where r.id = projects.run_id and r.tenant_id = projects.tenant_id)"
    " as progress"
)


def _model(row: asyncpg.Record) -> ProjectPublic:
    """The row as the API shows it; its outcome once its run has ended (the column keeps the last one
    while a run goes, to merge the instances that run does not touch: store.runs)."""
    shown = dict(row)
    if ProjectState(row["state"]) not in TERMINAL_STATES:
        shown["outcome"] = None
    project = ProjectPublic.model_validate({**shown, "workflow_id": project_workflow_id(row["id"])})
    if project.progress is None or (
        project.progress.state in TERMINAL_STATES and project.state not in TERMINAL_STATES
    ):  # a new run claimed, not started yet: the last run's progress is not this one's
        return project.model_copy(update={"progress": None})
    return project.model_copy(update={"progress": runs.shown_progress(project.progress)})


@asynccontextmanager
async def creating_project(
    pool: asyncpg.Pool, *, tenant_id: UUID, user_id: UUID, body: ProjectCreate
) -> AsyncIterator[ProjectPublic]:
    """Insert the project and its project.created event; the caller starts the workflow inside
    the block, so a failed start rolls the row back and nothing is left half-made."""
    async with tenant_tx(pool, tenant_id) as conn:
        row = await conn.fetchrow(
            f"""insert into projects (id, tenant_id, name, description, state, user_id, created_at, updated_at)
                values ($1, $2, $3, $4, $5, $6, now() at time zone 'utc', now() at time zone 'utc')
                returning {_COLS}""",
            uuid4(),
            tenant_id,
            body.name,
            body.description,
            ProjectState.initialization.value,
            user_id,
        )
        project = _model(returned(row))
        await events.emit(
            conn,
            tenant_id=tenant_id,
            type="project.created",
            subject_id=project.id,
            payload=project_event(
                project_id=project.id,
                tenant_id=tenant_id,
                user_id=user_id,
                name=project.name,
                state=project.state,
                workflow_id=project.workflow_id,
            ),
        )
        yield project


async def get_project(pool: asyncpg.Pool, *, tenant_id: UUID, project_id: UUID) -> ProjectPublic:
    async with tenant_tx(pool, tenant_id) as conn:
        row = await conn.fetchrow(
            f"select {_COLS} from projects where tenant_id = $1 and id = $2", tenant_id, project_id
        )
    if row is None:
        raise NotFound(f"project {project_id} not found")
    return _model(row)


async def list_projects(
    pool: asyncpg.Pool,
    *,
    tenant_id: UUID,
    state: ProjectState | None,
    limit: int,
    cursor: str | None,
    newest_first: bool = False,
    running_for_s: int | None = None,
) -> tuple[list[ProjectPublic], str | None]:
    """`running_for_s`: only projects in a running state (RUNNING_STATES) not updated for that many seconds."""
    running = [s.value for s in RUNNING_STATES] if running_for_s is not None else None
    args: list = [tenant_id, state.value if state else None, running, running_for_s]
    after = keyset(cursor, args, descending=newest_first)
    args.append(limit + 1)
    order = "created_at desc, id desc" if newest_first else "created_at, id"
    async with tenant_tx(pool, tenant_id) as conn:
        rows = await conn.fetch(
            f"""select {_COLS} from projects where tenant_id = $1 and ($2::text is null or state = $2)
                  and ($3::text[] is null or (state = any($3)
                       and updated_at < (now() at time zone 'utc') - make_interval(secs => $4::int)))
                  and {after}
                order by {order} limit ${len(args)}""",
            *args,
        )
    rows, next_cursor = page(rows, limit)
    return [_model(r) for r in rows], next_cursor


async def update_project(
    pool: asyncpg.Pool, *, tenant_id: UUID, project_id: UUID, body: ProjectUpdate
) -> ProjectPublic:
    fields = body.model_dump(exclude_unset=True)
    async with tenant_tx(pool, tenant_id) as conn:
        row = await conn.fetchrow(
            f"""update projects set name = coalesce($3, name),
                  description = case when $4 then $5 else description end,
                  updated_at = now() at time zone 'utc'
                where tenant_id = $1 and id = $2 returning {_COLS}""",
            tenant_id,
            project_id,
            fields.get("name"),
            "description" in fields,
            fields.get("description"),
        )
    if row is None:
        raise NotFound(f"project {project_id} not found")
    return _model(row)


def _run_uuid(run_id: str) -> UUID | None:
    """A Temporal run id is a UUID; anything else (an empty string from before runs were recorded) is None."""
    try:
        return UUID(run_id) if run_id else None
    except ValueError:
        return None


async def record_state(pool: asyncpg.Pool, inp: RecordStateInput) -> float | None:
    """Mirror a workflow transition: the row and its project.state_changed event, exactly once.

    The event's dedup key is the workflow's transition number, so a retried activity changes nothing.
    Its events carry the run id (the `run_id` filter of /api/events). Returns the seconds the project
    spent in the state it leaves, the first time (None: a retry, already applied).
    """
    run_id = _run_uuid(inp.run_id)
    async with tenant_tx(pool, inp.tenant_id) as conn:
        since = await conn.fetchval(
            "select extract(epoch from (now() at time zone 'utc') - updated_at) from projects"
            " where tenant_id = $1 and id = $2 for update",
            inp.tenant_id,
            inp.project_id,
        )
        if since is None:
            raise NotFound(f"project {inp.project_id} not found")
        fresh = await events.emit(
            conn,
            tenant_id=inp.tenant_id,
            type="project.state_changed",
            subject_id=inp.project_id,
            dedup_key=f"{project_workflow_id(inp.project_id)}:{inp.run_id}:state:{inp.seq}",
            run_id=run_id,
            payload=project_state_event(
                project_id=inp.project_id,
                tenant_id=inp.tenant_id,
                from_state=inp.from_state,
                to_state=inp.to_state,
                reason=inp.reason,
                run_id=_uuid_or_none(inp.run_id),
                outcome=inp.outcome,
                progress=inp.progress,
            ),
        )
        if fresh and inp.specs_completed is not None:
            await events.emit(
                conn,
                tenant_id=inp.tenant_id,
                type="spec.complete",
                subject_id=inp.project_id,
                dedup_key=f"{project_workflow_id(inp.project_id)}:{inp.run_id}:spec.complete:{inp.seq}",
                run_id=run_id,
                payload=complete_spec_event(
                    project_id=inp.project_id, tenant_id=inp.tenant_id, instances=inp.specs_completed
                ),
            )
        if fresh:
            await conn.execute(
                "update projects set state = $3, updated_at = now() at time zone 'utc'"
                " where tenant_id = $1 and id = $2",
                inp.tenant_id,
                inp.project_id,
                inp.to_state.value,
            )
            await runs.on_transition(conn, inp)
    return max(0.0, float(since)) if fresh else None


async def record_progress(pool: asyncpg.Pool, inp: RecordProgressInput) -> bool:
    """A run's progress within a state: its row, and a run.progress event with the progress as the row now
    holds it (False: a retry, which changes nothing)."""
    async with tenant_tx(pool, inp.tenant_id) as conn:
        merged = await runs.record_progress(conn, inp)
        if merged is None:
            return False
        await events.emit(
            conn,
            tenant_id=inp.tenant_id,
            type="run.progress",
            subject_id=inp.project_id,
            dedup_key=f"{project_workflow_id(inp.project_id)}:{inp.run_id}:progress:{inp.progress.seq}",
            run_id=UUID(inp.run_id),
            payload=run_progress_event(
                project_id=inp.project_id, tenant_id=inp.tenant_id, run_id=UUID(inp.run_id), progress=merged
            ),
        )
    return True


def _uuid_or_none(text: str) -> UUID | None:
    try:
        return UUID(text)
    except ValueError:
        return None
