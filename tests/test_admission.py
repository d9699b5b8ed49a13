"""Admission of POST /api/generate (api/admission.py) and the model view it rests on: the gateway builds no
model backend, it reads what the live generation workers report and declare (api/availability.py); the
tenant's generation slot and the generation's row are taken together, and given back together when
Temporal does not take the workflow."""

from __future__ import annotations

import socket
import uuid

import pytest

from api import availability
from codegen.base import declaration
from codegen.manager import ModelManager
from models.availability import ModelDeclaration
from store import admission, model_workers
from store.db import tenant_tx
from store.errors import Invalid
from tests.techniques import BEAM

FN = {"name": "python-function"}
VALUES = {"function_name": "add", "description": "Add two integers."}


@pytest.fixture
async def other_worker(pool):
    """A made-up generation worker's id; its rows are deleted after the test."""
    worker_id = f"test-{uuid.uuid4().hex[:8]}:1"
    yield worker_id
    await model_workers.forget(pool, worker_id=worker_id)


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


async def test_models_and_techniques_are_what_the_workers_declare(api, pool, tenant, other_worker):
    # a worker whose local_llama runs elsewhere and can only chat: newer than the session's worker, so its
    # declaration is the model's (among equally good reports, the newest)
    declared = ModelDeclaration(backend="llama-cpp-elsewhere", model="/srv/models/tiny.gguf", capabilities=("chat",))
    report = model_workers.ModelReport("local_llama", "loaded", declared=declared)
    await model_workers.report(pool, worker_id=other_worker, reports=[report])
    local = {m["name"]: m for m in (await api.get("/api/models", headers=tenant.headers)).json()["items"]}[
        "local_llama"
    ]
    assert local["backend"] == "llama-cpp-elsewhere" and local["model"] == "/srv/models/tiny.gguf"
    techniques = {t["name"]: t for t in (await api.get("/api/techniques", headers=tenant.headers)).json()["items"]}
    assert "local_llama" not in techniques[BEAM]["backends"]  # beam search needs logits: not declared
    resp = await api.post(
        "/api/generate",
        json={"template": FN, "values": VALUES, "model": "local_llama", "techniques": [BEAM]},
        headers=tenant.headers,
    )
    assert resp.status_code == 422 and "cannot run on local_llama: it needs `logits`" in resp.json()["detail"]


async def test_a_model_no_live_worker_reports_cannot_serve(make_app, tenant):
    async for client in make_app():
        res = client.app.state.resources
        facts = admission.Facts(reports=[], provider_keys=frozenset(), generation_concurrency=2)
        entry = await availability.judge(res, facts, "openai_api")
        assert entry["state"] == "unavailable" and entry["reason"] == availability.NO_WORKER
        assert entry["backend"] is None and entry["workers"] == []
        with pytest.raises(Invalid, match="cannot serve this tenant now: no generation worker"):
            availability.refuse(entry)


async def test_the_declarations_a_worker_reports_are_its_backends(pool, stack, other_worker):
    """What workers/queues.py's ModelReporter writes: each model's status and its backend's declaration."""
    manager = ModelManager(stack.with_(vllm_base_url="http://vllm.test/v1"))
    expected = {}
    for name in ("deepseek_8b", "openai_api"):
        backend = manager.backend(name)
        expected[name] = declaration(backend, backend.status())
    assert expected["deepseek_8b"].server is not None and expected["deepseek_8b"].server.env == "VLLM_BASE_URL"
    assert expected["deepseek_8b"].server.path == "/models"
    assert expected["openai_api"].key is not None and expected["openai_api"].key.env == "OPENAI_API_KEY"
    from workers.queues import ModelReporter

    reporter = ModelReporter(pool, manager, worker_id=other_worker)
    assert await reporter.report_once()
    mine = [r for r in await model_workers.live(pool, within_s=60) if r.worker_id == other_worker]
    assert {r.model: r.declared for r in mine if r.model in expected} == expected


async def test_a_generation_temporal_does_not_take_gives_its_slot_back(make_app, stack, pool, tenant, workers):
    settings = stack.with_(temporal_address=f"127.0.0.1:{_closed_port()}")
    async for client in make_app(settings):
        resp = await client.post(
            "/api/generate", json={"template": FN, "values": VALUES, "model": "openai_api"}, headers=tenant.headers
        )
        assert resp.status_code == 503 and "Temporal" in resp.json()["detail"], resp.text
    async with tenant_tx(pool, tenant.tenant_id) as conn:
        leases = await conn.fetchval("select count(*) from generation_leases where tenant_id = $1", tenant.tenant_id)
        rows = await conn.fetch("select status, error from generations where tenant_id = $1", tenant.tenant_id)
    assert leases == 0  # the slot is free again
    assert [(r["status"], r["error"]) for r in rows] == [("failed", "could not start: Temporal unavailable")]


async def test_busy_slots_write_no_generation(make_app, stack, pool, tenant, workers):
    """The slot and the row are one transaction: a request refused for want of a slot leaves no row."""
    async for client in make_app(stack.with_(tenant_slot_share=0.01)):  # the tenant's share: one slot
        res = client.app.state.resources
        limit = min(2, res.settings.tenant_slots("generation"))
        for i in range(limit):
            taken = await admission.take_generation_slot(
                pool,
                tenant_id=tenant.tenant_id,
                holder=f"generation-held-{i}",
                limit=limit,
                ttl_s=60,
                generation_id=uuid.uuid4(),
                user_id=tenant.user_id,
                model="openai_api",
                techniques=[],
                request={},
                project_id=None,
                instance_id=None,
            )
            assert taken
        async with tenant_tx(pool, tenant.tenant_id) as conn:
            before = await conn.fetchval("select count(*) from generations where tenant_id = $1", tenant.tenant_id)
        resp = await client.post(
            "/api/generate", json={"template": FN, "values": VALUES, "model": "openai_api"}, headers=tenant.headers
        )
        assert resp.status_code == 429 and "generation slots are busy" in resp.json()["detail"], resp.text
        async with tenant_tx(pool, tenant.tenant_id) as conn:
            after = await conn.fetchval("select count(*) from generations where tenant_id = $1", tenant.tenant_id)
            await conn.execute("delete from generation_leases where tenant_id = $1", tenant.tenant_id)
        assert after == before == limit
