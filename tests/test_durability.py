"""A worker killed mid-activity: the run still completes, with no duplicate rows or events.

The integration worker runs as its own process (`specmill worker integration`, as `make run` starts
it) on task queues of this test's own; it is killed with SIGKILL while it runs a project's tests, and
a fresh one takes over once the activity's heartbeat times out.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import uuid
from collections import Counter
from pathlib import Path

import psutil
import pytest

from infra.temporal import connect_temporal
from tests.conftest import wait_for
from tests.test_pipeline import _events, _instance
from workers.queues import QUEUES

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parents[1]


def _env(settings) -> dict[str, str]:
    """The settings as the environment a worker process reads them from."""
    env = {k: v for k, v in os.environ.items() if not k.isupper() or k in ("PATH", "HOME", "LANG")}
    for name, value in settings.model_dump(mode="json").items():
        if value is not None:
            env[name.upper()] = json.dumps(value) if isinstance(value, (list, dict)) else str(value)
    return env


def _running_tests(worker: subprocess.Popen) -> list[psutil.Process]:
    """The sandboxed harness processes under `worker` that are running a spec's tests (bwrap's child,
    once it has exec'd the interpreter on /sandbox/harness.py)."""
    found = []
    for proc in psutil.Process(worker.pid).children(recursive=True):
        try:
            cmd = proc.cmdline()
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
        if "/sandbox/harness.py" in cmd and "tests" in cmd and "bwrap" not in Path(cmd[0]).name:
            found.append(proc)
    return found


async def _pending_activities(temporal, workflow_id: str) -> list[tuple[str, int]]:
    """(activity type, attempt) of each activity the workflow has scheduled or running."""
    desc = await temporal.get_workflow_handle(workflow_id).describe()
    return [(a.activity_type.name, a.attempt) for a in desc.raw_description.pending_activities]


def _integration_worker(settings, log: Path) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "workers.cli", "worker", "integration"],
        cwd=ROOT,
        env=_env(settings),
        stdout=open(log, "ab"),
        stderr=subprocess.STDOUT,
    )


async def test_a_worker_killed_mid_activity_loses_and_duplicates_nothing(
    stack, pool, temporal, make_app, tenant, coder, tmp_path
):
    coder.script("slow_add", first="import time\ntime.sleep(4)\n\n\ndef slow_add(a, b):\n    return a + b\n")
    settings = stack.with_(task_queue_prefix=f"kill-{uuid.uuid4().hex[:8]}-")
    in_process = [QUEUES[q].build(temporal, settings, pool) for q in QUEUES if q != "integration"]
    running = [asyncio.create_task(w.run()) for w in in_process]
    first = _integration_worker(settings, tmp_path / "worker-1.log")
    second = None
    try:
        async for api in make_app(settings):
            project = (await api.post("/api/projects", json={"name": "kill"}, headers=tenant.headers)).json()
            pid = project["id"]
            await api.put(
                f"/api/projects/{pid}/settings", json={"model": "openai_api", "debug_rounds": 0}, headers=tenant.headers
            )

            async def state(api=api, pid=pid):
                return (await api.get(f"/api/projects/{pid}", headers=tenant.headers)).json()["state"]

            await wait_for(lambda: _is(state, "spec_definition"), timeout=30)
            await _instance(api, tenant, pid, "slow_add", ["assert slow_add(1, 2) == 3"])
            assert (await api.post(f"/api/projects/{pid}/specs/complete", headers=tenant.headers)).status_code == 200
            await wait_for(lambda: _is(state, "debugging"), timeout=60)
            # the kill lands while the tests run (4 s): their sandboxed process is up under this worker
            await wait_for(lambda: _running_tests(first), timeout=30, interval=0.05)
            assert await _pending_activities(temporal, project["workflow_id"]) == [("run_spec_tests", 1)]
            first.send_signal(signal.SIGKILL)
            first.wait(10)
            second = _integration_worker(settings, tmp_path / "worker-2.log")
            await wait_for(lambda: _is(state, "completed", "failed"), timeout=90, interval=0.5)
            assert await state() == "completed"

            history = await temporal.get_workflow_handle(project["workflow_id"]).fetch_history()
            attempts = [
                e.activity_task_started_event_attributes.attempt
                for e in history.events
                if e.HasField("activity_task_started_event_attributes")
            ]
            assert max(attempts) >= 2  # the tests ran again, on the second worker

            tasks = (await api.get("/api/tasks", params={"project_id": pid}, headers=tenant.headers)).json()["items"]
            assert [(t["task_type"], t["status"]) for t in tasks] == [("debug_round_1", "completed")]
            created = [e for e in await _events(api, tenant, "task.created") if e["subject_id"] == tasks[0]["id"]]
            completed = [e for e in await _events(api, tenant, "task.completed") if e["subject_id"] == tasks[0]["id"]]
            assert len(created) == len(completed) == 1
            arts = (
                await api.get(f"/api/projects/{pid}/artifacts", params={"all": "true"}, headers=tenant.headers)
            ).json()["items"]
            assert [(a["path"], a["current"], a["test_status"]) for a in arts] == [("slow_add.py", True, "passed")]
            chain = [
                e["payload"]["to_state"]
                for e in await _events(api, tenant, "project.state_changed")
                if e["subject_id"] == pid
            ]
            assert Counter(chain)["debugging"] == 1 and chain[-1] == "completed"
    finally:
        for proc in (first, second):
            if proc is not None and proc.poll() is None:
                proc.terminate()
                proc.wait(20)
        for w in in_process:
            await w.shutdown()
        await asyncio.gather(*running, return_exceptions=True)


