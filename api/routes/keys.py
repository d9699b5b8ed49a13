"""/api/keys: admins manage viewer and editor keys; only an owner makes or revokes admin/owner keys."""

from __future__ import annotations

from uuid import UUID

from fastapi import APIRouter, HTTPException
from pydantic import Field

from api.deps import Cursor, Limit, PoolDep, PrincipalDep, ResourcesDep, SettingsDep
from models.auth import ApiKeyCreated, ApiKeyPublic, Principal
from models.common import Page, Role, Strict
from store import tenants

router = APIRouter(tags=["api keys"])


class KeyCreate(Strict):
    role: Role
    name: str | None = Field(None, min_length=1, max_length=100)


def _may_manage(principal: Principal, role: Role) -> None:
    if role.at_least(Role.admin) and principal.role != Role.owner:
        raise HTTPException(403, "only an owner manages admin and owner keys")


@router.get("/keys", response_model=Page[ApiKeyPublic])
async def list_keys(pool: PoolDep, p: PrincipalDep, limit: Limit = 50, cursor: Cursor = None):
    """The tenant's keys, revoked ones too (never the keys themselves), oldest first."""
    items, nxt = await tenants.list_api_keys(pool, tenant_id=p.tenant_id, limit=limit, cursor=cursor)
    return Page(items=items, next_cursor=nxt)


@router.post("/keys", response_model=ApiKeyCreated, status_code=201)
async def create_key(body: KeyCreate, pool: PoolDep, p: PrincipalDep, settings: SettingsDep):
    """409 once the tenant holds MAX_API_KEYS_PER_TENANT unrevoked keys."""
    _may_manage(p, body.role)
    return await tenants.create_api_key(
        pool, tenant_id=p.tenant_id, role=body.role, name=body.name, max_live=settings.max_api_keys_per_tenant
    )


@router.delete("/keys/{key_id}", response_model=ApiKeyPublic)
async def revoke_key(key_id: UUID, res: ResourcesDep, p: PrincipalDep):
    """The key stops working at once here, and within a second at every other gateway (the revocation's
    NOTIFY reaches their caches of API-key lookups: api/security/keycache.py); so do tokens made from it."""
    key = await tenants.get_api_key(res.pool, tenant_id=p.tenant_id, key_id=key_id)
    _may_manage(p, key.role)
    revoked = await tenants.revoke_api_key(res.pool, tenant_id=p.tenant_id, key_id=key_id)
    res.auth.forget_key(key_id)
    return revoked
