"""Invitations to join a tenant with a role. Only a SHA-256 of each token is stored, as for API keys
(store/tenants.py); a token is used at most once, before it expires, unless revoked.

Using one (`accept`) happens before its tenant is known: `lookup` finds it by hash through a definer
function (store/migrations/20261206000020_invitations.sql); the user is then made and the invitation
marked used in one transaction under its tenant's RLS context, the mark conditional on it being still
unused, unrevoked and unexpired, so two uses at once make one user.
"""

from __future__ import annotations

import hashlib
import re
import secrets
from datetime import datetime, timezone
from uuid import UUID, uuid4

import asyncpg

from models.auth import InvitationCreated, InvitationPublic, Membership
from models.common import Role
from store.db import returned, tenant_tx
from store.errors import Conflict, Forbidden, Gone, NotFound
from store.paging import keyset, limit_sql, page
from store.users import lock_subject, supabase_memberships

TOKEN_PREFIX = "smi_"
# smi_<8 hex: the prefix shown in listings>_<token_urlsafe(32)>; anything else is no invitation of ours
_TOKEN_FORMAT = re.compile(r"smi_([0-9a-f]{8})_[A-Za-z0-9_-]{32,64}")
MAX_PENDING = 100  # unused, unrevoked, unexpired invitations a tenant may hold at once
_COLUMNS = "id, tenant_id, role, email, prefix, created_by, created_at, expires_at, used_at, used_by, revoked_at"
_NOW = "(now() at time zone 'utc')"


def _hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def _utcnow() -> datetime:
    return datetime.now(timezone.utc).replace(tzinfo=None)  # the columns hold UTC without a zone


async def create_invitation(
    pool: asyncpg.Pool, *, tenant_id: UUID, created_by: UUID, role: Role, email: str | None, expires_in_seconds: int
) -> InvitationCreated:
    """Conflict once the tenant holds MAX_PENDING pending invitations (creators of one tenant take turns)."""
    prefix = secrets.token_hex(4)
    token = f"{TOKEN_PREFIX}{prefix}_{secrets.token_urlsafe(32)}"
    async with tenant_tx(pool, tenant_id) as conn:
        await conn.execute("select pg_advisory_xact_lock(hashtextextended($1::text, 47))", str(tenant_id))
        pending = returned(
            await conn.fetchval(
                f"""select count(*) from invitations where tenant_id = $1 and used_at is null
                    and revoked_at is null and expires_at > {_NOW}""",
                tenant_id,
            )
        )
        if pending >= MAX_PENDING:
            raise Conflict(f"the tenant already has {pending} pending invitations, the most allowed: revoke one first")
        row = await conn.fetchrow(
            f"""insert into invitations (id, tenant_id, role, email, prefix, token_hash, created_by, expires_at)
                values ($1, $2, $3, $4, $5, $6, $7, {_NOW} + make_interval(secs => $8))
                returning {_COLUMNS}""",
            uuid4(),
            tenant_id,
            role.value,
            email,
            prefix,
            _hash(token),
            created_by,
            float(expires_in_seconds),
        )
    return InvitationCreated.model_validate({**dict(returned(row)), "token": token})


async def list_invitations(
    pool: asyncpg.Pool, *, tenant_id: UUID, limit: int | None = None, cursor: str | None = None
) -> tuple[list[InvitationPublic], str | None]:
    """The tenant's invitations (used, revoked and expired ones too), oldest first; never a token."""
    args: list = [tenant_id]
    after = keyset(cursor, args)
    async with tenant_tx(pool, tenant_id) as conn:
        rows = await conn.fetch(
            f"""select {_COLUMNS} from invitations where tenant_id = $1 and {after}
                order by created_at, id {limit_sql(limit, args)}""",
            *args,
        )
    rows, next_cursor = page(rows, limit)
    return [InvitationPublic.model_validate(dict(r)) for r in rows], next_cursor


