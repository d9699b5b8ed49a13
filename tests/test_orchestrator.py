"""Orchestrator API: projects whose state a Temporal workflow owns, tasks, and the event outbox."""

from __future__ import annotations

import asyncio
import json
import uuid

import httpx
import pytest
from temporalio.client import WorkflowExecutionStatus

from tests.conftest import wait_for


async def _project(api, tenant, name="p") -> dict:
    resp = await api.post("/api/projects", json={"name": name, "description": "d"}, headers=tenant.headers)
    assert resp.status_code == 201, resp.text
    return resp.json()


async def _state(api, tenant, pid) -> dict:
    resp = await api.get(f"/api/projects/{pid}/state", headers=tenant.headers)
    assert resp.status_code == 200, resp.text
    return resp.json()


async def _ready(api, tenant, name="p") -> dict:
    """A project whose workflow has finished initialization."""
    project = await _project(api, tenant, name)

    async def in_spec_definition():
        return (await _state(api, tenant, project["id"]))["state"] == "spec_definition"

    await wait_for(in_spec_definition)
    return project


async def _events(api, tenant, **params) -> list[dict]:
    resp = await api.get("/api/events", params={"limit": 100, **params}, headers=tenant.headers)
    assert resp.status_code == 200, resp.text
    return resp.json()["items"]


async def test_create_starts_the_workflow_with_business_id_and_search_attributes(api, tenant, temporal):
    project = await _ready(api, tenant)
    assert project["state"] == "initialization"
    assert project["workflow_id"] == f"project-{project['id']}"
    desc = await temporal.get_workflow_handle(project["workflow_id"]).describe()
    assert desc.status == WorkflowExecutionStatus.RUNNING
    assert desc.task_queue.endswith("orchestrator")

    query = f"SpecmillTenant = '{tenant.tenant_id}' AND SpecmillState = 'spec_definition'"

    async def listed():
        return [wf.id async for wf in temporal.list_workflows(query)]

    assert project["workflow_id"] in await wait_for(listed)
    # the row mirrors the workflow
    row = (await api.get(f"/api/projects/{project['id']}", headers=tenant.headers)).json()
    assert row["state"] == "spec_definition"


async def test_disallowed_transition_is_409_with_allowed_next(api, tenant):
    project = await _ready(api, tenant)
    pid = project["id"]
    resp = await api.put(f"/api/projects/{pid}/state", json={"state": "debugging"}, headers=tenant.headers)
    assert resp.status_code == 409
    body = resp.json()
    assert "detail" in body and body["allowed_next"] == ["code_generation", "cancelled"]
    assert (await _state(api, tenant, pid))["state"] == "spec_definition"
    assert (await api.get(f"/api/projects/{pid}", headers=tenant.headers)).json()["state"] == "spec_definition"


async def test_unknown_state_is_422(api, tenant):
    project = await _project(api, tenant)
    resp = await api.put(f"/api/projects/{project['id']}/state", json={"state": "shipping"}, headers=tenant.headers)
    assert resp.status_code == 422 and "detail" in resp.json()


async def test_delete_cancels_the_workflow_and_keeps_the_project(api, tenant, temporal):
    project = await _ready(api, tenant)
    pid = project["id"]
    resp = await api.delete(f"/api/projects/{pid}", headers=tenant.headers)
    assert resp.status_code == 204, resp.text
    desc = await temporal.get_workflow_handle(project["workflow_id"]).describe()
    assert desc.status == WorkflowExecutionStatus.CANCELED
    row = (await api.get(f"/api/projects/{pid}", headers=tenant.headers)).json()
    assert row["state"] == "cancelled"
    assert (await _state(api, tenant, pid))["state"] == "cancelled"
    assert (await api.delete(f"/api/projects/{pid}", headers=tenant.headers)).status_code == 409
    resp = await api.put(f"/api/projects/{pid}/state", json={"state": "code_generation"}, headers=tenant.headers)
    assert resp.status_code == 409


async def test_concurrent_transitions_apply_once(api, tenant, coder):
    from tests.test_pipeline import _instance

    coder.script("twice", first="def twice(x):\n    return 2 * x\n")
    project = await _ready(api, tenant)
    pid = project["id"]
    await api.put(f"/api/projects/{pid}/settings", json={"model": "openai_api"}, headers=tenant.headers)
    await _instance(api, tenant, pid, "twice", ["assert twice(2) == 4"])
    results = await asyncio.gather(
        *[
            api.put(f"/api/projects/{pid}/state", json={"state": "code_generation"}, headers=tenant.headers)
            for _ in range(4)
        ]
    )
    codes = sorted(r.status_code for r in results)
    assert codes == [200, 409, 409, 409], [r.text for r in results]
    changes = [
        e["payload"]["to_state"]
        for e in await _events(api, tenant, type="project.state_changed")
        if e["subject_id"] == pid
    ]
    assert changes[:3] == ["initialization", "spec_definition", "code_generation"]
    assert changes.count("code_generation") == 1


