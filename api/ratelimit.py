"""Rate limiting with `limits`: moving window, per tenant and key; memory or Redis storage."""
from __future__ import annotations

import math
import time
from dataclasses import dataclass

from limits import parse
from limits.aio.strategies import MovingWindowRateLimiter
from limits.storage import storage_from_string

from models.settings import Settings


@dataclass
class RateState:
    allowed: bool
    limit: int
    remaining: int
    reset_at: float  # unix time when the window frees up again

    def headers(self) -> dict[str, str]:
        h = {"X-RateLimit-Limit": str(self.limit), "X-RateLimit-Remaining": str(self.remaining),
             "X-RateLimit-Reset": str(math.ceil(self.reset_at))}
        if not self.allowed:
            h["Retry-After"] = str(max(1, math.ceil(self.reset_at - time.time())))
        return h


class RateLimiter:
    def __init__(self, settings: Settings) -> None:
        url = settings.redis_url or "memory://"
        self.storage = storage_from_string(url if url.startswith("async+") else f"async+{url}")
        self.limiter = MovingWindowRateLimiter(self.storage)
        self.api_limit = parse(settings.rate_limit)
        self.auth_limit = parse(settings.auth_rate_limit)

    async def hit(self, key: str, *, auth: bool = False) -> RateState:
        item = self.auth_limit if auth else self.api_limit
        allowed = await self.limiter.hit(item, "specmill", key)
        stats = await self.limiter.get_window_stats(item, "specmill", key)
        return RateState(allowed=allowed, limit=item.amount, remaining=max(0, stats.remaining),
                         reset_at=stats.reset_time)
