"""`make demo` (`specmill demo`): what a new user does, against the running platform (`make run`).

1. creates a tenant (as `specmill tenant create` does) and uses its owner API key;
2. creates a project with two python-function specs that have tests;
3. completes the specs and follows the run through its events, printing each state and round, and the
   run's progress line (models/progress.py) each time it moves;
4. prints the code, the run's outcome by function (the failing test, with expected and actual values)
   and the Temporal UI link of the run. `specmill demo` exits 0 only when the project completed.
Everything goes through the gateway's HTTP API, as a user's own scripts would.
"""

from __future__ import annotations

import time
from typing import Any

import httpx
from rich.console import Console
from rich.markup import escape
from rich.syntax import Syntax

from models.progress import RunProgress

console = Console(soft_wrap=True)

SPECS = [
    {
        "function_name": "add",
        "description": "Return the sum of the two integers a and b.",
        "signature": "def add(a: int, b: int) -> int",
        "tests": ["assert add(2, 3) == 5", "assert add(-1, 1) == 0"],
    },
    {
        "function_name": "is_even",
        "description": "Return True when the integer n is even, else False.",
        "signature": "def is_even(n: int) -> bool",
        "tests": ["assert is_even(4) is True", "assert is_even(7) is False"],
    },
]
TERMINAL = {"completed", "failed", "cancelled"}


class DemoError(RuntimeError):
    pass


def _check(resp: httpx.Response, *ok: int) -> Any:
    if resp.status_code not in (ok or (200, 201)):
        raise DemoError(f"{resp.request.method} {resp.request.url.path}: {resp.status_code} {resp.text[:300]}")
    return resp.json() if resp.content else None


def _every(http: httpx.Client, path: str) -> list[dict]:
    """Every item of a list endpoint, page after page (the API answers {"items", "next_cursor"})."""
    items: list[dict] = []
    cursor = None
    while True:
        page = _check(http.get(path, params={"limit": 100, **({"cursor": cursor} if cursor else {})}))
        items += page["items"]
        cursor = page["next_cursor"]
        if cursor is None:
            return items


def run_demo(settings, tenant: dict, *, model: str, rounds: int, timeout_s: float) -> str:
    """The demo against the gateway; returns the project's final state."""
    base = f"http://{settings.host}:{settings.port}"
    ui = f"http://127.0.0.1:{settings.temporal_ui_port}/namespaces/{settings.temporal_namespace}/workflows"
    with httpx.Client(base_url=base, headers={"X-API-Key": tenant["api_key"]}, timeout=60) as http:
        health = http.get("/health")
        if health.status_code != 200:
            raise DemoError(
                f"the platform is not ready at {base} (GET /health: {health.status_code} "
                f"{health.text[:200]}); start it with `make run`"
            )
        _require_model(http, model)
        project = _check(http.post("/api/projects", json={"name": "demo", "description": "make demo"}), 201)
        pid = project["id"]
        console.print(f"[bold]project[/bold] {pid}  (workflow {project['workflow_id']})")
        _check(http.put(f"/api/projects/{pid}/settings", json={"model": model, "debug_rounds": rounds}))
        _wait_state(http, pid, {"spec_definition"}, 30)
        template = _check(http.get("/api/templates", params={"name": "python-function", "version": "1.1.0"}))
        template = template["items"][0]
        names = {}
        for values in SPECS:
            inst = _check(
                http.post("/api/instances", json={"template_id": template["id"], "project_id": pid, "values": values}),
                201,
            )
            names[inst["id"]] = values["function_name"]
            console.print(f"  spec {values['function_name']}: {len(values['tests'])} tests")
        cursor = _latest_cursor(http)
        _check(http.post(f"/api/projects/{pid}/specs/complete"))
        console.print(f"[bold]specs complete[/bold]: generating with {model}, up to {rounds} repair round(s)")
        state = _follow(http, pid, cursor, timeout_s, names)
        _report(http, pid)
        console.print(f"\n[bold]{state}[/bold]  Temporal UI: {ui}/{project['workflow_id']}")
        return state


