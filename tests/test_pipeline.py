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

import pytest
from temporalio.api.enums.v1 import EventType
from temporalio.client import WorkflowFailureError
from temporalio.exceptions import ApplicationError

from models.orchestrator import DebugRoundResult, IntegrateResult
from tests.coder_fake import REPAIR_MARK
from tests.conftest import wait_for

HISTORIES = Path(__file__).parent / "histories"


async def _save_histories(temporal, workflow_id: str, name: str, run_id: str | None = None) -> None:
    """With SPECMILL_SAVE_HISTORIES=1 (or =<tag>: named <name>-<tag>-<i>), keep the run's histories (the
    project's, its latest run or `run_id`, and its children's) for tests/test_replay.py: a later change
    that breaks determinism then fails CI."""
    tag = os.environ.get("SPECMILL_SAVE_HISTORIES")
    if not tag:
        return
    if tag != "1":  # recordings of a later change go beside the old ones, never over them
        name = f"{name}-{tag}"
    HISTORIES.mkdir(exist_ok=True)
    ids = [workflow_id] + [wf.id async for wf in temporal.list_workflows(f"WorkflowId STARTS_WITH '{workflow_id}-'")]
    for i, wid in enumerate(ids):
        history = await temporal.get_workflow_handle(wid, run_id=run_id if i == 0 else None).fetch_history()
        record = {"workflow_id": wid, "history": history.to_json_dict()}
        path = HISTORIES / f"{name}-{i}.json"
        if path.exists():
            raise FileExistsError(f"{path} is recorded already: name the new recording (SPECMILL_SAVE_HISTORIES=<tag>)")
        path.write_text(json.dumps(record, indent=0))


async def _activity_results(temporal, workflow_id: str, activity_type: str, result_type: type) -> list:
    """Each completed `activity_type`'s result, in order, decoded from the workflow's history."""
    history = await temporal.get_workflow_handle(workflow_id).fetch_history()
    names = {
        e.event_id: e.activity_task_scheduled_event_attributes.activity_type.name
        for e in history.events
        if e.event_type == EventType.EVENT_TYPE_ACTIVITY_TASK_SCHEDULED
    }
    out = []
    for e in history.events:
        done = e.activity_task_completed_event_attributes
        if (
            e.event_type == EventType.EVENT_TYPE_ACTIVITY_TASK_COMPLETED
            and names[done.scheduled_event_id] == activity_type
        ):
            out += await temporal.data_converter.decode(done.result.payloads, [result_type])
    return out


ADD_WRONG = "def add(a, b):\n    return a - b\n"
ADD_RIGHT = "def add(a, b):\n    return a + b\n"
MUL_RIGHT = "def mul(a, b):\n    return a * b\n"


async def _template_id(api, tenant, name="python-function", version: str | None = None) -> str:
    params = {"name": name} | ({"version": version} if version else {})
    tpl = (await api.get("/api/templates", params=params, headers=tenant.headers)).json()
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


