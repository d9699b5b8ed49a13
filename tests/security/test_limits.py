"""Tenant-fair limits: tenant-wide rate limit, a cap on keys, failed
authentication per address and key prefix without locking working clients out, trusted proxies,
generation slots and a token budget for POST /api/generate, and the same limits shared by two
gateways through a real Redis."""

from __future__ import annotations

import asyncio
import uuid

import pytest

import api.security.auth as auth_module
from models.common import Role
from store import leases
from store.tenants import create_api_key
from tests.conftest import redis_up, wait_for
from tests.test_auth import assert_401, bearer, exchange

FN = {"name": "python-function"}
VALUES = {
    "function_name": "add",
    "description": "Add two integers.",
    "signature": "def add(a: int, b: int) -> int",
    "tests": ["assert add(1, 2) == 3"],
}


def wrong_key(n: int, prefix: str = "0badc0de") -> str:
    return f"sm_{prefix}_{n:043d}"


@pytest.fixture
def lookups(monkeypatch):
    """How many API-key lookups reached the database."""
    seen: list[str] = []
    real = auth_module.lookup_api_key

    async def counting(pool, key):
        seen.append(key)
        return await real(pool, key)

    monkeypatch.setattr(auth_module, "lookup_api_key", counting)
    return seen


# --- tenant-wide rate limit and key cap ------------------------------------------------------------


async def test_tenant_limit_spans_all_its_keys(make_app, stack, pool, tenant, other_tenant):
    async for client in make_app(stack.with_(rate_limit="100/minute", tenant_rate_limit="3/minute")):
        keys = [tenant.api_key] + [
            (await create_api_key(pool, tenant_id=tenant.tenant_id, role=Role.viewer)).api_key for _ in range(3)
        ]
        for key in keys[:3]:  # three keys, one request each: the tenant's three
            resp = await client.get("/api/projects", headers={"X-API-Key": key})
            assert resp.status_code == 200, resp.text
        assert resp.headers["X-RateLimit-Limit"] == "100" and resp.headers["X-RateLimit-Tenant-Remaining"] == "0"
        resp = await client.get("/api/projects", headers={"X-API-Key": keys[3]})  # a fresh key buys nothing
        assert resp.status_code == 429, resp.text
        assert "tenant" in resp.json()["detail"] and 1 <= int(resp.headers["Retry-After"]) <= 60
        assert (await client.get("/api/projects", headers=other_tenant.headers)).status_code == 200


async def test_a_tenant_holds_at_most_max_api_keys(make_app, stack, tenant):
    async for client in make_app(stack.with_(max_api_keys_per_tenant=3)):
        made = []
        for _ in range(2):  # the owner key + 2 = 3
            resp = await client.post("/api/keys", json={"role": "viewer"}, headers=tenant.headers)
            assert resp.status_code == 201, resp.text
            made.append(resp.json())
        resp = await client.post("/api/keys", json={"role": "viewer"}, headers=tenant.headers)
        assert resp.status_code == 409, resp.text
        assert "MAX_API_KEYS_PER_TENANT" in resp.json()["detail"]
        # concurrent creators cannot slip past the count either
        assert (await client.delete(f"/api/keys/{made[0]['id']}", headers=tenant.headers)).status_code == 200
        results = await asyncio.gather(
            *[client.post("/api/keys", json={"role": "viewer"}, headers=tenant.headers) for _ in range(4)]
        )
        assert sorted(r.status_code for r in results) == [201, 409, 409, 409]


# --- failed authentication ---------------------------------------------------------------------------


