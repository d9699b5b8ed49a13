"""Authentication: from `X-API-Key` or `Authorization: Bearer <JWT>` to a Principal."""
from __future__ import annotations

from typing import Any
from uuid import UUID

import asyncpg
from pydantic import ValidationError

from api.security import jwt as tokens
from models.auth import Principal
from models.common import Role
from models.settings import Settings
from store.db import tenant_tx
from store.tenants import lookup_api_key

INTERNAL_AUDIENCE = "specmill-internal"


class AuthError(Exception):
    pass


class Authenticator:
    def __init__(self, settings: Settings, pool: asyncpg.Pool, *, internal_only: bool = False) -> None:
        if not settings.jwt_secret:
            raise RuntimeError("JWT_SECRET is not set (make run generates one into <data_dir>/env)")
        self.settings, self.pool, self.internal_only = settings, pool, internal_only
        self.jwks = (
            tokens.JwksVerifier(settings.supabase_jwks_url, audience=settings.supabase_jwt_audience,
                                issuer=settings.supabase_jwt_issuer or "")
            if settings.supabase_jwks_url else None
        )

    # --- issuing ------------------------------------------------------------------------

    def issue_token(self, p: Principal) -> str:
        claims = {"sub": str(p.user_id), "tenant_id": str(p.tenant_id), "role": p.role.value}
        if p.key_id:
            claims["key_id"] = str(p.key_id)
        s = self.settings
        return tokens.issue(claims, secret=s.jwt_secret, ttl=s.jwt_ttl_seconds, audience=s.jwt_audience, issuer=s.jwt_issuer)

    def issue_internal(self, p: Principal) -> str:
        """What the gateway forwards to a backend service after authenticating the caller."""
        claims = {"sub": str(p.user_id), "tenant_id": str(p.tenant_id), "role": p.role.value,
                  "via": p.auth, **({"key_id": str(p.key_id)} if p.key_id else {})}
        s = self.settings
        return tokens.issue(claims, secret=s.jwt_secret, ttl=s.internal_token_ttl_seconds,
                            audience=INTERNAL_AUDIENCE, issuer=s.jwt_issuer)

    # --- verifying ----------------------------------------------------------------------

    async def authenticate(self, *, api_key: str | None, authorization: str | None) -> Principal:
        if self.internal_only:
            return self._internal(_bearer(authorization))
        if api_key is not None:
            return await self.from_api_key(api_key)
        if authorization is not None:
            return await self.from_jwt(_bearer(authorization))
        raise AuthError("authentication required: send X-API-Key or Authorization: Bearer <token>")

    async def from_api_key(self, key: str) -> Principal:
        row = await lookup_api_key(self.pool, key.strip())
        if row is None:
            raise AuthError("invalid API key")
        if row["revoked_at"] is not None:
            raise AuthError("API key revoked")
        return Principal(tenant_id=row["tenant_id"], user_id=row["user_id"], role=Role(row["role"]),
                         auth="api_key", key_id=row["id"])

    async def from_jwt(self, token: str) -> Principal:
        s = self.settings
        try:
            iss = tokens.unverified_issuer(token)
            if iss == s.jwt_issuer:
                claims = tokens.verify_hs256(token, secret=s.jwt_secret, audience=s.jwt_audience, issuer=s.jwt_issuer)
                principal = _principal(claims, claims, "jwt")
                await self._check_key_live(principal)
                return principal
            if s.supabase_jwt_issuer and iss == s.supabase_jwt_issuer:
                if self.jwks is not None and tokens._header(token).get("alg") != "HS256":
                    claims = await self.jwks.verify(token)
                elif s.supabase_jwt_secret:
                    claims = tokens.verify_hs256(token, secret=s.supabase_jwt_secret,
                                                 audience=s.supabase_jwt_audience, issuer=s.supabase_jwt_issuer)
                else:
                    raise AuthError("token signature or format invalid")
                return _principal(claims, claims.get("app_metadata") or {}, "supabase")
        except tokens.TokenError as err:
            raise AuthError(str(err)) from err
        raise AuthError("token issuer not accepted")

    def _internal(self, token: str) -> Principal:
        s = self.settings
        try:
            claims = tokens.verify_hs256(token, secret=s.jwt_secret, audience=INTERNAL_AUDIENCE, issuer=s.jwt_issuer)
        except tokens.TokenError as err:
            raise AuthError(f"service accepts gateway tokens only: {err}") from err
        return _principal(claims, claims, "internal")

    async def _check_key_live(self, p: Principal) -> None:
        """A token minted from an API key dies with the key: revocation takes effect at once."""
        if p.key_id is None:
            return
        async with tenant_tx(self.pool, p.tenant_id) as conn:
            revoked = await conn.fetchval(
                "select revoked_at is not null from api_keys where tenant_id = $1 and id = $2", p.tenant_id, p.key_id
            )
        if revoked is None or revoked:
            raise AuthError("API key revoked")


def _bearer(authorization: str | None) -> str:
    if not authorization:
        raise AuthError("authentication required: send Authorization: Bearer <token>")
    scheme, _, token = authorization.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise AuthError("Authorization must be 'Bearer <token>'")
    return token.strip()


def _principal(claims: dict[str, Any], meta: dict[str, Any], auth: str) -> Principal:
    try:
        return Principal(tenant_id=UUID(str(meta["tenant_id"])), user_id=UUID(str(claims["sub"])),
                         role=Role(meta["role"]), auth=auth,
                         key_id=UUID(str(claims["key_id"])) if claims.get("key_id") else None)
    except (KeyError, ValueError, TypeError, ValidationError) as err:
        raise AuthError("token lacks a valid tenant_id, role or sub") from err
