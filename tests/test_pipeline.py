"""The project pipeline end to end: initialization -> spec_definition -> code_generation -> integration ->
debugging -> completed / failed, across the spec-registry, generation, knowledge and integration queues.

Most runs use `openai_api` against tests/coder_fake.py, a protocol fake of OpenAI's API that answers from
a script (wrong code first, right code once the prompt carries the test failure): it makes the
debugging loop predictable. One run uses the real local engine (the tiny random Llama), which never
passes its tests, so it ends `failed` with the reasons.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from tests.conftest import wait_for

HISTORIES = Path(__file__).parent / "histories"


async def _save_histories(temporal, workflow_id: str, name: str) -> None:
    """With SPECMILL_SAVE_HISTORIES=1, keep the run's histories (the project's and its children's) for
    tests/test_replay.py: a later change that breaks determinism then fails CI."""
    if not os.environ.get("SPECMILL_SAVE_HISTORIES"):
        return
    HISTORIES.mkdir(exist_ok=True)
    ids = [workflow_id] + [wf.id async for wf in temporal.list_workflows(f"WorkflowId STARTS_WITH '{workflow_id}-'")]
    for i, wid in enumerate(ids):
        history = await temporal.get_workflow_handle(wid).fetch_history()
        record = {"workflow_id": wid, "history": history.to_json_dict()}
        (HISTORIES / f"{name}-{i}.json").write_text(json.dumps(record, indent=0))


ADD_WRONG = "def add(a, b):\n    return a - b\n"
ADD_RIGHT = "def add(a, b):\n    return a + b\n"
MUL_RIGHT = "def mul(a, b):\n    return a * b\n"


async def _template_id(api, tenant, name="python-function") -> str:
    tpl = (await api.get("/api/templates", params={"name": name}, headers=tenant.headers)).json()
    return tpl["items"][0]["id"]


async def _project(api, tenant, settings: dict | None = None) -> dict:
    project = (await api.post("/api/projects", json={"name": "pipe"}, headers=tenant.headers)).json()
    if settings:
        resp = await api.put(f"/api/projects/{project['id']}/settings", json=settings, headers=tenant.headers)
        assert resp.status_code == 200, resp.text

    async def ready():
        state = (await api.get(f"/api/projects/{project['id']}/state", headers=tenant.headers)).json()
        return state["state"] == "spec_definition"

    await wait_for(ready)
    return project


async def _instance(api, tenant, project_id: str, name: str, tests: list[str], description: str = "") -> dict:
    resp = await api.post(
        "/api/instances",
        headers=tenant.headers,
        json={
            "template_id": await _template_id(api, tenant),
            "project_id": project_id,
            "values": {"function_name": name, "description": description or f"The function {name}.", "tests": tests},
        },
    )
    assert resp.status_code == 201, resp.text
    return resp.json()


async def _finished(api, tenant, project_id: str, timeout: float = 120) -> dict:
    async def terminal():
        row = (await api.get(f"/api/projects/{project_id}", headers=tenant.headers)).json()
        return row if row["state"] in ("completed", "failed", "cancelled") else None

    return await wait_for(terminal, timeout=timeout, interval=0.25)


async def _events(api, tenant, type_: str) -> list[dict]:
    resp = await api.get("/api/events", params={"type": type_, "limit": 100}, headers=tenant.headers)
    return resp.json()["items"]


async def _states(api, tenant, project_id: str) -> list[str]:
    """The project's states in the order its state_changed events recorded them."""
    events = await _events(api, tenant, "project.state_changed")
    return [e["payload"]["to_state"] for e in events if e["subject_id"] == project_id]