async def get_invitation(pool: asyncpg.Pool, *, tenant_id: UUID, invitation_id: UUID) -> InvitationPublic:
    async with tenant_tx(pool, tenant_id) as conn:
        row = await conn.fetchrow(
            f"select {_COLUMNS} from invitations where tenant_id = $1 and id = $2", tenant_id, invitation_id
        )
    if row is None:
        raise NotFound(f"invitation {invitation_id} not found")
    return InvitationPublic.model_validate(dict(row))


async def revoke_invitation(pool: asyncpg.Pool, *, tenant_id: UUID, invitation_id: UUID) -> InvitationPublic:
    """Revoking a used invitation changes nothing (its user stays); revoking twice keeps the first time."""
    async with tenant_tx(pool, tenant_id) as conn:
        row = await conn.fetchrow(
            f"""update invitations set revoked_at = coalesce(revoked_at, {_NOW})
                where tenant_id = $1 and id = $2 returning {_COLUMNS}""",
            tenant_id,
            invitation_id,
        )
    if row is None:
        raise NotFound(f"invitation {invitation_id} not found")
    return InvitationPublic.model_validate(dict(row))


async def lookup(pool: asyncpg.Pool, token: str) -> asyncpg.Record:
    """The invitation of a token, usable now: NotFound for no invitation of ours, Gone for a used,
    revoked or expired one."""
    row = None
    if _TOKEN_FORMAT.fullmatch(token.strip()):
        async with pool.acquire() as conn:
            row = await conn.fetchrow("select * from specmill_lookup_invitation($1)", _hash(token.strip()))
    if row is None:
        raise NotFound("invitation not found: check its token (POST /api/invitations shows it once)")
    if row["used_at"] is not None:
        raise Gone("this invitation was already used: ask for a new one")
    if row["revoked_at"] is not None:
        raise Gone("this invitation was revoked: ask for a new one")
    if row["expires_at"] <= _utcnow():
        raise Gone("this invitation has expired: ask for a new one")
    return row


def check_email(invitation: asyncpg.Record, email: str | None) -> None:
    """An invitation for an email takes only that address (None: the user's address is not confirmed)."""
    wanted = invitation["email"]
    if wanted is None:
        return
    if email is None:
        raise Forbidden("this invitation is for one email address: confirm yours first, then sign in")
    if email.strip().lower() != wanted.strip().lower():
        raise Forbidden("this invitation is for another email address")


async def accept(pool: asyncpg.Pool, *, token: str, supabase_sub: str, email: str | None, user_name: str) -> Membership:
    """The subject joins the invitation's tenant as a new user with its role, and the invitation is used.
    `email`: the user's confirmed address (None if unconfirmed). Nothing changes when it cannot be used
    (NotFound, Gone, Forbidden) or the subject is already in that tenant (Conflict)."""
    invitation = await lookup(pool, token)
    check_email(invitation, email)
    tenant_id, user_id = invitation["tenant_id"], uuid4()
    async with tenant_tx(pool, tenant_id) as conn:
        await lock_subject(conn, supabase_sub)
        if any(m.tenant_id == tenant_id for m in await supabase_memberships(conn, supabase_sub)):
            raise Conflict("this user is already in the invitation's tenant: sign in without the invitation")
        role = await conn.fetchval(
            f"""update invitations set used_at = {_NOW}
                where tenant_id = $1 and id = $2 and used_at is null and revoked_at is null and expires_at > {_NOW}
                returning role""",
            tenant_id,
            invitation["id"],
        )
        if role is None:  # used, revoked or expired since the lookup: the whole transaction rolls back
            raise Gone("this invitation was used, revoked or has expired meanwhile: ask for a new one")
        await conn.execute(
            "insert into users (id, tenant_id, name, role, supabase_sub) values ($1, $2, $3, $4, $5)",
            user_id,
            tenant_id,
            user_name,
            role,
            supabase_sub,
        )
        await conn.execute(
            "update invitations set used_by = $3 where tenant_id = $1 and id = $2", tenant_id, invitation["id"], user_id
        )
    return Membership(tenant_id=tenant_id, user_id=user_id, role=Role(role))
