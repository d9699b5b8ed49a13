"""Poison pills end: an error that no retry can fix fails the project with a reason a user can read,
at once, instead of keeping it in `integration` retrying every 30 s.

- two instances with the same function_name, then a regenerate: the regenerated instance's path must
  not collide with the other instance's current file;
- generated code the store refuses (a NUL character): Invalid from the store;
- an instance deleted while its project generates: NotFound from the store.
(A template path hint such as `../../x.py` is refused when the template and the instance are saved;
tests/histories/pipeline-poison-path-*.json is a run from before that check, failed at integration.)
"""

from __future__ import annotations

import uuid

from temporalio.api.enums.v1 import EventType

from activities.pipeline import _unique_paths
from models.builtin_templates import PYTHON_FUNCTION
from models.generation import GeneratedFile, GenerationResult, Provenance, SpecSnapshot
from models.orchestrator import InstanceOutput, IntegrateInput
from models.schema_rules import values_hash
from store import artifacts
from tests.conftest import project_result, wait_for
from tests.test_pipeline import _events, _finished, _instance, _project

TWIN = "def twin(x):\n    return x\n"


async def _artifacts(api, tenant, pid: str) -> dict[str, dict]:
    """instance id -> its current artifact."""
    rows = (await api.get(f"/api/projects/{pid}/artifacts", headers=tenant.headers)).json()["items"]
    return {a["instance_id"]: a for a in rows}


async def _run_again(api, tenant, temporal, project: dict, runs_before: int) -> dict:
    """Once the last run has closed, POST regenerate, then wait until the new run has ended."""
    pid = project["id"]
    await project_result(temporal, project["workflow_id"])
    resp = await api.post(f"/api/projects/{pid}/regenerate", headers=tenant.headers)
    assert resp.status_code == 202, resp.text

    async def ended():
        states = [
            e["payload"]["to_state"]
            for e in await _events(api, tenant, "project.state_changed")
            if e["subject_id"] == pid
        ]
        return states if states.count("completed") + states.count("failed") > runs_before else None

    states = await wait_for(ended, timeout=60, interval=0.25)
    return {"states": states, "row": (await api.get(f"/api/projects/{pid}", headers=tenant.headers)).json()}


async def _activity_attempts(temporal, workflow_id: str, activity_type: str) -> list[int]:
    """The attempt each scheduled `activity_type` ended on, from the workflow's history."""
    history = await temporal.get_workflow_handle(workflow_id).fetch_history()
    names = {
        e.event_id: e.activity_task_scheduled_event_attributes.activity_type.name
        for e in history.events
        if e.event_type == EventType.EVENT_TYPE_ACTIVITY_TASK_SCHEDULED
    }
    return [
        e.activity_task_started_event_attributes.attempt
        for e in history.events
        if e.event_type == EventType.EVENT_TYPE_ACTIVITY_TASK_STARTED
        and names[e.activity_task_started_event_attributes.scheduled_event_id] == activity_type
    ]


async def _last_state_change(api, tenant, pid: str) -> dict:
    async def failed():
        mine = [e for e in await _events(api, tenant, "project.state_changed") if e["subject_id"] == pid]
        return mine[-1]["payload"] if mine and mine[-1]["payload"]["to_state"] == "failed" else None

    return await wait_for(failed)


# --- two instances with the same function_name, then a regenerate ---------------------------------


