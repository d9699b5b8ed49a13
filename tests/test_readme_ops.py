"""The README's other shell blocks, each run as written: the two commands (`make run` for real, `make test`
as what CI runs), Supabase sign-in, the live event stream stopped with Ctrl-C, the metrics, and the Temporal
CLI's recipes. Blocks that say they run "in the quick start's shell" run after the quick start's first lines
(B, H, J, `get`), with the variables the quick start would have set (KEY, PROJECT_ID) given by the test.

Real services throughout (PostgreSQL, the Temporal dev server, workers, gateways on real sockets); the one
stand-in is the Supabase Auth block's, a fake of Supabase Auth's wire protocol (see that test).
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import shutil
import signal
import subprocess
import tempfile
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import httpx
import pytest

from api.app import create_app
from infra import embedded
from models.common import ORCHESTRATOR, SPEC_REGISTRY, Role
from models.settings import Settings
from store.tenants import create_api_key
from tests.conftest import wait_for
from tests.test_launcher import _assert_nothing_left, _Console, _wait_healthy
from tests.test_readme_path import (
    README,
    ROOT,
    _script,
    _walk,
    block,
    calls_of,
    like_the_repository,
    shell_env,
)
from tests.test_supabase_signin import gotrue, signin_settings  # noqa: F401 - gotrue: the fixture, used by name
from workers.queues import QUEUES

pytestmark = pytest.mark.slow


@pytest.fixture
def shell_dir(tmp_path: Path) -> Path:
    return like_the_repository(tmp_path)


@asynccontextmanager
async def serving(settings: Settings) -> AsyncIterator[str]:
    """A gateway with `settings` on a real socket (uvicorn in this event loop), for curl: its base URL."""
    import uvicorn

    port = embedded.free_port()
    app = create_app(settings)
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", server_header=False))
    task = asyncio.create_task(server.serve())
    try:
        await wait_for(lambda: server.started or task.done(), timeout=60)
        if not server.started:  # it could not bind, or crashed while starting: its error
            task.result()
            raise AssertionError(f"the gateway on port {port} exited before it started")
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        await task


# --- the two commands ----------------------------------------------------------------------------------


def _commands(text: str) -> list[str]:
    """The commands of a block, comments left out."""
    return [line.split("#")[0].strip() for line in text.splitlines() if line.strip()]


def test_make_test_is_what_ci_runs():
    """`make test`, the second command, is the whole of CI (.ci/run), and its recipe runs the suite with
    pytest. It is not run here: it runs this very suite."""
    assert _commands(block("commands")) == ["make run", "make test"]
    ci = [line.strip() for line in (ROOT / ".ci" / "run").read_text().splitlines()]
    assert [line for line in ci if line and not line.startswith("#")][-1] == "make test", ci
    dry = subprocess.run(["make", "-n", "test"], cwd=ROOT, capture_output=True, text=True, check=True, timeout=60)
    assert re.search(r"^\.venv/bin/python -m pytest\b", dry.stdout, flags=re.M), dry.stdout


def _printed(data: Path, port: int, ui_port: int) -> list[str]:
    """The lines the README says `make run` prints, with this run's ports and data directory."""
    shown = re.search(r"`make run` prints:\n\n```\n(.*?)```", README, flags=re.S)
    assert shown, "the README no longer shows what `make run` prints"
    text = shown[1].replace(":8080", f":{port}").replace(":8233", f":{ui_port}")
    return [line.rstrip() for line in text.replace("/path/to/.specmill", str(data)).splitlines()]


def test_make_run_serves_then_stops_on_ctrl_c(tmp_path: Path, tiny_llama: Path):
    """`make run`, the first command, run for real as the README's block writes it, in a directory like the
    repository's root (its Makefile, pyproject.toml and .venv) so that nothing of the checkout's own
    .specmill/ or .env is touched. Its ports and data directory come from the environment, free ones and a
    temporary one, and the local model is the tests' tiny Llama (a path: nothing is pulled). Once it prints
    its banner (awaited, with a deadline) GET /health answers 200, it prints what the README says it prints,
    and Ctrl-C (SIGINT to its process group, as a terminal sends it) stops everything it started, leaving no
    process behind."""
    # outside pytest's private tmp_path: the sandbox's check runs bubblewrap from .venv as another user
    here = Path(tempfile.mkdtemp(prefix="specmill-checkout-"))
    here.chmod(0o755)
    like_the_repository(here)
    for name in ("Makefile", "pyproject.toml"):
        (here / name).symlink_to(ROOT / name)
    command = block("commands").splitlines()[0]  # as the README writes it, its comment too
    assert _commands(command) == ["make run"]
    try:
        _make_run(command, here, tmp_path / "data", tiny_llama)
    finally:
        shutil.rmtree(here)


