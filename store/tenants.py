"""Tenants, users and API keys. Only a SHA-256 of each API key is stored."""

from __future__ import annotations

import hashlib
import re
import secrets
from uuid import UUID, uuid4

import asyncpg

from models.auth import ApiKeyCreated, ApiKeyPublic, TenantCreated
from models.common import Role
from store.db import returned, tenant_tx
from store.errors import Conflict, NotFound
from store.paging import keyset, limit_sql, page

KEY_PREFIX = "sm_"
# A revocation NOTIFYs this channel with the key's id at commit: gateways drop the key from their caches
# of lookups (api/security/keycache.py).
REVOKED_CHANNEL = "specmill_api_keys"
# sm_<8 hex: the key's prefix, shown in listings>_<token_urlsafe(32)>; anything else is no key of ours
_KEY_FORMAT = re.compile(r"sm_([0-9a-f]{8})_[A-Za-z0-9_-]{32,64}")


def key_prefix(key: str) -> str | None:
    """The prefix of a well-formed API key, None for anything that cannot be one (no lookup needed)."""
    m = _KEY_FORMAT.fullmatch(key)
    return m.group(1) if m else None


def hash_key(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def _new_key() -> tuple[str, str]:
    prefix = secrets.token_hex(4)
    return prefix, f"{KEY_PREFIX}{prefix}_{secrets.token_urlsafe(32)}"


async def tenant_exists(pool: asyncpg.Pool, tenant_id: UUID) -> bool:
    async with tenant_tx(pool, tenant_id) as conn:
        return bool(await conn.fetchval("select 1 from tenants where id = $1", tenant_id))


async def create_tenant(pool: asyncpg.Pool, *, name: str, owner_name: str = "owner") -> TenantCreated:
    """A tenant, its owner user and an owner API key, in one transaction."""
    tenant_id, user_id = uuid4(), uuid4()
    async with tenant_tx(pool, tenant_id) as conn:
        await conn.execute("insert into tenants (id, name) values ($1, $2)", tenant_id, name)
        await conn.execute(
            "insert into users (id, tenant_id, name, role) values ($1, $2, $3, 'owner')",
            user_id,
            tenant_id,
            owner_name,
        )
        created = await _insert_key(conn, tenant_id=tenant_id, user_id=user_id, role=Role.owner, name="owner")
    return TenantCreated(tenant_id=tenant_id, user_id=user_id, api_key=created.api_key, key_id=created.id)


async def _insert_key(
    conn: asyncpg.Connection, *, tenant_id: UUID, user_id: UUID, role: Role, name: str
) -> ApiKeyCreated:
    key_id = uuid4()
    prefix, key = _new_key()
    await conn.execute(
        """insert into api_keys (id, tenant_id, user_id, name, prefix, key_hash, role)
           values ($1, $2, $3, $4, $5, $6, $7)""",
        key_id,
        tenant_id,
        user_id,
        name,
        prefix,
        hash_key(key),
        role.value,
    )
    return ApiKeyCreated(id=key_id, tenant_id=tenant_id, user_id=user_id, role=role, api_key=key)


async def create_api_key(
    pool: asyncpg.Pool,
    *,
    tenant_id: UUID,
    role: Role,
    name: str | None = None,
    user_id: UUID | None = None,
    user_name: str | None = None,
    max_live: int | None = None,
) -> ApiKeyCreated:
    """A key for an existing user of the tenant, or for a new user of that role.

    With `max_live`, a tenant that already holds that many unrevoked keys gets Conflict (creators of
    one tenant take turns, so two cannot both pass the count)."""
    async with tenant_tx(pool, tenant_id) as conn:
        if not await conn.fetchval("select 1 from tenants where id = $1", tenant_id):
            raise NotFound(f"tenant {tenant_id} not found")
        if max_live is not None:
            await conn.execute("select pg_advisory_xact_lock(hashtextextended($1::text, 44))", str(tenant_id))
            live = returned(
                await conn.fetchval(
                    "select count(*) from api_keys where tenant_id = $1 and revoked_at is null", tenant_id
                )
            )
            if live >= max_live:
                raise Conflict(
                    f"the tenant already has {live} live API keys, the most allowed "
                    f"(MAX_API_KEYS_PER_TENANT={max_live}): revoke one first"
                )
        if user_id is None:
            user_id = uuid4()
            await conn.execute(
                "insert into users (id, tenant_id, name, role) values ($1, $2, $3, $4)",
                user_id,
                tenant_id,
                user_name or f"{role.value}-{str(user_id)[:8]}",
                role.value,
            )
        else:
            user_role = await conn.fetchval(
                "select role from users where tenant_id = $1 and id = $2", tenant_id, user_id
            )
            if user_role is None:
                raise NotFound(f"user {user_id} not found")
            if not Role(user_role).at_least(role):
                raise Conflict(f"a key cannot have more rights than its user ({user_role})")
        return await _insert_key(conn, tenant_id=tenant_id, user_id=user_id, role=role, name=name or role.value)


async def list_api_keys(
    pool: asyncpg.Pool, *, tenant_id: UUID, limit: int | None = None, cursor: str | None = None
) -> tuple[list[ApiKeyPublic], str | None]:
    """The tenant's keys (revoked ones too), oldest first: one page, and the next page's cursor."""
    args: list = [tenant_id]
    after = keyset(cursor, args)
    async with tenant_tx(pool, tenant_id) as conn:
        rows = await conn.fetch(
            f"""select id, tenant_id, user_id, name, prefix, role, created_at, revoked_at
                from api_keys where tenant_id = $1 and {after} order by created_at, id {limit_sql(limit, args)}""",
            *args,
        )
    rows, next_cursor = page(rows, limit)
    return [ApiKeyPublic.model_validate(dict(r)) for r in rows], next_cursor


async def get_api_key(pool: asyncpg.Pool, *, tenant_id: UUID, key_id: UUID) -> ApiKeyPublic:
    async with tenant_tx(pool, tenant_id) as conn:
        row = await conn.fetchrow(
            """select id, tenant_id, user_id, name, prefix, role, created_at, revoked_at
               from api_keys where tenant_id = $1 and id = $2""",
            tenant_id,
            key_id,
        )
    if row is None:
        raise NotFound(f"api key {key_id} not found")
    return ApiKeyPublic.model_validate(dict(row))


async def revoke_api_key(pool: asyncpg.Pool, *, tenant_id: UUID, key_id: UUID) -> ApiKeyPublic:
    """Revoke the key (again: a no-op that notifies again), and NOTIFY REVOKED_CHANNEL when it commits."""
    async with tenant_tx(pool, tenant_id) as conn:
        row = await conn.fetchrow(
            """update api_keys set revoked_at = coalesce(revoked_at, now() at time zone 'utc')
               where tenant_id = $1 and id = $2
               returning id, tenant_id, user_id, name, prefix, role, created_at, revoked_at""",
            tenant_id,
            key_id,
        )
        if row is not None:
            await conn.execute("select pg_notify($1, $2)", REVOKED_CHANNEL, str(key_id))
    if row is None:
        raise NotFound(f"api key {key_id} not found")
    return ApiKeyPublic.model_validate(dict(row))


async def lookup_api_key(pool: asyncpg.Pool, key: str) -> asyncpg.Record | None:
    """The key's row, found by hash through the one definer function that precedes tenant context."""
    if key_prefix(key) is None:
        return None
    async with pool.acquire() as conn:
        return await conn.fetchrow("select * from specmill_lookup_api_key($1)", hash_key(key))


async def tenants_with_knowledge(pool: asyncpg.Pool) -> list[UUID]:
    """Every tenant with a snippet or a knowledge entry (across tenants: a SECURITY DEFINER function that
    answers only the ids), for the knowledge worker's rebuild of its store."""
    async with pool.acquire() as conn:
        return [r[0] for r in await conn.fetch("select specmill_tenants_with_knowledge()")]
