"""Leases: how many of a tenant's expensive things may run at once, over all processes.

One table per kind: `generation` (pipeline generations and POST /api/generate calling a model),
`sandbox` (a project's test round or a generation's candidate tests running in the sandbox) and
`event_stream` (open GET /api/events/stream connections). A lease whose holder died expires.
Below them, the admission of a project's run against the tenant's most running projects.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from typing import Literal
from uuid import UUID, uuid4

import asyncpg

from models.common import RUNNING_STATES
from store.db import returned, tenant_tx
from store.errors import Busy

Kind = Literal["generation", "sandbox", "event_stream"]
_TABLES: dict[str, tuple[str, int]] = {  # kind -> (table, advisory lock namespace)
    "generation": ("generation_leases", 42),
    "event_stream": ("event_stream_leases", 43),
    "sandbox": ("sandbox_leases", 44),
}


async def acquire(
    pool: asyncpg.Pool, *, tenant_id: UUID, holder: str, limit: int, ttl_s: float, kind: Kind = "generation"
) -> bool:
    """Take (or renew) `holder`'s lease if the tenant has fewer than `limit` live ones; False otherwise."""
    async with tenant_tx(pool, tenant_id) as conn:
        return await take(conn, tenant_id=tenant_id, holder=holder, limit=limit, ttl_s=ttl_s, kind=kind)


async def take(
    conn: asyncpg.Connection, *, tenant_id: UUID, holder: str, limit: int, ttl_s: float, kind: Kind = "generation"
) -> bool:
    """`acquire` inside the caller's transaction (the tenant's), which then holds the tenant's lock."""
    table, lock = _TABLES[kind]
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
    live = returned(await conn.fetchval(f"select count(*) from {table} where tenant_id = $1", tenant_id))
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


# --- running projects ---------------------------------------------------------------------
# A tenant's running projects are those in RUNNING_STATES, plus the runs being admitted right now (a
# run_admissions row: POST .../specs/complete between its check and the workflow's record of
# code_generation). Both admissions take the tenant's lock, so two cannot take the last place.

_RUNS_LOCK = 45


async def _running_elsewhere(conn: asyncpg.Connection, tenant_id: UUID, project_id: UUID) -> int:
    """Under the tenant's run lock: its running projects and admissions, this project's aside."""
    await conn.execute("select pg_advisory_xact_lock(hashtextextended($1::text, $2))", str(tenant_id), _RUNS_LOCK)
    await conn.execute("delete from run_admissions where tenant_id = $1 and expires_at < now()", tenant_id)
    count = await conn.fetchval(
        """select count(*) from (
             select id from projects where tenant_id = $1 and state = any($3::text[])
             union
             select project_id from run_admissions where tenant_id = $1
           ) running where id <> $2""",
        tenant_id,
        project_id,
        [s.value for s in RUNNING_STATES],
    )
    return returned(count)


def _too_many(limit: int) -> Busy:
    return Busy(
        f"the tenant already runs {limit} project(s), its most at once (MAX_RUNNING_PROJECTS_PER_TENANT): "
        "start this run once one of them has ended",
        extra={"setting": "MAX_RUNNING_PROJECTS_PER_TENANT", "limit": limit},
    )


async def check_run_slot(conn: asyncpg.Connection, *, tenant_id: UUID, project_id: UUID, limit: int) -> None:
    """Inside the transaction that moves the project into a run (store/runs.py claim_rerun): Busy when
    the tenant already runs `limit` other projects."""
    if await _running_elsewhere(conn, tenant_id, project_id) >= limit:
        raise _too_many(limit)


@contextlib.asynccontextmanager
async def admitting_run(
    pool: asyncpg.Pool, *, tenant_id: UUID, project_id: UUID, limit: int, ttl_s: float
) -> AsyncIterator[None]:
    """Hold a place for the project's run while the body starts it (Busy when the tenant already runs
    `limit` other projects); the place is given back after the body, when the project's own state counts."""
    holder = f"{project_id}/{uuid4()}"
    async with tenant_tx(pool, tenant_id) as conn:
        if await _running_elsewhere(conn, tenant_id, project_id) >= limit:
            raise _too_many(limit)
        await conn.execute(
            """insert into run_admissions (holder, tenant_id, project_id, expires_at)
               values ($1, $2, $3, now() + make_interval(secs => $4))""",
            holder,
            tenant_id,
            project_id,
            float(ttl_s),
        )
    try:
        yield
    finally:
        async with tenant_tx(pool, tenant_id) as conn:
            await conn.execute("delete from run_admissions where tenant_id = $1 and holder = $2", tenant_id, holder)