async def test_a_project_goes_through_every_state_and_repairs_a_failing_instance(api, tenant, coder, temporal):
    coder.script("add", first=ADD_WRONG, repair=ADD_RIGHT)
    coder.script("mul", first=MUL_RIGHT)
    mark = len(coder.prompts)
    project = await _project(api, tenant, {"model": "openai_api", "debug_rounds": 2})
    pid = project["id"]
    attached = (await api.get(f"/api/projects/{pid}/templates", headers=tenant.headers)).json()["items"]
    assert "python-function" in {t["name"] for t in attached}  # initialization attached the built-ins
    add = await _instance(api, tenant, pid, "add", ["assert add(1, 2) == 3", "assert add(-1, 1) == 0"])
    mul = await _instance(api, tenant, pid, "mul", ["assert mul(2, 3) == 6"])

    resp = await api.post(f"/api/projects/{pid}/specs/complete", headers=tenant.headers)
    assert resp.status_code == 200, resp.text
    assert resp.json()["state"] == "code_generation"
    row = await _finished(api, tenant, pid)
    assert row["state"] == "completed"

    # the states, in order, each recorded once
    assert await _states(api, tenant, pid) == [
        "initialization",
        "spec_definition",
        "code_generation",
        "integration",
        "debugging",
        "code_generation",
        "integration",
        "debugging",
        "completed",
    ]
    spec_complete = [e for e in await _events(api, tenant, "spec.complete") if e["subject_id"] == pid]
    assert len(spec_complete) == 1 and set(spec_complete[0]["payload"]["instances"]) == {add["id"], mul["id"]}

    # the repair prompt carried the failing assertion
    repairs = [p for p in coder.prompts_for("add", since=mark) if "A previous attempt failed" in p]
    assert len(repairs) == 1 and "assert add(1, 2) == 3" in repairs[0]
    assert not [p for p in coder.prompts_for("mul", since=mark) if "A previous attempt failed" in p]

    # one current artifact per instance, with provenance and test results; add's first one kept, not current
    current = (await api.get(f"/api/projects/{pid}/artifacts", headers=tenant.headers)).json()["items"]
    assert {a["path"]: (a["content"], a["test_status"], a["round"]) for a in current} == {
        "add.py": (ADD_RIGHT, "passed", 2),
        "mul.py": (MUL_RIGHT, "passed", 1),
    }
    assert all(a["model"] == "openai_api" and a["template_name"] == "python-function" for a in current)
    every = (await api.get(f"/api/projects/{pid}/artifacts", params={"all": "true"}, headers=tenant.headers)).json()[
        "items"
    ]
    old = [a for a in every if not a["current"]]
    assert [(a["path"], a["content"], a["test_status"]) for a in old] == [("add.py", ADD_WRONG, "failed")]

    # a workflow_tasks row per debugging round, with its events once each
    tasks = (await api.get("/api/tasks", params={"project_id": pid}, headers=tenant.headers)).json()["items"]
    assert [(t["task_type"], t["status"]) for t in tasks] == [
        ("debug_round_1", "failed"),
        ("debug_round_2", "completed"),
    ]
    ids = {t["id"] for t in tasks}
    created = [e for e in await _events(api, tenant, "task.created") if e["subject_id"] in ids]
    completed = [e for e in await _events(api, tenant, "task.completed") if e["subject_id"] in ids]
    assert len(created) == 2 and len(completed) == 2
    generated = [
        e for e in await _events(api, tenant, "code.generated") if e["payload"]["instance_id"] in (add["id"], mul["id"])
    ]
    assert len(generated) == 3  # add twice, mul once

    # the run has ended: its state is final
    assert (await api.get(f"/api/projects/{pid}/state", headers=tenant.headers)).json() == {
        "state": "completed",
        "allowed_next": [],
    }
    resp = await api.put(f"/api/projects/{pid}/state", json={"state": "code_generation"}, headers=tenant.headers)
    assert resp.status_code == 409 and resp.json()["allowed_next"] == []
    await _save_histories(temporal, project["workflow_id"], "pipeline-repair")