async def test_twins_keep_their_own_paths_through_regenerations(api, tenant, coder, temporal):
    coder.script("twin", first=TWIN)
    project = await _project(api, tenant, {"model": "openai_api", "debug_rounds": 0})
    pid = project["id"]
    one = await _instance(api, tenant, pid, "twin", ["assert twin(1) == 1"], "Return x.")
    two = await _instance(api, tenant, pid, "twin", ["assert twin(2) == 2"], "Return x, unchanged.")
    assert (await api.post(f"/api/projects/{pid}/specs/complete", headers=tenant.headers)).status_code == 200
    assert (await _finished(api, tenant, pid))["state"] == "completed"
    first = await _artifacts(api, tenant, pid)
    paths = {iid: a["path"] for iid, a in first.items()}
    assert sorted(paths.values())[0] == "twin.py" and len(set(paths.values())) == 2
    holder, other = (one, two) if paths[one["id"]] == "twin.py" else (two, one)
    assert paths[other["id"]] == f"twin_{other['id'][:8]}.py"

    # the instance without twin.py is regenerated alone: it keeps its own path (it used to want
    # twin.py, the other's current file: Conflict, retried every 30 s in `integration`)
    runs = 1
    for changed in (other, holder, None):  # then the holder alone, then both at once
        for inst in [changed] if changed else [one, two]:
            values = {**inst["values"], "description": inst["values"]["description"] + f" Run {runs + 1}."}
            resp = await api.put(f"/api/instances/{inst['id']}", json={"values": values}, headers=tenant.headers)
            assert resp.status_code == 200, resp.text
            inst["values"] = values
        done = await _run_again(api, tenant, temporal, project, runs)
        runs += 1
        assert done["row"]["state"] == "completed", done["states"]
        assert done["states"][-4:] == ["code_generation", "integration", "debugging", "completed"]
        now = await _artifacts(api, tenant, pid)
        assert {iid: a["path"] for iid, a in now.items()} == paths  # nobody moved
        assert all(a["test_status"] == "passed" for a in now.values())
    assert (await api.get(f"/api/projects/{pid}/changes", headers=tenant.headers)).json()["stale"] is False


def _output(instance_id: uuid.UUID, name: str, content: str | None = TWIN) -> InstanceOutput:
    values = {"function_name": name, "description": "d"}
    spec = SpecSnapshot(
        template_id=uuid.uuid4(),
        template_name="python-function",
        template_version="1.0.0",
        schema=PYTHON_FUNCTION,
        values=values,
        values_hash=values_hash(values),
        instance_id=instance_id,
    )
    if content is None:
        return InstanceOutput(spec=spec, error="generation failed")
    gen = GenerationResult(
        id=uuid.uuid4(),
        status="completed",
        candidates=[],
        parses=True,
        files=[GeneratedFile(path=f"{name}.py", content=content)],
        provenance=Provenance(
            template_id=spec.template_id,
            template_name=spec.template_name,
            template_version=spec.template_version,
            values_hash=spec.values_hash,
            instance_id=instance_id,
            retrieved_snippets=[],
        ),
    )
    return InstanceOutput(spec=spec, generation=gen)


def test_paths_avoid_other_instances_current_files_and_do_not_move_on_retry():
    a, b, c = (uuid.UUID(int=n << 100) for n in (1, 2, 3))

    def paths(outputs, current):
        inp = IntegrateInput(
            tenant_id=uuid.uuid4(), project_id=uuid.uuid4(), round=1, model="m", techniques=[], outputs=outputs
        )
        storing = {o.spec.instance_id for o in outputs if o.generation}
        return _unique_paths(inp, current, storing)

    hex_b = f"twin_{str(b)[:8]}.py"
    # one round: the first takes the plain path, the second gets its id's prefix
    assert paths([_output(a, "twin"), _output(b, "twin")], {}) == {a: "twin.py", b: hex_b}
    # b regenerated alone while a holds twin.py: b does not take it (and keeps its own)
    assert paths([_output(b, "twin")], {a: "twin.py"}) == {b: hex_b}
    assert paths([_output(b, "twin")], {a: "twin.py", b: hex_b}) == {b: hex_b}
    # a file that holds a path keeps it, whichever comes first in the round
    assert paths([_output(a, "twin"), _output(b, "twin")], {b: "twin.py"}) == {a: f"twin_{str(a)[:8]}.py", b: "twin.py"}
    # a retry after the first attempt committed: the same paths
    first = paths([_output(a, "twin"), _output(b, "twin"), _output(c, "other")], {})
    assert paths([_output(a, "twin"), _output(b, "twin"), _output(c, "other")], first) == first
    # an instance with nothing new keeps its current file, and the others avoid it
    assert paths([_output(a, "twin", None), _output(b, "twin")], {a: "twin.py"}) == {a: "twin.py", b: hex_b}
    # a taken prefix falls back to the whole id
    assert paths([_output(b, "twin")], {a: "twin.py", c: hex_b}) == {b: f"twin_{b.hex}.py"}


