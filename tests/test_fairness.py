"""Fair shares between tenants: Temporal's task-queue fairness on the dev server, every activity and child
a tenant's workflows schedule under its fairness key, the tenant's share of the generation and sandbox
slots, its most running projects and its token budget per run, and one tenant's flood not starving
another (a small version of `make bench-fairness`)."""

from __future__ import annotations

import asyncio
import uuid
from datetime import timedelta

import pytest
from temporalio import activity, workflow
from temporalio.api.enums.v1 import EventType
from temporalio.common import Priority
from temporalio.worker import UnsandboxedWorkflowRunner, Worker

from store import pipeline_settings
from tests.conftest import wait_for
from tests.test_pipeline import _finished, _instance, _project

# --- the engine's fairness --------------------------------------------------------------------------


@workflow.defn(name="fairness-probe")
class _Probe:
    @workflow.run
    async def run(self, args: list[str]) -> None:
        queue, key, *names = args
        priority = Priority(fairness_key=key) if key else Priority()
        await asyncio.gather(
            *(
                workflow.execute_activity(
                    "probe-step",
                    name,
                    task_queue=queue,
                    start_to_close_timeout=timedelta(seconds=60),
                    priority=priority,
                )
                for name in names
            )
        )


async def _dispatch_order(temporal, keys: tuple[str, str]) -> list[str]:
    """One activity slot; while a gate activity holds it, tenant B queues 8 activities, then tenant A one.
    The order the worker then runs them in."""
    order: list[str] = []
    gate, started = asyncio.Event(), asyncio.Event()

    @activity.defn(name="probe-step")
    async def step(name: str) -> None:
        if name == "gate":
            started.set()
            await gate.wait()
        order.append(name)

    wf_queue, act_queue = f"probe-wf-{uuid.uuid4().hex}", f"probe-acts-{uuid.uuid4().hex}"
    flows = Worker(temporal, task_queue=wf_queue, workflows=[_Probe], workflow_runner=UnsandboxedWorkflowRunner())
    acts = Worker(temporal, task_queue=act_queue, activities=[step], max_concurrent_activities=1)

    async def queued(handle, count: int) -> bool:
        return len((await handle.describe()).raw_description.pending_activities) >= count

    async with flows, acts:
        start = lambda key, names: temporal.start_workflow(  # noqa: E731
            "fairness-probe", [act_queue, key, *names], id=f"probe-{uuid.uuid4().hex}", task_queue=wf_queue
        )
        held = await start("gate", ["gate"])
        await asyncio.wait_for(started.wait(), 30)
        flood = await start(keys[1], [f"b{i}" for i in range(8)])
        await wait_for(lambda: queued(flood, 8), timeout=30)
        small = await start(keys[0], ["a"])
        await wait_for(lambda: queued(small, 1), timeout=30)
        gate.set()
        await asyncio.gather(held.result(), flood.result(), small.result())
    return order


async def test_fairness_keys_change_the_dispatch_order_on_the_dev_server(temporal):
    """The dev server runs with fairness on (infra/embedded.py): A's one task runs among B's first, not
    after B's whole backlog, as it does when the two share one key (first in, first out)."""
    fifo = await _dispatch_order(temporal, ("", ""))
    assert fifo.index("a") == len(fifo) - 1, fifo
    fair = await _dispatch_order(temporal, ("tenant-a", "tenant-b"))
    assert fair.index("a") <= 3, fair  # the gate, at most one B task already matched to the poller, then A


