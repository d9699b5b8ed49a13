"""/auth/*: exchange an API key for a short-lived JWT; say who the caller is."""
from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Header, HTTPException, Request

from api.deps import ResourcesDep, authenticate
from api.security.auth import AuthError
from models.auth import Principal, TokenRequest, TokenResponse

router = APIRouter(prefix="/auth", tags=["auth"])


@router.post("/token", response_model=TokenResponse)
async def token(request: Request, res: ResourcesDep, body: TokenRequest | None = None,
                x_api_key: Annotated[str | None, Header(include_in_schema=False)] = None):
    if res.limiter is not None:  # brute-force guard: per client address
        client = request.client.host if request.client else "unknown"
        state = await res.limiter.hit(f"auth:{client}", auth=True)
        if not state.allowed:
            raise HTTPException(429, "too many token requests", headers=state.headers())
    key = (body.api_key if body else None) or x_api_key
    if not key:
        raise AuthError("send the API key in X-API-Key or as {\"api_key\": ...}")
    principal = await res.auth.from_api_key(key)
    return TokenResponse(access_token=res.auth.issue_token(principal), expires_in=res.settings.jwt_ttl_seconds)


@router.get("/me", response_model=Principal)
async def me(principal: Annotated[Principal, Depends(authenticate)]):
    return principal
