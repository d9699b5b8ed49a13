"""Console pages of runs: one run live (its states and generations as rows, updated on the event stream),
why it failed, the spec values it ran with against today's, and two runs compared."""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Annotated, Any
from uuid import UUID

from fastapi import APIRouter, Form, Header, Query

from api.console.client import ApiError
from api.console.projects import parse_time, run_events, spec_name, state_durations, state_spans, temporal_link
from api.console.session import redirect
from api.console.web import Page, PageDep, check_write, unified_diff, uuid_or_404
from api.routes import events as event_routes
from models.common import TERMINAL_STATES

router = APIRouter()
TERMINAL = {s.value for s in TERMINAL_STATES}


def _within(item_at: str, run: dict[str, Any]) -> bool:
    at = parse_time(item_at)
    end = parse_time(run["ended_at"]) if run.get("ended_at") else None
    return at >= parse_time(run["created_at"]) and (end is None or at <= end)


async def run_generations(page: Page, pid: str, run: dict[str, Any]) -> list[dict[str, Any]]:
    """The project's generations made during the run (the API lists them newest first)."""
    listed = await page.api.get("/api/generations", project_id=pid, limit=100)
    return [g for g in reversed(listed["items"]) if _within(g["created_at"], run)]


async def rows_of(page: Page, pid: str, run: dict[str, Any], names: dict[str, str]) -> dict[str, Any]:
    """The run as rows, oldest first: each state it entered and each generation, with durations and tokens."""
    events = await run_events(page, pid, run["id"])
    rows: list[dict[str, Any]] = []
    now = datetime.now(timezone.utc)
    for event, state, start, end in state_spans(events):
        terminal = state in TERMINAL
        rows.append(
            {
                "kind": "state",
                "label": state,
                "at": event["created_at"],
                "seconds": None if terminal else ((end or now) - start).total_seconds(),
                "running": end is None and not terminal,
                "note": event["payload"].get("reason"),
            }
        )
    generations = await run_generations(page, pid, run)
    for g in generations:
        took = (parse_time(g["updated_at"]) - parse_time(g["created_at"])).total_seconds()
        rows.append(
            {
                "kind": "generation",
                "label": f"generation of {names.get(str(g.get('instance_id')), 'a spec')}",
                "at": g["created_at"],
                "seconds": took if g["status"] != "running" else (now - parse_time(g["created_at"])).total_seconds(),
                "running": g["status"] == "running",
                "status": g["status"],
                "tokens": (g.get("tokens_in", 0), g.get("tokens_out", 0)),
                "model": g["model"],
                "note": g.get("error"),
            }
        )
    rows.sort(key=lambda r: parse_time(r["at"]))
    tokens = [sum(g.get("tokens_in", 0) for g in generations), sum(g.get("tokens_out", 0) for g in generations)]
    return {
        "rows": rows,
        "tokens": tokens,
        "generations": len(generations),
        "durations": state_durations(events, run["state"]),
    }


def trace_link(page: Page, trace_id: str | None) -> str | None:
    """The run's trace in the operator's tracing UI (TRACE_URL), where both are known."""
    template = page.request.app.state.resources.settings.trace_url
    return template.replace("{trace_id}", trace_id) if template and trace_id else None


async def _run(page: Page, project_id: str, run_id: str) -> tuple[str, dict, dict]:
    pid, rid = str(uuid_or_404(project_id)), str(uuid_or_404(run_id))
    project = await page.api.get(f"/api/projects/{pid}")
    run = await page.api.get(f"/api/projects/{pid}/runs/{rid}")
    return pid, project, run


async def _names(page: Page, pid: str) -> tuple[dict[str, str], list[dict[str, Any]]]:
    specs = (await page.api.get(f"/api/projects/{pid}/specs", limit=100))["items"]
    return {str(s["id"]): spec_name(s) for s in specs}, specs