async def test_bad_keys_are_limited_per_address_and_never_lock_out_a_working_client(make_app, stack, tenant, lookups):
    """Today's fault: 35 bad /auth/token attempts locked every loopback client out for a minute."""
    async for client in make_app(stack.with_(auth_rate_limit="5/minute")):
        assert (await client.get("/api/projects", headers=tenant.headers)).status_code == 200
        token = await exchange(client, tenant.api_key)
        lookups.clear()
        codes = [
            (await client.post("/auth/token", json={"api_key": wrong_key(i, f"{i:08x}")})).status_code
            for i in range(35)
        ]
        assert codes == [401] * 5 + [429] * 30, codes
        assert len(lookups) == 5  # a blocked address's bad keys cost no database lookup
        resp = await client.get("/api/projects", headers={"X-API-Key": wrong_key(99, "12345678")})
        assert resp.status_code == 429 and "Retry-After" in resp.headers
        # the working client, at the same address, is not affected in any way
        assert (await client.post("/auth/token", headers=tenant.headers)).status_code == 200
        assert (await client.get("/api/projects", headers=tenant.headers)).status_code == 200
        assert (await client.get("/api/projects", headers=bearer(token))).status_code == 200
        # malformed keys and bad tokens cost no lookup: plain 401s, and they never count
        assert_401(await client.get("/api/projects", headers={"X-API-Key": "sm_guess_guess"}))
        assert_401(await client.get("/api/projects", headers=bearer("not.a.token")))


async def test_a_revoked_key_loses_its_pass_through_a_blocked_address(make_app, stack, pool, tenant, lookups):
    async for client in make_app(stack.with_(auth_rate_limit="2/minute")):
        viewer = await create_api_key(pool, tenant_id=tenant.tenant_id, role=Role.viewer)
        assert (await client.get("/api/projects", headers={"X-API-Key": viewer.api_key})).status_code == 200
        assert (await client.get("/api/projects", headers=tenant.headers)).status_code == 200
        for i in range(2):
            assert_401(await client.get("/api/projects", headers={"X-API-Key": wrong_key(i)}))
        resp = await client.delete(f"/api/keys/{viewer.id}", headers=tenant.headers)
        assert resp.status_code == 200
        lookups.clear()
        codes = [
            (await client.get("/api/projects", headers={"X-API-Key": viewer.api_key})).status_code for _ in range(3)
        ]
        assert codes == [429, 429, 429] and len(lookups) == 1  # one lookup finds it revoked, then no more


async def test_failures_are_limited_per_key_prefix_from_any_address(make_app, stack, tenant, lookups):
    """An attacker who knows a key's prefix and tries secrets from many addresses (trusted proxy): past the
    prefix's budget, one failure blocks the address it came from (api/ratelimit.py)."""
    prefix = tenant.api_key.split("_")[1]
    settings = stack.with_(
        auth_rate_limit="100/minute", auth_prefix_rate_limit="3/minute", trusted_proxies=["127.0.0.1/32"]
    )
    async for client in make_app(settings):
        assert (await client.get("/api/projects", headers=tenant.headers)).status_code == 200
        lookups.clear()
        codes = [
            (
                await client.get(
                    "/api/projects", headers={"X-API-Key": wrong_key(i, prefix), "X-Forwarded-For": f"203.0.113.{i}"}
                )
            ).status_code
            for i in range(8)
        ]
        assert codes == [401] * 3 + [429] * 5 and len(lookups) == 8  # one guess per fresh address
        # each address that failed past the prefix's budget is blocked now, for every key: no more lookups
        resp = await client.get("/api/projects", headers={"X-API-Key": wrong_key(0), "X-Forwarded-For": "203.0.113.5"})
        assert resp.status_code == 429 and "Retry-After" in resp.headers and len(lookups) == 8
        # the real key with that prefix keeps working; an address that failed within the budget is not blocked
        assert (await client.get("/api/projects", headers=tenant.headers)).status_code == 200
        assert_401(
            await client.get("/api/projects", headers={"X-API-Key": wrong_key(0), "X-Forwarded-For": "203.0.113.1"})
        )


