"""Honest availability: a model is `available` only when it can serve this tenant now (a key
for API models, the platform's or the tenant's; an answering server for vLLM over VLLM_BASE_URL), and
choosing one that cannot is a 422 up front. The vLLM server here is a protocol fake this test starts
(GET /v1/models only); an unreachable one is a closed local port. No network."""

from __future__ import annotations

import asyncio
import socket
import threading
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import httpx
import pytest

from codegen.base import declaration
from codegen.endpoint_probe import EndpointProbe
from codegen.remote import vllm_server_backend
from models.common import Role
from models.orchestrator import ProjectCreate
from store import model_workers, projects
from store.tenants import create_api_key

FN = {"name": "python-function"}
VALUES = {"function_name": "add", "description": "Add two integers."}
TENANT_KEY = "sk-tenant-own-0001"


@dataclass
class ModelsServer:
    """GET /v1/models as vLLM's OpenAI-compatible server answers it; `status` is what it answers."""

    url: str = ""
    status: int = 200
    hits: list[str] = field(default_factory=list)


@contextmanager
def models_server() -> Iterator[ModelsServer]:
    state = ModelsServer()

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args):
            pass

        def do_GET(self):
            state.hits.append(self.path)
            data = b'{"object": "list", "data": [{"id": "deepseek", "object": "model"}]}'
            self.send_response(state.status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    state.url = f"http://127.0.0.1:{server.server_address[1]}"
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield state
    finally:
        server.shutdown()
        server.server_close()


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]  # nothing listens there once the socket closes


async def _models(client, headers) -> dict[str, dict]:
    resp = await client.get("/api/models", headers=headers)
    assert resp.status_code == 200, resp.text
    return {m["name"]: m for m in resp.json()["items"]}


async def _refused(resp, model: str, *needles: str) -> dict:
    assert resp.status_code == 422, resp.text
    body = resp.json()
    assert body["model"] == model and "cannot serve this tenant now" in body["detail"]
    assert all(n in body["reason"] and n in body["detail"] for n in needles), body
    return body


@pytest.fixture
async def reporting_worker(pool, stack):
    """A live generation worker set up with VLLM_BASE_URL: it says deepseek_8b is available (it does not
    probe) and declares the model server behind it, as its backend does; its rows go when the test ends."""
    worker_id = f"test-{uuid.uuid4().hex[:8]}:1"
    backend = vllm_server_backend(stack.with_(vllm_base_url="http://vllm.worker.test/v1"))
    status = backend.status()
    assert status.state == "available"
    report = model_workers.ModelReport("deepseek_8b", status.state, declared=declaration(backend, status))
    await model_workers.report(pool, worker_id=worker_id, reports=[report])
    yield worker_id
    await model_workers.forget(pool, worker_id=worker_id)


# --- API models: a key for this tenant ----------------------------------------------------------------


async def test_api_models_are_available_only_with_a_key_for_the_tenant(make_app, stack, pool, new_tenant, workers):
    a, b = await new_tenant("a"), await new_tenant("b")
    async for client in make_app(stack.with_(openai_api_key=None, anthropic_api_key=None)):
        mine = await _models(client, a.headers)
        for name, provider, env in (
            ("openai_api", "openai", "OPENAI_API_KEY"),
            ("anthropic_api", "anthropic", "ANTHROPIC_API_KEY"),
        ):
            assert mine[name]["state"] == "unavailable", mine[name]
            assert env in mine[name]["reason"] and f"PUT /api/providers/{provider}/key" in mine[name]["reason"]
        put = await client.put("/api/providers/openai/key", json={"api_key": TENANT_KEY}, headers=b.headers)
        assert put.status_code == 200, put.text
        theirs = await _models(client, b.headers)
        assert theirs["openai_api"]["state"] == "available" and theirs["openai_api"]["reason"] is None
        assert theirs["anthropic_api"]["state"] == "unavailable"
        assert (await _models(client, a.headers))["openai_api"]["state"] == "unavailable"  # per tenant
        viewer = await create_api_key(pool, tenant_id=a.tenant_id, user_id=a.user_id, role=Role.viewer)
        shown = (await _models(client, {"X-API-Key": viewer.api_key}))["openai_api"]
        assert "PUT /api/providers/openai/key" in shown["reason"]  # a route is not a host path to hide
    async for client in make_app(stack.with_(openai_api_key=None, provider_keys_secret=None)):
        reason = (await _models(client, b.headers))["openai_api"]["reason"]  # its stored key cannot be read
        assert "OPENAI_API_KEY" in reason and "PROVIDER_KEYS_SECRET" in reason
    async for client in make_app():  # the platform has a key (the tests' settings): every tenant can use it
        assert (await _models(client, a.headers))["openai_api"]["state"] == "available"