async def test_project_crud_list_filter_and_pagination(api, new_tenant):
    t = await new_tenant()
    ids = [(await _project(api, t, f"p{i}"))["id"] for i in range(5)]
    resp = await api.put(f"/api/projects/{ids[0]}", json={"name": "renamed", "description": None}, headers=t.headers)
    assert resp.status_code == 200 and resp.json()["name"] == "renamed" and resp.json()["description"] is None
    assert (await api.put(f"/api/projects/{ids[0]}", json={"state": "completed"}, headers=t.headers)).status_code == 422
    seen, cursor = [], None
    for _ in range(10):  # 5 projects, 2 a page: 3 pages; a cursor that never ends fails here
        params = {"limit": 2, **({"cursor": cursor} if cursor else {})}
        page = (await api.get("/api/projects", params=params, headers=t.headers)).json()
        seen += [p["id"] for p in page["items"]]
        cursor = page["next_cursor"]
        if not cursor:
            break
    else:
        pytest.fail(f"pagination never ended: {seen}")
    assert seen == ids

    async def all_in_spec_definition():
        page = (await api.get("/api/projects", params={"state": "spec_definition"}, headers=t.headers)).json()
        return len(page["items"]) == 5

    await wait_for(all_in_spec_definition)
    assert (await api.get("/api/projects", params={"state": "bogus"}, headers=t.headers)).status_code == 422
    newest = (await api.get("/api/projects", params={"order": "newest", "limit": 3}, headers=t.headers)).json()
    rest = await api.get(
        "/api/projects", params={"order": "newest", "cursor": newest["next_cursor"]}, headers=t.headers
    )
    assert [p["id"] for p in newest["items"] + rest.json()["items"]] == ids[::-1]
    assert {p["model"] for p in rest.json()["items"]} == {"local_llama"}  # the platform's default
    own = await api.put(f"/api/projects/{ids[1]}/settings", json={"model": "openai_api"}, headers=t.headers)
    assert own.status_code == 200, own.text
    assert (await api.get(f"/api/projects/{ids[1]}", headers=t.headers)).json()["model"] == "openai_api"


async def test_projects_running_for_long_are_those_in_a_running_state_unchanged_that_long(api, new_tenant, pool):
    from store.db import tenant_tx

    t = await new_tenant()
    ids = [(await _project(api, t, f"r{i}"))["id"] for i in range(3)]

    async def settled():  # the workflows have made their own first moves
        page = (await api.get("/api/projects", params={"state": "spec_definition"}, headers=t.headers)).json()
        return len(page["items"]) == 3

    await wait_for(settled)
    async with tenant_tx(pool, t.tenant_id) as conn:  # as a run would leave them: one stuck, one just moved
        await conn.execute(
            """update projects set state = 'code_generation',
                 updated_at = (now() at time zone 'utc') - interval '1 hour' where id = $1""",
            uuid.UUID(ids[0]),
        )
        await conn.execute("update projects set state = 'debugging' where id = $1", uuid.UUID(ids[1]))
    params = {"running_for_s": 600}
    long = (await api.get("/api/projects", params=params, headers=t.headers)).json()["items"]
    assert [p["id"] for p in long] == [ids[0]]
    every = (await api.get("/api/projects", params={"running_for_s": 0}, headers=t.headers)).json()["items"]
    assert {p["id"] for p in every} == {ids[0], ids[1]}  # the third is not running
    bad = await api.get("/api/projects", params={"running_for_s": -1}, headers=t.headers)
    assert bad.status_code == 422 and "detail" in bad.json()


async def test_tasks_lifecycle_and_events(api, tenant):
    project = await _project(api, tenant)
    resp = await api.post(
        "/api/tasks",
        json={"project_id": project["id"], "service": "neural_code_generator", "task_type": "generate"},
        headers=tenant.headers,
    )
    assert resp.status_code == 201, resp.text
    task = resp.json()
    assert task["status"] == "pending" and task["tenant_id"] == str(tenant.tenant_id)
    tid = task["id"]
    assert (await api.get(f"/api/tasks/{tid}", headers=tenant.headers)).json() == task
    assert (await api.put(f"/api/tasks/{tid}", json={"status": "running"}, headers=tenant.headers)).status_code == 200
    done = await api.put(f"/api/tasks/{tid}", json={"status": "completed"}, headers=tenant.headers)
    assert done.status_code == 200 and done.json()["status"] == "completed"
    again = await api.put(f"/api/tasks/{tid}", json={"status": "running"}, headers=tenant.headers)
    assert again.status_code == 409
    listed = (
        await api.get("/api/tasks", params={"project_id": project["id"], "status": "completed"}, headers=tenant.headers)
    ).json()["items"]
    assert [t["id"] for t in listed] == [tid]
    kinds = [e["type"] for e in await _events(api, tenant) if e["subject_id"] == tid]
    assert kinds == ["task.created", "task.completed"]
    payload = [e for e in await _events(api, tenant, type="task.completed") if e["subject_id"] == tid][0]
    assert payload["schema_name"] == "task_event" and payload["payload"]["status"] == "completed"


