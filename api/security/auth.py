"""Authentication: from `X-API-Key` or `Authorization: Bearer <JWT>` to a Principal.

Three kinds of token, three trust rules:
- specmill's own JWT (POST /auth/token, signed with JWT_SECRET) names its API key (`key_id`); the
  principal is that key's row, read on every request. A token without `key_id` is refused.
- a Supabase token is an identity only: its `sub` must be linked to a user of ours (store/users.py),
  and tenant and role are that user's row, never the token's. With `app_metadata.tenant_id` (set by
  Supabase's service role) the user is the subject's in that tenant. Without it (a self-service user of
  POST /auth/signup or /auth/login), the subject's tenants are looked up: one is the tenant; several
  must be chosen with `X-Tenant-ID`, among those.
- an internal token (gateway to service, signed with INTERNAL_TOKEN_SECRET, audience
  specmill-internal) is trusted as it says: the gateway minted it from a principal it had just
  read from our rows. Neither secret verifies the other kind of token.

An API key that authenticated is kept for API_KEY_CACHE_SECONDS by the gateway (api/security/keycache.py:
a revocation still reaches every gateway within a second); a specmill token's key is read every time.

`X-Tenant-ID`, when a request sends it, must name the tenant the credential resolves to (an API key's,
a specmill token's), else the request is refused: a caller never acts in a tenant other than the one it
named.
"""

from __future__ import annotations

from typing import Any
from uuid import UUID

import asyncpg
from pydantic import ValidationError

from api.security import jwt as tokens
from api.security.keycache import KeyCache
from models.auth import Principal
from models.common import Role
from models.settings import Settings
from store.errors import NotFound
from store.tenants import get_api_key, hash_key, lookup_api_key
from store.users import find_supabase_user, supabase_memberships

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
    def __init__(
        self, settings: Settings, pool: asyncpg.Pool, *, internal_only: bool = False, keys: KeyCache | None = None
    ) -> None:
        """`keys`: the gateway's cache of API-key lookups (none: every request looks its key up)."""
        check_secrets(settings, gateway=not internal_only)
        self.settings, self.pool, self.internal_only, self.keys = settings, pool, internal_only, keys
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

    async def authenticate(
        self, *, api_key: str | None, authorization: str | None, tenant: str | None = None
    ) -> Principal:
        """`tenant`: the request's X-Tenant-ID header, if it sent one."""
        if self.internal_only:
            return self._internal(bearer_token(authorization))
        chosen = chosen_tenant(tenant)
        if api_key is not None:
            return in_chosen_tenant(await self.from_api_key(api_key), chosen)
        if authorization is not None:
            return in_chosen_tenant(await self.from_jwt(bearer_token(authorization), tenant=chosen), chosen)
        raise AuthError("authentication required: send X-API-Key or Authorization: Bearer <token>")

    def cached(self, key: str) -> Principal | None:
        """The principal of a key that authenticated here within API_KEY_CACHE_SECONDS, else None."""
        return self.keys.get(hash_key(key.strip())) if self.keys is not None else None

    def forget_key(self, key_id: UUID) -> None:
        """This gateway revoked the key: no cached lookup of it answers again (the others hear of it by
        NOTIFY, api/security/keycache.py)."""
        if self.keys is not None:
            self.keys.forget(key_id)

    async def from_api_key(self, key: str) -> Principal:
        key = key.strip()
        cached = self.cached(key)
        if cached is not None:
            return cached
        epoch = self.keys.epoch() if self.keys is not None else 0
        row = await lookup_api_key(self.pool, key)
        if row is None:
            raise AuthError("invalid API key")
        if row["revoked_at"] is not None:
            raise AuthError("API key revoked")
        principal = Principal(
            tenant_id=row["tenant_id"], user_id=row["user_id"], role=Role(row["role"]), auth="api_key", key_id=row["id"]
        )
        if self.keys is not None:
            self.keys.put(hash_key(key), principal, epoch)
        return principal

    async def from_jwt(self, token: str, *, tenant: UUID | None = None) -> Principal:
        """`tenant` chooses among the tenants of a Supabase user who is in several (X-Tenant-ID)."""
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
                return await self._from_supabase(await self._verify_supabase(token), tenant)
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

    async def verify_supabase(self, token: str) -> dict[str, Any]:
        """The claims of a token of the configured Supabase issuer, verified as from_jwt verifies them (the
        sign-in routes check Supabase's answers with it)."""
        s = self.settings
        try:
            if not s.supabase_jwt_issuer or tokens.unverified_issuer(token) != s.supabase_jwt_issuer:
                raise AuthError("not a token of the configured Supabase issuer (SUPABASE_JWT_ISSUER)")
            claims = await self._verify_supabase(token)
        except tokens.TokenError as err:
            raise AuthError(str(err)) from err
        if not isinstance(claims.get("sub"), str) or not claims["sub"]:
            raise AuthError("token lacks a valid sub")
        return claims

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

    async def _from_supabase(self, claims: dict[str, Any], chosen: UUID | None) -> Principal:
        """`app_metadata.tenant_id`, when the token carries one, selects the tenant, and the user linked to
        `sub` there is the principal. Without it, the subject's tenants are looked up (the database, not the
        token, says which and with what role): one is the tenant; several need `chosen` (X-Tenant-ID)."""
        sub = claims.get("sub")
        if not isinstance(sub, str) or not sub:
            raise AuthError("token lacks a valid sub")
        meta = claims.get("app_metadata")
        if isinstance(meta, dict) and meta.get("tenant_id") is not None:
            user = await find_supabase_user(self.pool, tenant_id=_uuid(meta["tenant_id"]), supabase_sub=sub)
            if user is None:
                raise AuthError("Supabase user is not linked to a user of this tenant")
            return Principal(tenant_id=user.tenant_id, user_id=user.id, role=user.role, auth="supabase")
        memberships = await supabase_memberships(self.pool, sub)
        if chosen is not None:
            memberships = [m for m in memberships if m.tenant_id == chosen]
            if not memberships:
                raise AuthError("X-Tenant-ID names a tenant this Supabase user is not in")
        if not memberships:
            raise AuthError(
                "this Supabase user is in no tenant: sign in with POST /auth/login (a first sign-in makes a "
                "tenant, or joins one with an invitation)"
            )
        if len(memberships) > 1:
            ids = ", ".join(str(m.tenant_id) for m in memberships)
            raise AuthError(
                f"this Supabase user is in {len(memberships)} tenants: choose one with the X-Tenant-ID header ({ids})"
            )
        m = memberships[0]
        return Principal(tenant_id=m.tenant_id, user_id=m.user_id, role=m.role, auth="supabase")

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


def chosen_tenant(header: str | None) -> UUID | None:
    """The tenant an X-Tenant-ID header names (None: no header)."""
    if header is None:
        return None
    try:
        return UUID(header.strip())
    except ValueError:
        raise AuthError("X-Tenant-ID must be a tenant's id (a UUID)") from None


def in_chosen_tenant(principal: Principal, chosen: UUID | None) -> Principal:
    if chosen is not None and principal.tenant_id != chosen:
        raise AuthError("X-Tenant-ID names a tenant this credential is not in")
    return principal


def bearer_token(authorization: str | None) -> str:
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