async def test_the_pipeline_keeps_the_candidate_that_passes_before_any_repair(api, tenant, coder, temporal):
    """n = 2: the first candidate fails the spec's tests, the second passes. The generation ranks them by
    those tests in the sandbox and keeps the second; no debugging round is spent, and both results are
    in the generation's record, which the artifact names."""
    coder.queued["add"] = [ADD_WRONG, ADD_RIGHT]
    mark = len(coder.prompts)
    project = await _project(api, tenant, {"model": "openai_api", "n": 2, "debug_rounds": 1})
    pid = project["id"]
    add = await _instance(api, tenant, pid, "add", ["assert add(1, 2) == 3", "assert add(-1, 1) == 0"])
    resp = await api.post(f"/api/projects/{pid}/specs/complete", headers=tenant.headers)
    assert resp.status_code == 200, resp.text
    row = await _finished(api, tenant, pid)
    assert row["state"] == "completed"
    assert await _states(api, tenant, pid) == [
        "initialization",
        "spec_definition",
        "code_generation",
        "integration",
        "debugging",
        "completed",
    ]
    assert len(coder.prompts_for("add", since=mark)) == 2  # two candidates, no repair prompt
    assert not [p for p in coder.prompts_for("add", since=mark) if "A previous attempt failed" in p]

    [artifact] = (await api.get(f"/api/projects/{pid}/artifacts", headers=tenant.headers)).json()["items"]
    assert (artifact["instance_id"], artifact["content"], artifact["test_status"], artifact["round"]) == (
        add["id"],
        ADD_RIGHT,
        "passed",
        1,
    )
    generation = (await api.get(f"/api/generations/{artifact['generation_id']}", headers=tenant.headers)).json()
    candidates = generation["result"]["candidates"]
    assert [c["code"] for c in candidates] == [ADD_WRONG.rstrip("\n"), ADD_RIGHT.rstrip("\n")]
    assert [(c["tests"]["passed"], c["tests"]["total"], c["tests"]["status"]) for c in candidates] == [
        (0, 2, "failed"),
        (2, 2, "passed"),
    ]
    assert "assert add(1, 2) == 3" in candidates[0]["tests"]["failure"]
    await _save_histories(temporal, project["workflow_id"], "pipeline-candidates")


async def test_specs_complete_is_refused_with_what_is_missing(api, tenant, coder):
    project = await _project(api, tenant)
    pid = project["id"]
    resp = await api.post(f"/api/projects/{pid}/specs/complete", headers=tenant.headers)
    assert resp.status_code == 409
    assert resp.json()["problems"][0]["message"].startswith("the project has no spec instances")

    # an instance whose tests are not Python is refused when written, and nothing is stored
    resp = await api.post(
        "/api/instances",
        headers=tenant.headers,
        json={
            "template_id": await _template_id(api, tenant),
            "project_id": pid,
            "values": {
                "function_name": "add",
                "description": "d",
                "tests": ["assert add(1, 2) == 3", "assert add(1, 2 == 3"],
            },
        },
    )
    assert resp.status_code == 422
    assert [(e["path"], e["message"][:17]) for e in resp.json()["errors"]] == [("$.tests[1]", "not valid Python:")]
    assert (await api.get(f"/api/projects/{pid}/specs", headers=tenant.headers)).json()["items"] == []
    resp = await api.put(f"/api/projects/{pid}/state", json={"state": "code_generation"}, headers=tenant.headers)
    assert resp.status_code == 409 and resp.json()["problems"]
    state = (await api.get(f"/api/projects/{pid}/state", headers=tenant.headers)).json()
    assert state == {"state": "spec_definition", "allowed_next": ["code_generation", "cancelled"]}


async def test_states_the_pipeline_drives_cannot_be_requested(api, tenant):
    project = await _project(api, tenant)
    for target in ("integration", "debugging", "completed", "failed", "spec_definition"):
        resp = await api.put(f"/api/projects/{project['id']}/state", json={"state": target}, headers=tenant.headers)
        assert resp.status_code == 409, (target, resp.text)
        assert resp.json()["allowed_next"] == ["code_generation", "cancelled"]
    resp = await api.put(f"/api/projects/{project['id']}/state", json={"state": "cancelled"}, headers=tenant.headers)
    assert resp.status_code == 200 and resp.json()["state"] == "cancelled"
    assert (await api.get(f"/api/projects/{project['id']}", headers=tenant.headers)).json()["state"] == "cancelled"


