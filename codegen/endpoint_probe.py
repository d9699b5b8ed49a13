"""Whether a model server answers, asked at most once per TTL per URL, without blocking the event loop.

A model server of our own (vLLM over its OpenAI-compatible API) is `available` only while it answers:
api/availability.py asks here. One GET with a short timeout; the answer is cached per URL for
`ttl_s`, and callers that ask while a check is under way wait for that one check (no stampede).
Any HTTP answer below 500 counts as up (a 401 is a server that wants a key: it is there).
"""

from __future__ import annotations

import asyncio
import time

import httpx

PROBE_TIMEOUT_S = 1.0
PROBE_TTL_S = 30.0


class EndpointProbe:
    def __init__(self, *, ttl_s: float = PROBE_TTL_S, timeout_s: float = PROBE_TIMEOUT_S) -> None:
        self.ttl_s = ttl_s
        self.timeout_s = timeout_s
        self._cache: dict[str, tuple[float, str | None]] = {}
        self._running: dict[str, asyncio.Task] = {}

    async def reason(self, client: httpx.AsyncClient, url: str) -> str | None:
        """None when `url` answered (within the TTL), else why not, in a few words (no URL)."""
        cached = self._cache.get(url)
        if cached is not None and cached[0] > time.monotonic():
            return cached[1]
        task = self._running.get(url)
        if task is None:
            task = self._running[url] = asyncio.create_task(self._check(client, url))
            task.add_done_callback(lambda _t: self._running.pop(url, None))
        return await asyncio.shield(task)  # a caller that goes away does not cancel the others' check

    async def _check(self, client: httpx.AsyncClient, url: str) -> str | None:
        try:
            resp = await client.get(url, timeout=self.timeout_s)
            reason = None if resp.status_code < 500 else f"it answered HTTP {resp.status_code}"
        except httpx.TimeoutException:
            reason = f"no answer within {self.timeout_s:g} s"
        except httpx.HTTPError as err:
            reason = f"cannot connect: {type(err).__name__}"
        self._cache[url] = (time.monotonic() + self.ttl_s, reason)
        return reason