def _make_run(command: str, here: Path, data: Path, tiny_llama: Path) -> None:
    stamp = subprocess.run(["make", "-q", ".venv/.installed"], cwd=here, capture_output=True, timeout=60)
    if stamp.returncode != 0:  # `make run` would reinstall the package, from the package index
        pytest.skip("the virtualenv is older than pyproject.toml: run `make install` first")
    port, ui_port = embedded.free_port(), embedded.free_port()
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("DATABASE", "TEMPORAL", "JWT", "SUPABASE", "MAKE", "MFLAGS", "DATA_DIR"))
    }
    env.update(
        DATA_DIR=str(data),
        PORT=str(port),
        EMBEDDED_POSTGRES_PORT=str(embedded.free_port()),
        TEMPORAL_ADDRESS=f"127.0.0.1:{embedded.free_port()}",
        TEMPORAL_UI_PORT=str(ui_port),
        KNOWLEDGE_PORT=str(embedded.free_port()),
        LOCAL_MODEL=str(tiny_llama),
        LOCAL_DTYPE="fp32",
        COLUMNS="200",  # the launcher's console writes lines this wide unbroken
    )
    proc = subprocess.Popen(
        ["bash", "-c", command],
        cwd=here,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    console = _Console(proc)
    try:
        _wait_healthy(f"http://127.0.0.1:{port}", console, timeout=240)  # its banner, then /health is 200
        console.wait("Ctrl-C stops everything", 60)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGINT)
        try:
            proc.wait(timeout=120)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            raise
    out = console.finish()
    printed = {line.rstrip() for line in out.splitlines()}
    assert not [line for line in _printed(data, port, ui_port) if line not in printed], out
    # the launcher stopped its children in order and ended; make, interrupted like its child, reports it
    assert "stopping ...\n" in out and "stopped.\n" in out and "Traceback" not in out, out
    assert proc.returncode == -signal.SIGINT, (proc.returncode, out)
    _assert_nothing_left(data)


# --- Supabase sign-in ------------------------------------------------------------------------------------


def _documents(out: str) -> list:
    """The JSON documents a block printed, one after the other (curl -s adds no newline)."""
    decoder, docs, at = json.JSONDecoder(), [], 0
    while at < len(out):
        if out[at].isspace():
            at += 1
            continue
        doc, at = decoder.raw_decode(out, at)
        docs.append(doc)
    return docs


async def test_the_supabase_block(stack, gotrue, tenant, shell_dir):  # noqa: F811 - gotrue: the imported fixture
    """The sign-up/sign-in/refresh/logout/invitation block, in the quick start's shell (its owner key as H),
    against a gateway on a real socket configured with SUPABASE_URL, SUPABASE_ANON_KEY, SUPABASE_JWT_ISSUER
    and SUPABASE_JWT_SECRET pointing at FakeGoTrue (tests/test_supabase_signin.py): a test-local HTTP server
    on 127.0.0.1 that speaks Supabase Auth's (GoTrue's) wire protocol. It is not Supabase; no request leaves
    the machine. Everything else is real: the gateway, its database, the invitation."""
    async with serving(signin_settings(stack, gotrue)) as url:
        env = {"B": url, "KEY": tenant.api_key}
        out, calls = await asyncio.to_thread(_walk, ["supabase"], shell_dir, env, setup=True)
        assert [(code, method, u.removeprefix(url)) for code, method, u in calls] == [
            (200, "POST", "/auth/signup"),
            (200, "POST", "/auth/login"),
            (200, "GET", "/api/projects"),
            (200, "POST", "/auth/refresh"),
            (204, "POST", "/auth/logout"),
            (201, "POST", "/api/invitations"),
            (200, "POST", "/auth/signup"),
        ]
        ada, projects, refreshed, bob = _documents(out)
        # Ada's sign-up made her a tenant of her own, which she owns; her token reads its (empty) projects
        assert [t["role"] for t in ada["tenants"]] == ["owner"] and ada["tenants"][0]["id"] != str(tenant.tenant_id)
        assert projects["items"] == []
        assert refreshed["token_type"] == "bearer" and refreshed["refresh_token"]
        # the logout ended the session: its latest refresh token no longer works
        async with httpx.AsyncClient(base_url=url) as anon:
            again = await anon.post("/auth/refresh", json={"refresh_token": refreshed["refresh_token"]})
        assert again.status_code == 401, again.text
        # Bob, invited as an editor of the quick start's tenant, joined it with that role
        assert bob["tenants"] == [{"id": str(tenant.tenant_id), "role": "editor"}], bob
    assert ("POST", "/auth/v1/logout") in gotrue.requests