async def _instance(
    api, tenant, project_id: str, name: str, tests: list[str], description: str = "", **more: list[str]
) -> dict:
    """A python-function instance; `more` (imports, setup) takes version 1.1.0, which has them."""
    values = {"function_name": name, "description": description or f"The function {name}.", "tests": tests}
    resp = await api.post(
        "/api/instances",
        headers=tenant.headers,
        json={
            "template_id": await _template_id(api, tenant, version="1.1.0" if more else None),
            "project_id": project_id,
            "values": values | more,
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
    every = (await api.get(f"/api/projects/{pid}/artifacts", params={"all": "true"}, headers=tenant.headers)).json()
    every = every["items"]
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
    assert "(expected 3, got -1)" in candidates[0]["tests"]["failure"]  # the harness's introspection
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
    # the run ends Failed in Temporal (the UI shows it so), its result in the failure's details
    with pytest.raises(WorkflowFailureError) as failed:
        await temporal.get_workflow_handle(project["workflow_id"]).result()
    cause = failed.value.cause
    assert isinstance(cause, ApplicationError) and cause.type == "ProjectFailed"
    result = cause.details[0]
    assert result["state"] == "failed" and result["reasons"][0].startswith("add: ")
    assert "add: " in cause.message and inst["id"] not in cause.message  # by name, never by UUID
    (outcome,) = result["outcome"]["instances"]
    assert (outcome["name"], outcome["instance_id"], outcome["round"]) == ("add", inst["id"], 2)
    # GET project carries the same outcome, and the last state event too
    row = (await api.get(f"/api/projects/{pid}", headers=tenant.headers)).json()
    assert row["outcome"] == result["outcome"] and row["reason"].startswith("tests still fail")
    last = [e for e in await _events(api, tenant, "project.state_changed") if e["subject_id"] == pid][-1]
    assert last["payload"]["to_state"] == "failed" and last["payload"]["outcome"] == result["outcome"]
    # one count of rounds: the reason's, the outcome's and its summary's, the instance's and the tasks'
    assert "after 2 round(s)" in last["payload"]["reason"] and inst["id"] not in last["payload"]["reason"]
    assert result["outcome"]["rounds"] == 2 and "after 2 round(s)" in result["outcome"]["summary"]
    tasks = (await api.get("/api/tasks", params={"project_id": pid}, headers=tenant.headers)).json()["items"]
    assert [(t["task_type"], t["status"]) for t in tasks] == [("debug_round_1", "failed"), ("debug_round_2", "failed")]
    await _save_histories(temporal, project["workflow_id"], "pipeline-rounds-run-out")


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


TOMORROW_NO_IMPORT = "def tomorrow(d):\n    return d + datetime.timedelta(days=1)\n"
TOMORROW = "import datetime\n\n\ndef tomorrow(d):\n    return d + datetime.timedelta(days=1)\n"


async def test_undefined_names_go_to_the_repair_round_untested_and_comparisons_report_both_sides(
    api, tenant, coder, temporal
):
    """tomorrow's first code uses datetime without importing it (its test's setup imports it, so the
    sandbox alone would not notice): integration reports the undefined name, the round spends no sandbox
    run on it, and the repair prompt is told the finding. inc never passes: its result carries the test,
    both sides of the comparison and the error."""
    coder.script("tomorrow", first=TOMORROW_NO_IMPORT, repair=TOMORROW)
    coder.script("inc", first="def inc(x):\n    return x + 2\n")
    mark = len(coder.prompts)
    project = await _project(api, tenant, {"model": "openai_api", "debug_rounds": 1})
    pid = project["id"]
    tomorrow = await _instance(
        api,
        tenant,
        pid,
        "tomorrow",
        ["assert tomorrow(datetime.date(2020, 1, 1)) == datetime.date(2020, 1, 2)"],
        setup=["import datetime"],
    )
    inc = await _instance(api, tenant, pid, "inc", ["assert inc(1) == 2"], imports=["import math"])
    assert (await api.post(f"/api/projects/{pid}/specs/complete", headers=tenant.headers)).status_code == 200
    assert (await _finished(api, tenant, pid))["state"] == "failed"  # inc never passes
    wid = project["workflow_id"]

    # the prompts named the setup and the imports
    [first_tomorrow] = [p for p in coder.prompts_for("tomorrow", since=mark) if REPAIR_MARK not in p]
    assert "The tests run after this setup" in first_tomorrow and "import datetime" in first_tomorrow
    assert "The code must start with these imports:\nimport math" in coder.prompts_for("inc", since=mark)[0]

    # round 1: integration found the undefined name (and inc's declared import, added but unused)
    integrated = await _activity_results(temporal, wid, "integrate_artifacts", IntegrateResult)
    found = {a.path: a.problems for a in integrated[0].artifacts}
    assert found == {
        "tomorrow.py": ["line 2: undefined name 'datetime'"],
        "inc.py": ["line 1: 'math' imported but unused"],
    }
    rounds = await _activity_results(temporal, wid, "run_spec_tests", DebugRoundResult)
    assert len(rounds) == 2
    first = {str(r.instance_id): r for r in rounds[0].results}
    t = first[tomorrow["id"]]
    assert (t.status, t.error, t.problems, t.test, t.actual) == (
        "error",
        "line 2: undefined name 'datetime'",
        ["line 2: undefined name 'datetime'"],
        None,
        None,
    )
    assert t.failure.startswith("error: the code uses names it never defines, so no test ran")
    i = first[inc["id"]]
    assert (i.status, i.test, i.error, i.actual, i.expected) == (
        "failed",
        "assert inc(1) == 2",
        "AssertionError",
        "3",
        "2",
    )
    assert i.failure.splitlines()[0] == "failed: the test `assert inc(1) == 2` failed: expected 2, got 3"
    assert i.problems == ["line 1: 'math' imported but unused"]

    # the repair prompts were told: the finding for tomorrow, the values for inc
    [repair] = [p for p in coder.prompts_for("tomorrow", since=mark) if REPAIR_MARK in p]
    assert "line 2: undefined name 'datetime'" in repair
    assert any("expected 2, got 3" in p for p in coder.prompts_for("inc", since=mark) if REPAIR_MARK in p)

    # round 2: tomorrow's repaired code passes, its test run after the setup line
    second = {str(r.instance_id): r for r in rounds[1].results}
    assert second[tomorrow["id"]].status == "passed" and second[tomorrow["id"]].problems == []
    assert second[inc["id"]].actual == "3"

    # the stored reports: tomorrow's first file never reached the sandbox; inc's shows both sides
    every = (await api.get(f"/api/projects/{pid}/artifacts", params={"all": "true"}, headers=tenant.headers)).json()
    every = every["items"]
    old = next(a for a in every if a["path"] == "tomorrow.py" and not a["current"])
    assert old["test_status"] == "error" and old["tests"]["stage"] == "static"
    assert old["checks"]["problems"] == ["line 2: undefined name 'datetime'"]
    current = next(a for a in every if a["path"] == "inc.py" and a["current"])
    assert current["content"].startswith("import math\n")  # the declared import, added to the module
    assert (current["tests"]["actual"], current["tests"]["expected"]) == ("3", "2")
