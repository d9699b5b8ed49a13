"""The platform as several processes per service, as separate machines would run it.

On this machine, each a process with its own environment (its own data directory, and only the secrets
its row of workers/launcher.CHILD_SECRETS gives it):
- two gateways (`specmill serve gateway`) sharing their limits through a real Redis;
- two workers each for the generation, integration and orchestrator queues (`specmill worker <queue>`);
- one spec-registry worker, and one knowledge worker that owns the embedded vector store and serves the
  knowledge API that both gateways forward to (an embedded store has one writer; Qdrant is what scales it).

Projects go in through both gateways. While they run, one process of each kind is killed with SIGKILL:
a gateway, the generation worker running a model call (held open by the scripted model until then), the
integration worker running a project's tests, and an orchestrator worker that ran project workflow tasks.
Then the checks of `make chaos` (bench/chaos.py) hold: every project ends, nothing is lost or done twice,
and the database agrees with each workflow; and both workers of each of those queues took work.
"""

from __future__ import annotations

import asyncio
import signal
import subprocess
import sys
import uuid
from collections import defaultdict
from pathlib import Path

import httpx
import pytest

from bench import chaos
from infra import embedded
from models.activities import ACTIVITIES
from tests.conftest import redis_up, wait_for
from tests.test_durability import _env
from tests.test_pipeline import _finished, _instance, _project
from workers.launcher import child_env

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parents[1]
TWICE = ("generation", "integration", "orchestrator")
STARTED = 2  # PendingActivityState.PENDING_ACTIVITY_STATE_STARTED


class Processes:
    """The child processes of this test, by name, each logging to its own file."""

    def __init__(self, root: Path, base: dict[str, str]) -> None:
        self.root, self.base = root, base
        self.procs: dict[str, subprocess.Popen] = {}

    def start(self, name: str, row: str, args: list[str], **extra: str) -> subprocess.Popen:
        data = self.root / name
        data.mkdir(parents=True)
        env = {**child_env(row, serves="--serve" in args, base=self.base), "DATA_DIR": str(data), **extra}
        log = open(self.root / f"{name}.log", "ab")  # noqa: SIM115 - the process writes it until it ends
        proc = subprocess.Popen([sys.executable, "-m", "workers.cli", *args], cwd=ROOT, env=env, stdout=log, stderr=log)
        self.procs[name] = proc
        return proc

    def by_pid(self, pid: int) -> str:
        return next(name for name, proc in self.procs.items() if proc.pid == pid)

    def kill(self, name: str) -> None:
        self.procs[name].send_signal(signal.SIGKILL)
        self.procs[name].wait(10)

    def stop(self) -> None:
        for proc in self.procs.values():
            if proc.poll() is None:
                proc.terminate()
        for proc in self.procs.values():
            try:
                proc.wait(20)
            except subprocess.TimeoutExpired:
                proc.kill()

    def logs(self) -> str:
        return "\n".join(f"--- {p.name}\n{p.read_text()[-1500:]}" for p in sorted(self.root.glob("*.log")))


def _pid(identity: str) -> int:
    """A worker's pid from its Temporal identity (`<pid>@<host>`, the SDK's default)."""
    return int(identity.split("@", 1)[0])


async def _children(temporal, workflow_id: str) -> list[str]:
    history = await temporal.get_workflow_handle(workflow_id).fetch_history()
    return [
        e.child_workflow_execution_started_event_attributes.workflow_execution.workflow_id
        for e in history.events
        if e.HasField("child_workflow_execution_started_event_attributes")
    ]


async def _running(temporal, workflow_id: str, queue: str, activity: str | None = None) -> int | None:
    """The pid of the worker running one of `queue`'s activities (or `activity`) for the workflow or its
    children, once one has started."""
    for wid in [workflow_id, *await _children(temporal, workflow_id)]:
        desc = await temporal.get_workflow_handle(wid).describe()
        for pending in desc.raw_description.pending_activities:
            name = pending.activity_type.name
            if pending.state == STARTED and ACTIVITIES[name].queue == queue and activity in (None, name):
                return _pid(pending.last_worker_identity)
    return None


async def _workflow_task_pids(temporal, workflow_id: str) -> list[int]:
    history = await temporal.get_workflow_handle(workflow_id).fetch_history()
    return [
        _pid(e.workflow_task_started_event_attributes.identity)
        for e in history.events
        if e.HasField("workflow_task_started_event_attributes")
    ]


async def _who_worked(temporal, projects: list[dict], procs: Processes) -> dict[str, set[str]]:
    """queue -> the processes that took its work (workflow or activity tasks) in these projects' histories.
    An activity retried records only its last attempt: a worker killed mid-attempt is not among them."""
    took: dict[str, set[str]] = defaultdict(set)
    for project in projects:
        for wid, queue in [(project["workflow_id"], "orchestrator")] + [
            (child, "generation") for child in await _children(temporal, project["workflow_id"])
        ]:
            history = await temporal.get_workflow_handle(wid).fetch_history()
            scheduled = {}
            for e in history.events:
                if e.HasField("activity_task_scheduled_event_attributes"):
                    scheduled[e.event_id] = ACTIVITIES[e.activity_task_scheduled_event_attributes.activity_type.name]
                elif e.HasField("activity_task_started_event_attributes"):
                    attrs = e.activity_task_started_event_attributes
                    took[scheduled[attrs.scheduled_event_id].queue].add(procs.by_pid(_pid(attrs.identity)))
                elif e.HasField("workflow_task_started_event_attributes"):
                    took[queue].add(procs.by_pid(_pid(e.workflow_task_started_event_attributes.identity)))
    return took


