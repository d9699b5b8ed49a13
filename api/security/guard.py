"""Authentication behind the failed-attempt budgets of api/ratelimit.py (its docstring has the rule).

- A failed API key that cost a database lookup (one of the form sm_<8 hex>_<secret> that is unknown
  or revoked) counts against the client address (TRUSTED_PROXIES decide what that is) and the key's
  prefix. Anything else is refused without a lookup: a malformed key, and a JWT, whose signature is
  checked first and cannot be guessed; those stay plain 401s and cost nothing to count.
- Only an address is blocked, never a key: once the address's budget is spent (by its own failures,
  or by one failure with a prefix whose budget is spent), a well-formed key from it is refused with
  429 before its lookup unless it authenticated recently (api/ratelimit.py marks it): a working client
  keeps working beside an attacker at the same address. A key first used while its address is blocked
  waits for the window. A key whose prefix is being guessed still authenticates from any other address.
- Successes never count. A key the gateway holds in its cache of lookups (api/security/keycache.py)
  authenticated within the last minute, so it is known to work: it is served without a check.
- A failed password sign-in (POST /auth/login, api/routes/signin.py: Supabase Auth answered "invalid
  credentials") counts the same way, against the client address and the email (a hash of it, in place
  of a key's prefix); so does a refresh token Supabase refuses (POST /auth/refresh), against the address
  only. A blocked address gets 429 for every sign-in and refresh before Supabase is asked: there is no
  mark of a good password to exempt one by.
"""

from __future__ import annotations

import hashlib
from collections.abc import Awaitable, Callable
from typing import TypeVar

from fastapi import HTTPException

from api.ratelimit import RateLimiter, RateState
from api.security.auth import Authenticator, AuthError, chosen_tenant, in_chosen_tenant
from models.auth import Principal
from store.tenants import hash_key, key_prefix

BLOCKED = "too many failed authentications from this client; try again later"
T = TypeVar("T")


def _too_many(state: RateState) -> HTTPException:
    return HTTPException(429, BLOCKED, headers={"Retry-After": state.retry_after()})


async def authenticate(
    auth: Authenticator,
    limiter: RateLimiter | None,
    *,
    address: str,
    api_key: str | None,
    authorization: str | None,
    tenant: str | None = None,
) -> Principal:
    """`tenant`: the request's X-Tenant-ID header (api/security/auth.py says what it may choose)."""
    if limiter is None or auth.internal_only or api_key is None:
        return await auth.authenticate(api_key=api_key, authorization=authorization, tenant=tenant)
    chosen = chosen_tenant(tenant)
    return in_chosen_tenant(await from_api_key(auth, limiter, address=address, key=api_key), chosen)


async def sign_in(
    limiter: RateLimiter | None,
    *,
    address: str,
    tag: str | None,
    attempt: Callable[[], Awaitable[T]],
    failed: Callable[[Exception], bool],
) -> T:
    """Run a sign-in `attempt` (a password's, a refresh token's); an error for which `failed` says "wrong
    credentials" counts against the address and, with `tag` (the email), a hash of the tag; once the
    address is blocked the answer is 429."""
    if limiter is None:
        return await attempt()
    blocked = await limiter.blocked(address=address)
    if blocked is not None:
        raise _too_many(blocked)
    try:
        return await attempt()
    except Exception as err:
        if failed(err):
            prefix = None if tag is None else "tag:" + hashlib.sha256(tag.strip().lower().encode()).hexdigest()[:16]
            state = await limiter.failed(address=address, prefix=prefix)
            if not state.allowed:
                raise _too_many(state) from None
        raise


async def from_api_key(auth: Authenticator, limiter: RateLimiter | None, *, address: str, key: str) -> Principal:
    if limiter is None:
        return await auth.from_api_key(key)
    key = key.strip()
    cached = auth.cached(key)
    if cached is not None:  # it authenticated within API_KEY_CACHE_SECONDS (at most 60 s), so it is marked
        return cached  # known-good for AUTH_KNOWN_GOOD_SECONDS (at least 60 s): no budget to check or spend
    prefix, digest = key_prefix(key), hash_key(key)
    if prefix is None:  # cannot be a key of ours: refused without a lookup, so it costs nothing to limit
        return await auth.from_api_key(key)
    blocked = await limiter.blocked(address=address)
    if blocked is not None and not await limiter.known_good(digest):
        raise _too_many(blocked)
    try:
        principal = await auth.from_api_key(key)
    except AuthError:
        if blocked is not None:  # a mark of a key that has since been revoked: no more lookups for it
            await limiter.forget_good(digest)
        state = await limiter.failed(address=address, prefix=prefix)
        if not state.allowed:
            raise _too_many(state) from None
        raise
    await limiter.mark_good(digest)
    return principal
