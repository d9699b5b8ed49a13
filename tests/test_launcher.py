"""`specmill run` (what `make run` runs): the whole platform from one command, stopped cleanly by
Ctrl-C with nothing orphaned, and a second run finds the earlier data intact."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import threading
import time

import httpx
import psutil
import pytest

from infra import embedded

pytestmark = pytest.mark.slow


def _start(env, cwd) -> tuple[subprocess.Popen, "_Console"]:
    proc = subprocess.Popen(
        [sys.executable, "-m", "workers.cli", "run"],
        env=env,
        cwd=cwd,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    return proc, _Console(proc)


class _Console:
    """The launcher's console, read on a thread: a test waits for the line that reports an event."""

    def __init__(self, proc: subprocess.Popen) -> None:
        self.lines: list[str] = []
        self.closed = False
        self._changed = threading.Condition()
        self._reader = threading.Thread(target=self._read, args=(proc.stdout,), daemon=True)
        self._reader.start()

    def _read(self, stream) -> None:
        for line in stream:
            with self._changed:
                self.lines.append(line)
                self._changed.notify_all()
        with self._changed:
            self.closed = True
            self._changed.notify_all()

    def wait(self, needle: str, timeout: float) -> str:
        """The first line holding `needle`, once the launcher prints it; past `timeout`, or if the
        launcher exits first, fail with what it printed."""
        deadline = time.monotonic() + timeout
        with self._changed:
            while True:
                found = next((line for line in self.lines if needle in line), None)
                if found is not None:
                    return found
                left = deadline - time.monotonic()
                if self.closed or left <= 0:
                    why = "the launcher exited" if self.closed else f"not within {timeout}s"
                    raise AssertionError(f"{needle!r}: {why}; it printed:\n{self.text()}")
                self._changed.wait(left)

    def text(self) -> str:
        with self._changed:
            return "".join(self.lines)

    def finish(self, timeout: float = 30) -> str:
        """Everything printed, once the launcher has exited and its output is read to the end."""
        self._reader.join(timeout)
        assert not self._reader.is_alive(), "the launcher's output did not end"
        return self.text()


def _wait_healthy(base: str, console: _Console, timeout: float = 120) -> None:
    """The launcher prints its banner once its own health check is done; then /health answers 200."""
    console.wait("specmill is running", timeout)
    resp = httpx.get(f"{base}/health", timeout=10)
    assert resp.status_code == 200, resp.text


def _interrupt(proc: subprocess.Popen, console: _Console) -> str:
    proc.send_signal(signal.SIGINT)
    proc.wait(timeout=90)
    return console.finish()


def _wait_state(base: str, headers: dict, project_id: str, state: str, timeout: float = 30) -> None:
    """The project's move into `state`, from the tenant's event stream (its backlog, then live events)."""
    deadline = time.monotonic() + timeout
    params = {"type": "project.state_changed", "after": 0}
    with httpx.stream("GET", f"{base}/api/events/stream", headers=headers, params=params, timeout=timeout) as resp:
        assert resp.status_code == 200, resp.read()
        for line in resp.iter_lines():
            if line.startswith("data: "):
                payload = json.loads(line.removeprefix("data: "))["payload"]
                if payload["project_id"] == project_id and payload["to_state"] == state:
                    return
            assert time.monotonic() < deadline, f"project {project_id} did not reach {state} within {timeout}s"
    raise AssertionError("the event stream ended")


def _ours(data_dir) -> list[psutil.Process]:
    found = []
    for proc in psutil.process_iter(["cmdline", "environ"]):
        try:
            cmd = " ".join(proc.info["cmdline"] or [])
            env = proc.info["environ"] or {}
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
        if str(data_dir) in cmd or env.get("DATA_DIR") == str(data_dir):
            found.append(proc)
    return found


def _worker_child(launcher: psutil.Process, queue: str) -> psutil.Process | None:
    """The launcher's own child process that runs `specmill worker <queue>`, if one is running."""
    for child in launcher.children():
        try:
            cmd = child.cmdline()
            if child.status() != psutil.STATUS_ZOMBIE and cmd[cmd.index("worker") + 1 :][:1] == [queue]:
                return child
        except (psutil.NoSuchProcess, ValueError):
            continue
    return None


def _assert_nothing_left(data) -> None:
    """Every process of this data dir has exited (waited for, with a deadline), and none is left."""
    _gone, alive = psutil.wait_procs(_ours(data), timeout=30)
    assert alive == [], [p.cmdline() for p in alive]
    assert _ours(data) == [], [p.cmdline() for p in _ours(data)]


