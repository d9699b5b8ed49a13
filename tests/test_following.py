"""Following a run: /api/events and its stream filtered by project and run, a stream that
starts at "now", GET /api/generations, and POST /api/generate with an instance using its project's
settings. The project runs use `openai_api` against tests/coder_fake.py."""

from __future__ import annotations

import asyncio
import json
import uuid

import httpx
import pytest

from models.generation import GenerateRequest, with_project_settings
from models.pipeline import EffectiveSettings
from store.migrate import MIGRATIONS_DIR, apply_migrations
from tests.conftest import database_before, wait_for
from tests.techniques import BEAM, GRAMMAR
from tests.test_events_notify import live
from tests.test_registry import make_template

RUNS_MIGRATION = "20261201000014_event_runs"
ADD_RIGHT = "def add(a, b):\n    return a + b\n"


async def _project(api, tenant, settings: dict | None = None) -> dict:
    resp = await api.post("/api/projects", json={"name": "follow"}, headers=tenant.headers)
    assert resp.status_code == 201, resp.text
    project = resp.json()
    if settings:
        resp = await api.put(f"/api/projects/{project['id']}/settings", json=settings, headers=tenant.headers)
        assert resp.status_code == 200, resp.text
    return project


async def _instance(api, tenant, project_id: str, name: str = "add") -> dict:
    tpl = (await api.get("/api/templates", params={"name": "python-function"}, headers=tenant.headers)).json()
    resp = await api.post(
        "/api/instances",
        headers=tenant.headers,
        json={
            "template_id": tpl["items"][0]["id"],
            "project_id": project_id,
            "values": {
                "function_name": name,
                "description": f"The function {name}.",
                "tests": ["assert add(1, 2) == 3"],
            },
        },
    )
    assert resp.status_code == 201, resp.text
    return resp.json()


async def _get(api, tenant, path: str, **params) -> dict:
    resp = await api.get(path, params={"limit": 100, **params}, headers=tenant.headers)
    assert resp.status_code == 200, resp.text
    return resp.json()


async def _in_state(api, tenant, project_id: str, *states: str, timeout: float = 60) -> dict:
    async def reached():
        row = (await api.get(f"/api/projects/{project_id}", headers=tenant.headers)).json()
        return row if row["state"] in states else None

    return await wait_for(reached, timeout=timeout, interval=0.2)


# --- /api/events filtered by project and run; GET /api/generations of a project ---------------------


async def test_a_projects_run_is_followed_by_project_and_run(api, tenant, other_tenant, coder):
    coder.script("add", first=ADD_RIGHT)
    project = await _project(api, tenant, {"model": "openai_api", "debug_rounds": 0})
    pid = project["id"]
    other = await _project(api, tenant)  # the same tenant's other project: none of its events may show
    await _in_state(api, tenant, pid, "spec_definition")
    await _in_state(api, tenant, other["id"], "spec_definition")
    inst = await _instance(api, tenant, pid)
    await _instance(api, tenant, other["id"], "mul")
    assert (await api.post(f"/api/projects/{pid}/specs/complete", headers=tenant.headers)).status_code == 200
    assert (await _in_state(api, tenant, pid, "completed", "failed"))["state"] == "completed"

    mine = (await _get(api, tenant, "/api/events", project_id=pid))["items"]
    assert mine and all(e["project_id"] == pid for e in mine)
    types = {e["type"] for e in mine}
    assert {"project.created", "project.state_changed", "spec.complete", "instance.created", "code.generated"} <= types
    assert all(e["payload"].get("project_id") == pid for e in mine)  # not one of the other project's
    states = [e for e in mine if e["type"] in ("project.state_changed", "spec.complete", "run.progress")]
    runs = {e["run_id"] for e in states}
    assert len(runs) == 1 and uuid.UUID(next(iter(runs)))  # the workflow's Temporal run id
    run_id = next(iter(runs))
    assert all(e["run_id"] is None for e in mine if e not in states)  # only the run's own events carry it

    of_run = (await _get(api, tenant, "/api/events", project_id=pid, run_id=run_id))["items"]
    assert [e["seq"] for e in of_run] == [e["seq"] for e in states]
    assert of_run[-1]["payload"]["to_state"] == "completed"
    only_states = await _get(api, tenant, "/api/events", project_id=pid, run_id=run_id, type="spec.complete")
    assert [e["type"] for e in only_states["items"]] == ["spec.complete"]
    assert (await _get(api, tenant, "/api/events", project_id=pid, run_id=str(uuid.uuid4())))["items"] == []

    gens = (await _get(api, tenant, "/api/generations", project_id=pid))["items"]
    assert gens and all(g["project_id"] == pid and g["instance_id"] == inst["id"] for g in gens)
    assert all(g["status"] == "completed" and g["model"] == "openai_api" for g in gens)
    assert "result" not in gens[0] and gens[0]["created_at"].endswith("+00:00")
    code_events = {e["payload"]["generation_id"] for e in mine if e["type"] == "code.generated"}
    assert code_events == {g["id"] for g in gens}
    assert (await _get(api, tenant, "/api/generations", project_id=pid, status="failed"))["items"] == []
    assert (await _get(api, tenant, "/api/generations", project_id=other["id"]))["items"] == []
    stored = (await api.get(f"/api/generations/{gens[0]['id']}", headers=tenant.headers)).json()
    assert stored["project_id"] == pid and stored["result"]["files"][0]["content"].strip() == ADD_RIGHT.strip()
    candidates = stored["result"]["candidates"]  # the summary's tokens are its candidates' sums
    assert gens[0]["tokens_in"] == sum(c["tokens_in"] for c in candidates) > 0
    assert gens[0]["tokens_out"] == sum(c["tokens_out"] for c in candidates) > 0
    assert stored["request"]["values"] == inst["values"]  # the values the pipeline generated from
    assert stored["request"]["instance_id"] == inst["id"] and stored["request"]["feedback"] is None

    # another tenant's project, or no project at all, is a 404 with a JSON detail
    for t, project_id in ((other_tenant, pid), (tenant, str(uuid.uuid4()))):
        for path in ("/api/events", "/api/generations", "/api/events/stream"):
            resp = await api.get(path, params={"project_id": project_id}, headers=t.headers)
            assert resp.status_code == 404 and "not found" in resp.json()["detail"], (path, resp.text)
    assert (await _get(api, other_tenant, "/api/events", run_id=run_id))["items"] == []