async def pinned(page: Page, pid: str, run: dict[str, Any], specs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per spec the run generated: the values it ran with (from its last generation's record) and what
    differs in today's values."""
    current = {str(s["id"]): s for s in specs}
    seen: dict[str, dict[str, Any]] = {}
    for g in await run_generations(page, pid, run):
        if g.get("instance_id"):
            seen[str(g["instance_id"])] = g
    out = []
    for iid, g in seen.items():
        detail = await page.api.get(f"/api/generations/{g['id']}")
        ran = (detail.get("request") or {}).get("values")
        now = (current.get(iid) or {}).get("values")
        changed = sorted(k for k in set(ran or {}) | set(now or {}) if (ran or {}).get(k) != (now or {}).get(k))
        out.append(
            {
                "instance_id": iid,
                "name": spec_name(current[iid]) if iid in current else iid[:8],
                "values": ran,
                "deleted": now is None,
                "changed": changed if ran is not None else None,
            }
        )
    return out


async def _live(page: Page, project_id: str, run_id: str) -> dict[str, Any]:
    """What the run's page shows and its script re-renders on each event: the state, why it failed, the
    rows and its settings."""
    pid, project, run = await _run(page, project_id, run_id)
    names, _ = await _names(page, pid)
    failing = [i for i in (run.get("outcome") or {}).get("instances", []) if i["status"] not in ("passed", "no_tests")]
    return {
        "title": f"Run of {project['name']}",
        "project": project,
        "run": run,
        "live": await rows_of(page, pid, run, names),
        "terminal": run["state"] in TERMINAL,
        "failing": failing,
        "temporal_url": temporal_link(page, project["workflow_id"], run["id"]),
        "trace_url": trace_link(page, run.get("trace_id")),
    }


@router.get("/projects/{project_id}/runs/{run_id}")
async def run_page(page: PageDep, project_id: str, run_id: str):
    return page.render("run.html", **await _live(page, project_id, run_id))


@router.get("/projects/{project_id}/runs/{run_id}/live")
async def run_live(page: PageDep, project_id: str, run_id: str):
    return page.render("run_live.html", **await _live(page, project_id, run_id))


@router.get("/projects/{project_id}/runs/{run_id}/specs")
async def run_specs(page: PageDep, project_id: str, run_id: str):
    """The spec values the run generated from, against today's (one read per spec: a page of its own)."""
    pid, project, run = await _run(page, project_id, run_id)
    _, specs = await _names(page, pid)
    return page.render(
        "run_specs.html",
        title=f"Specs of a run of {project['name']}",
        project=project,
        run=run,
        pinned=await pinned(page, pid, run, specs),
    )


@router.get("/projects/{project_id}/runs/{run_id}/events")
async def run_stream(
    page: PageDep,
    project_id: str,
    run_id: str,
    last_event_id: Annotated[str | None, Header()] = None,
):
    """The API's event stream of the project (api/routes/events.py, with its per-tenant limit), for the
    page's script: each event makes it fetch the rows again."""
    pid, _, _ = await _run(page, project_id, run_id)
    res = page.request.app.state.resources
    return await event_routes.stream_events(
        res,
        page.session.principal,
        after=None,
        type=None,
        project_id=UUID(pid),
        run_id=None,
        last_event_id=last_event_id,
    )


@router.post("/projects/{project_id}/runs")
async def start_run(
    page: PageDep, project_id: str, scope: Annotated[str, Form()] = "failed", csrf: Annotated[str | None, Form()] = None
):
    pid = str(uuid_or_404(project_id))
    check_write(page.request, page.session, csrf)
    started = await page.api.post(f"/api/projects/{pid}/runs", {"scope": scope})
    return page.finish(redirect(f"/console/projects/{pid}/runs/{started['id']}"))


async def _code_at(page: Page, pid: str, run: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Per spec: the artifact its code was in when the run ended (the last one written during the run)."""
    out: dict[str, dict[str, Any]] = {}
    listed = await page.api.get(f"/api/projects/{pid}/artifacts", all="true", limit=100)
    for a in listed["items"]:
        if _within(a["created_at"], run) or _within(a["updated_at"], run):
            kept = out.get(str(a["instance_id"]))
            if kept is None or parse_time(a["updated_at"]) >= parse_time(kept["updated_at"]):
                out[str(a["instance_id"])] = a
    return out


@router.get("/projects/{project_id}/compare")
async def compare(page: PageDep, project_id: str, run: Annotated[list[str], Query()] = []):  # noqa: B006 - FastAPI reads it
    pid = str(uuid_or_404(project_id))
    if len(run) != 2:
        raise ApiError(422, {"detail": "tick exactly two runs to compare"})
    project = await page.api.get(f"/api/projects/{pid}")
    names, _ = await _names(page, pid)
    sides = []
    for rid in run:
        r = await page.api.get(f"/api/projects/{pid}/runs/{uuid_or_404(rid)}")
        live = await rows_of(page, pid, r, names)
        outcome = {i["name"]: i for i in (r.get("outcome") or {}).get("instances", [])}
        sides.append({"run": r, "live": live, "outcome": outcome, "code": await _code_at(page, pid, r)})
    a, b = sides
    functions = sorted(set(a["outcome"]) | set(b["outcome"]))
    keys = sorted(set((a["run"].get("settings") or {})) | set((b["run"].get("settings") or {})))
    diffs = []
    for iid in sorted(set(a["code"]) | set(b["code"])):
        before, after = a["code"].get(iid), b["code"].get(iid)
        rows = unified_diff(
            (before or {}).get("content", ""), (after or {}).get("content", ""), "first run", "second run"
        )
        diffs.append({"name": names.get(iid, iid[:8]), "rows": rows, "same": before and after and not rows})
    return page.render(
        "compare.html",
        title=f"Two runs of {project['name']}",
        project=project,
        a=a,
        b=b,
        functions=functions,
        keys=keys,
        states=sorted(set(a["live"]["durations"]) | set(b["live"]["durations"])),
        diffs=diffs,
    )
