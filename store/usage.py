"""Usage per tenant (migration 20261206000018_usage.sql): one row per unit of work, keyed by the unit's own
`source`, so a retried activity that records it again changes nothing; read back summed by day, project
and model."""

from __future__ import annotations

import base64
import json
from datetime import date
from typing import Any
from uuid import UUID

import asyncpg

from models.usage import UsageKind, UsageRow
from store.db import tenant_tx
from store.errors import Invalid


async def record(
    pool: asyncpg.Pool,
    *,
    tenant_id: UUID,
    source: str,
    kind: UsageKind,
    project_id: UUID | None = None,
    model: str | None = None,
    tokens_in: int = 0,
    tokens_out: int = 0,
    units: int = 1,
    seconds: float = 0.0,
) -> bool:
    """Record one unit of work once: False when `source` was recorded already (a retry)."""
    async with tenant_tx(pool, tenant_id) as conn:
        status = await conn.execute(
            """insert into usage_records
                 (tenant_id, source, kind, project_id, model, tokens_in, tokens_out, units, seconds)
               values ($1, $2, $3, $4, $5, $6, $7, $8, $9) on conflict (tenant_id, source) do nothing""",
            tenant_id,
            source[:300],
            kind,
            project_id,
            model,
            max(0, tokens_in),
            max(0, tokens_out),
            max(0, units),
            max(0.0, seconds),
        )
    return status.endswith(" 1")


def _cursor(offset: int) -> str:
    return base64.urlsafe_b64encode(json.dumps({"offset": offset}).encode()).decode().rstrip("=")


def _offset(cursor: str | None) -> int:
    if cursor is None:
        return 0
    try:
        offset = json.loads(base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)))["offset"]
    except (ValueError, TypeError, KeyError) as err:
        raise Invalid("cursor is not one this API issued") from err
    if not isinstance(offset, int) or offset < 0:
        raise Invalid("cursor is not one this API issued")
    return offset


async def summary(
    pool: asyncpg.Pool,
    *,
    tenant_id: UUID,
    since: date | None,
    until: date | None,
    project_id: UUID | None,
    limit: int,
    cursor: str | None,
) -> tuple[list[UsageRow], str | None]:
    """The tenant's usage summed by day, project and model, newest day first (a page at a time)."""
    offset = _offset(cursor)
    async with tenant_tx(pool, tenant_id) as conn:
        rows = await conn.fetch(
            """select day, project_id, model,
                      count(*) filter (where kind = 'generation') as generations,
                      coalesce(sum(tokens_in), 0) as tokens_in, coalesce(sum(tokens_out), 0) as tokens_out,
                      coalesce(sum(units) filter (where kind = 'sandbox_run'), 0) as sandbox_runs,
                      coalesce(sum(seconds) filter (where kind = 'sandbox_run'), 0) as sandbox_seconds,
                      coalesce(sum(units) filter (where kind = 'embedding'), 0) as embeddings,
                      coalesce(sum(units) filter (where kind = 'snippet'), 0) as snippets
               from usage_records
               where tenant_id = $1 and ($2::date is null or day >= $2) and ($3::date is null or day <= $3)
                 and ($4::uuid is null or project_id = $4)
               group by day, project_id, model
               order by day desc, project_id nulls first, model nulls first
               offset $5 limit $6""",
            tenant_id,
            since,
            until,
            project_id,
            offset,
            limit + 1,
        )
    more = len(rows) > limit
    items = [UsageRow.model_validate(_row(r)) for r in rows[:limit]]
    return items, _cursor(offset + limit) if more else None


def _row(r: asyncpg.Record) -> dict[str, Any]:
    out = dict(r)
    out["sandbox_seconds"] = round(float(out["sandbox_seconds"]), 3)
    return out
