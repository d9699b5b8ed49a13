"""Less exposure: host paths and worker ids only for admins."""

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


async def test_embedders_show_host_paths_to_admins_only(api, make_app, stack, pool, tenant, tmp_path):
    """GET /api/knowledge/embedders: where each embedder loads from, and why one failed to, name host paths."""
    from knowledge.embedders import minilm_dir

    # the session's app (`api`) has prepared minilm's files; this one adds a codebert that cannot load,
    # whose error names its directory, and so gets a knowledge runtime (and vector store) of its own
    missing = tmp_path / "no-such-encoder"
    settings = stack.with_(codebert_model_dir=missing, edge_path=tmp_path / "edge")
    async for client in make_app(settings):
        keys = {
            role: (await create_api_key(pool, tenant_id=tenant.tenant_id, user_id=tenant.user_id, role=role)).api_key
            for role in (Role.viewer, Role.editor, Role.admin)
        }
        for role, key in [(Role.admin, keys[Role.admin]), (Role.owner, tenant.api_key)]:
            resp = await client.get("/api/knowledge/embedders", headers={"X-API-Key": key})
            assert resp.status_code == 200, resp.text
            by_name = {e["name"]: e for e in resp.json()["items"]}
            assert by_name["minilm"]["model"] == str(minilm_dir()) and by_name["minilm"]["loaded"], role
            assert by_name["codebert"]["model"] == str(missing) and str(missing) in by_name["codebert"]["error"]
        for role in (Role.viewer, Role.editor):
            resp = await client.get("/api/knowledge/embedders", headers={"X-API-Key": keys[role]})
            assert resp.status_code == 200, resp.text
            text = json.dumps(resp.json())
            assert str(minilm_dir().parent) not in text and str(tmp_path) not in text, (role, text)
            by_name = {e["name"]: e for e in resp.json()["items"]}
            assert by_name["minilm"]["model"] == minilm_dir().name and by_name["minilm"]["loaded"] is True
            codebert = by_name["codebert"]
            assert codebert["model"] == missing.name and not codebert["loaded"] and "<path>" in codebert["error"]