async def test_two_of_each_process_lose_nothing_when_one_of_each_is_killed(
    stack, pool, temporal, coder, new_tenant, redis_url, tmp_path
):
    await redis_up(redis_url)
    settings = stack.with_(
        task_queue_prefix=f"several-{uuid.uuid4().hex[:8]}-",
        redis_url=redis_url,
        tenant_rate_limit="100000/minute",
        generation_workers=2,  # what an operator sets with two workers a queue: the tenants' slots count both
        integration_workers=2,
    )
    base = {k: v for k, v in _env(settings).items() if k not in ("DATA_DIR", "MODELS_DIR")}
    base["MODELS_DIR"] = str(settings.models_path)  # the test stack's models: a machine's own volume in production
    procs = Processes(tmp_path, base)
    knowledge_port = embedded.free_port()
    knowledge = ["--serve", "knowledge", "--port", str(knowledge_port)]
    gateways = {"gateway-1": embedded.free_port(), "gateway-2": embedded.free_port()}
    tenant = await new_tenant("several")
    coder.script("held_fn", first="def held_fn(x):\n    return x\n")
    coder.script("slow_fn", first="import time\ntime.sleep(5)\n\n\ndef slow_fn(x):\n    return x\n")
    for name in ("plain_c", "plain_d"):
        coder.script(name, first=f"def {name}(x):\n    return x\n")
    coder.hold("held_fn")
    try:
        procs.start("knowledge", "knowledge", ["worker", "knowledge", *knowledge])
        procs.start("spec-registry", "spec-registry", ["worker", "spec-registry"])
        for queue in TWICE:
            for n in (1, 2):
                procs.start(f"{queue}-{n}", queue, ["worker", queue])
        for name, port in gateways.items():
            procs.start(
                name,
                "gateway",
                ["serve", "gateway", "--port", str(port)],
                KNOWLEDGE_URL=f"http://127.0.0.1:{knowledge_port}",
            )
        clients = {
            name: httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=30) for name, port in gateways.items()
        }

        async def healthy(client: httpx.AsyncClient) -> bool:
            try:
                return (await client.get("/health")).status_code == 200
            except httpx.HTTPError:
                return False

        for client in clients.values():
            await wait_for(lambda c=client: healthy(c), timeout=180, interval=0.5)
        one, two = clients["gateway-1"], clients["gateway-2"]

        # the two gateways count one tenant budget, in Redis
        first = (await one.get("/api/projects", headers=tenant.headers)).headers["X-RateLimit-Tenant-Remaining"]
        second = (await two.get("/api/projects", headers=tenant.headers)).headers["X-RateLimit-Tenant-Remaining"]
        assert int(second) == int(first) - 1

        plan = {"held": "held_fn", "slow": "slow_fn", "c": "plain_c", "d": "plain_d"}
        projects: dict[str, dict] = {}
        for i, (key, fn) in enumerate(plan.items()):
            api = (one, two)[i % 2]
            projects[key] = await _project(api, tenant, {"model": "openai_api", "debug_rounds": 0})
            await _instance(api, tenant, projects[key]["id"], fn, [f"assert {fn}(3) == 3"])
        for i, project in enumerate(projects.values()):
            resp = await (one, two)[i % 2].post(f"/api/projects/{project['id']}/specs/complete", headers=tenant.headers)
            assert resp.status_code == 200, resp.text

        # mid-run: a model call held open, and a project's tests running (they take 5 s)
        generating = await wait_for(
            lambda: _running(temporal, projects["held"]["workflow_id"], "generation"), timeout=90
        )
        testing = await wait_for(
            lambda: _running(temporal, projects["slow"]["workflow_id"], "integration", "run_spec_tests"),
            timeout=90,
            interval=0.05,
        )
        orchestrating = (await _workflow_task_pids(temporal, projects["slow"]["workflow_id"]))[-1]
        victims = [procs.by_pid(pid) for pid in (generating, testing, orchestrating)] + ["gateway-1"]
        assert [v.rsplit("-", 1)[0] for v in victims] == ["generation", "integration", "orchestrator", "gateway"]
        for victim in victims:
            procs.kill(victim)
        coder.release("held_fn")
        with pytest.raises(httpx.HTTPError):
            await one.get("/health")

        for project in projects.values():  # through the gateway left
            assert (await _finished(two, tenant, project["id"], timeout=180))["state"] == "completed"

        listed = list(projects.values())
        results = await chaos.workflow_results(settings.temporal_address, listed)
        checker = chaos.Client(f"http://127.0.0.1:{gateways['gateway-2']}", tenant.api_key)
        figures = await asyncio.to_thread(chaos.check, checker, listed, results)
        assert figures["problems"] == []
        n = len(listed)
        assert figures["terminal"] == figures["state_chains_unbroken"] == figures["tasks_exact"] == n
        assert figures["generations_exact"] == figures["database_agrees_with_workflow"] == n
        assert figures["one_current_artifact"] == figures["instances"] == n

        took = await _who_worked(temporal, listed, procs)
        for victim in victims[:2]:  # seen running an attempt that the history no longer records
            took[victim.rsplit("-", 1)[0]].add(victim)
        for queue in TWICE:
            assert took[queue] == {f"{queue}-1", f"{queue}-2"}, (queue, dict(took))
    except BaseException:
        print(procs.logs())
        raise
    finally:
        coder.release()
        procs.stop()
        for client in locals().get("clients", {}).values():
            await client.aclose()