async def _is(state, *wanted: str) -> bool:
    return await state() in wanted


async def test_two_workers_per_queue_do_no_double_work(stack, pool, temporal, make_app, tenant, coder):
    """Every queue served by two workers at once (as two `specmill worker <queue>` processes would):
    each project's rows and events appear exactly once."""
    from tests.test_pipeline import _finished, _project

    names = ["twin_a", "twin_b", "twin_c", "twin_d"]
    for name in names:
        coder.script(name, first=f"def {name}(x):\n    return x\n")
    settings = stack.with_(task_queue_prefix=f"twins-{uuid.uuid4().hex[:8]}-")
    second = await connect_temporal(settings)  # one worker per queue per client: two clients, as two processes
    twins = [QUEUES[q].build(client, settings, pool) for client in (temporal, second) for q in QUEUES]
    running = [asyncio.create_task(w.run()) for w in twins]
    try:
        async for api in make_app(settings):
            projects = [await _project(api, tenant, {"model": "openai_api", "debug_rounds": 1}) for _ in range(2)]
            for project, pair in zip(projects, (names[:2], names[2:]), strict=False):
                for name in pair:
                    await _instance(api, tenant, project["id"], name, [f"assert {name}(3) == 3"])
            for project in projects:
                assert (
                    await api.post(f"/api/projects/{project['id']}/specs/complete", headers=tenant.headers)
                ).status_code == 200
            for project in projects:
                pid = project["id"]
                assert (await _finished(api, tenant, pid, timeout=60))["state"] == "completed"
                chain = [
                    e["payload"]["to_state"]
                    for e in await _events(api, tenant, "project.state_changed")
                    if e["subject_id"] == pid
                ]
                assert chain == [
                    "initialization",
                    "spec_definition",
                    "code_generation",
                    "integration",
                    "debugging",
                    "completed",
                ]
                tasks = (await api.get("/api/tasks", params={"project_id": pid}, headers=tenant.headers)).json()[
                    "items"
                ]
                assert len(tasks) == 1
                for kind in ("task.created", "task.completed"):
                    assert len([e for e in await _events(api, tenant, kind) if e["subject_id"] == tasks[0]["id"]]) == 1
                arts = (
                    await api.get(f"/api/projects/{pid}/artifacts", params={"all": "true"}, headers=tenant.headers)
                ).json()["items"]
                assert len(arts) == 2 and all(a["current"] and a["test_status"] == "passed" for a in arts)
            generated = [
                e
                for e in await _events(api, tenant, "code.generated")
                if e["payload"]["files"] and e["payload"]["files"][0].removesuffix(".py") in names
            ]
            assert len(generated) == 4
            snippets = (
                await api.get("/api/snippets", params={"tag": "generated", "limit": 100}, headers=tenant.headers)
            ).json()["items"]
            assert sorted(s["content"].split("(")[0] for s in snippets if "twin_" in s["content"]) == [
                f"def {n}" for n in names
            ]
    finally:
        for w in twins:
            await w.shutdown()
        await asyncio.gather(*running, return_exceptions=True)