async def test_a_project_schedules_all_its_work_under_its_tenants_key(api, tenant, coder, temporal):
    coder.script("fair_key", first="def fair_key(x):\n    return x\n")
    project = await _project(api, tenant, {"model": "openai_api", "n": 2, "debug_rounds": 0})
    await _instance(api, tenant, project["id"], "fair_key", ["assert fair_key(3) == 3"])
    resp = await api.post(f"/api/projects/{project['id']}/specs/complete", headers=tenant.headers)
    assert resp.status_code == 200, resp.text
    assert (await _finished(api, tenant, project["id"]))["state"] == "completed"

    wid = project["workflow_id"]
    ids = [wid] + [w.id async for w in temporal.list_workflows(f"WorkflowId STARTS_WITH '{wid}-'")]
    scheduled, children, kinds = [], [], []
    for workflow_id in ids:
        for event in (await temporal.get_workflow_handle(workflow_id).fetch_history()).events:
            if event.event_type == EventType.EVENT_TYPE_ACTIVITY_TASK_SCHEDULED:
                attrs = event.activity_task_scheduled_event_attributes
                scheduled.append((attrs.activity_type.name, attrs.priority.fairness_key))
                if attrs.activity_type.name == "acquire_generation_slot":
                    kinds.append(attrs.input.payloads[0].data)
            elif event.event_type == EventType.EVENT_TYPE_START_CHILD_WORKFLOW_EXECUTION_INITIATED:
                children.append(event.start_child_workflow_execution_initiated_event_attributes.priority.fairness_key)
    key = str(tenant.tenant_id)
    assert len(scheduled) > 8 and children
    assert {k for _, k in scheduled} == {key} and set(children) == {key}, (scheduled, children)
    names = [name for name, _ in scheduled]
    assert "run_spec_tests" in names and "test_candidates" in names  # both held a sandbox slot first
    assert sum(b'"sandbox"' in k for k in kinds) == 2, kinds


# --- the tenant's limits -----------------------------------------------------------------------------


async def test_a_tenants_generations_are_a_share_of_the_platforms_slots(api, tenant):
    """generation_concurrency 4 asks for more than the platform's 2 generation slots: the tenant holds at
    most half of them (TENANT_SLOT_SHARE), so a second generation at once is a 429 that says so."""
    assert (
        await api.put("/api/settings", json={"generation_concurrency": 4}, headers=tenant.headers)
    ).status_code == 200
    body = {"template": {"name": "python-function"}, "values": FAST, "max_new_tokens": 8}
    results = await asyncio.gather(*[api.post("/api/generate", json=body, headers=tenant.headers) for _ in range(2)])
    assert sorted(r.status_code for r in results) == [200, 429], [r.text for r in results]
    refused = next(r for r in results if r.status_code == 429)
    assert "TENANT_SLOT_SHARE" in refused.json()["detail"]


FAST = {"function_name": "fast_one", "description": "One.", "tests": ["assert fast_one() == 1"]}
GREEDY = {"n": 8, "max_new_tokens": 4096, "debug_rounds": 10}  # 360,448 tokens per instance and run


async def test_the_token_budget_is_checked_when_settings_are_saved(api, tenant):
    project = await _project(api, tenant)
    before = (await api.get(f"/api/projects/{project['id']}/settings", headers=tenant.headers)).json()
    resp = await api.put(f"/api/projects/{project['id']}/settings", json=GREEDY, headers=tenant.headers)
    assert resp.status_code == 422, resp.text
    assert "PROJECT_TOKEN_BUDGET" in resp.json()["detail"] and "360448" in resp.json()["detail"]
    after = (await api.get(f"/api/projects/{project['id']}/settings", headers=tenant.headers)).json()
    assert after == before  # nothing stored

    defaults = (await api.get("/api/settings", headers=tenant.headers)).json()
    resp = await api.put("/api/settings", json=GREEDY, headers=tenant.headers)
    assert resp.status_code == 422 and "PROJECT_TOKEN_BUDGET" in resp.json()["detail"], resp.text
    assert (await api.get("/api/settings", headers=tenant.headers)).json() == defaults

    # the project's own settings and the tenant's defaults are checked together
    assert (await api.put("/api/settings", json={"n": 8}, headers=tenant.headers)).status_code == 200
    resp = await api.put(
        f"/api/projects/{project['id']}/settings", json={"max_new_tokens": 2048}, headers=tenant.headers
    )
    assert resp.status_code == 422, resp.text
    ok = await api.put(f"/api/projects/{project['id']}/settings", json={"max_new_tokens": 512}, headers=tenant.headers)
    assert ok.status_code == 200 and ok.json()["n"] == 8, ok.text