async def test_a_round_may_trade_paths_between_its_instances(pool, api, tenant):
    project = await _project(api, tenant)
    pid = uuid.UUID(project["id"])
    add = uuid.UUID((await _instance(api, tenant, project["id"], "add", []))["id"])
    mul = uuid.UUID((await _instance(api, tenant, project["id"], "mul", []))["id"])

    def item(iid, path, content):
        return artifacts.NewArtifact(
            instance_id=iid,
            path=path,
            content=content,
            values_hash="v",
            template_id=None,
            template_name="t",
            template_version="1",
            model="m",
            techniques=[],
            retrieved_snippets=[],
            generation_id=None,
            round=1,
            checks={},
        )

    kw = dict(tenant_id=tenant.tenant_id, project_id=pid)
    await artifacts.store_artifacts(pool, **kw, items=[item(add, "add.py", "a = 1\n"), item(mul, "mul.py", "m = 1\n")])
    # the same contents, swapped paths, in one transaction
    await artifacts.store_artifacts(pool, **kw, items=[item(add, "mul.py", "a = 1\n"), item(mul, "add.py", "m = 1\n")])
    assert await artifacts.current_paths(pool, **kw) == {add: "mul.py", mul: "add.py"}
    every = await artifacts.list_artifacts(pool, **kw, current_only=False)
    assert len(every) == 2 and all(a.current for a in every)


# --- an activity that hits Invalid or NotFound ends the project at once ----------------------------


async def test_code_the_store_refuses_ends_the_generation_at_once(api, tenant, coder, temporal):
    """A NUL character in the generated code: PostgreSQL refuses it in the generation's result (Invalid
    from the store). record_generation used to retry it for ever, the project stuck in code_generation."""
    coder.script("nul", first="def nul():\n    return '\x00'\n")
    project = await _project(api, tenant, {"model": "openai_api", "debug_rounds": 1})
    pid = project["id"]
    inst = await _instance(api, tenant, pid, "nul", ["assert nul() == 1"])
    assert (await api.post(f"/api/projects/{pid}/specs/complete", headers=tenant.headers)).status_code == 200
    row = await _finished(api, tenant, pid, timeout=30)
    assert row["state"] == "failed"
    result = await project_result(temporal, project["workflow_id"])
    [reason] = result["reasons"]  # the store's own words, not "Activity task failed"; by name, not UUID
    assert reason.startswith("nul: nothing generated: generation failed: ") and "Unicode escape sequence" in reason
    assert inst["id"] not in reason
    change = await _last_state_change(api, tenant, pid)
    assert change["reason"].startswith("tests still fail after 2 round(s): ")
    children = [wf.id async for wf in temporal.list_workflows(f"WorkflowId STARTS_WITH '{project['workflow_id']}-'")]
    assert len(children) == 2  # round 1 and its one repair
    for wid in children:
        assert await _activity_attempts(temporal, wid, "record_generation") == [1]


async def test_an_instance_deleted_while_generating_fails_the_project_with_the_reason(api, tenant, coder, temporal):
    coder.script("vanish", first="def vanish():\n    return 1\n")
    project = await _project(api, tenant, {"model": "openai_api", "debug_rounds": 0})
    pid = project["id"]
    inst = await _instance(api, tenant, pid, "vanish", ["assert vanish() == 1"])
    coder.hold("vanish")
    try:
        assert (await api.post(f"/api/projects/{pid}/specs/complete", headers=tenant.headers)).status_code == 200
        await wait_for(lambda: "vanish" in coder.started, timeout=30)  # its generation is asking the model
        resp = await api.delete(f"/api/instances/{inst['id']}", headers=tenant.headers)  # in code_generation
        assert resp.status_code == 204, resp.text
    finally:
        coder.release("vanish")
    row = await _finished(api, tenant, pid, timeout=30)
    assert row["state"] == "failed"
    change = await _last_state_change(api, tenant, pid)
    assert change["from_state"] == "integration"
    assert change["reason"] == "vanish: the instance was deleted while its code was generated"
    assert await _activity_attempts(temporal, project["workflow_id"], "integrate_artifacts") == [1]


def test_code_nested_too_deeply_for_the_parser_is_a_finding_not_a_crash():
    from activities.pipeline import static_checks

    deep = {"a.py": "x = " + "(" * 100_000 + ")" * 100_000 + "\n", "b.py": "y = a" + ".b" * 100_000 + "\n"}
    checks = static_checks(deep)
    for path in deep:
        assert checks[path].parses is False and checks[path].problems[0].startswith("does not parse"), path