async def test_bad_filters_are_422(api, tenant):
    for path, params in (
        ("/api/events", {"project_id": "nope"}),
        ("/api/events", {"run_id": "12"}),
        ("/api/generations", {"status": "lost"}),
        ("/api/generations", {"cursor": "not-a-cursor"}),
        ("/api/events/stream", {"run_id": "x"}),
    ):
        resp = await api.get(path, params=params, headers=tenant.headers)
        assert resp.status_code == 422 and resp.json()["detail"], (path, params, resp.text)


async def test_generations_are_listed_newest_first_a_page_at_a_time(api, new_tenant):
    t = await new_tenant()
    body = {
        "template": {"name": "python-function"},
        "values": {"function_name": "f", "description": "F."},
        "max_new_tokens": 4,
    }
    made = []
    for _ in range(3):
        resp = await api.post("/api/generate", json=body, headers=t.headers)
        assert resp.status_code == 200, resp.text
        made.append(resp.json()["id"])
    first = await _get(api, t, "/api/generations", limit=2)
    assert len(first["items"]) == 2 and first["next_cursor"]
    second = await _get(api, t, "/api/generations", limit=2, cursor=first["next_cursor"])
    assert second["next_cursor"] is None
    listed = [g["id"] for g in first["items"] + second["items"]]
    assert listed == made[::-1]  # newest first
    assert all(g["project_id"] is None and g["instance_id"] is None for g in first["items"])
    assert [g["id"] for g in (await _get(api, t, "/api/generations", status="completed"))["items"]] == listed


# --- POST /api/generate with an instance: its project's settings unless the request says otherwise ---


async def test_generate_with_an_instance_uses_its_projects_settings(api, tenant, coder):
    coder.script("add", first=ADD_RIGHT)
    project = await _project(api, tenant, {"model": "openai_api", "max_new_tokens": 40, "n": 2})
    pid = project["id"]
    await _in_state(api, tenant, pid, "spec_definition")
    inst = await _instance(api, tenant, pid)

    async def generate(**overrides) -> tuple[dict, list[dict]]:
        mark = len(coder.requests)
        resp = await api.post("/api/generate", json={"instance_id": inst["id"], **overrides}, headers=tenant.headers)
        assert resp.status_code == 200, resp.text
        return resp.json(), coder.requests[mark:]

    body, sent = await generate()  # all of it from the project
    assert [c["model"] for c in body["candidates"]] == ["openai_api", "openai_api"]
    assert [r["max_tokens"] for r in sent] == [40, 40]
    body, sent = await generate(max_new_tokens=24, n=1)  # what the request sets wins
    assert len(body["candidates"]) == 1 and [r["max_tokens"] for r in sent] == [24]
    body, sent = await generate(model="local_llama", max_new_tokens=4)
    assert [c["model"] for c in body["candidates"]] == ["local_llama", "local_llama"] and sent == []
    gens = (await _get(api, tenant, "/api/generations", project_id=pid))["items"]
    assert len(gens) == 3 and all(g["instance_id"] == inst["id"] for g in gens)
    assert [g["model"] for g in gens] == ["local_llama", "openai_api", "openai_api"]


def test_project_settings_fill_only_what_the_request_left_unset():
    project = EffectiveSettings(
        model="openai_api",
        techniques=[BEAM],
        max_new_tokens=100,
        debug_rounds=1,
        generation_concurrency=2,
        options={BEAM: {"width": 3}},
    )
    iid = uuid.uuid4()
    merged = with_project_settings(GenerateRequest(instance_id=iid), project)
    assert (merged.model, merged.techniques, merged.max_new_tokens, merged.n) == (
        "openai_api",
        [BEAM],
        100,
        1,
    )
    assert getattr(merged.options, BEAM).width == 3
    own = with_project_settings(GenerateRequest(instance_id=iid, techniques=[], max_new_tokens=7), project)
    assert (own.techniques, own.max_new_tokens, own.options.model_dump()) == ([], 7, {})  # beam options dropped
    width = GenerateRequest(instance_id=iid, options={BEAM: {"width": 2}})
    assert getattr(with_project_settings(width, project).options, BEAM).width == 2  # for the project's technique
    with pytest.raises(ValueError, match="not among the requested techniques"):
        with_project_settings(GenerateRequest(instance_id=iid, options={GRAMMAR: {"retries": 1}}), project)