async def test_the_token_budget_is_checked_when_a_run_starts(api, tenant, pool, coder):
    """Settings saved before the budget was lowered: the run is refused before anything starts."""
    coder.script("budgeted", first="def budgeted():\n    return 1\n")
    project = await _project(api, tenant, {"model": "openai_api"})
    await _instance(api, tenant, project["id"], "budgeted", ["assert budgeted() == 1"])
    from models.pipeline import ProjectSettingsUpdate

    await pipeline_settings.put_project_settings(  # no budget: as stored by an older release
        pool, tenant_id=tenant.tenant_id, project_id=uuid.UUID(project["id"]), update=ProjectSettingsUpdate(**GREEDY)
    )
    for call in (
        api.post(f"/api/projects/{project['id']}/specs/complete", headers=tenant.headers),
        api.put(f"/api/projects/{project['id']}/state", json={"state": "code_generation"}, headers=tenant.headers),
    ):
        resp = await call
        assert resp.status_code == 422 and "PROJECT_TOKEN_BUDGET" in resp.json()["detail"], resp.text
    state = (await api.get(f"/api/projects/{project['id']}/state", headers=tenant.headers)).json()
    assert state["state"] == "spec_definition"
    assert not coder.prompts_for("budgeted")


async def test_a_tenant_runs_at_most_its_running_projects_at_once(make_app, stack, workers, new_tenant, coder):
    tenant, other = await new_tenant("cap"), await new_tenant("uncapped")
    names = ["cap_one", "cap_two", "cap_three"]
    for name in names:
        coder.script(name, first=f"def {name}():\n    return 1\n")
    coder.hold("cap_one", "cap_two")  # the first run stays in code_generation until released
    try:
        async for api in make_app(stack.with_(max_running_projects_per_tenant=1)):
            made = []
            for name in names:
                project = await _project(api, tenant, {"model": "openai_api", "debug_rounds": 0})
                await _instance(api, tenant, project["id"], name, [f"assert {name}() == 1"])
                made.append(project["id"])
            first, second, third = made
            # two at once, with one place left: one starts, the other is refused
            results = await asyncio.gather(
                *[api.post(f"/api/projects/{pid}/specs/complete", headers=tenant.headers) for pid in (first, second)]
            )
            assert sorted(r.status_code for r in results) == [200, 429], [r.text for r in results]
            started = first if results[0].status_code == 200 else second
            waiting = second if started == first else first
            refused = next(r for r in results if r.status_code == 429)
            assert "MAX_RUNNING_PROJECTS_PER_TENANT" in refused.json()["detail"]
            assert refused.headers["retry-after"]
            state = (await api.get(f"/api/projects/{waiting}/state", headers=tenant.headers)).json()
            assert state["state"] == "spec_definition"  # nothing started

            # another tenant is not counted
            theirs = await _project(api, other, {"model": "openai_api", "debug_rounds": 0})
            await _instance(api, other, theirs["id"], "cap_three", ["assert cap_three() == 1"])
            resp = await api.post(f"/api/projects/{theirs['id']}/specs/complete", headers=other.headers)
            assert resp.status_code == 200, resp.text

            coder.release("cap_one", "cap_two")
            assert (await _finished(api, tenant, started))["state"] == "completed"
            resp = await api.post(f"/api/projects/{waiting}/specs/complete", headers=tenant.headers)
            assert resp.status_code == 200, resp.text
            # a rerun is a run too: refused while the other project runs (its answer held)
            await _finished(api, tenant, waiting)
            coder.hold("cap_three")
            resp = await api.post(f"/api/projects/{third}/specs/complete", headers=tenant.headers)
            assert resp.status_code == 200, resp.text
            rerun = await api.post(f"/api/projects/{started}/runs", json={"scope": "all"}, headers=tenant.headers)
            assert rerun.status_code == 429 and "MAX_RUNNING_PROJECTS_PER_TENANT" in rerun.json()["detail"]
            after = (await api.get(f"/api/projects/{started}", headers=tenant.headers)).json()
            assert after["state"] == "completed"  # the claim was rolled back
            coder.release("cap_three")
            await _finished(api, tenant, third)
            await _finished(api, other, theirs["id"])
    finally:
        coder.release()


