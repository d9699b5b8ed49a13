"""Console pages of projects: the list with its filters, a new project, and one project (its state machine
with each state's duration, its specs, its runs and its current files)."""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Annotated, Any

from fastapi import APIRouter, Form, Query

from api.console.client import ApiError
from api.console.session import redirect
from api.console.web import PageDep, check_write, uuid_or_404
from models.common import TERMINAL_STATES, ProjectState

router = APIRouter()

FLOW = [
    ProjectState.initialization,
    ProjectState.spec_definition,
    ProjectState.code_generation,
    ProjectState.integration,
    ProjectState.debugging,
]
LONG_RUNNING_S = 600  # "running for long": in a running state, unchanged for ten minutes
FILTERS = {
    "all": ("All", {}),
    "running": ("Running for long", {"running_for_s": LONG_RUNNING_S}),
    "failed": ("Failed", {"state": "failed"}),
    "completed": ("Completed", {"state": "completed"}),
    "spec_definition": ("Writing specs", {"state": "spec_definition"}),
}


def parse_time(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


def age_s(text: str, now: datetime | None = None) -> float:
    return ((now or datetime.now(timezone.utc)) - parse_time(text)).total_seconds()


async def _listing(page, show: str, cursor: str | None, status: int = 200, **context: Any):
    label, params = FILTERS.get(show, FILTERS["all"])
    listed = await page.api.get("/api/projects", limit=50, cursor=cursor, order="newest", **params)
    now = datetime.now(timezone.utc)
    return page.render(
        "projects.html",
        status=status,
        title="Projects",
        projects=[{**p, "age_s": age_s(p["updated_at"], now)} for p in listed["items"]],
        filters=FILTERS,
        show=show if show in FILTERS else "all",
        label=label,
        next_cursor=listed["next_cursor"],
        **context,
    )


@router.get("/projects")
async def projects(page: PageDep, show: str = "all", cursor: Annotated[str | None, Query(max_length=200)] = None):
    return await _listing(page, show, cursor)


@router.post("/projects")
async def create_project(
    page: PageDep,
    name: Annotated[str, Form()] = "",
    description: Annotated[str, Form()] = "",
    csrf: Annotated[str | None, Form()] = None,
):
    check_write(page.request, page.session, csrf)
    try:
        created = await page.api.post("/api/projects", {"name": name, "description": description or None})
    except ApiError as err:
        if err.status != 422:
            raise
        form = {"name": name, "description": description}
        return await _listing(page, "all", None, status=422, form=form, form_error=err.detail)
    return page.finish(redirect(f"/console/projects/{created['id']}"))


def spec_name(spec: dict[str, Any]) -> str:
    values = spec.get("values") or {}
    for key in ("function_name", "module_name", "name", "class_name"):
        if isinstance(values.get(key), str):
            return values[key]
    return str(spec["id"])[:8]


def state_spans(events: list[dict[str, Any]]) -> list[tuple[dict[str, Any], str, datetime, datetime | None]]:
    """A run's state changes (its project.state_changed events, oldest first) as (event, state entered,
    when, when it was left: the next change, None for the last)."""
    changes = [e for e in events if e["type"] == "project.state_changed"]
    return [
        (
            event,
            event["payload"].get("to_state"),
            parse_time(event["created_at"]),
            parse_time(changes[i + 1]["created_at"]) if i + 1 < len(changes) else None,
        )
        for i, event in enumerate(changes)
    ]


def state_durations(events: list[dict[str, Any]], current: str) -> dict[str, dict[str, Any]]:
    """Per state of one run: when it was entered and how long it lasted (until the next change; the
    current state: until now)."""
    out: dict[str, dict[str, Any]] = {}
    now = datetime.now(timezone.utc)
    for event, state, start, end in state_spans(events):
        entry = out.setdefault(state, {"seconds": 0.0, "entered": event["created_at"], "times": 0})
        entry["seconds"] += ((end or now) - start).total_seconds() if (end is not None or state == current) else 0.0
        entry["times"] += 1
    return out


async def run_events(page, project_id: str, run_id: str | None) -> list[dict[str, Any]]:
    """The state changes of one run, oldest first (one page of the API's, up to 100)."""
    if run_id is None:
        return []
    listed = await page.api.get("/api/events", project_id=project_id, run_id=run_id, limit=100)
    return listed["items"]


@router.get("/projects/{project_id}")
async def project(page: PageDep, project_id: str):
    pid = str(uuid_or_404(project_id))
    project = await page.api.get(f"/api/projects/{pid}")
    specs = [
        {**s, "name": spec_name(s)} for s in (await page.api.get(f"/api/projects/{pid}/specs", limit=100))["items"]
    ]
    runs = (await page.api.get(f"/api/projects/{pid}/runs", limit=100))["items"]
    files = (await page.api.get(f"/api/projects/{pid}/artifacts", limit=100))["items"]
    settings = await page.api.get(f"/api/projects/{pid}/settings")
    durations = state_durations(await run_events(page, pid, project.get("run_id")), project["state"])
    terminal = {s.value for s in TERMINAL_STATES}
    return page.render(
        "project.html",
        title=project["name"],
        project=project,
        specs=specs,
        runs=list(reversed(runs)),
        files=files,
        settings=settings,
        flow=[s.value for s in FLOW],
        terminal=sorted(terminal),
        durations=durations,
        temporal_url=temporal_link(page, project["workflow_id"], project.get("run_id")),
    )


def temporal_link(page, workflow_id: str, run_id: str | None) -> str | None:
    """The run's page in the Temporal UI, where the operator set TEMPORAL_UI_URL (None: no link)."""
    settings = page.request.app.state.resources.settings
    base = settings.temporal_ui_url or (
        f"http://127.0.0.1:{settings.temporal_ui_port}" if settings.temporal_embedded else None
    )
    if not base:
        return None
    url = f"{base.rstrip('/')}/namespaces/{settings.temporal_namespace}/workflows/{workflow_id}"
    return f"{url}/{run_id}/history" if run_id else url
