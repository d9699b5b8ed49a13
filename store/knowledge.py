"""Project knowledge (specification sheet 3): key -> JSON value entries of one project."""

from __future__ import annotations

from uuid import UUID, uuid4

import asyncpg

from models.events import knowledge_update_event
from models.knowledge import KnowledgePublic, KnowledgeUpsert
from store import events
from store.db import returned, tenant_tx
from store.errors import NotFound
from store.paging import keyset, page

_COLS = "id, project_id, tenant_id, key, value, created_at, updated_at"


def _model(row: asyncpg.Record) -> KnowledgePublic:
    return KnowledgePublic.model_validate(dict(row))


async def _require_project(conn: asyncpg.Connection, tenant_id: UUID, project_id: UUID) -> None:
    if not await conn.fetchval("select 1 from projects where tenant_id = $1 and id = $2", tenant_id, project_id):
        raise NotFound(f"project {project_id} not found")


async def upsert_entry(
    pool: asyncpg.Pool, *, tenant_id: UUID, user_id: UUID, project_id: UUID, body: KnowledgeUpsert
) -> tuple[KnowledgePublic, bool]:
    """Create the entry, or update the value of an existing key (bumping updated_at). True if created."""
    async with tenant_tx(pool, tenant_id) as conn:
        await _require_project(conn, tenant_id, project_id)
        row = await conn.fetchrow(
            f"""insert into project_knowledge (id, project_id, tenant_id, key, value, created_at, updated_at)
                values ($1, $2, $3, $4, coalesce($5::jsonb, 'null'::jsonb),  -- JSON null arrives as SQL NULL
                        now() at time zone 'utc', now() at time zone 'utc')
                on conflict (tenant_id, project_id, key)
                do update set value = excluded.value, updated_at = now() at time zone 'utc'
                returning {_COLS}, (xmax = 0) as created""",
            uuid4(),
            project_id,
            tenant_id,
            body.key,
            body.value,
        )
        row = returned(row)
        entry = _model(row)
        await events.emit(
            conn,
            tenant_id=tenant_id,
            type="knowledge.updated",
            subject_id=entry.id,
            payload=knowledge_update_event(
                tenant_id=tenant_id,
                kind="knowledge",
                action="created" if row["created"] else "updated",
                id=entry.id,
                project_id=project_id,
                key=entry.key,
                user_id=user_id,
            ),
        )
    return entry, bool(row["created"])


async def list_entries(
    pool: asyncpg.Pool, *, tenant_id: UUID, project_id: UUID, key: str | None, limit: int, cursor: str | None
) -> tuple[list[KnowledgePublic], str | None]:
    args: list = [tenant_id, project_id, key]
    after = keyset(cursor, args)
    args.append(limit + 1)
    async with tenant_tx(pool, tenant_id) as conn:
        await _require_project(conn, tenant_id, project_id)
        rows = await conn.fetch(
            f"""select {_COLS} from project_knowledge
                where tenant_id = $1 and project_id = $2 and ($3::text is null or key = $3) and {after}
                order by created_at, id limit ${len(args)}""",
            *args,
        )
    rows, next_cursor = page(rows, limit)
    return [_model(r) for r in rows], next_cursor


async def get_entries(pool: asyncpg.Pool, *, tenant_id: UUID, ids: list[UUID]) -> dict[UUID, KnowledgePublic]:
    if not ids:  # nothing to read: no transaction
        return {}
    async with tenant_tx(pool, tenant_id) as conn:
        rows = await conn.fetch(
            f"select {_COLS} from project_knowledge where tenant_id = $1 and id = any($2)", tenant_id, ids
        )
    return {r["id"]: _model(r) for r in rows}


async def delete_entry(pool: asyncpg.Pool, *, tenant_id: UUID, user_id: UUID, project_id: UUID, key: str) -> UUID:
    async with tenant_tx(pool, tenant_id) as conn:
        await _require_project(conn, tenant_id, project_id)
        row = await conn.fetchrow(
            "delete from project_knowledge where tenant_id = $1 and project_id = $2 and key = $3 returning id",
            tenant_id,
            project_id,
            key,
        )
        if row is None:
            raise NotFound(f"knowledge entry {key!r} not found")
        await events.emit(
            conn,
            tenant_id=tenant_id,
            type="knowledge.updated",
            subject_id=row["id"],
            payload=knowledge_update_event(
                tenant_id=tenant_id,
                kind="knowledge",
                action="deleted",
                id=row["id"],
                project_id=project_id,
                key=key,
                user_id=user_id,
            ),
        )
    return row["id"]
