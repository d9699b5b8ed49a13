"""FastAPI dependencies: process-wide resources and the authenticated, authorised caller."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import TYPE_CHECKING, Annotated, Any

import asyncpg
import httpx
from fastapi import Depends, Header, HTTPException, Query, Request, Security
from fastapi.security import APIKeyHeader, HTTPBearer
from temporalio.client import Client

from api.errors import ServiceUnavailable
from api.ratelimit import RateLimiter
from api.security import guard
from api.security.auth import Authenticator
from api.security.clients import client_address
from api.security.gotrue import GoTrue
from api.security.rbac import required_role
from codegen.endpoint_probe import EndpointProbe
from infra import tracing
from infra.logs import REQUEST_ID, TENANT_ID
from models.auth import Principal
from models.settings import Settings
from store.events import EventListener
from store.paging import MAX_LIMIT

if TYPE_CHECKING:  # the runtime is imported where the knowledge service runs (api/app.py), not by every process
    from knowledge.runtime import KnowledgeRuntime


@dataclass
class Resources:
    """Created once per process in the lifespan (api/app.py) and shared by every request."""

    settings: Settings
    pool: asyncpg.Pool
    auth: Authenticator
    limiter: RateLimiter | None  # the gateway's; a service behind it trusts the gateway's tokens
    http: httpx.AsyncClient  # to the services in their own processes, and to model servers' probes
    temporal: Client | None = None  # None: it could not be made (/health says so)
    remote: dict[str, str] = field(default_factory=dict)  # service name -> its URL, where forwarded
    gotrue: GoTrue | None = None  # Supabase sign-in (api/routes/signin.py), where configured
    knowledge: KnowledgeRuntime | None = None  # where the knowledge service runs in this process
    probe: EndpointProbe = field(default_factory=EndpointProbe)  # model servers' answers (api/availability.py)
    # made on first use: the console's in-process client (api/console/client.py), the event streams' LISTEN
    console_client: httpx.AsyncClient | None = None
    event_listener: EventListener | None = None

    @property
    def extras(self) -> Mapping[str, Any]:
        """The knowledge runtime under its name of the untyped days, read-only, for api/routes/knowledge.py
        until it reads `knowledge`."""
        return MappingProxyType({"knowledge": self.knowledge} if self.knowledge is not None else {})

    async def aclose(self) -> None:
        """What the lifespan made, closed before the pool."""
        await self.http.aclose()
        for client in (self.gotrue, self.console_client):
            if client is not None:
                await client.aclose()
        if self.auth.keys is not None:
            await self.auth.keys.close()


def _resources(request: Request) -> Resources:
    return request.app.state.resources


# Each dependency takes the request, not another dependency: FastAPI solves every node of a route's
# dependency graph on every request, so the common ones (PoolDep, PrincipalDep) are one node each.


async def resources(request: Request) -> Resources:
    return _resources(request)


ResourcesDep = Annotated[Resources, Depends(resources)]


async def _pool(request: Request) -> asyncpg.Pool:
    return _resources(request).pool


async def _temporal(request: Request) -> Client:
    res = _resources(request)
    if res.temporal is None:
        raise ServiceUnavailable("Temporal")
    return res.temporal


async def _settings(request: Request) -> Settings:
    return _resources(request).settings


PoolDep = Annotated[asyncpg.Pool, Depends(_pool)]
TemporalDep = Annotated[Client, Depends(_temporal)]
SettingsDep = Annotated[Settings, Depends(_settings)]


class _BearerHeader(HTTPBearer):
    """The bearer scheme, as the OpenAPI declares it; the raw header is read, so that the guard says what is
    wrong with one that is not `Bearer <token>` (HTTPBearer's own parsing would drop it silently)."""

    async def __call__(self, request: Request) -> str | None:  # pyright: ignore[reportIncompatibleMethodOverride]
        return request.headers.get("authorization")


# The credentials, declared as the OpenAPI's security schemes on every operation that authenticates (so
# /docs offers Authorize and "Try it out" sends them); either one serves.
API_KEY_SCHEME = APIKeyHeader(
    name="X-API-Key", scheme_name="ApiKey", auto_error=False, description="An API key (POST /api/keys)."
)
BEARER_SCHEME = _BearerHeader(
    scheme_name="Bearer",
    bearerFormat="JWT",
    auto_error=False,
    description="A JWT from POST /auth/token, or the access token of POST /auth/login where Supabase sign-in "
    "is configured.",
)
ApiKeyHeader = Annotated[str | None, Security(API_KEY_SCHEME)]
AuthorizationHeader = Annotated[str | None, Security(BEARER_SCHEME)]
TenantHeader = Annotated[str | None, Header(alias="x-tenant-id", include_in_schema=False)]


async def authenticate(
    request: Request,
    x_api_key: ApiKeyHeader = None,
    authorization: AuthorizationHeader = None,
    x_tenant_id: TenantHeader = None,
) -> Principal:
    """X-Tenant-ID chooses the tenant of a Supabase user who is in several (api/security/auth.py)."""
    res = _resources(request)
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
    request: Request,
    x_api_key: ApiKeyHeader = None,
    authorization: AuthorizationHeader = None,
    x_tenant_id: TenantHeader = None,
) -> Principal:
    """Authenticate, rate limit (the key's budget, then the tenant's), then check the role the route's
    method and path need."""
    principal = await authenticate(request, x_api_key, authorization, x_tenant_id)
    limiter = _resources(request).limiter
    if limiter is not None:
        state = await limiter.hit(principal)
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