# --- one tenant's flood, another tenant's latency ---------------------------------------------------------

SPINNER = "def spinner():\n    while True:\n        pass\n"


@pytest.mark.slow
async def test_one_tenant_spinning_tests_do_not_hold_every_sandbox_slot(api, new_tenant, coder):
    """Tenant B's two projects run code that spins to the sandbox's time limit. Tenant A's small project
    still completes while both of B's runs are going: B holds one of the two integration slots (its share),
    not both (before: A waited for B's tests to time out)."""
    b, a = await new_tenant("flood"), await new_tenant("small")
    coder.script("spinner", first=SPINNER)
    coder.script("quick", first="def quick():\n    return 1\n")
    flood = []
    for _ in range(2):
        project = await _project(api, b, {"model": "openai_api", "debug_rounds": 0})
        await _instance(api, b, project["id"], "spinner", ["assert spinner() == 1"])
        flood.append(project["id"])
    for pid in flood:
        assert (await api.post(f"/api/projects/{pid}/specs/complete", headers=b.headers)).status_code == 200

    async def debugging():
        states = [(await api.get(f"/api/projects/{pid}", headers=b.headers)).json()["state"] for pid in flood]
        return states == ["debugging", "debugging"]

    await wait_for(debugging, timeout=60)
    small = await _project(api, a, {"model": "openai_api", "debug_rounds": 0})
    await _instance(api, a, small["id"], "quick", ["assert quick() == 1"])
    assert (await api.post(f"/api/projects/{small['id']}/specs/complete", headers=a.headers)).status_code == 200
    assert (await _finished(api, a, small["id"], timeout=60))["state"] == "completed"
    states = [(await api.get(f"/api/projects/{pid}", headers=b.headers)).json()["state"] for pid in flood]
    assert states == ["debugging", "debugging"], states  # B's spinning tests had not timed out yet
    for pid in flood:
        await api.delete(f"/api/projects/{pid}", headers=b.headers)


@pytest.mark.slow
async def test_one_tenant_slow_generations_do_not_hold_every_generation_slot(api, new_tenant, coder):
    """Tenant B's project asks for four generations at once, each answer held by the model. Tenant A's
    POST /api/generate still completes, and B has only one generation in flight: its share of the two
    generation slots (before: B's held generations took both slots, and A's waited into a 202)."""
    b, a = await new_tenant("slowgen"), await new_tenant("gen")
    slow = [f"slow_{i}" for i in range(4)]
    for name in slow:
        coder.script(name, first=f"def {name}():\n    return 1\n")
    coder.hold(*slow)
    coder.script("fast_one", first="def fast_one():\n    return 1\n")
    try:
        project = await _project(api, b, {"model": "openai_api", "debug_rounds": 0})
        assert (
            await api.put("/api/settings", json={"generation_concurrency": 4}, headers=b.headers)
        ).status_code == 200
        for name in slow:
            await _instance(api, b, project["id"], name, [f"assert {name}() == 1"])
        assert (await api.post(f"/api/projects/{project['id']}/specs/complete", headers=b.headers)).status_code == 200
        await wait_for(lambda: any(name in slow for name in coder.started), timeout=60)
        body = {"template": {"name": "python-function"}, "values": FAST, "model": "openai_api"}
        resp = await api.post("/api/generate", json=body, headers=a.headers)
        assert resp.status_code == 200, resp.text
        in_flight = [name for name in coder.started if name in slow]
        assert len(in_flight) == 1, in_flight
        await api.delete(f"/api/projects/{project['id']}", headers=b.headers)
    finally:
        coder.release(*slow)
