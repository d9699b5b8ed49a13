"""The transactional outbox: events are written on the connection of the change that caused them."""
from __future__ import annotations

from typing import Any
from uuid import UUID, uuid4

import asyncpg

from models.events import EventPayload


async def emit(
    conn: asyncpg.Connection,
    *,
    tenant_id: UUID,
    type: str,
    payload: EventPayload,
    subject_id: UUID | None = None,
    dedup_key: str | None = None,
) -> bool:
    """Insert one event; with a dedup_key, a second insert of the same key is a no-op (False)."""
    status = await conn.execute(
        """insert into events (id, tenant_id, type, schema, subject_id, payload, dedup_key)
           values ($1, $2, $3, $4, $5, $6, $7)
           on conflict (dedup_key) do nothing""",
        uuid4(), tenant_id, type, payload.schema_name, subject_id, payload.model_dump(mode="json"), dedup_key,
    )
    return status.endswith("1")


async def list_events(
    conn: asyncpg.Connection, *, tenant_id: UUID, after: int, limit: int, types: list[str] | None = None
) -> list[dict[str, Any]]:
    rows = await conn.fetch(
        """select seq, id, type, schema, subject_id, payload, created_at from events
           where tenant_id = $1 and seq > $2 and ($3::text[] is null or type = any($3))
           order by seq limit $4""",
        tenant_id, after, types, limit,
    )
    return [dict(r) for r in rows]