@pytest.mark.parametrize("storage", ["memory", "redis"])
async def test_an_idle_key_works_while_its_prefix_is_hammered(request, storage, make_app, stack, pool, tenant, lookups):
    """Failures with a key's prefix never lock out the key itself, even one that never authenticated before
    (no known-good mark): its right secret works from any address that is not blocked."""
    redis_url = None
    if storage == "redis":
        redis_url = request.getfixturevalue("redis_url")
        await redis_up(redis_url)
    settings = stack.with_(
        redis_url=redis_url,
        auth_rate_limit="100/minute",
        auth_prefix_rate_limit="3/minute",
        trusted_proxies=["127.0.0.1/32"],
    )

    def at(address: str, key: str) -> dict[str, str]:
        return {"X-API-Key": key, "X-Forwarded-For": address}

    async for client in make_app(settings):
        idle, other_idle, unused = [
            (await create_api_key(pool, tenant_id=tenant.tenant_id, role=Role.viewer)).api_key for _ in range(3)
        ]
        attacker, bystander = "203.0.113.66", "198.51.100.20"
        prefix = idle.split("_")[1]
        lookups.clear()
        codes = [
            (await client.get("/api/projects", headers=at(attacker, wrong_key(i, prefix)))).status_code
            for i in range(6)
        ]
        assert codes == [401] * 3 + [429] * 3  # the prefix's budget, then one more failure blocks the address
        # the key itself, never used before, still authenticates from another address
        resp = await client.get("/api/projects", headers=at(bystander, idle))
        assert resp.status_code == 200, resp.text
        assert len(lookups) == 5  # four failures, then the blocked address cost no lookup; one success
        assert (await client.post("/auth/token", headers=at(bystander, idle))).status_code == 200
        # what is blocked is the attacker's address, for every key not known there to work
        resp = await client.get("/api/projects", headers=at(attacker, unused))
        assert resp.status_code == 429 and "detail" in resp.json() and "Retry-After" in resp.headers

        # and from the very address that spent the prefix's budget, as long as that address is not blocked
        prefix, shared = other_idle.split("_")[1], "203.0.113.67"
        for i in range(3):
            assert_401(await client.get("/api/projects", headers=at(shared, wrong_key(i, prefix))))
        resp = await client.get("/api/projects", headers=at(shared, other_idle))
        assert resp.status_code == 200, resp.text


async def test_x_forwarded_for_counts_only_from_trusted_proxies(make_app, stack):
    # no trusted proxy: a client that rotates X-Forwarded-For is still one address
    async for client in make_app(stack.with_(auth_rate_limit="2/minute")):
        codes = [
            (
                await client.get(
                    "/api/projects",
                    headers={"X-API-Key": wrong_key(i, f"{i:08x}"), "X-Forwarded-For": f"198.51.100.{i}"},
                )
            ).status_code
            for i in range(4)
        ]
        assert codes == [401, 401, 429, 429]
    # the peer (the test client, 127.0.0.1) is a trusted proxy: each forwarded client has its own budget
    async for client in make_app(stack.with_(auth_rate_limit="2/minute", trusted_proxies=["127.0.0.0/8", "::1"])):
        for addr in ("198.51.100.7", "198.51.100.8"):
            codes = [
                (
                    await client.get(
                        "/api/projects",
                        headers={
                            "X-API-Key": wrong_key(i, f"{i:08x}"),
                            # what the client wrote first is not believed: the proxy appended the address it saw
                            "X-Forwarded-For": f"10.9.9.{i}, {addr}",
                        },
                    )
                ).status_code
                for i in range(3)
            ]
            assert codes == [401, 401, 429], (addr, codes)


# --- generation: tenant slots and a token budget ------------------------------------------------------


async def test_generate_over_the_token_budget_is_422(make_app, stack, tenant):
    async for client in make_app(stack.with_(generate_token_budget=1000)):
        resp = await client.post(
            "/api/generate",
            headers=tenant.headers,
            json={"template": FN, "values": VALUES, "n": 8, "max_new_tokens": 4096},
        )
        assert resp.status_code == 422, resp.text
        assert "GENERATE_TOKEN_BUDGET" in resp.json()["detail"] and "32768" in resp.json()["detail"]