# --- the live event stream -------------------------------------------------------------------------------


async def _gauge(api: httpx.AsyncClient, name: str) -> float:
    text = (await api.get("/metrics")).raise_for_status().text
    found = re.search(rf"^{name} (\S+)$", text, flags=re.M)
    assert found, f"{name} is not in /metrics"
    return float(found[1])


async def _line(stream: asyncio.StreamReader, wanted, seen: list[str], timeout: float = 30) -> str:
    """The next line of `stream` for which `wanted(line)` holds; every line read goes to `seen`."""
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        left = deadline - asyncio.get_running_loop().time()
        assert left > 0, f"not within {timeout}s; the stream printed:\n{''.join(seen)}"
        try:
            raw = await asyncio.wait_for(stream.readline(), left)
        except TimeoutError:
            raise AssertionError(f"not within {timeout}s; the stream printed:\n{''.join(seen)}") from None
        assert raw, f"the stream ended; it printed:\n{''.join(seen)}"
        line = raw.decode()
        seen.append(line)
        if wanted(line.rstrip("\n")):
            return line


async def test_the_event_stream_block(live_url, tenant, shell_dir):
    """The stream block on a project, in the quick start's shell: once the stream says it is connected, an
    event of the project (a knowledge entry written) arrives on it as an SSE `data:` line naming the project,
    and Ctrl-C (SIGINT to the shell's process group, as a terminal sends it) stops it; the gateway then closes
    its end (its open-streams gauge falls back)."""
    async with httpx.AsyncClient(base_url=live_url, headers=tenant.headers, timeout=30) as api:
        project_id = (await api.post("/api/projects", json={"name": "streamed"})).raise_for_status().json()["id"]
        streams = await _gauge(api, "specmill_event_streams_open")
        env = {"B": live_url, "KEY": tenant.api_key, "PROJECT_ID": project_id}
        proc = await asyncio.create_subprocess_exec(
            "bash",
            "-euo",
            "pipefail",
            "-c",
            _script(["stream"], setup=True),
            cwd=shell_dir,
            env=shell_env(shell_dir, env),
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            start_new_session=True,
        )
        assert proc.stdout is not None and proc.stderr is not None
        seen: list[str] = []
        try:
            await _line(proc.stdout, lambda line: line == ": connected", seen)
            assert await _gauge(api, "specmill_event_streams_open") >= streams + 1  # the gateway counts it
            written = await api.post(f"/api/knowledge/{project_id}", json={"key": "style", "value": {"indent": 4}})
            assert written.status_code == 201, written.text
            data = await _line(
                proc.stdout,
                lambda line: line.startswith("data: ") and json.loads(line[6:])["type"] == "knowledge.updated",
                seen,
            )
            assert json.loads(data[6:])["payload"]["key"] == "style"
        finally:
            if proc.returncode is None:
                os.killpg(proc.pid, signal.SIGINT)  # Ctrl-C
            code = await asyncio.wait_for(proc.wait(), 30)
        assert code == -signal.SIGINT, (code, (await proc.stderr.read()).decode())
        events = [json.loads(line[6:]) for line in seen if line.startswith("data: ")]
        assert events and {e["project_id"] for e in events} == {project_id}, events  # the filter held
        await wait_for(lambda: _closed(api, streams), timeout=30)


async def _closed(api: httpx.AsyncClient, streams: float) -> bool:
    return await _gauge(api, "specmill_event_streams_open") <= streams


# --- the metrics -----------------------------------------------------------------------------------------


