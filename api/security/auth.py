"""Authentication: from `X-API-Key` or `Authorization: Bearer <JWT>` to a Principal.

Three kinds of token, three trust rules:
- specmill's own JWT (POST /auth/token, signed with JWT_SECRET) names its API key (`key_id`); the
  principal is that key's row, read on every request. A token without `key_id` is refused.
- a Supabase token is an identity only: its `sub` must be linked to a user of the tenant that its
  `app_metadata.tenant_id` names (store/users.py); tenant and role are that user's row.
- an internal token (gateway to service, signed with INTERNAL_TOKEN_SECRET, audience
  specmill-internal) is trusted as it says: the gateway minted it from a principal it had just
  read from our rows. Neither secret verifies the other kind of token.
"""

from __future__ import annotations

from typing import Any
from uuid import UUID

import asyncpg
from pydantic import ValidationError

from api.security import jwt as tokens
from models.auth import Principal
from models.common import Role
from models.settings import Settings
from store.errors import NotFound
from store.tenants import get_api_key, lookup_api_key
from store.users import find_supabase_user

INTERNAL_AUDIENCE = "specmill-internal"


class AuthError(Exception):
    pass


def check_secrets(settings: Settings, *, gateway: bool) -> None:
    """Startup check: a service needs the internal secret, the gateway both, and never the same one."""
    if gateway and not settings.jwt_secret:
        raise RuntimeError("JWT_SECRET is not set (make run generates one into <data_dir>/env)")
    if not settings.internal_token_secret:
        raise RuntimeError("INTERNAL_TOKEN_SECRET is not set (make run generates one into <data_dir>/env)")
    if settings.internal_token_secret == settings.jwt_secret:
        raise RuntimeError("INTERNAL_TOKEN_SECRET must differ from JWT_SECRET")