async def test_generate_counts_against_the_tenants_generation_slots(api, pool, tenant, other_tenant):
    assert (
        await api.put("/api/settings", json={"generation_concurrency": 1}, headers=tenant.headers)
    ).status_code == 200
    body = {"template": FN, "values": VALUES, "max_new_tokens": 4}
    # a pipeline generation of this tenant holds its only slot
    holder = f"project-{uuid.uuid4()}-x-round-1"
    assert await leases.acquire(pool, tenant_id=tenant.tenant_id, holder=holder, limit=1, ttl_s=60)
    resp = await api.post("/api/generate", json=body, headers=tenant.headers)
    assert resp.status_code == 429, resp.text
    assert "generation slots" in resp.json()["detail"] and resp.headers["Retry-After"]
    # another tenant is not held up
    resp = await api.post("/api/generate", json=body, headers=other_tenant.headers)
    assert resp.status_code == 200, resp.text
    await leases.release(pool, tenant_id=tenant.tenant_id, holder=holder)

    # POST /api/generate holds the slot itself while it runs, so a pipeline generation has to wait
    resp = await api.post("/api/generate", json=body, headers=tenant.headers)
    assert resp.status_code == 200, resp.text
    gid = resp.json()["id"]

    async def slot_free():  # record_generation gave the slot back
        return await leases.acquire(pool, tenant_id=tenant.tenant_id, holder=holder, limit=1, ttl_s=60)

    assert await wait_for(slot_free, timeout=20)
    await leases.release(pool, tenant_id=tenant.tenant_id, holder=holder)
    assert (await api.get(f"/api/generations/{gid}", headers=tenant.headers)).json()["status"] == "completed"


async def test_a_running_generate_holds_the_tenants_slot(api, tenant):
    """Two requests at once with generation_concurrency 1: the second finds the first's slot taken."""
    assert (
        await api.put("/api/settings", json={"generation_concurrency": 1}, headers=tenant.headers)
    ).status_code == 200
    body = {"template": FN, "values": VALUES, "max_new_tokens": 8}
    results = await asyncio.gather(*[api.post("/api/generate", json=body, headers=tenant.headers) for _ in range(2)])
    assert sorted(r.status_code for r in results) == [200, 429], [r.text for r in results]


# --- two gateways, one Redis --------------------------------------------------------------------------


async def test_two_gateways_share_limits_through_redis(make_app, stack, tenant, other_tenant, redis_url):
    import redis  # noqa: F401 - redis-py, the Redis client of `limits` here, is in the [test] extra: never skip

    await redis_up(redis_url)
    settings = stack.with_(
        redis_url=redis_url, rate_limit="100/minute", tenant_rate_limit="4/minute", auth_rate_limit="3/minute"
    )
    async for one in make_app(settings):
        async for two in make_app(settings):
            for client in (one, two, one, two):
                assert (await client.get("/api/projects", headers=tenant.headers)).status_code == 200
            resp = await one.get("/api/projects", headers=tenant.headers)
            assert resp.status_code == 429 and "tenant" in resp.json()["detail"]
            assert (await two.get("/api/projects", headers=tenant.headers)).status_code == 429
            # failures spent at one gateway block the address at the other ...
            assert (await one.get("/api/projects", headers=other_tenant.headers)).status_code == 200
            for i, client in enumerate((one, two, one)):
                assert_401(await client.post("/auth/token", json={"api_key": wrong_key(i, f"{i:08x}")}))
            assert (await two.post("/auth/token", json={"api_key": wrong_key(7, "77777777")})).status_code == 429
            # ... and a key that worked at one gateway passes that block at the other
            assert (await two.post("/auth/token", headers=other_tenant.headers)).status_code == 200


async def test_the_in_memory_limits_sweep_their_expired_entries_at_most_once_a_second(stack, tenant):
    """limits' memory storage would start a sweep (a thread hop per key) after every write; ours sweeps at
    most once a second (api/ratelimit.py), and what it counts is the same."""
    from api.ratelimit import RateLimiter
    from models.auth import Principal

    limiter = RateLimiter(stack.with_(rate_limit="100/minute", redis_url=None))
    principal = Principal(
        tenant_id=tenant.tenant_id, user_id=tenant.user_id, role=Role.owner, auth="api_key", key_id=tenant.key_id
    )
    first = await limiter.hit(principal)
    sweep = limiter.storage.timer
    assert sweep is not None
    states = []
    for _ in range(20):
        states.append(await limiter.hit(principal))
        await asyncio.sleep(0)  # a finished sweep would make way for the next one
    assert limiter.storage.timer is sweep  # no second sweep within the second
    assert [s.key.remaining for s in states] == list(range(first.key.remaining - 1, first.key.remaining - 21, -1))
