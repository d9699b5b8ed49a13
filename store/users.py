"""Users of a tenant and the Supabase Auth subjects linked to them (tenant isolation by RLS).

A subject's tenants are found across tenants by one definer function (specmill_supabase_memberships,
store/migrations/20261206000020_invitations.sql); everything else runs under one tenant's RLS context.
Whatever links a subject to a tenant (a first sign-in's new tenant, an invitation) first takes the
subject's lock, so two first sign-ins of one subject at once cannot both make a tenant.
"""

from __future__ import annotations

from uuid import UUID, uuid4

import asyncpg

from models.auth import Membership, UserPublic
from models.common import Role
from store.db import returned, tenant_tx
from store.errors import Conflict, NotFound

_COLUMNS = "id, tenant_id, name, role, supabase_sub, created_at"


async def create_user(
    pool: asyncpg.Pool, *, tenant_id: UUID, role: Role, name: str | None = None, supabase_sub: str | None = None
) -> UserPublic:
    user_id = uuid4()
    try:
        async with tenant_tx(pool, tenant_id) as conn:
            if not await conn.fetchval("select 1 from tenants where id = $1", tenant_id):
                raise NotFound(f"tenant {tenant_id} not found")
            row = await conn.fetchrow(
                f"""insert into users (id, tenant_id, name, role, supabase_sub) values ($1, $2, $3, $4, $5)
                    returning {_COLUMNS}""",
                user_id,
                tenant_id,
                name or f"{role.value}-{str(user_id)[:8]}",
                role.value,
                supabase_sub,
            )
    except asyncpg.UniqueViolationError as err:
        raise Conflict(f"Supabase subject {supabase_sub!r} is already linked to a user of this tenant") from err
    return UserPublic.model_validate(dict(returned(row)))


async def link_supabase_subject(
    pool: asyncpg.Pool, *, tenant_id: UUID, user_id: UUID, supabase_sub: str | None
) -> UserPublic:
    """Link (or, with None, unlink) a Supabase subject to an existing user; unlinking locks them out."""
    try:
        async with tenant_tx(pool, tenant_id) as conn:
            row = await conn.fetchrow(
                f"update users set supabase_sub = $3 where tenant_id = $1 and id = $2 returning {_COLUMNS}",
                tenant_id,
                user_id,
                supabase_sub,
            )
    except asyncpg.UniqueViolationError as err:
        raise Conflict(f"Supabase subject {supabase_sub!r} is already linked to a user of this tenant") from err
    if row is None:
        raise NotFound(f"user {user_id} not found")
    return UserPublic.model_validate(dict(row))


async def find_supabase_user(pool: asyncpg.Pool, *, tenant_id: UUID, supabase_sub: str) -> UserPublic | None:
    async with tenant_tx(pool, tenant_id) as conn:
        row = await conn.fetchrow(
            f"select {_COLUMNS} from users where tenant_id = $1 and supabase_sub = $2", tenant_id, supabase_sub
        )
    return UserPublic.model_validate(dict(row)) if row is not None else None


async def supabase_memberships(conn_or_pool: asyncpg.Pool | asyncpg.Connection, supabase_sub: str) -> list[Membership]:
    """Every tenant the subject is linked to, as (tenant, user, role), oldest link first."""
    rows = await conn_or_pool.fetch("select * from specmill_supabase_memberships($1)", supabase_sub)
    return [Membership.model_validate(dict(r)) for r in rows]


async def lock_subject(conn: asyncpg.Connection, supabase_sub: str) -> None:
    """Until the transaction ends, no other transaction links this subject anywhere."""
    await conn.execute("select pg_advisory_xact_lock(hashtextextended($1::text, 46))", f"supabase:{supabase_sub}")


async def create_tenant_for_subject(
    pool: asyncpg.Pool, *, supabase_sub: str, tenant_name: str, user_name: str
) -> Membership | None:
    """A first sign-in: a new tenant whose owner is the subject's new user. None, and nothing made, when the
    subject is linked to a tenant by now (another sign-in of it got there first)."""
    tenant_id, user_id = uuid4(), uuid4()
    async with tenant_tx(pool, tenant_id) as conn:
        await lock_subject(conn, supabase_sub)
        if await supabase_memberships(conn, supabase_sub):
            return None
        await conn.execute("insert into tenants (id, name) values ($1, $2)", tenant_id, tenant_name)
        await conn.execute(
            "insert into users (id, tenant_id, name, role, supabase_sub) values ($1, $2, $3, 'owner', $4)",
            user_id,
            tenant_id,
            user_name,
            supabase_sub,
        )
    return Membership(tenant_id=tenant_id, user_id=user_id, role=Role.owner)
