"""Runs of a project: a failed project runs again with new settings, from its first answer on;
each run and the project carry an outcome that names instances by name; Temporal shows a failed run as
Failed. Real gateway, Temporal, workers and sandbox; the model is the scripted OpenAI-protocol fake."""

from __future__ import annotations

import io
import json
import zipfile

from temporalio.client import Client, WorkflowExecutionStatus

from tests.test_pipeline import _finished, _instance, _project

TWICE_WRONG = "def twice(x):\n    return x + x + 1\n"
TWICE_RIGHT = "def twice(x):\n    return 2 * x\n"
HALVE_RIGHT = "def halve(x):\n    return x // 2\n"


async def test_a_failed_project_runs_again_with_new_settings_and_completes(api, tenant, other_tenant, coder, temporal):
    coder.script("twice", first=TWICE_WRONG, repair=TWICE_RIGHT)
    coder.script("halve", first=HALVE_RIGHT)
    project = await _project(api, tenant, {"model": "openai_api", "debug_rounds": 0})
    pid, first_run = project["id"], project["run_id"]
    twice = await _instance(api, tenant, pid, "twice", ["assert twice(2) == 4"])
    halve = await _instance(api, tenant, pid, "halve", ["assert halve(4) == 2"])
    assert (await api.post(f"/api/projects/{pid}/specs/complete", headers=tenant.headers)).status_code == 200
    row = await _finished(api, tenant, pid)
    assert row["state"] == "failed" and row["run_id"] == first_run

    # the project says why, by name: the failing test and where it failed
    by_name = {i["name"]: i for i in row["outcome"]["instances"]}
    assert by_name["twice"]["status"] == "failed" and by_name["twice"]["stage"] == "debugging"
    assert by_name["twice"]["test"] == "assert twice(2) == 4"
    assert (by_name["twice"]["expected"], by_name["twice"]["actual"]) == ("4", "5")
    assert by_name["twice"]["message"] == "assert twice(2) == 4 failed: expected 4, got 5"
    assert by_name["halve"]["status"] == "passed"
    assert row["outcome"]["summary"].startswith("1 of 2 instance(s) still fail after 1 round(s): twice: ")
    assert twice["id"] not in row["reason"] and "twice: " in row["reason"]

    # run again, the failing instance only, with one repair round this time
    mark = len(coder.prompts)
    coder.hold("twice")  # the run is still going when the second POST below arrives
    try:
        resp = await api.post(
            f"/api/projects/{pid}/runs",
            json={"scope": "failed", "settings": {"debug_rounds": 1}},
            headers=tenant.headers,
        )
        assert resp.status_code == 202, resp.text
        run = resp.json()
        assert run["state"] == "code_generation" and run["scope"] == "failed" and run["id"] != first_run
        assert run["instance_ids"] == [twice["id"]]
        assert resp.headers["location"] == f"/api/projects/{pid}/runs/{run['id']}"
        # from the 202 on, nothing shows the last run's ending
        state = (await api.get(f"/api/projects/{pid}/state", headers=tenant.headers)).json()
        assert state["state"] not in ("failed", "completed") and state["allowed_next"] == ["cancelled"]
        row = (await api.get(f"/api/projects/{pid}", headers=tenant.headers)).json()
        assert row["state"] != "failed" and row["run_id"] == run["id"] and row["outcome"] is None
        # one run at a time: the second answers 409 with the id of the one going
        again = await api.post(f"/api/projects/{pid}/runs", json={"scope": "all"}, headers=tenant.headers)
        assert again.status_code == 409 and again.json()["run_id"] == run["id"], again.text
    finally:
        coder.release("twice")
    row = await _finished(api, tenant, pid)
    assert row["state"] == "completed", row["reason"]
    # its first round was told how twice failed last time, and that repaired it at once
    [prompt] = coder.prompts_for("twice", since=mark)
    assert "A previous attempt failed" in prompt and "assert twice(2) == 4 failed: expected 4, got 5" in prompt
    # the project's outcome: this run's instance, and the one it did not run as the first run left it
    assert {i["name"]: (i["status"], i["round"]) for i in row["outcome"]["instances"]} == {
        "twice": ("passed", 1),
        "halve": ("passed", 1),
    }

    # the zip's manifest says the same
    resp = await api.get(f"/api/projects/{pid}/artifacts.zip", headers=tenant.headers)
    with zipfile.ZipFile(io.BytesIO(resp.content)) as zf:
        manifest = json.loads(zf.read("manifest.json"))
    assert (manifest["state"], manifest["run_id"], manifest["outcome"]) == ("completed", run["id"], row["outcome"])

    # the runs, with their settings, outcome, reason and duration
    runs = (await api.get(f"/api/projects/{pid}/runs", headers=tenant.headers)).json()
    assert runs["next_cursor"] is None
    first, second = runs["items"]
    assert (first["id"], first["scope"], first["state"]) == (first_run, "initial", "failed")
    assert first["settings"]["debug_rounds"] == 0 and first["outcome"]["state"] == "failed"
    assert first["reason"].startswith("tests still fail after 1 round(s): twice: ")
    assert (second["id"], second["state"], second["settings"]["debug_rounds"]) == (run["id"], "completed", 1)
    assert [i["name"] for i in second["outcome"]["instances"]] == ["twice"]
    for r in (first, second):
        assert r["duration_s"] > 0 and r["ended_at"].endswith("+00:00") and r["created_at"].endswith("+00:00")
    one = await api.get(f"/api/projects/{pid}/runs/{run['id']}", headers=tenant.headers)
    assert one.status_code == 200 and one.json() == second
    page = (await api.get(f"/api/projects/{pid}/runs", params={"limit": 1}, headers=tenant.headers)).json()
    assert [r["id"] for r in page["items"]] == [first_run] and page["next_cursor"]

    # Temporal: the failed run ended Failed, the rerun Completed
    handle = temporal.get_workflow_handle(project["workflow_id"], run_id=first_run)
    assert (await handle.describe()).status == WorkflowExecutionStatus.FAILED
    handle = temporal.get_workflow_handle(project["workflow_id"], run_id=run["id"])
    assert (await handle.describe()).status == WorkflowExecutionStatus.COMPLETED
    assert halve["id"] not in (await handle.result())["outcome"]["summary"]

    # nothing fails now: scope failed has nothing to run, and says what would
    resp = await api.post(f"/api/projects/{pid}/runs", json={"scope": "failed"}, headers=tenant.headers)
    assert resp.status_code == 409 and 'scope "all"' in resp.json()["detail"]
    resp = await api.post(f"/api/projects/{pid}/runs", json={}, headers=tenant.headers)
    assert resp.status_code == 409  # the default scope is failed
    resp = await api.post(f"/api/projects/{pid}/runs", json={"scope": "changed"}, headers=tenant.headers)
    assert resp.status_code == 409 and "nothing changed" in resp.json()["detail"]
    for bad in ({"scope": "some"}, {"settings": {"model": "gpt-17"}}, {"settings": {"debug_rounds": 99}}, {"x": 1}):
        resp = await api.post(f"/api/projects/{pid}/runs", json=bad, headers=tenant.headers)
        assert resp.status_code == 422 and "detail" in resp.json(), (bad, resp.text)
    # a model that cannot serve this tenant now (no Anthropic key here) is refused up front, and saves nothing
    resp = await api.post(
        f"/api/projects/{pid}/runs",
        json={"scope": "all", "settings": {"model": "anthropic_api"}},
        headers=tenant.headers,
    )
    assert resp.status_code == 422 and resp.json()["model"] == "anthropic_api", resp.text
    assert "no Anthropic key" in resp.json()["reason"]
    settings = (await api.get(f"/api/projects/{pid}/settings", headers=tenant.headers)).json()
    assert settings["model"] == "openai_api"
    assert (await api.get(f"/api/projects/{pid}", headers=tenant.headers)).json()["state"] == "completed"

    # another tenant sees none of it
    for method, path in (
        ("GET", f"/api/projects/{pid}/runs"),
        ("GET", f"/api/projects/{pid}/runs/{run['id']}"),
        ("POST", f"/api/projects/{pid}/runs"),
    ):
        resp = await api.request(method, path, json={} if method == "POST" else None, headers=other_tenant.headers)
        assert resp.status_code == 404 and "detail" in resp.json(), (method, path)
    resp = await api.get(f"/api/projects/{pid}/runs/{run['id']}", headers=tenant.headers)
    assert resp.status_code == 200
    resp = await api.get(f"/api/projects/{pid}/runs/{first_run[:-4]}beef", headers=tenant.headers)
    assert resp.status_code == 404


