"""Without a sandbox nothing runs unconfined: the debugging state fails the project with the reason,
at once, instead of retrying or running the tests some other way.

A second set of workers (their own task queues and data dir) is configured with an interpreter
that does not exist, so the integration worker's engine cannot be built.
"""

from __future__ import annotations

import asyncio
import shutil
import tempfile
import uuid
from pathlib import Path

import pytest

from activities.pipeline import static_checks
from sandbox import SandboxConfig, SandboxUnavailable, isolation, run_tests
from tests.conftest import project_result, wait_for
from tests.test_pipeline import _finished, _instance, _project
from workers.queues import QUEUES


async def test_a_worker_without_sandbox_fails_the_project_in_debugging(
    stack, temporal, pool, make_app, new_tenant, tmp_path
):
    settings = stack.with_(
        task_queue_prefix=f"nosandbox-{uuid.uuid4().hex[:8]}-",
        data_dir=tmp_path,
        sandbox_python="/nonexistent/python3.11",
    )
    running = [QUEUES[q].build(temporal, settings, pool) for q in QUEUES]
    tasks = [asyncio.create_task(w.run()) for w in running]
    tenant = await new_tenant("nosandbox")
    try:
        async for api in make_app(settings):
            project = await _project(api, tenant, {"model": "local_llama", "debug_rounds": 2, "max_new_tokens": 16})
            pid = project["id"]
            await _instance(api, tenant, pid, "add", ["assert add(1, 2) == 3"])
            assert (await api.post(f"/api/projects/{pid}/specs/complete", headers=tenant.headers)).status_code == 200
            row = await _finished(api, tenant, pid)
            assert row["state"] == "failed"
            result = await project_result(temporal, project["workflow_id"])  # a failed run: its failure's details
            assert result["reasons"] and result["reasons"][0].startswith("sandbox unavailable: ")
            assert "/nonexistent/python3.11" in result["reasons"][0]

            async def last_state_event(api=api, pid=pid):
                resp = await api.get(
                    "/api/events", params={"type": "project.state_changed", "limit": 100}, headers=tenant.headers
                )
                mine = [e for e in resp.json()["items"] if e["subject_id"] == pid]
                return mine[-1] if mine and mine[-1]["payload"]["to_state"] == "failed" else None

            event = await wait_for(last_state_event)
            assert event["payload"]["from_state"] == "debugging"
            assert event["payload"]["reason"].startswith("sandbox unavailable: ")
            rounds = (await api.get("/api/tasks", params={"project_id": pid}, headers=tenant.headers)).json()["items"]
            assert [t for t in rounds if t["task_type"].startswith("debug_round")] == []  # no test ran at all
    finally:
        for w in running:
            await w.shutdown()
        await asyncio.gather(*tasks, return_exceptions=True)


def test_static_checks_accept_only_what_the_sandbox_can_import():
    files = {
        "a.py": "import json\nimport numpy\nimport torch\nfrom b import helper\n\nUSED = json, numpy, torch, helper\n",
        "b.py": "def helper():\n    pass\n",
    }
    checks = static_checks(files, {"numpy"})
    assert checks["a.py"].parses and checks["b.py"].problems == []
    assert checks["a.py"].problems == [
        "import torch does not resolve: not in the project, the standard library or the allowed packages (numpy)"
    ]
    assert (
        static_checks(files)["a.py"].problems[0] == "import numpy does not resolve: not in the project, "
        "the standard library"
    )


def test_a_bubblewrap_that_cannot_make_its_namespaces_makes_the_sandbox_unavailable():
    """As on a host whose kernel or AppArmor forbids unprivileged user namespaces: bwrap fails before
    running anything, and the engine says so instead of running the code some other way."""
    where = Path(tempfile.mkdtemp())  # pytest's tmp_path sits under a 0700 directory the sandbox uid cannot enter
    try:
        where.chmod(0o755)
        fake = where / "bwrap"
        fake.write_text("#!/bin/sh\necho 'bwrap: setting up uid map: Permission denied' >&2\nexit 1\n")
        fake.chmod(0o755)
        config = SandboxConfig(bwrap=str(fake))
        with pytest.raises(SandboxUnavailable, match="bubblewrap failed: bwrap: setting up uid map: Permission denied"):
            isolation(config)
        with pytest.raises(SandboxUnavailable):
            run_tests("def f():\n    return 1\n", ["assert f() == 1"], config=config)
    finally:
        shutil.rmtree(where)
