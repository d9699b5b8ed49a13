"""FastAPI dependencies: process-wide resources and the authenticated, authorised caller."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Annotated

import asyncpg
from fastapi import Depends, Header, HTTPException, Query, Request
from temporalio.client import Client

from api.errors import ServiceUnavailable
from api.ratelimit import RateLimiter
from api.security import guard
from api.security.auth import Authenticator
from api.security.clients import client_address
from api.security.rbac import required_role
from infra import tracing
from infra.logs import REQUEST_ID, TENANT_ID
from models.auth import Principal
from models.settings import Settings
from store.paging import MAX_LIMIT


@dataclass
class Resources:
    """Created once per process in the lifespan and shared by every request."""

    settings: Settings
    pool: asyncpg.Pool
    auth: Authenticator
    limiter: RateLimiter | None
    temporal: Client | None = None
    extras: dict = field(default_factory=dict)


def resources(request: Request) -> Resources:
    return request.app.state.resources


ResourcesDep = Annotated[Resources, Depends(resources)]


def _pool(res: ResourcesDep) -> asyncpg.Pool:
    return res.pool


def _temporal(res: ResourcesDep) -> Client:
    if res.temporal is None:
        raise ServiceUnavailable("Temporal")
    return res.temporal


def _settings(res: ResourcesDep) -> Settings:
    return res.settings


PoolDep = Annotated[asyncpg.Pool, Depends(_pool)]
TemporalDep = Annotated[Client, Depends(_temporal)]
SettingsDep = Annotated[Settings, Depends(_settings)]


async def authenticate(
    request: Request,
    res: ResourcesDep,
    x_api_key: Annotated[str | None, Header(include_in_schema=False)] = None,
    authorization: Annotated[str | None, Header(include_in_schema=False)] = None,
    x_tenant_id: Annotated[str | None, Header(include_in_schema=False)] = None,
) -> Principal:
    """X-Tenant-ID chooses the tenant of a Supabase user who is in several (api/security/auth.py)."""
    principal = await guard.authenticate(
        res.auth,
        res.limiter,
        address=client_address(request, res.settings),
        api_key=x_api_key,
        authorization=authorization,
        tenant=x_tenant_id,
    )
    request.state.principal = principal
    TENANT_ID.set(str(principal.tenant_id))  # the request's log lines say whose it is
    tracing.annotate(tenant_id=principal.tenant_id, request_id=REQUEST_ID.get())  # and so does its trace
    return principal


async def authorize(
    request: Request, res: ResourcesDep, principal: Annotated[Principal, Depends(authenticate)]
) -> Principal:
    """Rate limit (the key's budget, then the tenant's), then check the role the route's method and path need."""
    if res.limiter is not None:
        state = await res.limiter.hit(principal)
        request.state.rate_headers = state.headers()
        if not state.allowed:
            detail = (
                "rate limit exceeded"
                if state.refused_by == "key"
                else "the tenant's rate limit is exceeded (all of its keys together)"
            )
            raise HTTPException(429, detail, headers=state.headers())
    needed = required_role(request.method, request.url.path)
    if not principal.role.at_least(needed):
        raise HTTPException(403, f"this needs the {needed.value} role; the caller is {principal.role.value}")
    return principal


PrincipalDep = Annotated[Principal, Depends(authorize)]
Limit = Annotated[int, Query(ge=1, le=MAX_LIMIT, description=f"Page size, 1..{MAX_LIMIT}")]
Cursor = Annotated[str | None, Query(max_length=512, description="next_cursor of the previous page")]
