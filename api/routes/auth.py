"""/auth/*: exchange an API key for a short-lived JWT; say who the caller is."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Header, HTTPException, Request

from api.deps import ResourcesDep, authenticate
from api.security import guard
from api.security.auth import AuthError
from api.security.clients import client_address
from models.auth import Principal, TokenRequest, TokenResponse

router = APIRouter(prefix="/auth", tags=["auth"])


@router.post("/token", response_model=TokenResponse)
async def token(
    request: Request,
    res: ResourcesDep,
    body: TokenRequest | None = None,
    x_api_key: Annotated[str | None, Header(include_in_schema=False)] = None,
):
    """Brute-force guard: failures are limited per client address and key prefix (api/security/guard.py);
    a successful exchange spends one request of the tenant's budget."""
    key = (body.api_key if body else None) or x_api_key
    if not key:
        raise AuthError('send the API key in X-API-Key or as {"api_key": ...}')
    principal = await guard.from_api_key(res.auth, res.limiter, address=client_address(request, res.settings), key=key)
    if res.limiter is not None:
        state = await res.limiter.hit_tenant(principal.tenant_id)
        if not state.allowed:
            raise HTTPException(
                429, "the tenant's rate limit is exceeded (all of its keys together)", headers=state.headers()
            )
    return TokenResponse(access_token=res.auth.issue_token(principal), expires_in=res.settings.jwt_ttl_seconds)


@router.get("/me", response_model=Principal)
async def me(principal: Annotated[Principal, Depends(authenticate)]):
    return principal
