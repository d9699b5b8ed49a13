"""Rate limiting with `limits`: moving windows in memory, or in Redis (REDIS_URL) shared by every gateway.

Budgets:
- RATE_LIMIT per API key (a JWT minted from a key spends that key's), and TENANT_RATE_LIMIT for all of
  a tenant's keys together, so minting more keys buys nothing.
- Failed authentications (only failures count), AUTH_RATE_LIMIT per client address and
  AUTH_PREFIX_RATE_LIMIT per API-key prefix. Only a client address is ever blocked, never a key: once an
  address has spent its budget, well-formed keys from it are refused with 429 before the database
  lookup, except keys that authenticated within AUTH_KNOWN_GOOD_SECONDS (a mark per key hash), so a
  working client keeps working beside an attacker. A spent prefix budget refuses nobody by itself: each
  further failure with that prefix spends the whole budget of the address it came from. Guessing one
  key therefore costs a fresh address per guess once its prefix budget is spent, while the right
  secret, which never fails, still authenticates from every address that is not blocked.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from uuid import UUID

from limits import RateLimitItem, parse
from limits.aio.storage import MemoryStorage, Storage
from limits.aio.strategies import MovingWindowRateLimiter
from limits.storage import storage_from_string

from models.auth import Principal
from models.settings import Settings

NS = "specmill"


@dataclass
class RateState:
    allowed: bool
    limit: int
    remaining: int
    reset_at: float  # unix time when the window frees up again

    def headers(self) -> dict[str, str]:
        h = {
            "X-RateLimit-Limit": str(self.limit),
            "X-RateLimit-Remaining": str(self.remaining),
            "X-RateLimit-Reset": str(math.ceil(self.reset_at)),
        }
        if not self.allowed:
            h["Retry-After"] = self.retry_after()
        return h

    def retry_after(self) -> str:
        return str(max(1, math.ceil(self.reset_at - time.time())))


@dataclass
class ApiState:
    """A request's two budgets: the key's (the X-RateLimit-* headers) and the tenant's."""

    key: RateState
    tenant: RateState | None

    @property
    def allowed(self) -> bool:
        return self.key.allowed and (self.tenant is None or self.tenant.allowed)

    @property
    def refused_by(self) -> str | None:
        if not self.key.allowed:
            return "key"
        if self.tenant is not None and not self.tenant.allowed:
            return "tenant"
        return None

    def headers(self) -> dict[str, str]:
        h = self.key.headers()
        if self.tenant is not None:
            h["X-RateLimit-Tenant-Limit"] = str(self.tenant.limit)
            h["X-RateLimit-Tenant-Remaining"] = str(self.tenant.remaining)
            if not self.tenant.allowed:
                h["Retry-After"] = self.tenant.retry_after()
        return h


class _MemoryStorage(MemoryStorage):
    """limits' in-memory storage, sweeping expired entries at most once every SWEEP_S. limits 5.8 starts a
    sweep on every write once the last one has ended, and a sweep hops to a thread once per key
    (limits/aio/storage/memory.py): under load that is a sweep, and its thread hops, per request.
    Nothing counted depends on the sweep (every read checks its entries' times; moving windows are read
    by time); it only frees memory, which a sweep a second still does."""

    SWEEP_S = 1.0
    _next_sweep = 0.0

    async def _MemoryStorage__schedule_expiry(self) -> None:  # noqa: N802 - the name limits' calls mangle to
        now = time.monotonic()
        if now >= self._next_sweep:
            self._next_sweep = now + self.SWEEP_S
            await MemoryStorage._MemoryStorage__schedule_expiry(self)  # pyright: ignore[reportAttributeAccessIssue]


def _storage(url: str | None) -> Storage:
    """limits' storage for REDIS_URL (redis://, rediss://, redis+sentinel://...), else in memory.
    Redis goes through redis-py (`pip install '.[redis]'`): limits 5.8 does not speak coredis 6."""
    url = url or "memory://"
    url = url if url.startswith("async+") else f"async+{url}"
    if url.startswith("async+redis"):
        storage = storage_from_string(url, implementation="redispy")
    elif url.startswith("async+memory"):
        storage = _MemoryStorage(url)
    else:
        storage = storage_from_string(url)
    assert isinstance(storage, Storage)  # an async+ url (limits' async strategies assert the same)
    return storage


