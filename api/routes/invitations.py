"""/api/invitations: admins and owners invite people into their tenant with a role (store/invitations.py).

An invitation grants at most its creator's role (an admin cannot invite an owner), and only a role its
revoker could grant may be revoked. Its token is shown once, by the answer of POST; the invited person
passes it as `invitation` to POST /auth/signup or /auth/login (api/routes/signin.py).
"""

from __future__ import annotations

from uuid import UUID

from fastapi import APIRouter, HTTPException

from api.deps import Cursor, Limit, PoolDep, PrincipalDep
from models.auth import InvitationCreate, InvitationCreated, InvitationPublic, Principal
from models.common import Page, Role
from store import invitations

router = APIRouter(tags=["invitations"])


def _may_grant(principal: Principal, role: Role) -> None:
    if not principal.role.at_least(role):
        raise HTTPException(
            403,
            f"inviting as {role.value} needs the {role.value} role (an admin cannot invite an owner); "
            f"the caller is {principal.role.value}",
        )


@router.get("/invitations", response_model=Page[InvitationPublic])
async def list_invitations(pool: PoolDep, p: PrincipalDep, limit: Limit = 50, cursor: Cursor = None):
    """The tenant's invitations, used, revoked and expired ones too (never their tokens), oldest first."""
    items, nxt = await invitations.list_invitations(pool, tenant_id=p.tenant_id, limit=limit, cursor=cursor)
    return Page(items=items, next_cursor=nxt)


@router.post("/invitations", response_model=InvitationCreated, status_code=201)
async def create_invitation(body: InvitationCreate, pool: PoolDep, p: PrincipalDep):
    """`token` is shown here only. 409 once the tenant holds 100 pending invitations."""
    _may_grant(p, body.role)
    return await invitations.create_invitation(
        pool,
        tenant_id=p.tenant_id,
        created_by=p.user_id,
        role=body.role,
        email=body.email,
        expires_in_seconds=body.expires_in_seconds,
    )


@router.delete("/invitations/{invitation_id}", response_model=InvitationPublic)
async def revoke_invitation(invitation_id: UUID, pool: PoolDep, p: PrincipalDep):
    """From now on it cannot be used; a user it already made stays."""
    invitation = await invitations.get_invitation(pool, tenant_id=p.tenant_id, invitation_id=invitation_id)
    _may_grant(p, invitation.role)
    return await invitations.revoke_invitation(pool, tenant_id=p.tenant_id, invitation_id=invitation_id)
