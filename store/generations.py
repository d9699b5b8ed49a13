"""Generations: one row per POST /api/generate or pipeline generation; the result and its code.generated
event land together. GET /api/generations lists them newest first."""

from __future__ import annotations

from typing import Any
from uuid import UUID

import asyncpg

from models.events import code_generation_result
from models.generation import GenerationPublic, GenerationResult, GenerationStatus, GenerationSummary, SpecSnapshot
from store import events
from store.db import tenant_tx
from store.errors import NotFound
from store.paging import keyset, page

# the tokens of every candidate of every round, summed from the stored result
_TOKENS = """coalesce((select sum((c->>'{0}')::bigint) from jsonb_array_elements(
    case when jsonb_typeof(result->'candidates') = 'array' then result->'candidates' else '[]'::jsonb end) c), 0)"""
_SUMMARY_COLS = (
    "id, status, model, techniques, project_id, instance_id, error, created_at, updated_at, "
    f"{_TOKENS.format('tokens_in')} as tokens_in, {_TOKENS.format('tokens_out')} as tokens_out"
)
_COLS = f"{_SUMMARY_COLS}, result, request"


def _model(row: asyncpg.Record) -> GenerationPublic:
    return GenerationPublic.model_validate(dict(row))


async def create_generation(
    pool: asyncpg.Pool,
    *,
    generation_id: UUID,
    tenant_id: UUID,
    user_id: UUID,
    model: str,
    techniques: list[str],
    request: dict[str, Any],
    project_id: UUID | None = None,
    instance_id: UUID | None = None,
) -> None:
    """The row of a generation that starts (`project_id`: the project it is made for, if any)."""
    async with tenant_tx(pool, tenant_id) as conn:
        await insert_generation(
            conn,
            generation_id=generation_id,
            tenant_id=tenant_id,
            user_id=user_id,
            model=model,
            techniques=techniques,
            request=request,
            project_id=project_id,
            instance_id=instance_id,
        )


async def insert_generation(
    conn: asyncpg.Connection,
    *,
    generation_id: UUID,
    tenant_id: UUID,
    user_id: UUID,
    model: str,
    techniques: list[str],
    request: dict[str, Any],
    project_id: UUID | None = None,
    instance_id: UUID | None = None,
) -> None:
    """`create_generation` inside the caller's transaction (the tenant's)."""
    await conn.execute(
        """insert into generations (id, tenant_id, user_id, model, techniques, request, status,
                                    project_id, instance_id)
           values ($1, $2, $3, $4, $5, $6, 'running', $7, $8) on conflict (id) do nothing""",
        generation_id,
        tenant_id,
        user_id,
        model,
        techniques,
        request,
        project_id,
        instance_id,
    )


async def list_generations(
    pool: asyncpg.Pool,
    *,
    tenant_id: UUID,
    project_id: UUID | None,
    status: GenerationStatus | None,
    limit: int,
    cursor: str | None,
) -> tuple[list[GenerationSummary], str | None]:
    """The tenant's generations, newest first (of one project, in one status), a page at a time."""
    args: list = [tenant_id, project_id, status]
    before = keyset(cursor, args, descending=True)
    args.append(limit + 1)
    async with tenant_tx(pool, tenant_id) as conn:
        rows = await conn.fetch(
            f"""select {_SUMMARY_COLS} from generations
                where tenant_id = $1 and ($2::uuid is null or project_id = $2) and ($3::text is null or status = $3)
                  and {before}
                order by created_at desc, id desc limit ${len(args)}""",
            *args,
        )
    rows, next_cursor = page(rows, limit)
    return [GenerationSummary.model_validate(dict(r)) for r in rows], next_cursor


async def get_generation(pool: asyncpg.Pool, *, tenant_id: UUID, generation_id: UUID) -> GenerationPublic:
    async with tenant_tx(pool, tenant_id) as conn:
        row = await conn.fetchrow(
            f"select {_COLS} from generations where tenant_id = $1 and id = $2", tenant_id, generation_id
        )
    if row is None:
        raise NotFound(f"generation {generation_id} not found")
    return _model(row)


async def finish_generation(
    pool: asyncpg.Pool,
    *,
    generation_id: UUID,
    tenant_id: UUID,
    spec: SpecSnapshot,
    model: str,
    techniques: list[str],
    result: GenerationResult | None,
    error: str | None = None,
) -> None:
    """Store the outcome and its code.generated event once (a retried activity changes nothing); the
    event names the row's project, so a project's event filter finds its generations."""
    gid = generation_id
    async with tenant_tx(pool, tenant_id) as conn:
        status = result.status if result else "failed"
        project_id = await conn.fetchval(
            """update generations set status = $3, result = $4, error = $5, updated_at = now() at time zone 'utc'
               where tenant_id = $1 and id = $2 returning project_id""",
            tenant_id,
            gid,
            status,
            result.model_dump(mode="json") if result else None,
            error,
        )
        await events.emit(
            conn,
            tenant_id=tenant_id,
            type="code.generated",
            subject_id=gid,
            dedup_key=f"generation-{gid}:done",
            payload=code_generation_result(
                generation_id=gid,
                tenant_id=tenant_id,
                status=status,
                model=model,
                techniques=techniques,
                template_id=spec.template_id,
                instance_id=spec.instance_id,
                project_id=project_id,
                values_hash=spec.values_hash,
                files=[f.path for f in result.files] if result else [],
                parses=result.parses if result else None,
                retrieved_snippets=result.provenance.retrieved_snippets if result else [],
            ),
        )