async def test_rounds_run_out_and_the_project_fails_with_the_reasons(api, tenant, temporal):
    """The real local engine (the tiny random Llama): its code never passes."""
    project = await _project(api, tenant, {"model": "local_llama", "debug_rounds": 1, "max_new_tokens": 16})
    pid = project["id"]
    inst = await _instance(api, tenant, pid, "add", ["assert add(1, 2) == 3"])
    assert (await api.post(f"/api/projects/{pid}/specs/complete", headers=tenant.headers)).status_code == 200
    row = await _finished(api, tenant, pid)
    assert row["state"] == "failed"
    result = await temporal.get_workflow_handle(project["workflow_id"]).result()
    assert result["reasons"][0].startswith(f"instance {inst['id']}:")
    last = [e for e in await _events(api, tenant, "project.state_changed") if e["subject_id"] == pid][-1]
    assert last["payload"]["to_state"] == "failed"
    assert "after 1 debugging round(s)" in last["payload"]["reason"]
    tasks = (await api.get("/api/tasks", params={"project_id": pid}, headers=tenant.headers)).json()["items"]
    assert [(t["task_type"], t["status"]) for t in tasks] == [("debug_round_1", "failed"), ("debug_round_2", "failed")]


async def test_delete_cancels_a_running_pipeline(api, tenant, coder):
    coder.script("slow_one", first="import time\ntime.sleep(30)\ndef slow_one():\n    return 1\n")
    project = await _project(api, tenant, {"model": "openai_api", "debug_rounds": 0})
    pid = project["id"]
    await _instance(api, tenant, pid, "slow_one", ["assert slow_one() == 1"])
    assert (await api.post(f"/api/projects/{pid}/specs/complete", headers=tenant.headers)).status_code == 200

    async def debugging():
        return (await api.get(f"/api/projects/{pid}", headers=tenant.headers)).json()["state"] == "debugging"

    await wait_for(debugging, timeout=60)
    resp = await api.delete(f"/api/projects/{pid}", headers=tenant.headers)
    assert resp.status_code in (202, 204)
    row = await _finished(api, tenant, pid, timeout=30)
    assert row["state"] == "cancelled"