def _require_model(http: httpx.Client, model: str) -> None:
    """Stop before anything is made when the model cannot serve this tenant now, with what to do about it."""
    entry = next((m for m in _check(http.get("/api/models"))["items"] if m["name"] == model), None)
    if entry is None:
        raise DemoError(f"no model {model!r}: GET /api/models lists them")
    if entry["state"] == "unavailable":
        raise DemoError(f"model {model} cannot serve now: {entry['reason']}")


def _latest_cursor(http: httpx.Client) -> int:
    """The tenant's newest event sequence number: the run is followed from there."""
    cursor = 0
    while True:
        page = _check(http.get("/api/events", params={"limit": 100, "after": cursor}))
        if not page["items"]:
            return cursor
        cursor = page["next_cursor"]


def _wait_state(http: httpx.Client, pid: str, states: set[str], timeout_s: float) -> str:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        state = _check(http.get(f"/api/projects/{pid}/state"))["state"]
        if state in states:
            return state
        time.sleep(0.3)
    raise DemoError(f"project {pid} did not reach {sorted(states)} within {timeout_s:.0f} s")


def _follow(http: httpx.Client, pid: str, cursor: int, timeout_s: float, names: dict[str, str]) -> str:
    """Print the run's events as they come; return the final state."""
    started, deadline = time.monotonic(), time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        page = _check(http.get("/api/events", params={"limit": 100, "after": cursor}))
        for event in page["items"]:
            line = _describe(event, pid, names)
            if line:
                console.print(f"  [dim]{time.monotonic() - started:6.1f} s[/dim]  {line}")
            if (
                event["type"] == "project.state_changed"
                and event["subject_id"] == pid
                and event["payload"]["to_state"] in TERMINAL
            ):
                return event["payload"]["to_state"]
        cursor = page["next_cursor"]
        if not page["items"]:
            time.sleep(0.5)
    raise DemoError(f"the run did not finish within {timeout_s:.0f} s; follow it in the Temporal UI")


def _describe(event: dict, pid: str, names: dict[str, str]) -> str | None:
    p = event["payload"]
    if event["type"] == "project.state_changed" and event["subject_id"] == pid:
        return f"[cyan]{p['to_state']}[/cyan]  {p.get('reason') or ''}"
    if event["type"] == "run.progress" and p["project_id"] == pid:
        return "[dim]progress[/dim]  " + escape(RunProgress.model_validate(p["progress"]).line())
    if event["type"] == "code.generated" and p.get("instance_id") in names:
        name = names[p["instance_id"]]
        if p["status"] != "completed":
            return f"[red]generation failed[/red] for {name} ({p['model']})"
        return f"code generated for {name} ({p['model']}, parses: {p['parses']})"
    if event["type"] == "task.completed" and p.get("project_id") == pid:
        return f"{p['task_type']}: {p['status']}"
    return None


def _report(http: httpx.Client, pid: str) -> None:
    """The files, then the outcome: each function by name, with its failing test and values."""
    for art in _every(http, f"/api/projects/{pid}/artifacts"):
        status = art["test_status"] or "not tested"
        color = "green" if status == "passed" else "red"
        console.print(f"\n[bold]{art['path']}[/bold]  round {art['round']}  tests: [{color}]{status}[/{color}]")
        if console.is_terminal:
            console.print(Syntax(art["content"], "python", line_numbers=False))
        else:
            console.print(art["content"].rstrip(), markup=False, highlight=False)
    outcome = _check(http.get(f"/api/projects/{pid}"))["outcome"]
    if not outcome:
        return
    console.print(f"\n[bold]outcome[/bold]: {outcome['summary']}", markup=True, highlight=False)
    for inst in outcome["instances"]:
        color = "green" if inst["status"] in ("passed", "no_tests") else "red"
        console.print(f"  [{color}]{inst['status']:8}[/{color}] {inst['name']}: ", end="")
        console.print(inst["message"], markup=False, highlight=False)