async def test_choosing_an_api_model_without_a_key_is_422_up_front(make_app, stack, pool, new_tenant, workers):
    a, b = await new_tenant("a"), await new_tenant("b")
    async with projects.creating_project(
        pool, tenant_id=a.tenant_id, user_id=a.user_id, body=ProjectCreate(name="p")
    ) as project:
        pass  # the row is enough: no workflow needed to change its settings
    pid = project.id
    async for client in make_app(stack.with_(openai_api_key=None)):
        before = (await client.get("/api/settings", headers=a.headers)).json()
        resp = await client.put("/api/settings", json={"model": "openai_api", "debug_rounds": 1}, headers=a.headers)
        await _refused(resp, "openai_api", "OPENAI_API_KEY")
        assert (await client.get("/api/settings", headers=a.headers)).json() == before  # nothing changed
        resp = await client.put(f"/api/projects/{pid}/settings", json={"model": "openai_api"}, headers=a.headers)
        await _refused(resp, "openai_api", "PUT /api/providers/openai/key")
        resp = await client.put(f"/api/projects/{pid}/settings", json={"model": "openai_api"}, headers=b.headers)
        assert resp.status_code == 404  # another tenant's project, before anything about the model
        resp = await client.post(
            "/api/generate", json={"template": FN, "values": VALUES, "model": "openai_api"}, headers=a.headers
        )
        await _refused(resp, "openai_api", "OPENAI_API_KEY")
        listed = await client.get("/api/generations", headers=a.headers)
        assert listed.json() == {"items": [], "next_cursor": None}  # refused before anything started
        # with its own key the same tenant may choose it
        assert (
            await client.put("/api/providers/openai/key", json={"api_key": TENANT_KEY}, headers=a.headers)
        ).status_code == 200
        resp = await client.put(f"/api/projects/{pid}/settings", json={"model": "openai_api"}, headers=a.headers)
        assert resp.status_code == 200 and resp.json()["model"] == "openai_api", resp.text
        resp = await client.put("/api/settings", json={"model": None}, headers=a.headers)  # a reset is not checked
        assert resp.status_code == 200 and resp.json()["model"] == "local_llama"


# --- a vLLM server: available while it answers ---------------------------------------------------------


async def test_an_unreachable_vllm_server_is_unavailable_with_its_reason(make_app, stack, tenant, reporting_worker):
    url = f"http://127.0.0.1:{_closed_port()}/v1"
    async for client in make_app(stack.with_(vllm_base_url=url)):
        entry = (await _models(client, tenant.headers))["deepseek_8b"]
        assert entry["state"] == "unavailable" and entry["backend"] == "vllm-openai"
        assert "VLLM_BASE_URL does not answer (cannot connect" in entry["reason"]
        resp = await client.put("/api/settings", json={"model": "deepseek_8b"}, headers=tenant.headers)
        await _refused(resp, "deepseek_8b", "VLLM_BASE_URL")
        resp = await client.post(
            "/api/generate", json={"template": FN, "values": VALUES, "model": "deepseek_8b"}, headers=tenant.headers
        )
        await _refused(resp, "deepseek_8b", "does not answer")


async def test_an_answering_vllm_server_is_available_and_asked_once_per_ttl(make_app, stack, tenant, reporting_worker):
    with models_server() as server:
        async for client in make_app(stack.with_(vllm_base_url=f"{server.url}/v1")):
            assert (await _models(client, tenant.headers))["deepseek_8b"]["state"] == "available"
            resp = await client.put("/api/settings", json={"model": "deepseek_8b"}, headers=tenant.headers)
            assert resp.status_code == 200, resp.text
            assert (await _models(client, tenant.headers))["deepseek_8b"]["state"] == "available"
            assert server.hits == ["/v1/models"]  # three questions, one GET: the answer is cached
            await client.put("/api/settings", json={"model": None}, headers=tenant.headers)


# --- the probe itself -------------------------------------------------------------------------------


async def test_the_probe_caches_per_url_and_asks_once_for_concurrent_callers():
    with models_server() as server:
        probe = EndpointProbe(ttl_s=60)
        async with httpx.AsyncClient() as client:
            answers = await asyncio.gather(*[probe.reason(client, f"{server.url}/v1/models") for _ in range(5)])
            assert answers == [None] * 5 and server.hits == ["/v1/models"]
            server.status = 503
            assert await probe.reason(client, f"{server.url}/v1/models") is None  # cached
            assert await probe.reason(client, f"{server.url}/health") == "it answered HTTP 503"  # another URL
            fresh = EndpointProbe(ttl_s=0)
            assert await fresh.reason(client, f"{server.url}/v1/models") == "it answered HTTP 503"
            server.status = 401  # a server that wants a key is there
            assert await fresh.reason(client, f"{server.url}/v1/models") is None


async def test_the_probe_gives_up_after_its_timeout():
    with socket.socket() as silent:  # accepts connections (the kernel's backlog) and never answers
        silent.bind(("127.0.0.1", 0))
        silent.listen(8)
        probe = EndpointProbe(timeout_s=0.2)
        async with httpx.AsyncClient() as client:
            reason = await asyncio.wait_for(probe.reason(client, f"http://127.0.0.1:{silent.getsockname()[1]}/"), 5)
    assert reason == "no answer within 0.2 s"


# --- a generation that fails is not a 200 ----------------------------------------------------------------


async def test_generate_documents_its_failure_as_a_502(api):
    spec = (await api.get("/openapi.json")).json()
    failed = spec["paths"]["/api/generate"]["post"]["responses"]["502"]
    assert failed["content"]["application/json"]["schema"]["$ref"].endswith("/GenerationFailed")
    shape = spec["components"]["schemas"]["GenerationFailed"]
    assert {"detail", "id", "status", "href"} <= set(shape["properties"])
