"""Generation leases: how many of a tenant's pipeline generations may call a model at once."""
from __future__ import annotations

from uuid import UUID

import asyncpg

from store.db import tenant_tx


async def acquire(pool: asyncpg.Pool, *, tenant_id: UUID, holder: str, limit: int, ttl_s: float) -> bool:
    """Take (or renew) `holder`'s lease if the tenant has fewer than `limit` live ones; False otherwise."""
    async with tenant_tx(pool, tenant_id) as conn:
        # one acquirer per tenant at a time, so two cannot both see the last free slot
        await conn.execute("select pg_advisory_xact_lock(hashtextextended($1::text, 42))", str(tenant_id))
        await conn.execute("delete from generation_leases where tenant_id = $1 and expires_at < now()", tenant_id)
        renewed = await conn.execute(
            "update generation_leases set expires_at = now() + make_interval(secs => $3) "
            "where tenant_id = $1 and holder = $2", tenant_id, holder, float(ttl_s))
        if renewed.endswith(" 1"):
            return True
        live = await conn.fetchval("select count(*) from generation_leases where tenant_id = $1", tenant_id)
        if live >= limit:
            return False
        await conn.execute(
            "insert into generation_leases (holder, tenant_id, expires_at) "
            "values ($2, $1, now() + make_interval(secs => $3))", tenant_id, holder, float(ttl_s))
        return True


async def release(pool: asyncpg.Pool, *, tenant_id: UUID, holder: str) -> None:
    async with tenant_tx(pool, tenant_id) as conn:
        await conn.execute("delete from generation_leases where tenant_id = $1 and holder = $2", tenant_id, holder)
