"""Leases: how many of a tenant's expensive things may run at once, over all processes.

Two kinds, one table each: `generation` (pipeline generations and POST /api/generate calling a model)
and `event_stream` (open GET /api/events/stream connections). A lease whose holder died expires.
"""

from __future__ import annotations

from typing import Literal
from uuid import UUID

import asyncpg

from store.db import tenant_tx

Kind = Literal["generation", "event_stream"]
_TABLES: dict[str, tuple[str, int]] = {  # kind -> (table, advisory lock namespace)
    "generation": ("generation_leases", 42),
    "event_stream": ("event_stream_leases", 43),
}


async def acquire(
    pool: asyncpg.Pool, *, tenant_id: UUID, holder: str, limit: int, ttl_s: float, kind: Kind = "generation"
) -> bool:
    """Take (or renew) `holder`'s lease if the tenant has fewer than `limit` live ones; False otherwise."""
    table, lock = _TABLES[kind]
    async with tenant_tx(pool, tenant_id) as conn:
        # one acquirer per tenant at a time, so two cannot both see the last free slot
        await conn.execute("select pg_advisory_xact_lock(hashtextextended($1::text, $2))", str(tenant_id), lock)
        await conn.execute(f"delete from {table} where tenant_id = $1 and expires_at < now()", tenant_id)
        renewed = await conn.execute(
            f"update {table} set expires_at = now() + make_interval(secs => $3) where tenant_id = $1 and holder = $2",
            tenant_id,
            holder,
            float(ttl_s),
        )
        if renewed.endswith(" 1"):
            return True
        live = await conn.fetchval(f"select count(*) from {table} where tenant_id = $1", tenant_id)
        if live >= limit:
            return False
        await conn.execute(
            f"insert into {table} (holder, tenant_id, expires_at) values ($2, $1, now() + make_interval(secs => $3))",
            tenant_id,
            holder,
            float(ttl_s),
        )
        return True


async def renew(pool: asyncpg.Pool, *, tenant_id: UUID, holder: str, ttl_s: float, kind: Kind = "generation") -> bool:
    """Push an existing lease's expiry out; False when it is gone (expired and taken, or released)."""
    table, _ = _TABLES[kind]
    async with tenant_tx(pool, tenant_id) as conn:
        status = await conn.execute(
            f"update {table} set expires_at = now() + make_interval(secs => $3) where tenant_id = $1 and holder = $2",
            tenant_id,
            holder,
            float(ttl_s),
        )
    return status.endswith(" 1")


async def release(pool: asyncpg.Pool, *, tenant_id: UUID, holder: str, kind: Kind = "generation") -> None:
    table, _ = _TABLES[kind]
    async with tenant_tx(pool, tenant_id) as conn:
        await conn.execute(f"delete from {table} where tenant_id = $1 and holder = $2", tenant_id, holder)
