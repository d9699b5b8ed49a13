"""The gateway's cache of API-key lookups (api/security/keycache.py): a key that authenticated is served
from memory, and a revocation reaches every gateway within a second, by PostgreSQL's NOTIFY; while a
gateway cannot hear revocations, it serves no cached key. Two gateways here are two apps on the same
database, each with its own cache and its own LISTEN connection."""

from __future__ import annotations

import asyncpg

from api.security.keycache import KeyCache
from models.auth import Principal
from models.common import Role
from store.tenants import create_api_key, hash_key, revoke_api_key
from tests.conftest import wait_for


def _keys(client) -> KeyCache:
    keys = client.app.state.resources.auth.keys
    assert keys is not None, "the gateway keeps a cache of API-key lookups by default"
    return keys


async def _status(client, key: str) -> int:
    return (await client.get("/api/projects", headers={"X-API-Key": key})).status_code


async def _refused(client, key: str) -> bool:
    return await _status(client, key) == 401


async def test_a_key_revoked_through_one_gateway_is_refused_by_another_within_a_second(make_app, pool, tenant):
    viewer = await create_api_key(pool, tenant_id=tenant.tenant_id, role=Role.viewer)
    async for one in make_app():
        async for two in make_app():
            for gateway in (one, two):
                await wait_for(lambda gateway=gateway: _keys(gateway).listening)
                assert await _status(gateway, viewer.api_key) == 200
                assert _keys(gateway).get(hash_key(viewer.api_key)) is not None  # cached: no lookup next time
            resp = await one.delete(f"/api/keys/{viewer.id}", headers=tenant.headers)
            assert resp.status_code == 200, resp.text
            assert await _refused(one, viewer.api_key)  # the gateway that revoked it: at once
            await wait_for(lambda two=two: _refused(two, viewer.api_key), timeout=1)  # the other: within a second
            assert _keys(two).get(hash_key(viewer.api_key)) is None
            assert await _status(two, tenant.api_key) == 200  # the owner's key, cached too, is untouched


async def test_while_the_listener_is_down_no_cached_key_is_served(make_app, stack, pool, tenant):
    viewer = await create_api_key(pool, tenant_id=tenant.tenant_id, role=Role.viewer)
    other = await create_api_key(pool, tenant_id=tenant.tenant_id, role=Role.viewer)
    async for client in make_app():
        keys = _keys(client)
        await wait_for(lambda keys=keys: keys.listening)
        assert await _status(client, viewer.api_key) == 200
        assert keys.get(hash_key(viewer.api_key)) is not None
        admin = await asyncpg.connect(stack.settings.admin_dsn())
        try:
            assert await admin.fetchval("select pg_terminate_backend($1)", keys.listener.server_pid)
        finally:
            await admin.close()
        # it reconnects a second later at the soonest; every entry goes with the connection
        await wait_for(lambda keys=keys: not keys.listening and len(keys) == 0)
        # a revocation now is not heard (nobody LISTENs): the key is looked up, and refused
        await revoke_api_key(pool, tenant_id=tenant.tenant_id, key_id=viewer.id)
        assert await _refused(client, viewer.api_key)
        assert await _status(client, other.api_key) == 200
        assert keys.get(hash_key(other.api_key)) is None or keys.listening  # nothing is kept while down
        await wait_for(lambda keys=keys: keys.listening, timeout=10)  # back, and caching again
        assert await _status(client, other.api_key) == 200
        assert keys.get(hash_key(other.api_key)) is not None
        assert await _refused(client, viewer.api_key)


async def test_a_lookup_under_way_when_a_revocation_arrives_is_not_kept(stack, tenant):
    """A lookup may read the row just before the revocation commits: its answer must not be stored."""
    keys = KeyCache(stack.settings.app_dsn(), ttl_s=10)
    keys.start()
    try:
        await wait_for(lambda: keys.listening)
        principal = Principal(tenant_id=tenant.tenant_id, user_id=tenant.user_id, role=Role.owner, auth="api_key")
        principal = principal.model_copy(update={"key_id": tenant.key_id})
        before = keys.epoch()
        keys.put("a", principal, before)
        assert keys.get("a") == principal
        during = keys.epoch()  # a second lookup starts ...
        keys.forget(tenant.key_id)  # ... the key is revoked meanwhile ...
        keys.put("b", principal, during)  # ... and the lookup ends with the row it read before
        assert keys.get("a") is None and keys.get("b") is None
    finally:
        await keys.close()


async def test_no_cache_when_it_is_turned_off(make_app, stack, tenant):
    async for client in make_app(stack.with_(api_key_cache_seconds=0)):
        assert client.app.state.resources.auth.keys is None
        assert await _status(client, tenant.api_key) == 200
