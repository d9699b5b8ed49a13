"""One asyncpg pool per process, and the tenant-scoped transaction every repository uses.

Round trips: a transaction opens with one message (BEGIN and its tenant's set_config together, as one
simple query), then its statements, then COMMIT. A connection goes back to the pool without asyncpg's
reset query (another round trip per use): nothing of ours leaves session state on a pooled connection
(no session-level SET or set_config, no LISTEN: store/listen.py holds its own connection, no session
advisory lock: only pg_advisory_xact_lock), and every transaction sets `specmill.tenant_id` itself,
a tenant or none, so a pooled connection cannot carry one tenant's context into the next use.
"""

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


async def _released(conn: asyncpg.Connection) -> None:
    """What a connection's release runs after asyncpg's own cleanup (a rollback of a transaction left
    open, its listener callbacks dropped): nothing more, so a release costs no round trip (the module)."""


async def create_pool(settings: Settings, *, dsn: str | None = None) -> asyncpg.Pool:
    dsn = dsn or settings.app_dsn()
    return await asyncpg.create_pool(
        dsn,
        min_size=settings.db_pool_min,
        max_size=settings.db_pool_max,
        init=_init_connection,
        reset=_released,
        # Supabase's transaction pooler (pgbouncer) does not keep prepared statements.
        statement_cache_size=0 if ":6543" in dsn else 100,
    )


async def ping(pool: asyncpg.Pool, *, timeout: float) -> None:
    """A round trip to the database (health checks); raises when it cannot be made within `timeout`."""
    async with pool.acquire(timeout=timeout) as conn:
        await conn.fetchval("select 1")


def _begin(tenant_id: UUID | None) -> str:
    """BEGIN and the transaction's tenant (none: '') in one message. A simple query takes no parameters,
    so the value is written into the text: only a UUID's own canonical form (hex digits and dashes)."""
    if tenant_id is not None and not isinstance(tenant_id, UUID):
        raise TypeError(f"a tenant id is a UUID, not {type(tenant_id).__name__}")
    value = "" if tenant_id is None else str(tenant_id)
    return f"begin; select set_config('specmill.tenant_id', '{value}', true)"


@asynccontextmanager
async def _transaction(pool: asyncpg.Pool, tenant_id: UUID | None) -> AsyncIterator[asyncpg.Connection]:
    async with pool.acquire() as conn:
        await conn.execute(_begin(tenant_id))
        try:
            yield _connection(conn)
        except BaseException:
            if not conn.is_closed():
                await conn.execute("rollback")
            raise
        await conn.execute("commit")


@asynccontextmanager
async def tenant_tx(pool: asyncpg.Pool, tenant_id: UUID) -> AsyncIterator[asyncpg.Connection]:
    """A transaction whose Row Level Security context is `tenant_id`.

    set_config(..., is_local => true) lasts until the end of this transaction only, so a pooled
    connection never carries one tenant's context into another tenant's request. It is sent with
    BEGIN, in one round trip (the module's docstring).
    A value PostgreSQL refuses (NaN in jsonb, a NUL character) is a data exception: the
    transaction rolls back and it leaves as Invalid, the caller's fault, not a server error.
    """
    try:
        async with _transaction(pool, tenant_id) as conn:
            yield conn
    except asyncpg.DataError as err:
        reason = (str(err).splitlines() or [type(err).__name__])[0]
        raise Invalid(f"a value cannot be stored: {reason}") from err


@asynccontextmanager
async def plain_tx(pool: asyncpg.Pool) -> AsyncIterator[asyncpg.Connection]:
    """A transaction with no tenant: RLS then hides every tenant-owned row."""
    async with _transaction(pool, None) as conn:
        yield conn


def _connection(proxy: asyncpg.pool.PoolConnectionProxy) -> asyncpg.Connection:
    """A pooled connection as the Connection it stands for: asyncpg types it as its proxy, which forwards
    every method to the connection and is one for isinstance (asyncpg's ConnectionMeta)."""
    return cast(asyncpg.Connection, proxy)


def returned(value: T | None) -> T:
    """The row (fetchrow) or value (fetchval) of a statement that always gives one: an insert or upsert
    ... returning, an update of a row the transaction holds, an aggregate. asyncpg types them as optional."""
    assert value is not None, "the statement returned no row"
    return value