@pytest.mark.parametrize(
    "body",
    [
        {"project_id": "not-a-uuid", "service": "spec_registry", "task_type": "x"},
        {"project_id": str(uuid.uuid4()), "service": "nope", "task_type": "x"},
        {"project_id": str(uuid.uuid4()), "service": "spec_registry", "task_type": ""},
        {"project_id": str(uuid.uuid4()), "service": "spec_registry", "task_type": "x", "id": str(uuid.uuid4())},
    ],
)
async def test_bad_task_bodies_are_422(api, tenant, body):
    resp = await api.post("/api/tasks", json=body, headers=tenant.headers)
    assert resp.status_code == 422 and "detail" in resp.json()


async def test_task_for_unknown_project_is_404(api, tenant):
    resp = await api.post(
        "/api/tasks",
        json={"project_id": str(uuid.uuid4()), "service": "spec_registry", "task_type": "x"},
        headers=tenant.headers,
    )
    assert resp.status_code == 404


async def test_events_cursor_and_validation(api, new_tenant):
    t = await new_tenant()
    await _project(api, t, "one")
    first = await _events(api, t)
    assert [e["type"] for e in first][:1] == ["project.created"]
    assert first[0]["schema_name"] == "project_event"
    cursor = first[-1]["seq"]
    await _project(api, t, "two")
    later = await _events(api, t, after=cursor)
    assert later and all(e["seq"] > cursor for e in later)
    for bad in ({"after": -1}, {"after": "x"}, {"limit": 0}, {"limit": 101}):
        resp = await api.get("/api/events", params=bad, headers=t.headers)
        assert resp.status_code == 422, bad


async def _next_event(lines, timeout: float, what: str) -> dict:
    """The next event (a `data:` line) on an open SSE stream, within `timeout` seconds."""

    async def read() -> dict:
        async for line in lines:
            if line.startswith("data: "):
                return json.loads(line[6:])
        raise AssertionError(f"the stream ended while waiting for {what}")

    try:
        return await asyncio.wait_for(read(), timeout)
    except TimeoutError:
        raise AssertionError(f"no event on the open stream within {timeout}s while waiting for {what}") from None


async def test_sse_stream_delivers_events_live(live_url, api, new_tenant):
    """The stream replays the backlog first; an event created only after the client has read that
    replay (so after the stream's first read) must still arrive on the same open stream."""
    t = await new_tenant()
    earlier = await _ready(api, t, "earlier")

    async def backlog():
        items = await _events(api, t)
        settled = any(
            e["type"] == "project.state_changed"
            and e["subject_id"] == earlier["id"]
            and e["payload"]["to_state"] == "spec_definition"
            for e in items
        )
        return items if settled else None

    before = await wait_for(backlog)
    last_before = before[-1]["seq"]
    async with httpx.AsyncClient(base_url=live_url, timeout=20) as client:
        async with client.stream("GET", "/api/events/stream", params={"after": 0}, headers=t.headers) as resp:
            assert resp.status_code == 200
            assert resp.headers["content-type"].startswith("text/event-stream")
            lines = resp.aiter_lines()
            assert await asyncio.wait_for(anext(lines), 10) == ": connected"
            replayed: list[dict] = []
            while not replayed or replayed[-1]["seq"] < last_before:
                replayed.append(await _next_event(lines, 10, f"the backlog up to seq {last_before}"))
            assert [e["seq"] for e in replayed] == [e["seq"] for e in before]
            # only now, the stream open and its backlog read, does the event come to be
            project = await _project(api, t, "live")
            live: list[dict] = []
            while not any(e["type"] == "project.state_changed" and e["subject_id"] == project["id"] for e in live):
                live.append(await _next_event(lines, 15, f"the events of project {project['id']}"))
    mine = [e for e in live if e["subject_id"] == project["id"]]
    assert mine[0]["type"] == "project.created"
    assert all(e["seq"] > last_before for e in live)  # created after the connection, none replayed twice
    seqs = [e["seq"] for e in replayed + live]
    assert seqs == sorted(set(seqs))
