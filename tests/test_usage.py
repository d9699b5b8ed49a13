"""Usage per tenant (store/usage.py, GET /api/usage): written by the activities that do the work, each unit
exactly once however often its activity runs, summed by day, project and model, for admins only."""

from __future__ import annotations

import uuid
from dataclasses import replace
from datetime import datetime, timezone

from store import usage
from tests.test_pipeline import _finished, _instance, _project


async def _usage(api, tenant, **params) -> list[dict]:
    resp = await api.get("/api/usage", params=params, headers=tenant.headers)
    assert resp.status_code == 200, resp.text
    return resp.json()["items"]


async def test_a_runs_generations_and_tests_add_up_to_its_usage(api, tenant, other_tenant, coder):
    coder.script(
        "usage_add", first="def usage_add(a, b):\n    return a - b\n", repair="def usage_add(a, b):\n    return a + b\n"
    )
    project = await _project(api, tenant, {"model": "openai_api", "debug_rounds": 1})
    pid = project["id"]
    await _instance(api, tenant, pid, "usage_add", ["assert usage_add(1, 2) == 3"])
    assert (await api.post(f"/api/projects/{pid}/specs/complete", headers=tenant.headers)).status_code == 200
    assert (await _finished(api, tenant, pid))["state"] == "completed"
    gens = (await api.get("/api/generations", params={"project_id": pid}, headers=tenant.headers)).json()["items"]
    rows = await _usage(api, tenant, project_id=pid)
    today = datetime.now(timezone.utc).date().isoformat()
    assert {(r["day"], r["project_id"]) for r in rows} == {(today, pid)}
    [model] = [r for r in rows if r["model"] == "openai_api"]  # the model's work; the tests' have no model
    assert model["generations"] == len(gens) == 2  # the first answer and the repair
    assert model["tokens_in"] == sum(g["tokens_in"] for g in gens) > 0
    assert model["tokens_out"] == sum(g["tokens_out"] for g in gens) > 0
    [tests] = [r for r in rows if r["model"] is None]
    assert tests["sandbox_runs"] == 2 and tests["sandbox_seconds"] > 0  # the tests after each round
    assert await _usage(api, other_tenant, project_id=pid) == []


async def test_a_retried_activity_counts_once(api, tenant, pool, stack):
    """The real record_generation activity, run twice with the same input as Temporal's retry runs it."""
    from temporalio.testing import ActivityEnvironment

    from activities.generation import GenerationActivities
    from codegen.manager import ModelManager
    from models.generation import GenerationInput, GenerationResult, Provenance, RecordGenerationInput, SpecSnapshot
    from store import generations

    gid = uuid.uuid4()
    await generations.create_generation(
        pool,
        generation_id=gid,
        tenant_id=tenant.tenant_id,
        user_id=tenant.user_id,
        model="openai_api",
        techniques=[],
        request={},
    )
    spec = SpecSnapshot(
        template_id=None,
        template_name="inline",
        template_version="0",
        schema={"type": "object"},
        values={},
        values_hash="0" * 64,
    )
    inp = GenerationInput(
        generation_id=gid,
        tenant_id=tenant.tenant_id,
        user_id=tenant.user_id,
        spec=spec,
        model="openai_api",
        techniques=[],
        max_new_tokens=16,
        n=1,
        temperature=0.0,
    )
    result = GenerationResult(
        id=gid,
        status="completed",
        files=[],
        parses=None,
        candidates=[],
        provenance=Provenance(
            template_id=None,
            template_name="inline",
            template_version="0",
            values_hash="0" * 64,
            instance_id=None,
            retrieved_snippets=[],
        ),
    )
    acts = GenerationActivities(pool, ModelManager(stack.settings), stack.settings)
    env = ActivityEnvironment()
    env.info = replace(ActivityEnvironment.default_info(), workflow_id=f"generation-{gid}", attempt=1)
    before = sum(r["generations"] for r in await _usage(api, tenant))
    await env.run(acts.record_generation, RecordGenerationInput(inp=inp, result=result))
    env.info = replace(env.info, attempt=2)  # the retry of the same activity
    await env.run(acts.record_generation, RecordGenerationInput(inp=inp, result=result))
    assert sum(r["generations"] for r in await _usage(api, tenant)) == before + 1
    assert not await usage.record(pool, tenant_id=tenant.tenant_id, source=f"generation:{gid}", kind="generation")


async def test_snippets_and_their_embeddings_are_counted(api, new_tenant):
    from tests.conftest import wait_for

    t = await new_tenant()
    made = await api.post(
        "/api/snippets", json={"language": "python", "content": "def z():\n    return 0"}, headers=t.headers
    )
    assert made.status_code == 201

    async def counted():
        rows = await _usage(api, t)
        return rows if sum(r["embeddings"] for r in rows) >= 1 else None

    rows = await wait_for(counted, timeout=20)
    assert sum(r["snippets"] for r in rows) == 1 and all(r["project_id"] is None for r in rows)


async def test_usage_is_for_admins_and_pages_and_bad_input_is_a_4xx(api, tenant, pool):
    viewer = (await api.post("/api/keys", json={"name": "v", "role": "viewer"}, headers=tenant.headers)).json()
    assert (await api.get("/api/usage", headers={"X-API-Key": viewer["api_key"]})).status_code == 403
    for source in ("a", "b", "c"):
        await usage.record(pool, tenant_id=tenant.tenant_id, source=f"snippet:{source}", kind="snippet", model=source)
    first = (await api.get("/api/usage", params={"limit": 2}, headers=tenant.headers)).json()
    rest = (await api.get("/api/usage", params={"cursor": first["next_cursor"]}, headers=tenant.headers)).json()
    assert len(first["items"]) == 2 and first["next_cursor"] and rest["next_cursor"] is None
    assert {r["model"] for r in first["items"] + rest["items"]} >= {"a", "b", "c"}
    for params in ({"cursor": "nope"}, {"since": "yesterday"}, {"limit": 0}):
        bad = await api.get("/api/usage", params=params, headers=tenant.headers)
        assert bad.status_code == 422 and "detail" in bad.json(), params
