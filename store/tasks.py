"""Workflow tasks: units of work a service does for a project."""

from __future__ import annotations

from uuid import UUID, uuid4

import asyncpg

from models.common import Service, TaskStatus
from models.events import task_event
from models.orchestrator import TaskCreate, TaskPublic, TaskUpdate
from store import events
from store.db import returned, tenant_tx
from store.errors import Conflict, NotFound
from store.paging import keyset, page

_COLS = "id, project_id, tenant_id, service, task_type, status, created_at, updated_at"
FINISHED = {TaskStatus.completed, TaskStatus.failed, TaskStatus.cancelled}


def _model(row: asyncpg.Record) -> TaskPublic:
    return TaskPublic.model_validate(dict(row))


def _payload(task: TaskPublic):
    return task_event(
        task_id=task.id,
        project_id=task.project_id,
        tenant_id=task.tenant_id,
        service=task.service,
        task_type=task.task_type,
        status=task.status,
    )


async def _emit(conn: asyncpg.Connection, type_: str, task: TaskPublic) -> None:
    await events.emit(conn, tenant_id=task.tenant_id, type=type_, subject_id=task.id, payload=_payload(task))


async def create_task(pool: asyncpg.Pool, *, tenant_id: UUID, body: TaskCreate) -> TaskPublic:
    async with tenant_tx(pool, tenant_id) as conn:
        if not await conn.fetchval(
            "select 1 from projects where tenant_id = $1 and id = $2", tenant_id, body.project_id
        ):
            raise NotFound(f"project {body.project_id} not found")
        row = await conn.fetchrow(
            f"""insert into workflow_tasks (
                id, project_id, tenant_id, service, task_type, status, created_at, updated_at)
                values ($1, $2, $3, $4, $5, $6, now() at time zone 'utc', now() at time zone 'utc')
                returning {_COLS}""",
            uuid4(),
            body.project_id,
            tenant_id,
            body.service.value,
            body.task_type,
            body.status.value,
        )
        task = _model(returned(row))
        await _emit(conn, "task.created", task)
        if task.status in FINISHED:
            await _emit(conn, "task.completed", task)
    return task


async def get_task(pool: asyncpg.Pool, *, tenant_id: UUID, task_id: UUID) -> TaskPublic:
    async with tenant_tx(pool, tenant_id) as conn:
        row = await conn.fetchrow(
            f"select {_COLS} from workflow_tasks where tenant_id = $1 and id = $2", tenant_id, task_id
        )
    if row is None:
        raise NotFound(f"task {task_id} not found")
    return _model(row)


async def list_tasks(
    pool: asyncpg.Pool,
    *,
    tenant_id: UUID,
    project_id: UUID | None,
    status: TaskStatus | None,
    service: Service | None,
    limit: int,
    cursor: str | None,
) -> tuple[list[TaskPublic], str | None]:
    args: list = [tenant_id, project_id, status.value if status else None, service.value if service else None]
    after = keyset(cursor, args)
    args.append(limit + 1)
    async with tenant_tx(pool, tenant_id) as conn:
        rows = await conn.fetch(
            f"""select {_COLS} from workflow_tasks
                where tenant_id = $1 and ($2::uuid is null or project_id = $2)
                  and ($3::text is null or status = $3) and ($4::text is null or service = $4) and {after}
                order by created_at, id limit ${len(args)}""",
            *args,
        )
    rows, next_cursor = page(rows, limit)
    return [_model(r) for r in rows], next_cursor


async def update_task(pool: asyncpg.Pool, *, tenant_id: UUID, task_id: UUID, body: TaskUpdate) -> TaskPublic:
    async with tenant_tx(pool, tenant_id) as conn:
        current = await conn.fetchval(
            "select status from workflow_tasks where tenant_id = $1 and id = $2 for update", tenant_id, task_id
        )
        if current is None:
            raise NotFound(f"task {task_id} not found")
        if TaskStatus(current) in FINISHED and body.status.value != current:
            raise Conflict(f"task is already {current}")
        row = await conn.fetchrow(
            f"""update workflow_tasks set status = $3, updated_at = now() at time zone 'utc'
                where tenant_id = $1 and id = $2 returning {_COLS}""",
            tenant_id,
            task_id,
            body.status.value,
        )
        task = _model(returned(row))
        if task.status in FINISHED and TaskStatus(current) not in FINISHED:
            await _emit(conn, "task.completed", task)
    return task


async def ensure_task(
    pool: asyncpg.Pool,
    *,
    tenant_id: UUID,
    task_id: UUID,
    project_id: UUID,
    service: Service,
    task_type: str,
    status: TaskStatus,
) -> TaskPublic:
    """A pipeline task with an id its workflow chose: created once (task.created), then moved to
    `status` (task.completed once it finishes). A retried activity finds what the first one stored
    and emits nothing again; a finished task keeps its status."""
    async with tenant_tx(pool, tenant_id) as conn:
        row = await conn.fetchrow(
            f"""insert into workflow_tasks (
                id, project_id, tenant_id, service, task_type, status, created_at, updated_at)
                values ($1, $2, $3, $4, $5, 'pending', now() at time zone 'utc', now() at time zone 'utc')
                on conflict (id) do nothing returning {_COLS}""",
            task_id,
            project_id,
            tenant_id,
            service.value,
            task_type,
        )
        if row is not None:
            await events.emit(
                conn,
                tenant_id=tenant_id,
                type="task.created",
                subject_id=task_id,
                dedup_key=f"task-{task_id}:created",
                payload=_payload(_model(row)),
            )
        row = await conn.fetchrow(
            f"select {_COLS} from workflow_tasks where tenant_id = $1 and id = $2 for update", tenant_id, task_id
        )
        if row is None:  # another tenant's id, or a project that vanished
            raise NotFound(f"task {task_id} not found")
        task = _model(row)
        if task.status in FINISHED or task.status == status:
            return task
        row = await conn.fetchrow(
            f"""update workflow_tasks set status = $3, updated_at = now() at time zone 'utc'
                where tenant_id = $1 and id = $2 returning {_COLS}""",
            tenant_id,
            task_id,
            status.value,
        )
        task = _model(returned(row))
        if task.status in FINISHED:
            await events.emit(
                conn,
                tenant_id=tenant_id,
                type="task.completed",
                subject_id=task_id,
                dedup_key=f"task-{task_id}:completed",
                payload=_payload(task),
            )
    return task
