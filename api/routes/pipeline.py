"""Pipeline settings and artifacts, served by the orchestrator: tenant defaults (admin writes), a
project's own settings (editor writes), its attached templates, and its generated files."""

from __future__ import annotations

import asyncio
import io
import json
import zipfile
from datetime import date, datetime
from typing import Annotated
from uuid import UUID

from fastapi import APIRouter, Query, Response

from api import availability
from api.deps import Cursor, Limit, PoolDep, PrincipalDep, ResourcesDep
from models.common import Page
from models.orchestrator import ProjectPublic
from models.pipeline import (
    ArtifactPublic,
    AttachedTemplate,
    EffectiveSettings,
    ProjectSettingsUpdate,
    SavedSettings,
    TenantSettings,
    TenantSettingsUpdate,
)
from models.usage import UsageRow
from store import artifacts, pipeline_settings, projects, usage

router = APIRouter(tags=["pipeline"])


@router.get("/settings", response_model=TenantSettings)
async def get_settings(pool: PoolDep, p: PrincipalDep):
    return await pipeline_settings.get_tenant_settings(pool, tenant_id=p.tenant_id)


async def _check_model(res, p, model: str | None) -> None:
    """A model named by the request must be able to serve the tenant now (the rule of GET /api/models);
    null (back to the default) is not checked."""
    if model is not None:
        await availability.require_available(res, p.tenant_id, model)


@router.put("/settings", response_model=TenantSettings)
async def put_settings(body: TenantSettingsUpdate, res: ResourcesDep, p: PrincipalDep):
    """Merge into the tenant's defaults. A `model` that cannot serve this tenant now is a 422 with the reason;
    so are defaults whose n × max_new_tokens × (debug_rounds + 1) is over PROJECT_TOKEN_BUDGET."""
    await _check_model(res, p, body.model)
    return await pipeline_settings.put_tenant_settings(
        res.pool, tenant_id=p.tenant_id, update=body, token_budget=res.settings.project_token_budget
    )


@router.get("/usage", response_model=Page[UsageRow])
async def get_usage(
    pool: PoolDep,
    p: PrincipalDep,
    since: Annotated[date | None, Query(description="The first day (UTC), inclusive")] = None,
    until: Annotated[date | None, Query(description="The last day (UTC), inclusive")] = None,
    project_id: Annotated[UUID | None, Query(description="Only this project's usage")] = None,
    limit: Limit = 50,
    cursor: Cursor = None,
):
    """The tenant's usage by day, project and model, newest day first (admins): generations and their
    tokens, sandboxed test runs and their seconds, entries embedded, snippets stored. Each unit of work
    counts once, however often its activity was retried."""
    items, nxt = await usage.summary(
        pool, tenant_id=p.tenant_id, since=since, until=until, project_id=project_id, limit=limit, cursor=cursor
    )
    return Page(items=items, next_cursor=nxt)


@router.get("/projects/{project_id}/settings", response_model=EffectiveSettings)
async def get_project_settings(project_id: UUID, pool: PoolDep, p: PrincipalDep):
    return await pipeline_settings.effective_settings(pool, tenant_id=p.tenant_id, project_id=project_id)


@router.put("/projects/{project_id}/settings", response_model=SavedSettings)
async def put_project_settings(project_id: UUID, body: ProjectSettingsUpdate, res: ResourcesDep, p: PrincipalDep):
    """Merge into the project's own settings. A run keeps the settings it started with: `applies_to` says
    whether these reach the run that is going (`this run`: the first run before its specs complete) or
    the next (`next run`), and `note` says it in a sentence. A `model` that cannot serve this tenant now
    is a 422 with the reason; so are settings whose n × max_new_tokens × (debug_rounds + 1) is over
    PROJECT_TOKEN_BUDGET."""
    if body.model is not None:  # another tenant's project is a 404 before anything is said of the model
        await projects.get_project(res.pool, tenant_id=p.tenant_id, project_id=project_id)
    await _check_model(res, p, body.model)
    return await pipeline_settings.put_project_settings(
        res.pool,
        tenant_id=p.tenant_id,
        project_id=project_id,
        update=body,
        token_budget=res.settings.project_token_budget,
    )


@router.get("/projects/{project_id}/templates", response_model=Page[AttachedTemplate])
async def project_templates(project_id: UUID, pool: PoolDep, p: PrincipalDep):
    """The templates attached at initialization: a short list, in one page (next_cursor is null)."""
    return Page(items=await pipeline_settings.attached_templates(pool, tenant_id=p.tenant_id, project_id=project_id))


@router.get("/projects/{project_id}/artifacts", response_model=Page[ArtifactPublic])
async def list_artifacts(
    project_id: UUID,
    pool: PoolDep,
    p: PrincipalDep,
    all: bool = Query(False, description="Include the artifacts no longer current"),
    limit: Limit = 50,
    cursor: Cursor = None,
):
    """The project's artifacts, oldest first, with their provenance and test results."""
    items, nxt = await artifacts.artifacts_page(
        pool, tenant_id=p.tenant_id, project_id=project_id, current_only=not all, limit=limit, cursor=cursor
    )
    return Page(items=items, next_cursor=nxt)


@router.get(
    "/projects/{project_id}/artifacts.zip",
    response_class=Response,
    responses={
        200: {"content": {"application/zip": {}}, "description": "The current files at their paths, and manifest.json"}
    },
)
async def download_artifacts(project_id: UUID, pool: PoolDep, p: PrincipalDep):
    project = await projects.get_project(pool, tenant_id=p.tenant_id, project_id=project_id)
    items = await artifacts.list_artifacts(pool, tenant_id=p.tenant_id, project_id=project_id)
    data = await asyncio.to_thread(build_zip, project, items)
    return Response(
        data,
        media_type="application/zip",
        headers={"Content-Disposition": f'attachment; filename="project-{project_id}-artifacts.zip"'},
    )


def _zip_time(moment: datetime | None) -> tuple[int, int, int, int, int, int]:
    if moment is None or moment.year < 1980:
        return (1980, 1, 1, 0, 0, 0)
    return moment.timetuple()[:6]


def manifest(project: ProjectPublic, items: list[ArtifactPublic]) -> dict:
    """What the zip says of the project (its state, latest run and that run's outcome, by instance name)
    and of each file: provenance and test results (not the content, which is the file)."""
    files = [a.model_dump(mode="json", exclude={"content", "tenant_id", "project_id"}) for a in items]
    return {
        "project_id": str(project.id),
        "state": project.state.value,
        "run_id": str(project.run_id) if project.run_id else None,
        "outcome": project.outcome.model_dump(mode="json") if project.outcome else None,
        "files": files,
    }


def _entry(name: str, moment: datetime | None) -> zipfile.ZipInfo:
    info = zipfile.ZipInfo(name, _zip_time(moment))
    info.compress_type = zipfile.ZIP_DEFLATED
    info.external_attr = 0o644 << 16  # rw-r--r-- when extracted
    return info


def build_zip(project: ProjectPublic, items: list[ArtifactPublic]) -> bytes:
    """The same artifacts always give the same bytes: entries in path order, dated by their last change."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        for a in items:
            zf.writestr(_entry(a.path, a.updated_at), a.content)
        last = max((a.updated_at for a in items), default=None)
        body = json.dumps(manifest(project, items), indent=2, ensure_ascii=False)
        zf.writestr(_entry(artifacts.MANIFEST, last), body)
    return buf.getvalue()
