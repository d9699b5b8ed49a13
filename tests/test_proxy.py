"""Services as their own processes on their seed-style ports, behind the gateway, which keeps
authentication, RBAC and rate limiting and forwards /api/* with a short-lived internal token."""

from __future__ import annotations

import json
import subprocess
import sys
from urllib.parse import quote

import httpx
import pytest

from api.security.auth import Authenticator
from infra import embedded
from models.auth import Principal
from models.common import Role
from store.tenants import create_api_key
from tests.conftest import child_env, wait_for


def _serve(stack, service: str, port: int, tmp_path, **env: str) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "workers.cli", "serve", service, "--port", str(port)],
        env={**child_env(stack, tmp_path), **env},
        cwd=tmp_path,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


@pytest.fixture(scope="module")
def services(stack, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("services")
    ports = {"spec-registry": embedded.free_port(), "orchestrator": embedded.free_port()}
    procs = [_serve(stack, name, port, tmp) for name, port in ports.items()]
    try:
        for (name, port), proc in zip(ports.items(), procs, strict=False):
            embedded.wait_for_port("127.0.0.1", port, 60, proc, name)
        yield {name: f"http://127.0.0.1:{port}" for name, port in ports.items()}
    finally:
        for proc in procs:
            embedded.stop_process(proc)


@pytest.fixture
async def gateway(stack, services, workers, make_app):
    settings = stack.with_(spec_registry_url=services["spec-registry"], orchestrator_url=services["orchestrator"])
    async for client in make_app(settings):
        yield client


async def test_requests_are_forwarded_to_the_services(gateway, tenant):
    h = tenant.headers
    tpl = await gateway.post(
        "/api/templates",
        json={"name": "fn", "version": "1", "schema": {"type": "object", "required": ["name"]}},
        headers=h,
    )
    assert tpl.status_code == 201, tpl.text
    project = await gateway.post("/api/projects", json={"name": "remote"}, headers=h)
    assert project.status_code == 201, project.text
    pid = project.json()["id"]
    bad = await gateway.post(
        "/api/instances", json={"template_id": tpl.json()["id"], "project_id": pid, "values": {}}, headers=h
    )
    assert bad.status_code == 422 and bad.json()["errors"][0]["message"]
    inst = await gateway.post(
        "/api/instances", json={"template_id": tpl.json()["id"], "project_id": pid, "values": {"name": "x"}}, headers=h
    )
    assert inst.status_code == 201, inst.text
    specs = await gateway.get(f"/api/projects/{pid}/specs", headers=h)  # spec registry, under /projects
    assert specs.status_code == 200 and specs.json()["items"][0]["template_name"] == "fn"

    async def in_spec_definition():
        resp = await gateway.get(f"/api/projects/{pid}/state", headers=h)
        return resp.status_code == 200 and resp.json()["state"] == "spec_definition"

    await wait_for(in_spec_definition)
    assert (await gateway.get("/api/nowhere", headers=h)).status_code == 404


async def test_gateway_keeps_rbac_and_services_refuse_direct_keys(gateway, services, pool, tenant):
    viewer = await create_api_key(pool, tenant_id=tenant.tenant_id, role=Role.viewer)
    denied = await gateway.post(
        "/api/templates", json={"name": "v", "version": "1", "schema": {}}, headers={"X-API-Key": viewer.api_key}
    )
    assert denied.status_code == 403
    assert (await gateway.get("/api/templates", headers={"X-API-Key": viewer.api_key})).status_code == 200
    assert (await gateway.get("/api/templates")).status_code == 401
    async with httpx.AsyncClient(base_url=services["spec-registry"]) as direct:
        resp = await direct.get("/api/templates", headers=tenant.headers)
        assert resp.status_code == 401 and "detail" in resp.json()
        token = (await gateway.post("/auth/token", headers=tenant.headers)).json()["access_token"]
        resp = await direct.get("/api/templates", headers={"Authorization": f"Bearer {token}"})
        assert resp.status_code == 401  # a user's token is not an internal one


async def test_health_covers_the_remote_services(gateway, services, stack, pool, tenant):
    resp = await gateway.get("/health", headers=tenant.headers)
    assert resp.status_code == 200, resp.text
    checks = resp.json()["checks"]
    assert checks["service:spec-registry"]["ok"] and checks["service:orchestrator"]["ok"]
    caller = Principal(
        tenant_id=tenant.tenant_id, user_id=tenant.user_id, role=Role.owner, auth="api_key", key_id=tenant.key_id
    )
    internal = Authenticator(stack.settings, pool).issue_internal(caller)
    async with httpx.AsyncClient(base_url=services["orchestrator"]) as direct:
        assert (await direct.get("/health")).json() == {"status": "ok"}  # the public answer
        own = await direct.get("/health", headers={"Authorization": f"Bearer {internal}"})
        assert own.status_code == 200 and own.json()["checks"]["workers:orchestrator"]["ok"]


async def test_paths_are_requoted_and_control_characters_refused(gateway, tenant):
    for path in ("/api/templates/%00", "/api/templates/a%01b", "/api/instances/%7F"):
        resp = await gateway.get(path, headers=tenant.headers)
        assert resp.status_code == 400 and resp.json()["detail"] == "the path contains control characters", path
    newline = await gateway.get("/api/templates/a%0Ab", headers=tenant.headers)  # no route matches a newline
    assert newline.status_code == 404 and "detail" in newline.json()
    spaced = await gateway.get("/api/templates/not%20a%20uuid", headers=tenant.headers)
    assert spaced.status_code in (404, 422) and "detail" in spaced.json()


# --- paths that would leave the route the gateway matched ------------------------------------------


@pytest.fixture(scope="module")
def knowledge_service(stack, tmp_path_factory):
    """The knowledge service as its own process: its own data dir (vector store), the session's model files."""
    tmp = tmp_path_factory.mktemp("knowledge-service")
    port = embedded.free_port()
    proc = _serve(stack, "knowledge", port, tmp, MODELS_DIR=str(stack.settings.models_path))
    try:
        embedded.wait_for_port("127.0.0.1", port, 180, proc, "knowledge")  # it loads its embedders first
        yield f"http://127.0.0.1:{port}"
    finally:
        embedded.stop_process(proc)


@pytest.fixture
async def every_service_gateway(stack, services, knowledge_service, workers, make_app):
    settings = stack.with_(
        spec_registry_url=services["spec-registry"],
        orchestrator_url=services["orchestrator"],
        knowledge_url=knowledge_service,
    )
    async for client in make_app(settings):
        yield client


async def test_dot_segments_are_not_found_but_keys_holding_a_slash_still_forward(
    every_service_gateway, knowledge_service, tenant
):
    """`..` segments, encoded or not, are refused at the gateway: forwarded, httpx would resolve them and the
    request would reach the service's own /openapi.json or its detailed /health/knowledge. An encoded "/"
    is not refused: DELETE /api/knowledge/{project_id}/{key:path} (api/routes/knowledge.py) takes keys
    holding "/", sent as %2F or as a plain "/"."""
    gw, h = every_service_gateway, tenant.headers
    project = await gw.post("/api/projects", json={"name": "dots"}, headers=h)
    assert project.status_code == 201, project.text
    pid = project.json()["id"]
    async with httpx.AsyncClient(base_url=knowledge_service) as direct:  # what must not come back
        assert "openapi" in (await direct.get("/openapi.json")).json()
    payloads = [
        "/api/snippets/..%2f..%2fopenapi.json",
        f"/api/knowledge/{pid}/..%2f..%2f..%2fhealth%2fknowledge",
        "/api/snippets/%2e%2e/%2e%2e/openapi.json",
        "/api/snippets/.%2e%2F.%2E%2Fhealth%2Fknowledge",
        "/api/similar/..%2F..%2Fopenapi.json",
        f"/api/knowledge/{pid}/%2e/x",
        "/api/templates/..%2f..%2fopenapi.json",  # the spec registry's too
    ]
    for path in payloads:
        for method in ("GET", "DELETE"):
            resp = await gw.request(method, path, headers=h)
            assert resp.status_code == 404, (method, path, resp.status_code, resp.text)
            assert resp.json() == {"detail": "Not Found"}, (method, path, resp.text)
            assert "openapi" not in resp.text and "checks" not in resp.text and "points" not in resp.text

    base = f"/api/knowledge/{pid}"
    for key in ["docs/api", "docs/guide/intro", "a..b/c.d", "stay"]:
        resp = await gw.post(base, json={"key": key, "value": key}, headers=h)
        assert resp.status_code == 201, resp.text
    assert (await gw.delete(f"{base}/{quote('docs/api', safe='')}", headers=h)).status_code == 204
    assert (await gw.delete(f"{base}/docs/guide/intro", headers=h)).status_code == 204
    assert (await gw.delete(f"{base}/{quote('a..b/c.d', safe='')}", headers=h)).status_code == 204
    gone = await gw.delete(f"{base}/docs%2Fapi", headers=h)
    assert gone.status_code == 404 and "detail" in gone.json()
    listed = (await gw.get(base, headers=h)).json()["items"]
    assert [e["key"] for e in listed] == ["stay"], json.dumps(listed)