class RateLimiter:
    def __init__(self, settings: Settings) -> None:
        self.storage = _storage(settings.redis_url)
        self.limiter = MovingWindowRateLimiter(self.storage)
        self.api_limit = parse(settings.rate_limit)
        self.tenant_limit = parse(settings.tenant_rate_limit)
        self.auth_limit = parse(settings.auth_rate_limit)
        self.prefix_limit = parse(settings.auth_prefix_rate_limit)
        self.known_good_s = settings.auth_known_good_seconds

    async def _hit(self, item: RateLimitItem, *ids: str) -> RateState:
        allowed = await self.limiter.hit(item, NS, *ids)
        stats = await self.limiter.get_window_stats(item, NS, *ids)
        return RateState(
            allowed=allowed, limit=item.amount, remaining=max(0, stats.remaining), reset_at=stats.reset_time
        )

    async def _spent(self, item: RateLimitItem, *ids: str) -> RateState | None:
        """The window's state if its budget is spent (without spending any), else None."""
        stats = await self.limiter.get_window_stats(item, NS, *ids)
        if stats.remaining > 0:
            return None
        return RateState(allowed=False, limit=item.amount, remaining=0, reset_at=stats.reset_time)

    # --- API requests ---------------------------------------------------------------------

    async def hit(self, principal: Principal) -> ApiState:
        """Spend one request of the key's budget, then (if that allowed it) one of the tenant's."""
        key = await self._hit(self.api_limit, "key", principal.rate_key)
        if not key.allowed:
            return ApiState(key=key, tenant=None)
        return ApiState(key=key, tenant=await self.hit_tenant(principal.tenant_id))

    async def hit_tenant(self, tenant_id: UUID) -> RateState:
        return await self._hit(self.tenant_limit, "tenant", str(tenant_id))

    # --- failed authentication ------------------------------------------------------------

    async def blocked(self, *, address: str) -> RateState | None:
        """Set when this address has used up its failures (a key prefix never blocks: see the module)."""
        return await self._spent(self.auth_limit, "authfail", "addr", address)

    async def failed(self, *, address: str, prefix: str | None) -> RateState:
        """Count one failed authentication against the address and the key prefix; a failure with a prefix
        whose budget is already spent uses up the address's whole budget. The state says whether the
        address is now blocked."""
        state = await self._hit(self.auth_limit, "authfail", "addr", address)
        if prefix is not None and state.allowed:
            by_prefix = await self._hit(self.prefix_limit, "authfail", "prefix", prefix)
            if not by_prefix.allowed:
                state = await self._exhaust(self.auth_limit, "authfail", "addr", address)
        return state

    async def _exhaust(self, item: RateLimitItem, *ids: str) -> RateState:
        """Spend what is left of a window's budget (a few tries: other gateways may spend it meanwhile)."""
        for _ in range(5):
            stats = await self.limiter.get_window_stats(item, NS, *ids)
            if stats.remaining <= 0:
                break
            await self.limiter.hit(item, NS, *ids, cost=stats.remaining)
        stats = await self.limiter.get_window_stats(item, NS, *ids)
        return RateState(allowed=False, limit=item.amount, remaining=0, reset_at=stats.reset_time)

    def _good_keys(self, key_hash: str) -> tuple[str, str]:
        bucket = int(time.time() // self.known_good_s)  # this period's mark and the last one's
        return (f"{NS}/good/{key_hash[:32]}/{bucket}", f"{NS}/good/{key_hash[:32]}/{bucket - 1}")

    async def mark_good(self, key_hash: str) -> None:
        """This key just authenticated: it stays exempt from address blocks for known_good_s at least."""
        current, _ = self._good_keys(key_hash)
        await self.storage.incr(current, 2 * self.known_good_s)

    async def forget_good(self, key_hash: str) -> None:
        for k in self._good_keys(key_hash):
            await self.storage.clear(k)

    async def known_good(self, key_hash: str) -> bool:
        for k in self._good_keys(key_hash):
            if await self.storage.get(k) > 0:
                return True
        return False