async def test_a_cancelled_project_runs_again_with_every_instance(api, tenant, coder, stack):
    coder.script("thrice", first="def thrice(x):\n    return 3 * x\n")
    project = await _project(api, tenant, {"model": "openai_api", "debug_rounds": 0})
    pid = project["id"]
    await _instance(api, tenant, pid, "thrice", ["assert thrice(2) == 6"])
    assert (await api.delete(f"/api/projects/{pid}", headers=tenant.headers)).status_code in (202, 204)
    row = await _finished(api, tenant, pid)
    assert row["state"] == "cancelled" and row["outcome"]["summary"] == "project deleted"
    # the state query's payload, read without our data converter: allowed_next is a list, also when empty
    # (`temporal workflow query` renders an empty list as null: the CLI's rendering, not the payload)
    raw = await Client.connect(f"127.0.0.1:{stack.temporal_port}")
    view = await raw.get_workflow_handle(project["workflow_id"]).query("state")
    assert view == {"state": "cancelled", "allowed_next": []}
    resp = await api.post(f"/api/projects/{pid}/runs", json={"scope": "all"}, headers=tenant.headers)
    assert resp.status_code == 202, resp.text
    row = await _finished(api, tenant, pid)
    assert row["state"] == "completed" and [i["name"] for i in row["outcome"]["instances"]] == ["thrice"]
