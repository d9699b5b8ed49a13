"""Less exposure (issue 10, L2): host paths and worker ids only for admins."""

from __future__ import annotations

import json

from models.common import Role
from store.tenants import create_api_key
from tests.conftest import wait_for


async def test_models_show_paths_and_workers_to_admins_only(api, pool, tenant, tiny_llama):
    async def reported():
        listed = (await api.get("/api/models", headers=tenant.headers)).json()["items"]
        local = next(m for m in listed if m["name"] == "local_llama")
        return listed if local["workers"] else None

    as_owner = await wait_for(reported, timeout=30)  # the in-process generation worker has reported
    local = next(m for m in as_owner if m["name"] == "local_llama")
    assert local["model"] == str(tiny_llama) and ":" in local["workers"][0]["worker_id"]  # host:pid
    for role in (Role.viewer, Role.editor):
        key = await create_api_key(pool, tenant_id=tenant.tenant_id, user_id=tenant.user_id, role=role)
        resp = await api.get("/api/models", headers={"X-API-Key": key.api_key})
        assert resp.status_code == 200, resp.text
        text = json.dumps(resp.json())
        assert str(tiny_llama) not in text and str(tiny_llama.parent) not in text, role
        assert "worker_id" not in text
        shown = next(m for m in resp.json()["items"] if m["name"] == "local_llama")
        assert shown["model"] == tiny_llama.name and shown["workers"][0]["state"] == local["workers"][0]["state"]
