"""Code snippets (specification sheet 3): PostgreSQL is the source of truth; Qdrant follows."""

from __future__ import annotations

from typing import Literal
from uuid import UUID, uuid4

import asyncpg

from models.events import knowledge_update_event
from models.knowledge import IndexItem, SnippetCreate, SnippetPublic, SnippetUpdate
from store import events
from store.db import tenant_tx
from store.errors import Conflict, Invalid, NotFound
from store.paging import keyset, page

_COLS = "id, tenant_id, user_id, language, content, description, tags, created_at"


def _model(row: asyncpg.Record) -> SnippetPublic:
    return SnippetPublic.model_validate(dict(row))


def _check_size(content: str | None, max_bytes: int) -> None:
    if content is not None and len(content.encode()) > max_bytes:
        raise Invalid(f"content is larger than {max_bytes} bytes")


async def _emit(
    conn: asyncpg.Connection, action: Literal["created", "updated", "deleted"], snip: SnippetPublic, user_id: UUID
) -> None:
    await events.emit(
        conn,
        tenant_id=snip.tenant_id,
        type="knowledge.updated",
        subject_id=snip.id,
        payload=knowledge_update_event(
            tenant_id=snip.tenant_id, kind="snippet", action=action, id=snip.id, language=snip.language, user_id=user_id
        ),
    )


async def create_snippet(
    pool: asyncpg.Pool,
    *,
    tenant_id: UUID,
    user_id: UUID,
    body: SnippetCreate,
    max_bytes: int,
    snippet_id: UUID | None = None,
) -> SnippetPublic:
    """A new snippet and its knowledge.updated event. With a `snippet_id` chosen by the caller (the
    pipeline's generated snippets) a second call finds the first one's row and emits nothing."""
    _check_size(body.content, max_bytes)
    async with tenant_tx(pool, tenant_id) as conn:
        row = await conn.fetchrow(
            f"""insert into code_snippets (id, tenant_id, user_id, language, content, description, tags, created_at)
                values ($1, $2, $3, $4, $5, $6, $7, now() at time zone 'utc')
                on conflict (id) do nothing returning {_COLS}""",
            snippet_id or uuid4(),
            tenant_id,
            user_id,
            body.language,
            body.content,
            body.description,
            body.tags,
        )
        if row is None:
            row = await conn.fetchrow(
                f"select {_COLS} from code_snippets where tenant_id = $1 and id = $2", tenant_id, snippet_id
            )
            if row is None:
                raise Conflict(f"snippet id {snippet_id} is taken")
            return _model(row)
        snip = _model(row)
        await _emit(conn, "created", snip, user_id)
    return snip


async def get_snippet(pool: asyncpg.Pool, *, tenant_id: UUID, snippet_id: UUID) -> SnippetPublic:
    async with tenant_tx(pool, tenant_id) as conn:
        row = await conn.fetchrow(
            f"select {_COLS} from code_snippets where tenant_id = $1 and id = $2", tenant_id, snippet_id
        )
    if row is None:
        raise NotFound(f"snippet {snippet_id} not found")
    return _model(row)


async def get_snippets(pool: asyncpg.Pool, *, tenant_id: UUID, ids: list[UUID]) -> dict[UUID, SnippetPublic]:
    if not ids:  # nothing to read: no transaction
        return {}
    async with tenant_tx(pool, tenant_id) as conn:
        rows = await conn.fetch(
            f"select {_COLS} from code_snippets where tenant_id = $1 and id = any($2)", tenant_id, ids
        )
    return {r["id"]: _model(r) for r in rows}


async def list_snippets(
    pool: asyncpg.Pool,
    *,
    tenant_id: UUID,
    language: str | None,
    tag: str | None,
    user_id: UUID | None,
    q: str | None,
    limit: int,
    cursor: str | None,
) -> tuple[list[SnippetPublic], str | None]:
    args: list = [tenant_id, language, tag, user_id, q]
    after = keyset(cursor, args)
    args.append(limit + 1)
    async with tenant_tx(pool, tenant_id) as conn:
        rows = await conn.fetch(
            f"""select {_COLS} from code_snippets
                where tenant_id = $1 and ($2::text is null or language = $2)
                  and ($3::text is null or tags ? $3) and ($4::uuid is null or user_id = $4)
                  and ($5::text is null or strpos(lower(content), lower($5)) > 0
                       or strpos(lower(coalesce(description, '')), lower($5)) > 0)
                  and {after}
                order by created_at, id limit ${len(args)}""",
            *args,
        )
    rows, next_cursor = page(rows, limit)
    return [_model(r) for r in rows], next_cursor


async def update_snippet(
    pool: asyncpg.Pool, *, tenant_id: UUID, user_id: UUID, snippet_id: UUID, body: SnippetUpdate, max_bytes: int
) -> SnippetPublic:
    fields = body.model_dump(exclude_unset=True)
    for required in ("language", "content"):
        if required in fields and fields[required] is None:
            raise Invalid(f"{required} cannot be null")
    _check_size(fields.get("content"), max_bytes)
    async with tenant_tx(pool, tenant_id) as conn:
        row = await conn.fetchrow(
            f"""update code_snippets set
                  language = coalesce($3, language), content = coalesce($4, content),
                  description = case when $5 then $6 else description end,
                  tags = case when $7 then $8::jsonb else tags end
                where tenant_id = $1 and id = $2 returning {_COLS}""",
            tenant_id,
            snippet_id,
            fields.get("language"),
            fields.get("content"),
            "description" in fields,
            fields.get("description"),
            "tags" in fields,
            fields.get("tags"),
        )
        if row is None:
            raise NotFound(f"snippet {snippet_id} not found")
        snip = _model(row)
        await _emit(conn, "updated", snip, user_id)
    return snip


async def delete_snippet(pool: asyncpg.Pool, *, tenant_id: UUID, user_id: UUID, snippet_id: UUID) -> None:
    async with tenant_tx(pool, tenant_id) as conn:
        row = await conn.fetchrow(
            f"delete from code_snippets where tenant_id = $1 and id = $2 returning {_COLS}", tenant_id, snippet_id
        )
        if row is None:
            raise NotFound(f"snippet {snippet_id} not found")
        await _emit(conn, "deleted", _model(row), user_id)


async def tenant_items(pool: asyncpg.Pool, *, tenant_id: UUID, after: UUID | None, limit: int) -> list[IndexItem]:
    """Every snippet and knowledge entry of a tenant, by id, a page at a time (re-indexing)."""
    async with tenant_tx(pool, tenant_id) as conn:
        rows = await conn.fetch(
            """select kind, id from (
                 select 'snippet' as kind, id from code_snippets where tenant_id = $1
                 union all
                 select 'knowledge' as kind, id from project_knowledge where tenant_id = $1) items
               where ($2::uuid is null or id > $2) order by id limit $3""",
            tenant_id,
            after,
            limit,
        )
    return [IndexItem(kind=r["kind"], id=r["id"]) for r in rows]
