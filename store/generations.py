"""Generations: one row per POST /api/generate; the result and its code.generated event land together."""

from __future__ import annotations

from typing import Any
from uuid import UUID

import asyncpg

from models.events import code_generation_result
from models.generation import GenerationPublic, GenerationResult, SpecSnapshot
from store import events
from store.db import tenant_tx
from store.errors import NotFound

_COLS = "id, status, model, techniques, result, error, created_at, updated_at"


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
) -> None:
    async with tenant_tx(pool, tenant_id) as conn:
        await conn.execute(
            """insert into generations (id, tenant_id, user_id, model, techniques, request, status)
               values ($1, $2, $3, $4, $5, $6, 'running') on conflict (id) do nothing""",
            generation_id,
            tenant_id,
            user_id,
            model,
            techniques,
            request,
        )


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
    """Store the outcome and its code.generated event once (a retried activity changes nothing)."""
    gid = generation_id
    async with tenant_tx(pool, tenant_id) as conn:
        status = result.status if result else "failed"
        await conn.execute(
            """update generations set status = $3, result = $4, error = $5, updated_at = now() at time zone 'utc'
               where tenant_id = $1 and id = $2""",
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
                values_hash=spec.values_hash,
                files=[f.path for f in result.files] if result else [],
                parses=result.parses if result else None,
                retrieved_snippets=result.provenance.retrieved_snippets if result else [],
            ),
        )
