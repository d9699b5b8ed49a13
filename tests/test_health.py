"""GET /health answers 200 only when the database, Temporal and the needed workers are reachable."""
from __future__ import annotations

from workers import embedded


async def test_health_is_ok_with_database_temporal_and_workers(api):
    resp = await api.get("/health")
    assert resp.status_code == 200, resp.text
    body = resp.json()
    assert body["checks"]["database"]["ok"] and body["checks"]["temporal"]["ok"]
    assert body["checks"]["workers:orchestrator"]["pollers"]["workflow"] >= 1
    assert body["checks"]["vector_store"] == {"ok": True, "mode": "local"}
    assert body["checks"]["embedders"]["loaded"] == ["minilm"]
    for service in ("spec-registry", "orchestrator", "knowledge", "generator"):
        own = await api.get(f"/health/{service}")
        assert own.status_code == 200 and own.json()["service"] == service


async def test_health_is_503_naming_missing_workers(stack, make_app):
    async for client in make_app(stack.with_(task_queue_prefix="nobody-polls-")):
        resp = await client.get("/health")
        assert resp.status_code == 503
        assert resp.json()["detail"] == ("down: workers:generation, workers:integration, workers:knowledge, "
                                          "workers:orchestrator, workers:spec-registry")
        assert (await client.get("/health/orchestrator")).status_code == 503
        assert (await client.get("/health/spec-registry")).status_code == 200


async def test_health_is_503_naming_temporal_when_it_is_unreachable(stack, make_app, tenant):
    closed = embedded.free_port()
    async for client in make_app(stack.with_(temporal_address=f"127.0.0.1:{closed}")):
        resp = await client.get("/health")
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
        resp = await client.get("/health")
        assert resp.status_code == 503 and resp.json()["detail"] == "down: database"
        denied = await client.get("/api/templates", headers={"X-API-Key": "sm_0000_x"})
        assert denied.status_code == 503 and "database" in denied.json()["detail"]
