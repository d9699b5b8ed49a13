"""GET /health answers 200 only when the database, Temporal and the needed workers are reachable; the
checks behind the answer are shown to admins only."""

from __future__ import annotations

from infra import embedded
from models.common import Role
from store.tenants import create_api_key


async def test_health_is_ok_with_database_temporal_and_workers(api, tenant):
    resp = await api.get("/health", headers=tenant.headers)
    assert resp.status_code == 200, resp.text
    body = resp.json()
    assert body["checks"]["database"]["ok"] and body["checks"]["temporal"]["ok"]
    assert body["checks"]["workers:orchestrator"]["pollers"]["workflow"] >= 1
    store = body["checks"]["vector_store"]
    assert (store["ok"], store["mode"]) == (True, "edge") and isinstance(store["shards"], dict)
    assert body["checks"]["embedders"]["loaded"] == ["minilm"]
    for service in ("spec-registry", "orchestrator", "knowledge", "generator"):
        own = await api.get(f"/health/{service}", headers=tenant.headers)
        assert own.status_code == 200 and own.json()["service"] == service


async def test_without_an_admin_health_says_only_up_or_down(api, stack, pool, tenant, make_app):
    editor = await create_api_key(pool, tenant_id=tenant.tenant_id, user_id=tenant.user_id, role=Role.editor)
    for headers in (
        {},
        {"X-API-Key": editor.api_key},
        {"X-API-Key": "sm_0000_not-a-key"},
        {"Authorization": "Bearer not.a.token"},
    ):
        for path in ("/health", "/health/orchestrator"):
            resp = await api.get(path, headers=headers)
            assert resp.status_code == 200 and resp.json() == {"status": "ok"}, (path, headers, resp.text)
    async for client in make_app(stack.with_(task_queue_prefix="nobody-polls-")):
        resp = await client.get("/health")
        assert resp.status_code == 503 and resp.json() == {"status": "unavailable", "detail": "unavailable"}


async def test_health_is_503_naming_missing_workers(stack, make_app, tenant):
    async for client in make_app(stack.with_(task_queue_prefix="nobody-polls-")):
        resp = await client.get("/health", headers=tenant.headers)
        assert resp.status_code == 503
        assert resp.json()["detail"] == (
            "down: workers:generation, workers:integration, workers:knowledge, "
            "workers:orchestrator, workers:spec-registry"
        )
        assert (await client.get("/health/orchestrator")).status_code == 503
        assert (await client.get("/health/spec-registry")).status_code == 200
        assert "checks" not in (await client.get("/health/orchestrator")).json()


async def test_health_is_503_naming_temporal_when_it_is_unreachable(stack, make_app, tenant):
    closed = embedded.free_port()
    async for client in make_app(stack.with_(temporal_address=f"127.0.0.1:{closed}")):
        resp = await client.get("/health", headers=tenant.headers)
        assert resp.status_code == 503
        assert "temporal" in resp.json()["detail"]
        assert resp.json()["checks"]["database"]["ok"] is True
        # the API that needs Temporal says so plainly, and stores nothing half-made
        created = await client.post("/api/projects", json={"name": "x"}, headers=tenant.headers)
        assert created.status_code == 503 and "Temporal" in created.json()["detail"]
        assert (await client.get("/api/projects", headers=tenant.headers)).json()["items"] == []
        assert (await client.get("/api/events", headers=tenant.headers)).json()["items"] == []


async def test_health_is_503_naming_the_database_when_it_is_unreachable(stack, make_app):
    closed = embedded.free_port()
    settings = stack.with_(database_url=f"postgresql://specmill_app:x@127.0.0.1:{closed}/specmill")
    async for client in make_app(settings):
        resp = await client.get("/health")  # no admin can be checked without the database: the public answer
        assert resp.status_code == 503 and resp.json() == {"status": "unavailable", "detail": "unavailable"}
        denied = await client.get("/api/templates", headers={"X-API-Key": "sm_0000abcd_" + "x" * 43})  # well-formed
        assert denied.status_code == 503 and "database" in denied.json()["detail"]


async def test_knowledge_health_reports_the_vector_store_embedders_and_workers(api, tenant):
    resp = await api.get("/health/knowledge", headers=tenant.headers)
    assert resp.status_code == 200, resp.text
    body = resp.json()
    assert body["service"] == "knowledge" and body["status"] == "ok"
    checks = body["checks"]
    assert (checks["vector_store"]["ok"], checks["vector_store"]["mode"]) == (True, "edge")
    assert checks["embedders"]["default"] == "minilm" and checks["embedders"]["loaded"] == ["minilm"]
    assert checks["workers:knowledge"]["pollers"]["workflow"] >= 1 and checks["database"]["ok"]
    assert (await api.get("/health/knowledge")).json() == {"status": "ok"}


async def test_a_gateway_answers_health_of_a_service_it_cannot_reach(stack, make_app, tenant):
    """`make run` serves the knowledge API from the knowledge worker: the gateway forwards
    /health/knowledge there, and says which service is down when it cannot reach it."""
    closed = embedded.free_port()
    async for client in make_app(stack.with_(knowledge_url=f"http://127.0.0.1:{closed}")):
        resp = await client.get("/health/knowledge", headers=tenant.headers)
        assert resp.status_code == 503, resp.text
        assert resp.json()["service"] == "knowledge" and resp.json()["detail"] == "down: service:knowledge"
        public = await client.get("/health/knowledge")
        assert public.status_code == 503 and public.json() == {"status": "unavailable", "detail": "unavailable"}
        paths = (await client.get("/openapi.json")).json()["paths"]  # forwarded, and still documented
        assert {"/api/snippets", "/api/similar", "/api/knowledge/embedders", "/health/knowledge"} <= set(paths)
