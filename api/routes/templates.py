"""Spec registry: templates and instances (specification sheet 1)."""

from __future__ import annotations

from uuid import UUID

from fastapi import APIRouter, Response

from api.deps import Cursor, Limit, PoolDep, PrincipalDep
from api.typed import typed
from models.common import Page
from models.registry import (
    InstanceCreate,
    InstancePublic,
    InstanceSaved,
    InstanceUpdate,
    ProjectSpec,
    TemplateCreate,
    TemplatePublic,
    TemplateUpdate,
)
from store import instances, templates

router = APIRouter(tags=["spec registry"])


@router.get("/templates", response_model=Page[TemplatePublic])
async def list_templates(
    pool: PoolDep,
    p: PrincipalDep,
    limit: Limit = 50,
    cursor: Cursor = None,
    name: str | None = None,
    version: str | None = None,
    builtin: bool | None = None,
):
    items, nxt = await templates.list_templates(
        pool, tenant_id=p.tenant_id, name=name, version=version, limit=limit, cursor=cursor, builtin=builtin
    )
    return typed(Page(items=items, next_cursor=nxt))


@router.post("/templates", response_model=TemplatePublic, status_code=201)
async def create_template(body: TemplateCreate, pool: PoolDep, p: PrincipalDep):
    return await templates.create_template(pool, tenant_id=p.tenant_id, user_id=p.user_id, body=body)


@router.get("/templates/{template_id}", response_model=TemplatePublic)
async def get_template(template_id: UUID, pool: PoolDep, p: PrincipalDep):
    return typed(await templates.get_template(pool, tenant_id=p.tenant_id, template_id=template_id))


@router.put("/templates/{template_id}", response_model=TemplatePublic)
async def update_template(template_id: UUID, body: TemplateUpdate, pool: PoolDep, p: PrincipalDep):
    return await templates.update_template(
        pool, tenant_id=p.tenant_id, user_id=p.user_id, template_id=template_id, body=body
    )


@router.delete("/templates/{template_id}", status_code=204)
async def delete_template(template_id: UUID, pool: PoolDep, p: PrincipalDep):
    await templates.delete_template(pool, tenant_id=p.tenant_id, template_id=template_id)
    return Response(status_code=204)


@router.get("/instances", response_model=Page[InstancePublic])
async def list_instances(
    pool: PoolDep,
    p: PrincipalDep,
    limit: Limit = 50,
    cursor: Cursor = None,
    project_id: UUID | None = None,
    template_id: UUID | None = None,
):
    items, nxt = await instances.list_instances(
        pool, tenant_id=p.tenant_id, project_id=project_id, template_id=template_id, limit=limit, cursor=cursor
    )
    return Page(items=items, next_cursor=nxt)


@router.post("/instances", response_model=InstanceSaved, status_code=201)
async def create_instance(body: InstanceCreate, pool: PoolDep, p: PrincipalDep):
    return await instances.create_instance(pool, tenant_id=p.tenant_id, user_id=p.user_id, body=body)


@router.get("/instances/{instance_id}", response_model=InstancePublic)
async def get_instance(instance_id: UUID, pool: PoolDep, p: PrincipalDep):
    return await instances.get_instance(pool, tenant_id=p.tenant_id, instance_id=instance_id)


@router.put("/instances/{instance_id}", response_model=InstanceSaved)
async def update_instance(instance_id: UUID, body: InstanceUpdate, pool: PoolDep, p: PrincipalDep):
    return await instances.update_instance(
        pool, tenant_id=p.tenant_id, user_id=p.user_id, instance_id=instance_id, body=body
    )


@router.delete("/instances/{instance_id}", status_code=204)
async def delete_instance(instance_id: UUID, pool: PoolDep, p: PrincipalDep):
    await instances.delete_instance(pool, tenant_id=p.tenant_id, instance_id=instance_id)
    return Response(status_code=204)


@router.get("/projects/{project_id}/specs", response_model=Page[ProjectSpec])
async def project_specs(project_id: UUID, pool: PoolDep, p: PrincipalDep, limit: Limit = 50, cursor: Cursor = None):
    """The project's instances, oldest first, each with its template's name and version."""
    items, nxt = await instances.project_specs_page(
        pool, tenant_id=p.tenant_id, project_id=project_id, limit=limit, cursor=cursor
    )
    return Page(items=items, next_cursor=nxt)