class Authenticator:
    def __init__(self, settings: Settings, pool: asyncpg.Pool, *, internal_only: bool = False) -> None:
        check_secrets(settings, gateway=not internal_only)
        self.settings, self.pool, self.internal_only = settings, pool, internal_only
        self.jwks = (
            tokens.JwksVerifier(
                settings.supabase_jwks_url,
                audience=settings.supabase_jwt_audience,
                issuer=settings.supabase_jwt_issuer or "",
                max_lifetime=settings.supabase_max_token_lifetime_seconds,
                skew=settings.jwt_clock_skew_seconds,
            )
            if settings.supabase_jwks_url
            else None
        )

    # --- issuing ------------------------------------------------------------------------

    def issue_token(self, p: Principal) -> str:
        if p.key_id is None:
            raise ValueError("specmill JWTs are minted from API keys only")
        claims = {"sub": str(p.user_id), "tenant_id": str(p.tenant_id), "role": p.role.value, "key_id": str(p.key_id)}
        s = self.settings
        assert s.jwt_secret is not None  # check_secrets: the gateway has one
        return tokens.issue(
            claims, secret=s.jwt_secret, ttl=s.jwt_ttl_seconds, audience=s.jwt_audience, issuer=s.jwt_issuer
        )

    def issue_internal(self, p: Principal) -> str:
        """What the gateway forwards to a backend service after authenticating the caller."""
        claims = {
            "sub": str(p.user_id),
            "tenant_id": str(p.tenant_id),
            "role": p.role.value,
            "via": p.auth,
            **({"key_id": str(p.key_id)} if p.key_id else {}),
        }
        s = self.settings
        assert s.internal_token_secret is not None  # check_secrets: every service has one
        return tokens.issue(
            claims,
            secret=s.internal_token_secret,
            ttl=s.internal_token_ttl_seconds,
            audience=INTERNAL_AUDIENCE,
            issuer=s.jwt_issuer,
        )

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
        return Principal(
            tenant_id=row["tenant_id"], user_id=row["user_id"], role=Role(row["role"]), auth="api_key", key_id=row["id"]
        )

    async def from_jwt(self, token: str) -> Principal:
        s = self.settings
        try:
            iss = tokens.unverified_issuer(token)
            if iss == s.jwt_issuer:
                claims = tokens.verify_hs256(
                    token,
                    secret=s.jwt_secret,
                    audience=s.jwt_audience,
                    issuer=s.jwt_issuer,
                    max_lifetime=s.jwt_ttl_seconds,
                    skew=s.jwt_clock_skew_seconds,
                )
                return await self._from_key_claims(claims)
            if s.supabase_jwt_issuer and iss == s.supabase_jwt_issuer:
                return await self._from_supabase(await self._verify_supabase(token))
        except tokens.TokenError as err:
            raise AuthError(str(err)) from err
        raise AuthError("token issuer not accepted")

    async def _from_key_claims(self, claims: dict[str, Any]) -> Principal:
        """The principal of a specmill JWT is its API key's row, read now (so revocation is immediate).

        The claimed `tenant_id` only says where to look the key up (under that tenant's RLS context),
        so a token naming another tenant finds no key. `sub` and `role` must equal the row's: a token
        claiming more than its key (or anything else) was forged with the secret and is refused with
        401, not quietly served at the key's role.
        """
        if not claims.get("key_id"):
            raise AuthError("token lacks key_id: specmill tokens come from POST /auth/token")
        tenant_id, key_id = _uuid(claims.get("tenant_id")), _uuid(claims.get("key_id"))
        try:
            key = await get_api_key(self.pool, tenant_id=tenant_id, key_id=key_id)
        except NotFound as err:
            raise AuthError("API key revoked or unknown") from err
        if key.revoked_at is not None:
            raise AuthError("API key revoked or unknown")
        if claims.get("sub") != str(key.user_id) or claims.get("role") != key.role.value:
            raise AuthError("token claims do not match its API key")
        return Principal(tenant_id=key.tenant_id, user_id=key.user_id, role=key.role, auth="jwt", key_id=key.id)

    async def _verify_supabase(self, token: str) -> dict[str, Any]:
        s = self.settings
        if self.jwks is not None and tokens._header(token).get("alg") != "HS256":
            return await self.jwks.verify(token)
        if s.supabase_jwt_secret:
            return tokens.verify_hs256(
                token,
                secret=s.supabase_jwt_secret,
                audience=s.supabase_jwt_audience,
                issuer=s.supabase_jwt_issuer or "",  # set: from_jwt matched the token's issuer to it
                max_lifetime=s.supabase_max_token_lifetime_seconds,
                skew=s.jwt_clock_skew_seconds,
            )
        raise tokens.TokenError("token signature or format invalid")

    async def _from_supabase(self, claims: dict[str, Any]) -> Principal:
        """`app_metadata.tenant_id` selects the tenant; the user linked to `sub` there is the principal."""
        meta = claims.get("app_metadata")
        tenant_id = _uuid(meta.get("tenant_id") if isinstance(meta, dict) else None)
        user = await find_supabase_user(self.pool, tenant_id=tenant_id, supabase_sub=str(claims["sub"]))
        if user is None:
            raise AuthError("Supabase user is not linked to a user of this tenant")
        return Principal(tenant_id=user.tenant_id, user_id=user.id, role=user.role, auth="supabase")

    def _internal(self, token: str) -> Principal:
        s = self.settings
        try:
            claims = tokens.verify_hs256(
                token,
                secret=s.internal_token_secret,
                audience=INTERNAL_AUDIENCE,
                issuer=s.jwt_issuer,
                max_lifetime=s.internal_token_ttl_seconds,
                skew=s.jwt_clock_skew_seconds,
            )
        except tokens.TokenError as err:
            raise AuthError(f"service accepts gateway tokens only: {err}") from err
        try:
            return Principal(
                tenant_id=_uuid(claims.get("tenant_id")),
                user_id=_uuid(claims.get("sub")),
                role=Role(claims.get("role")),
                auth="internal",
                key_id=_uuid(claims["key_id"]) if claims.get("key_id") else None,
            )
        except (ValueError, ValidationError) as err:
            raise AuthError("token lacks a valid tenant_id, role or sub") from err


def _bearer(authorization: str | None) -> str:
    if not authorization:
        raise AuthError("authentication required: send Authorization: Bearer <token>")
    scheme, _, token = authorization.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise AuthError("Authorization must be 'Bearer <token>'")
    return token.strip()


def _uuid(value: Any) -> UUID:
    if isinstance(value, str):
        try:
            return UUID(value)
        except ValueError:
            pass
    raise AuthError("token lacks a valid tenant_id, key_id or sub")
