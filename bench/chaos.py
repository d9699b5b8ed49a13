"""Durability, demonstrated (`make chaos`): projects run to the end while their processes are killed.

    .venv/bin/python bench/chaos.py [--projects 10] [--kills 6] [--model local_llama] [--timeout 900]

Starts the whole platform with `specmill run` in a fresh data directory on free ports (the models
directory is shared, so the local model is not pulled again), creates a tenant and N projects with
two python-function specs each, completes their specs, and while they run:
1. kills -9 a randomly chosen worker process (orchestrator, spec-registry, knowledge, generation,
   integration) at random moments, `--kills` times; the launcher restarts each one;
2. kills -9 the gateway once (restarted the same way); the client retries through the outage;
3. kills -9 the Temporal dev server once; it comes back on its persisted database.
Then it checks and prints as figures: every project reached a terminal state; every spec instance
has exactly one current artifact; no workflow_tasks row or event was duplicated or lost (each
debugging round is one task with one task.created and one task.completed, each generation one
code.generated, each project's state changes one unbroken chain); and the database agrees with each
workflow's final state. Exit status 0 only when every check holds.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

import httpx
import psutil

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from infra import embedded

QUEUES = ["orchestrator", "spec-registry", "knowledge", "generation", "integration"]
SPECS = [  # simple enough for a small model, each with tests
    ("add", "Return the sum of a and b.", "def add(a: int, b: int) -> int", ["assert add(2, 3) == 5"]),
    (
        "is_even",
        "Return True when n is even.",
        "def is_even(n: int) -> bool",
        ["assert is_even(4)", "assert not is_even(3)"],
    ),
    ("square", "Return n multiplied by itself.", "def square(n: int) -> int", ["assert square(3) == 9"]),
    ("maximum", "Return the larger of a and b.", "def maximum(a: int, b: int) -> int", ["assert maximum(2, 7) == 7"]),
    ("negate", "Return -x.", "def negate(x: int) -> int", ["assert negate(4) == -4"]),
    (
        "first",
        "Return the first item of a non-empty list.",
        "def first(items: list) -> object",
        ["assert first([3, 4]) == 3"],
    ),
    ("length", "Return the number of characters in s.", "def length(s: str) -> int", ["assert length('abc') == 3"]),
    ("double", "Return twice n.", "def double(n: int) -> int", ["assert double(5) == 10"]),
]
TERMINAL = {"completed", "failed", "cancelled"}


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--projects", type=int, default=10)
    p.add_argument("--kills", type=int, default=6, help="worker kills (the gateway and Temporal: once each)")
    p.add_argument("--model", default="local_llama")
    p.add_argument("--rounds", type=int, default=1, help="debugging rounds per project")
    p.add_argument("--timeout", type=float, default=900)
    p.add_argument("--seed", type=int, default=None)
    return p.parse_args(argv)


class Platform:
    """`specmill run` in its own data directory and ports."""

    def __init__(self, root: Path) -> None:
        self.data = root / "data"
        self.port = embedded.free_port()
        self.temporal = f"127.0.0.1:{embedded.free_port()}"
        env = {k: v for k, v in os.environ.items() if not k.startswith(("DATABASE", "TEMPORAL", "JWT"))}
        env.update(
            DATA_DIR=str(self.data),
            PORT=str(self.port),
            EMBEDDED_POSTGRES_PORT=str(embedded.free_port()),
            TEMPORAL_ADDRESS=self.temporal,
            TEMPORAL_UI_PORT=str(embedded.free_port()),
            KNOWLEDGE_PORT=str(embedded.free_port()),
            MODELS_DIR=os.environ.get("MODELS_DIR", str(ROOT / ".specmill" / "models")),
        )
        self.env = env
        self.base = f"http://127.0.0.1:{self.port}"
        self.log = open(root / "launcher.log", "w")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "workers.cli", "run"], env=env, cwd=ROOT, stdout=self.log, stderr=subprocess.STDOUT
        )

    def wait_healthy(self, timeout: float = 300) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise SystemExit(f"the platform exited; see {self.log.name}")
            try:
                if httpx.get(f"{self.base}/health", timeout=3).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(1)
        raise SystemExit("the platform did not become healthy")

    def processes(self, kind: str) -> list[psutil.Process]:
        """Live processes of this platform: `worker:<queue>`, `gateway` or `temporal`."""
        found = []
        for proc in psutil.process_iter(["cmdline", "environ"]):
            try:
                cmd = proc.info["cmdline"] or []
                env = proc.info["environ"] or {}
            except (psutil.NoSuchProcess, psutil.AccessDenied):
                continue
            if kind == "temporal":
                if "start-dev" in " ".join(cmd) and str(self.data) in " ".join(cmd):
                    found.append(proc)
                continue
            if env.get("DATA_DIR") != str(self.data) or "workers.cli" not in cmd:
                continue
            args = cmd[cmd.index("workers.cli") + 1 :]
            want = ["serve", "gateway"] if kind == "gateway" else ["worker", kind.removeprefix("worker:")]
            if args[:2] == want:
                found.append(proc)
        return found

    def kill(self, kind: str) -> int | None:
        procs = self.processes(kind)
        if not procs:
            return None
        procs[0].send_signal(signal.SIGKILL)
        return procs[0].pid

    def stop(self) -> None:
        self.proc.send_signal(signal.SIGINT)
        try:
            self.proc.wait(120)
        except subprocess.TimeoutExpired:
            self.proc.kill()


class Client:
    """The API with retries through a gateway outage."""

    def __init__(self, base: str, key: str | None = None) -> None:
        self.http = httpx.Client(base_url=base, timeout=30, headers={"X-API-Key": key} if key else {})

    def call(self, method: str, path: str, ok=(200, 201, 202), **kw):
        for _ in range(240):
            try:
                resp = self.http.request(method, path, **kw)
            except httpx.HTTPError:
                time.sleep(0.5)
                continue
            if resp.status_code in ok:
                return resp.json() if resp.content else None
            if resp.status_code in (502, 503, 504):
                time.sleep(0.5)
                continue
            raise RuntimeError(f"{method} {path}: {resp.status_code} {resp.text[:300]}")
        raise RuntimeError(f"{method} {path}: the gateway did not come back")

    def every(self, path: str, **params) -> list:
        """Every item of a list endpoint, following next_cursor to the last page."""
        items, cursor = [], None
        while True:
            page = self.call("GET", path, params={**params, "limit": 100, **({"cursor": cursor} if cursor else {})})
            items += page["items"]
            cursor = page["next_cursor"]
            if cursor is None:
                return items


def create_tenant(platform: Platform) -> dict:
    out = subprocess.run(
        [sys.executable, "-m", "workers.cli", "tenant", "create", "--name", "chaos"],
        env=platform.env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    )
    return json.loads(out.stdout)


def start_projects(api: Client, n: int, model: str, rounds: int, rng: random.Random) -> list[dict]:
    template = api.call("GET", "/api/templates", params={"name": "python-function"})["items"][0]["id"]
    projects = []
    for i in range(n):
        project = api.call("POST", "/api/projects", json={"name": f"chaos-{i}"})
        api.call("PUT", f"/api/projects/{project['id']}/settings", json={"model": model, "debug_rounds": rounds})
        for name, desc, sig, tests in rng.sample(SPECS, 2):
            api.call(
                "POST",
                "/api/instances",
                json={
                    "template_id": template,
                    "project_id": project["id"],
                    "values": {"function_name": name, "description": desc, "signature": sig, "tests": tests},
                },
            )
        projects.append(project)
    for project in projects:
        deadline = time.monotonic() + 60
        while api.call("GET", f"/api/projects/{project['id']}/state")["state"] != "spec_definition":
            if time.monotonic() > deadline:
                raise RuntimeError(f"project {project['id']} did not reach spec_definition")
            time.sleep(0.3)
        api.call("POST", f"/api/projects/{project['id']}/specs/complete")
    return projects


def states(api: Client, projects: list[dict]) -> dict[str, str]:
    return {p["id"]: api.call("GET", f"/api/projects/{p['id']}")["state"] for p in projects}


def inflict(platform: Platform, kills: int, rng: random.Random, done) -> list[str]:
    """Kill workers, the gateway once and Temporal once, at random moments, while work remains."""
    plan = [f"worker:{rng.choice(QUEUES)}" for _ in range(kills)] + ["gateway", "temporal"]
    rng.shuffle(plan)
    log = []
    for kind in plan:
        time.sleep(rng.uniform(2, 8))
        if done():
            break
        pid = platform.kill(kind)
        log.append(f"{time.strftime('%H:%M:%S')} kill -9 {kind} (pid {pid})" if pid else f"{kind}: not found")
        print(f"  {log[-1]}", flush=True)
    return log


async def workflow_results(address: str, projects: list[dict]) -> dict[str, str | None]:
    from temporalio.client import Client as TemporalClient
    from temporalio.client import WorkflowFailureError
    from temporalio.contrib.pydantic import pydantic_data_converter

    client = await TemporalClient.connect(address, data_converter=pydantic_data_converter)
    out = {}
    for p in projects:
        handle = client.get_workflow_handle(p["workflow_id"])
        try:
            out[p["id"]] = (await handle.result())["state"]
        except WorkflowFailureError as err:  # a failed project's run carries its result in the failure
            details = getattr(err.cause, "details", None)
            out[p["id"]] = details[0]["state"] if details else f"no result: {type(err.cause).__name__}"
        except Exception as err:  # noqa: BLE001 - cancelled runs carry no result
            out[p["id"]] = f"no result: {type(err).__name__}"
    return out


def check(api: Client, projects: list[dict], results: dict) -> dict:
    events = []
    after = 0
    while True:
        page = api.call("GET", "/api/events", params={"limit": 100, "after": after})
        events += page["items"]
        if not page["items"]:
            break
        after = page["next_cursor"]
    by_type = Counter(e["type"] for e in events)
    figures = {"projects": len(projects), "events": dict(by_type)}
    terminal = one_artifact = instances_total = chains_ok = tasks_ok = gens_ok = db_agrees = 0
    problems = []
    for p in projects:
        pid = p["id"]
        row = api.call("GET", f"/api/projects/{pid}")
        terminal += row["state"] in TERMINAL
        specs = api.every(f"/api/projects/{pid}/specs")
        current = Counter(a["instance_id"] for a in api.every(f"/api/projects/{pid}/artifacts"))
        instances_total += len(specs)
        one_artifact += sum(current[s["id"]] == 1 for s in specs)
        chain = [e["payload"] for e in events if e["type"] == "project.state_changed" and e["subject_id"] == pid]
        broken = [i for i in range(1, len(chain)) if chain[i]["from_state"] != chain[i - 1]["to_state"]]
        if chain and chain[0]["from_state"] is None and not broken and chain[-1]["to_state"] == row["state"]:
            chains_ok += 1
        else:
            problems.append(f"{pid}: state chain broken at {broken}")
        tasks = api.call("GET", "/api/tasks", params={"project_id": pid, "limit": 100})["items"]
        rounds = sum(c["to_state"] == "debugging" for c in chain)
        created = Counter(e["subject_id"] for e in events if e["type"] == "task.created")
        completed = Counter(e["subject_id"] for e in events if e["type"] == "task.completed")
        if len(tasks) == rounds and all(created[t["id"]] == 1 and completed[t["id"]] == 1 for t in tasks):
            tasks_ok += 1
        else:
            counts = [(created[t["id"]], completed[t["id"]]) for t in tasks]
            problems.append(f"{pid}: {len(tasks)} tasks for {rounds} rounds; events {counts}")
        spec_ids = {s["id"] for s in specs}
        generated = [e for e in events if e["type"] == "code.generated" and e["payload"].get("instance_id") in spec_ids]
        every = api.every(f"/api/projects/{pid}/artifacts", all="true")
        per_generation = Counter(e["subject_id"] for e in generated)
        if all(n == 1 for n in per_generation.values()) and len(generated) >= len(every):
            gens_ok += 1
        else:
            problems.append(f"{pid}: code.generated per generation {dict(per_generation)}; artifacts {len(every)}")
        if results.get(pid) == row["state"]:
            db_agrees += 1
        else:
            problems.append(f"{pid}: database says {row['state']}, workflow {results.get(pid)}")
    figures.update(
        {
            "terminal": terminal,
            "instances": instances_total,
            "one_current_artifact": one_artifact,
            "state_chains_unbroken": chains_ok,
            "tasks_exact": tasks_ok,
            "generations_exact": gens_ok,
            "database_agrees_with_workflow": db_agrees,
            "problems": problems,
            "states": dict(Counter(api.call("GET", f"/api/projects/{p['id']}")["state"] for p in projects)),
        }
    )
    return figures


def main(argv=None) -> int:
    args = parse_args(argv)
    rng = random.Random(args.seed)
    with tempfile.TemporaryDirectory(prefix="specmill-chaos-") as tmp:
        platform = Platform(Path(tmp))
        try:
            print(f"starting the platform in {tmp} ...", flush=True)
            platform.wait_healthy()
            tenant = create_tenant(platform)
            api = Client(platform.base, tenant["api_key"])
            started = time.monotonic()
            projects = start_projects(api, args.projects, args.model, args.rounds, rng)
            print(f"{len(projects)} projects running ({args.model}); inflicting failures:", flush=True)

            def done() -> bool:
                return all(s in TERMINAL for s in states(api, projects).values())

            kills = inflict(platform, args.kills, rng, done)
            deadline = time.monotonic() + args.timeout
            while not done():
                if time.monotonic() > deadline:
                    print("timed out waiting for the projects", flush=True)
                    break
                time.sleep(2)
            elapsed = time.monotonic() - started
            results = asyncio.run(workflow_results(platform.temporal, projects))
            figures = check(api, projects, results)
            figures.update({"kills": kills, "seconds": round(elapsed, 1), "model": args.model})
        finally:
            platform.stop()
    print(json.dumps({k: v for k, v in figures.items() if k != "problems"}, indent=1))
    ok = (
        figures["terminal"]
        == figures["projects"]
        == figures["state_chains_unbroken"]
        == figures["tasks_exact"]
        == figures["generations_exact"]
        == figures["database_agrees_with_workflow"]
        and figures["one_current_artifact"] == figures["instances"]
    )
    for problem in figures["problems"]:
        print(f"PROBLEM {problem}")
    print(
        f"\n{'nothing lost' if ok else 'CHECKS FAILED'}: {figures['terminal']}/{figures['projects']} projects terminal "
        f"{figures['states']}, {figures['one_current_artifact']}/{figures['instances']} instances with one current "
        f"artifact, {figures['tasks_exact']} exact task sets, {figures['generations_exact']} exact generation sets, "
        f"{figures['state_chains_unbroken']} unbroken state chains, {figures['database_agrees_with_workflow']} "
        f"database = workflow; {len(kills)} kills in {figures['seconds']} s"
    )
    from bench.gateway import write_figures

    print(f"figures: {write_figures('chaos', figures)}")
    return 0 if ok else 1


if __name__ == "__main__":
    from infra.temporal import exit_without_teardown

    exit_without_teardown(main())
