"""One asyncpg pool per process, and the tenant-scoped transaction every repository uses."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import TypeVar, cast
from uuid import UUID

import asyncpg

from models.settings import Settings
from store.errors import Invalid

T = TypeVar("T")


async def _init_connection(conn: asyncpg.Connection) -> None:
    for typ in ("json", "jsonb"):
        await conn.set_type_codec(typ, encoder=json.dumps, decoder=json.loads, schema="pg_catalog")


async def create_pool(settings: Settings, *, dsn: str | None = None) -> asyncpg.Pool:
    dsn = dsn or settings.app_dsn()
    return await asyncpg.create_pool(
        dsn,
        min_size=settings.db_pool_min,
        max_size=settings.db_pool_max,
        init=_init_connection,
        # Supabase's transaction pooler (pgbouncer) does not keep prepared statements.
        statement_cache_size=0 if ":6543" in dsn else 100,
    )


async def ping(pool: asyncpg.Pool, *, timeout: float) -> None:
    """A round trip to the database (health checks); raises when it cannot be made within `timeout`."""
    async with pool.acquire(timeout=timeout) as conn:
        await conn.fetchval("select 1")


@asynccontextmanager
async def tenant_tx(pool: asyncpg.Pool, tenant_id: UUID) -> AsyncIterator[asyncpg.Connection]:
    """A transaction whose Row Level Security context is `tenant_id`.

    set_config(..., is_local => true) lasts until the end of this transaction only, so a pooled
    connection never carries one tenant's context into another tenant's request.
    A value PostgreSQL refuses (NaN in jsonb, a NUL character) is a data exception: the
    transaction rolls back and it leaves as Invalid, the caller's fault, not a server error.
    """
    try:
        async with pool.acquire() as conn:
            async with conn.transaction():
                await conn.execute("select set_config('specmill.tenant_id', $1, true)", str(tenant_id))
                yield _connection(conn)
    except asyncpg.DataError as err:
        reason = (str(err).splitlines() or [type(err).__name__])[0]
        raise Invalid(f"a value cannot be stored: {reason}") from err


@asynccontextmanager
async def plain_tx(pool: asyncpg.Pool) -> AsyncIterator[asyncpg.Connection]:
    """A transaction with no tenant: RLS then hides every tenant-owned row."""
    async with pool.acquire() as conn:
        async with conn.transaction():
            yield _connection(conn)


def _connection(proxy: asyncpg.pool.PoolConnectionProxy) -> asyncpg.Connection:
    """A pooled connection as the Connection it stands for: asyncpg types it as its proxy, which forwards
    every method to the connection and is one for isinstance (asyncpg's ConnectionMeta)."""
    return cast(asyncpg.Connection, proxy)


def returned(value: T | None) -> T:
    """The row (fetchrow) or value (fetchval) of a statement that always gives one: an insert or upsert
    ... returning, an update of a row the transaction holds, an aggregate. asyncpg types them as optional."""
    assert value is not None, "the statement returned no row"
    return value