async def test_the_metrics_block(live_url, tenant, pool, shell_dir):
    """The metrics block in the quick start's shell, its owner key as H: the request counter's samples, by
    method, route template and status, the request just made among them. A viewer's key gets a 403, and the
    block finds nothing (its grep fails)."""
    async with httpx.AsyncClient(base_url=live_url, headers=tenant.headers) as api:
        assert (await api.get("/api/projects")).status_code == 200
    env = {"B": live_url, "KEY": tenant.api_key}
    out, calls = await asyncio.to_thread(_walk, ["metrics"], shell_dir, env, setup=True)
    assert calls == [(200, "GET", f"{live_url}/metrics")]
    samples = [line for line in out.splitlines() if not line.startswith("#")]
    assert samples and all(line.startswith("specmill_http_requests_total{") for line in samples), out
    assert re.search(
        r'^specmill_http_requests_total\{method="GET",route="/api/projects",status="200"\} [1-9]', out, flags=re.M
    ), out

    viewer = await create_api_key(pool, tenant_id=tenant.tenant_id, role=Role.viewer)
    refused = await asyncio.to_thread(
        subprocess.run,
        ["bash", "-euo", "pipefail", "-c", _script(["metrics"], setup=True)],
        cwd=shell_dir,
        env=shell_env(shell_dir, {"B": live_url, "KEY": viewer.api_key}),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert refused.returncode != 0 and refused.stdout == "", refused
    assert calls_of(refused.stderr) == [(403, "GET", f"{live_url}/metrics")]


# --- the Temporal CLI ------------------------------------------------------------------------------------


async def test_the_temporal_block(stack, temporal, pool, tenant, shell_dir):
    """The `temporal` CLI's recipes, in the quick start's shell, on a project waiting in spec_definition, against
    the tests' Temporal dev server (TEMPORAL_ADDRESS). The project's gateway and workers use the task queues'
    names as `make run` gives them (no prefix), so `--task-queue orchestrator` is the queue its workflow runs
    on. The list names the project, the query prints its state, the reset makes a new run that serves the
    project (its state query, and spec.complete's check on the spec-registry worker), and the task queue shows
    the orchestrator worker polling."""
    settings = stack.with_(task_queue_prefix="")
    workers = [QUEUES[q].build(temporal, settings, pool) for q in (ORCHESTRATOR, SPEC_REGISTRY)]
    running = [asyncio.create_task(w.run()) for w in workers]
    try:
        async with serving(settings) as url, httpx.AsyncClient(base_url=url, headers=tenant.headers) as api:
            project_id = (await api.post("/api/projects", json={"name": "recipes"})).raise_for_status().json()["id"]
            workflow_id = f"project-{project_id}"

            async def waiting() -> bool:  # in spec_definition, and Temporal's visibility says so
                state = (await api.get(f"/api/projects/{project_id}/state")).json().get("state")
                query = f"WorkflowId='{workflow_id}' AND SpecmillState='spec_definition'"
                return state == "spec_definition" and (await temporal.count_workflows(query)).count == 1

            await wait_for(waiting, timeout=60)
            handle = temporal.get_workflow_handle(workflow_id)
            first_run = (await handle.describe()).run_id
            env = {
                "B": url,
                "KEY": tenant.api_key,
                "PROJECT_ID": project_id,
                "TEMPORAL_ADDRESS": stack.settings.temporal_address,
            }
            out, calls = await asyncio.to_thread(_walk, ["temporal"], shell_dir, env, setup=True)
            assert calls == [(200, "GET", f"{url}/auth/me")]
            # the list: the tenant's one project waiting for its specs; describe: on the orchestrator queue
            assert re.search(rf"^ *Running +{workflow_id} +ProjectWorkflow ", out, flags=re.M), out
            assert re.search(r"^ *TaskQueue +orchestrator *$", out, flags=re.M), out
            assert re.search(r'"state": *"spec_definition"', out), out  # the query
            assert re.search(r"^ +1 .* WorkflowExecutionStarted", out, flags=re.M), out  # the history
            # the reset: a new run, the first one terminated, and the new one serves the project
            assert f"Resetting workflow {workflow_id} to event ID " in out, out
            now = await handle.describe()
            assert now.run_id != first_run and now.status is not None and now.status.name == "RUNNING"
            old = await temporal.get_workflow_handle(workflow_id, run_id=first_run).describe()
            assert old.status is not None and old.status.name == "TERMINATED"
            assert (await handle.query("state"))["state"] == "spec_definition"
            moved = await api.post(f"/api/projects/{project_id}/specs/complete")
            assert moved.status_code == 409, moved.text
            assert moved.json()["problems"][0]["message"].startswith("the project has no spec instances"), moved.text
            # the task queue: this process's orchestrator worker polls it, for workflow and activity tasks
            pollers = out.split("Pollers:", 1)[-1]
            for kind in ("workflow", "activity"):
                assert re.search(rf"^ *\S+ +{kind} +{re.escape(temporal.identity)} ", pollers, flags=re.M), out
    finally:
        for w in workers:
            await w.shutdown()
        await asyncio.gather(*running, return_exceptions=True)