def _wait_similar(base: str, headers: dict, snippet_id: str, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while True:
        resp = httpx.post(f"{base}/api/similar", json={"query": "sum of two integers"}, headers=headers, timeout=10)
        if resp.status_code == 200 and [r["id"] for r in resp.json()["items"]] == [snippet_id]:
            return
        assert time.monotonic() < deadline, resp.text
        time.sleep(0.3)


def test_run_serves_stops_cleanly_and_keeps_data(tmp_path, tiny_llama):
    data = tmp_path / "data"
    port = embedded.free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DATABASE", "TEMPORAL", "JWT"))}
    env.update(
        DATA_DIR=str(data),
        PORT=str(port),
        EMBEDDED_POSTGRES_PORT=str(embedded.free_port()),
        TEMPORAL_ADDRESS=f"127.0.0.1:{embedded.free_port()}",
        TEMPORAL_UI_PORT=str(embedded.free_port()),
        KNOWLEDGE_PORT=str(embedded.free_port()),
        LOCAL_MODEL=str(tiny_llama),
        LOCAL_DTYPE="fp32",
    )
    base = f"http://127.0.0.1:{port}"

    proc, console = _start(env, tmp_path)
    try:
        _wait_healthy(base, console)
        cli = subprocess.run(
            [sys.executable, "-m", "workers.cli", "tenant", "create", "--name", "acme"],
            env=env,
            cwd=tmp_path,
            capture_output=True,
            text=True,
            check=True,
        )
        created = json.loads(cli.stdout)
        assert set(created) == {"tenant_id", "user_id", "api_key", "key_id"}
        h = {"X-API-Key": created["api_key"]}
        created_resp = httpx.post(f"{base}/api/projects", json={"name": "kept"}, headers=h)
        assert "server" not in created_resp.headers  # uvicorn names itself nowhere
        assert created_resp.headers["x-content-type-options"] == "nosniff"
        assert created_resp.headers["cache-control"] == "no-store"
        project = created_resp.json()
        _wait_state(base, h, project["id"], "spec_definition")
        # the knowledge base runs in the knowledge worker's process (it owns Qdrant's local store)
        snippet = httpx.post(
            f"{base}/api/snippets",
            headers=h,
            json={
                "language": "python",
                "description": "add two numbers",
                "content": "def add(a, b):\n    return a + b",
            },
        ).json()
        _wait_similar(base, h, snippet["id"])
        reindex = subprocess.run(
            [sys.executable, "-m", "workers.cli", "knowledge", "reindex", "--tenant", created["tenant_id"]],
            env=env,
            cwd=tmp_path,
            capture_output=True,
            text=True,
        )
        assert reindex.returncode == 0, reindex.stderr
        assert json.loads(reindex.stdout)["indexed"] == 1
        # the generation worker (its own process) serves /api/generate with the local model
        generated = httpx.post(
            f"{base}/api/generate",
            headers=h,
            timeout=60,
            json={
                "template": {"name": "python-function"},
                "max_new_tokens": 8,
                "values": {"function_name": "add", "description": "add two numbers"},
            },
        )
        assert generated.status_code == 200, generated.text
        assert generated.json()["files"][0]["path"] == "add.py"
        # the launcher restarts a worker that dies: a new process (another pid), the launcher's child
        launcher = psutil.Process(proc.pid)
        queue = "orchestrator"
        worker = _worker_child(launcher, queue)
        assert worker is not None, [c.cmdline() for c in launcher.children()]
        worker.kill()
        # gone once the launcher has reaped it (a zombie until then): the launcher saw it die
        _gone, alive = psutil.wait_procs([worker], timeout=30)
        assert alive == [], f"the killed worker {worker.pid} was never reaped by the launcher"
        line = console.wait(f"worker:{queue} restarted (pid ", 30)
        restarted = psutil.Process(int(re.search(r"\(pid (\d+)\)", line).group(1)))
        assert restarted.pid != worker.pid
        assert restarted.is_running() and restarted.status() != psutil.STATUS_ZOMBIE
        assert restarted.ppid() == proc.pid
        # the restarted worker serves: a new project's workflow records its states on the orchestrator queue
        second = httpx.post(f"{base}/api/projects", json={"name": "after the restart"}, headers=h).json()
        _wait_state(base, h, second["id"], "spec_definition", 60)
        still = _worker_child(launcher, queue)
        assert still is not None and still.pid == restarted.pid  # and it stayed up
    finally:
        out = _interrupt(proc, console)
    assert "specmill is running" in out and f"gateway       {base}" in out and "/docs" in out
    assert proc.returncode == 0, out
    _assert_nothing_left(data)

    proc, console = _start(env, tmp_path)
    try:
        _wait_healthy(base, console)
        again = httpx.get(f"{base}/api/projects/{project['id']}", headers=h)
        assert again.status_code == 200 and again.json()["name"] == "kept"
        state = httpx.get(f"{base}/api/projects/{project['id']}/state", headers=h).json()
        assert state["state"] == "spec_definition"  # the workflow survived the restart
        # spec.complete reaches the surviving workflow, whose check runs on the restarted spec-registry worker
        moved = httpx.post(f"{base}/api/projects/{project['id']}/specs/complete", headers=h)
        assert moved.status_code == 409, moved.text
        assert moved.json()["problems"][0]["message"].startswith("the project has no spec instances")
        _wait_similar(base, h, snippet["id"])  # the vectors survived too
    finally:
        _interrupt(proc, console)
    _assert_nothing_left(data)