# --- the stream starts at now, unless after or Last-Event-ID says where --------------------------------


async def _next_data(lines, timeout: float = 10) -> dict:
    async def read():
        async for line in lines:
            if line.startswith("data: "):
                return json.loads(line[6:])
        raise AssertionError("the stream ended")

    return await asyncio.wait_for(read(), timeout)


async def _open(client, t, **params):
    resp = await client.send(
        client.build_request("GET", "/api/events/stream", params=params, headers=t.headers), stream=True
    )
    assert resp.status_code == 200
    lines = resp.aiter_lines()
    assert await asyncio.wait_for(anext(lines), 10) == ": connected"
    return resp, lines


async def test_the_stream_starts_at_now_unless_after_or_last_event_id(stack, new_tenant):
    t = await new_tenant()
    async with live(stack.settings) as (url, app):
        async with httpx.AsyncClient(base_url=url, timeout=30) as client:
            old = await make_template(client, t, name="old")
            now, now_lines = await _open(client, t)
            replay, replay_lines = await _open(client, t, after=0)
            assert await app.state.resources.event_listener.wait_ready(10)
            new = await make_template(client, t, name="new")
            try:
                assert (await _next_data(now_lines))["subject_id"] == new["id"]  # the history is not replayed
                assert (await _next_data(replay_lines))["subject_id"] == old["id"]
                second = await _next_data(replay_lines)
                assert second["subject_id"] == new["id"]
            finally:
                await now.aclose()
                await replay.aclose()
            resumed = await client.send(
                client.build_request(
                    "GET", "/api/events/stream", headers={**t.headers, "Last-Event-ID": str(second["seq"] - 1)}
                ),
                stream=True,
            )
            try:
                assert (await _next_data(resumed.aiter_lines()))["seq"] == second["seq"]
            finally:
                await resumed.aclose()


async def test_the_stream_follows_one_project(stack, api, tenant):
    first, second = await _project(api, tenant), await _project(api, tenant)
    for p in (first, second):
        await _in_state(api, tenant, p["id"], "spec_definition")
    async with live(stack.settings) as (url, app):
        async with httpx.AsyncClient(base_url=url, timeout=30) as client:
            resp, lines = await _open(client, tenant, project_id=first["id"])
            try:
                assert await app.state.resources.event_listener.wait_ready(10)
                await _instance(api, tenant, second["id"], "mul")
                inst = await _instance(api, tenant, first["id"])
                got = await _next_data(lines)
                assert (got["type"], got["subject_id"], got["project_id"]) == (
                    "instance.created",
                    inst["id"],
                    first["id"],
                )
            finally:
                await resp.aclose()


# --- the migration fills the new columns from what older rows already said ----------------------------


async def test_migration_backfills_projects_and_runs(stack, tmp_path):
    tenant, project, run, gen = uuid.uuid4(), uuid.uuid4(), uuid.uuid4(), uuid.uuid4()
    async with database_before(stack, tmp_path, RUNS_MIGRATION) as (dsn, conn):
        await conn.execute("insert into tenants (id, name) values ($1, 't')", tenant)
        insert = """insert into events (id, tenant_id, type, schema, payload, dedup_key)
                    values ($1, $2, $3, 's', $4::jsonb, $5)"""
        payload = json.dumps({"project_id": str(project)})
        await conn.execute(
            insert, uuid.uuid4(), tenant, "project.state_changed", payload, f"project-{project}:{run}:state:1"
        )
        await conn.execute(insert, uuid.uuid4(), tenant, "template.created", "{}", None)
        await conn.execute(
            insert, uuid.uuid4(), tenant, "project.state_changed", payload, f"project-{project}::state:1"
        )
        await conn.execute(
            """insert into generations (id, tenant_id, user_id, model, techniques, request, status)
               values ($1, $2, $3, 'm', '[]'::jsonb, $4::jsonb, 'completed')""",
            gen,
            tenant,
            uuid.uuid4(),
            json.dumps({"project_id": str(project), "instance_id": "None"}),
        )
        assert RUNS_MIGRATION in await apply_migrations(dsn, MIGRATIONS_DIR)
        rows = await conn.fetch("select type, project_id, run_id from events order by seq")
        assert [tuple(r) for r in rows] == [
            ("project.state_changed", project, run),
            ("template.created", None, None),
            ("project.state_changed", project, None),  # a run id that was never recorded stays unknown
        ]
        row = await conn.fetchrow("select project_id, instance_id from generations where id = $1", gen)
        assert tuple(row) == (project, None)