async def test_a_changed_spec_marks_the_project_stale_and_only_it_is_regenerated(api, tenant, coder, temporal):
    coder.script("inc", first="def inc(x):\n    return x + 1\n")
    coder.script("dec", first="def dec(x):\n    return x - 1\n")
    project = await _project(api, tenant, {"model": "openai_api"})
    pid = project["id"]
    inc = await _instance(api, tenant, pid, "inc", ["assert inc(1) == 2"])
    await _instance(api, tenant, pid, "dec", ["assert dec(1) == 0"])
    assert (await api.post(f"/api/projects/{pid}/specs/complete", headers=tenant.headers)).status_code == 200
    assert (await _finished(api, tenant, pid))["state"] == "completed"
    changes = (await api.get(f"/api/projects/{pid}/changes", headers=tenant.headers)).json()
    assert changes == {"stale": False, "changed": [], "new": []}
    resp = await api.post(f"/api/projects/{pid}/regenerate", headers=tenant.headers)
    assert resp.status_code == 409 and "nothing changed" in resp.json()["detail"]

    # the passing code became the tenant's snippets, flagged generated
    snips = (await api.get("/api/snippets", params={"tag": "generated"}, headers=tenant.headers)).json()["items"]
    assert sorted(s["content"] for s in snips) == ["def dec(x):\n    return x - 1\n", "def inc(x):\n    return x + 1\n"]

    coder.script("inc", first="def inc(x, step=1):\n    return x + step\n")
    values = {"function_name": "inc", "description": "Add step to x.", "tests": ["assert inc(1, 2) == 3"]}
    assert (
        await api.put(f"/api/instances/{inc['id']}", json={"values": values}, headers=tenant.headers)
    ).status_code == 200
    changes = (await api.get(f"/api/projects/{pid}/changes", headers=tenant.headers)).json()
    assert changes == {"stale": True, "changed": [inc["id"]], "new": []}
    asked = len(coder.prompts_for("dec"))
    resp = await api.post(f"/api/projects/{pid}/regenerate", headers=tenant.headers)
    assert resp.status_code == 202, resp.text

    async def done_again():
        row = (await api.get(f"/api/projects/{pid}", headers=tenant.headers)).json()
        events = [e for e in await _events(api, tenant, "project.state_changed") if e["subject_id"] == pid]
        return row if len(events) > 6 and row["state"] == "completed" else None

    await wait_for(done_again, timeout=60, interval=0.25)
    assert len(coder.prompts_for("dec")) == asked  # dec was not regenerated
    current = {
        a["path"]: a for a in (await api.get(f"/api/projects/{pid}/artifacts", headers=tenant.headers)).json()["items"]
    }
    assert current["inc.py"]["content"] == "def inc(x, step=1):\n    return x + step\n"
    assert current["inc.py"]["test_status"] == "passed" and current["dec.py"]["round"] == 1
    assert (await _states(api, tenant, pid))[5:] == [
        "completed",
        "code_generation",
        "integration",
        "debugging",
        "completed",
    ]
    assert (await api.get(f"/api/projects/{pid}/changes", headers=tenant.headers)).json()["stale"] is False
    await _save_histories(temporal, project["workflow_id"], "pipeline-regenerate")


async def test_generated_code_that_never_ends_is_a_test_failure_not_a_crash(api, tenant, coder):
    coder.script("spin", first="def spin():\n    while True:\n        pass\n")
    project = await _project(api, tenant, {"model": "openai_api", "debug_rounds": 0})
    pid = project["id"]
    await _instance(api, tenant, pid, "spin", ["assert spin() is None"])
    assert (await api.post(f"/api/projects/{pid}/specs/complete", headers=tenant.headers)).status_code == 200
    assert (await _finished(api, tenant, pid, timeout=60))["state"] == "failed"
    [art] = (await api.get(f"/api/projects/{pid}/artifacts", headers=tenant.headers)).json()["items"]
    assert art["test_status"] == "timeout" and art["tests"]["status"] == "timeout"
    tasks = (await api.get("/api/tasks", params={"project_id": pid}, headers=tenant.headers)).json()["items"]
    assert [(t["task_type"], t["status"]) for t in tasks] == [("debug_round_1", "failed")]


async def test_the_tenants_generation_limit_holds_across_its_projects(api, tenant, coder):
    names = ["lim_a", "lim_b", "lim_c", "lim_d"]
    for name in names:
        coder.script(name, first=f"def {name}():\n    return 1\n")
    assert (
        await api.put("/api/settings", json={"generation_concurrency": 1}, headers=tenant.headers)
    ).status_code == 200
    coder.delay = 0.4
    try:
        projects = [await _project(api, tenant, {"model": "openai_api", "debug_rounds": 0}) for _ in range(2)]
        for project, pair in zip(projects, (names[:2], names[2:]), strict=False):
            for name in pair:
                await _instance(api, tenant, project["id"], name, [f"assert {name}() == 1"])
        for project in projects:  # both runs at once
            assert (
                await api.post(f"/api/projects/{project['id']}/specs/complete", headers=tenant.headers)
            ).status_code == 200
        for project in projects:
            assert (await _finished(api, tenant, project["id"]))["state"] == "completed"
    finally:
        coder.delay = 0.0
    spans = sorted((start, end) for name, start, end in coder.spans if name in names)
    assert len(spans) == 4
    assert all(later[0] >= earlier[1] for earlier, later in zip(spans, spans[1:], strict=False))  # one at a time
