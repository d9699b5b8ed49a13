"""Spec instances: a project's values for one template, validated against its schema."""

from __future__ import annotations

from typing import Any
from uuid import UUID, uuid4

import asyncpg

from models import schema_safety
from models.builtin_templates import SYSTEM_TENANT
from models.events import spec_instance_event
from models.registry import InstanceCreate, InstancePublic, InstanceSaved, InstanceUpdate, ProjectSpec
from models.schema_rules import values_hash
from store import events, fixed
from store.db import returned, tenant_tx
from store.errors import Invalid, NotFound
from store.paging import keyset, limit_sql, page

_COLS = "id, template_id, project_id, user_id, tenant_id, values, created_at, updated_at"


def _model(row: asyncpg.Record) -> InstancePublic:
    return InstancePublic.model_validate(dict(row))


async def _template_schema(conn: asyncpg.Connection, tenant_id: UUID, template_id: UUID) -> dict[str, Any]:
    # The tenant's own template is locked against a concurrent delete; a built-in one cannot be
    # deleted by tenants (and RLS lets the app role read it, not lock it).
    schema = await conn.fetchval(
        "select schema from spec_templates where tenant_id = $1 and id = $2 for key share", tenant_id, template_id
    )
    if schema is None:
        schema = await conn.fetchval(
            "select schema from spec_templates where tenant_id = $1 and id = $2", SYSTEM_TENANT, template_id
        )
    if schema is None:
        raise NotFound(f"template {template_id} not found")
    return schema


async def _require_project(conn: asyncpg.Connection, tenant_id: UUID, project_id: UUID) -> None:
    if not await conn.fetchval("select 1 from projects where tenant_id = $1 and id = $2", tenant_id, project_id):
        raise NotFound(f"project {project_id} not found")


async def check_values(schema: dict[str, Any], values: Any) -> None:
    """Invalid (422) unless `values` satisfy `schema` (models.schema_rules.value_violations, run off the
    event loop with a deadline)."""
    try:
        violations = await schema_safety.check_values(schema, values)
    except schema_safety.ValidationAborted as err:
        raise Invalid(str(err)) from err
    if violations:
        raise Invalid(
            "values do not match the template's schema", extra={"errors": [v.model_dump() for v in violations]}
        )


async def _emit(conn: asyncpg.Connection, type_: str, inst: InstancePublic, user_id: UUID) -> None:
    await events.emit(
        conn,
        tenant_id=inst.tenant_id,
        type=type_,
        subject_id=inst.id,
        payload=spec_instance_event(
            instance_id=inst.id,
            template_id=inst.template_id,
            project_id=inst.project_id,
            tenant_id=inst.tenant_id,
            user_id=user_id,
            values_hash=values_hash(inst.values),
        ),
    )


async def create_instance(pool: asyncpg.Pool, *, tenant_id: UUID, user_id: UUID, body: InstanceCreate) -> InstanceSaved:
    """A new spec of the project, and which run it reaches (store/fixed.py)."""
    async with tenant_tx(pool, tenant_id) as conn:
        applies_to, note = await fixed.applies_to(conn, tenant_id=tenant_id, project_id=body.project_id, settings=False)
        await check_values(await _template_schema(conn, tenant_id, body.template_id), body.values)
        row = await conn.fetchrow(
            f"""insert into spec_instances (
                id, template_id, project_id, user_id, tenant_id, values, created_at, updated_at)
                values ($1, $2, $3, $4, $5, $6, now() at time zone 'utc', now() at time zone 'utc')
                returning {_COLS}""",
            uuid4(),
            body.template_id,
            body.project_id,
            user_id,
            tenant_id,
            body.values,
        )
        inst = _model(returned(row))
        await _emit(conn, "instance.created", inst, user_id)
    return InstanceSaved(**inst.model_dump(), applies_to=applies_to, note=note)


async def get_instance(pool: asyncpg.Pool, *, tenant_id: UUID, instance_id: UUID) -> InstancePublic:
    async with tenant_tx(pool, tenant_id) as conn:
        row = await conn.fetchrow(
            f"select {_COLS} from spec_instances where tenant_id = $1 and id = $2", tenant_id, instance_id
        )
    if row is None:
        raise NotFound(f"instance {instance_id} not found")
    return _model(row)


async def list_instances(
    pool: asyncpg.Pool,
    *,
    tenant_id: UUID,
    project_id: UUID | None,
    template_id: UUID | None,
    limit: int,
    cursor: str | None,
) -> tuple[list[InstancePublic], str | None]:
    args: list = [tenant_id, project_id, template_id]
    after = keyset(cursor, args)
    args.append(limit + 1)
    async with tenant_tx(pool, tenant_id) as conn:
        rows = await conn.fetch(
            f"""select {_COLS} from spec_instances
                where tenant_id = $1 and ($2::uuid is null or project_id = $2)
                  and ($3::uuid is null or template_id = $3) and {after}
                order by created_at, id limit ${len(args)}""",
            *args,
        )
    rows, next_cursor = page(rows, limit)
    return [_model(r) for r in rows], next_cursor


async def update_instance(
    pool: asyncpg.Pool, *, tenant_id: UUID, user_id: UUID, instance_id: UUID, body: InstanceUpdate
) -> InstanceSaved:
    """The spec's new template or values, and which run they reach (store/fixed.py)."""
    fields = body.model_dump(exclude_unset=True)
    if any(fields.get(k) is None for k in fields):
        raise Invalid("template_id and values cannot be null")
    async with tenant_tx(pool, tenant_id) as conn:
        current = await conn.fetchrow(
            f"select {_COLS} from spec_instances where tenant_id = $1 and id = $2 for update", tenant_id, instance_id
        )
        if current is None:
            raise NotFound(f"instance {instance_id} not found")
        applies_to, note = await fixed.applies_to(
            conn, tenant_id=tenant_id, project_id=current["project_id"], settings=False
        )
        template_id = fields.get("template_id", current["template_id"])
        values = fields.get("values", current["values"])
        await check_values(await _template_schema(conn, tenant_id, template_id), values)
        row = await conn.fetchrow(
            f"""update spec_instances set template_id = $3, values = $4, updated_at = now() at time zone 'utc'
                where tenant_id = $1 and id = $2 returning {_COLS}""",
            tenant_id,
            instance_id,
            template_id,
            values,
        )
        inst = _model(returned(row))
        await _emit(conn, "instance.updated", inst, user_id)
    return InstanceSaved(**inst.model_dump(), applies_to=applies_to, note=note)


async def delete_instance(pool: asyncpg.Pool, *, tenant_id: UUID, instance_id: UUID) -> None:
    async with tenant_tx(pool, tenant_id) as conn:
        status = await conn.execute(
            "delete from spec_instances where tenant_id = $1 and id = $2", tenant_id, instance_id
        )
    if status.endswith(" 0"):
        raise NotFound(f"instance {instance_id} not found")


async def project_specs(pool: asyncpg.Pool, *, tenant_id: UUID, project_id: UUID) -> list[ProjectSpec]:
    """Every instance of the project, oldest first, with its template's name and version."""
    return (await project_specs_page(pool, tenant_id=tenant_id, project_id=project_id, limit=None))[0]


async def project_specs_page(
    pool: asyncpg.Pool, *, tenant_id: UUID, project_id: UUID, limit: int | None, cursor: str | None = None
) -> tuple[list[ProjectSpec], str | None]:
    """One page of project_specs, and the next page's cursor."""
    args: list = [tenant_id, project_id, SYSTEM_TENANT]
    after = keyset(cursor, args, "i.")
    async with tenant_tx(pool, tenant_id) as conn:
        await _require_project(conn, tenant_id, project_id)
        rows = await conn.fetch(
            f"""select i.id, i.template_id, i.project_id, i.user_id, i.tenant_id, i.values, i.created_at, i.updated_at,
                       t.name as template_name, t.version as template_version
                from spec_instances i join spec_templates t on t.id = i.template_id and t.tenant_id in (i.tenant_id, $3)
                where i.tenant_id = $1 and i.project_id = $2 and {after}
                order by i.created_at, i.id {limit_sql(limit, args)}""",
            *args,
        )
    rows, next_cursor = page(rows, limit)
    return [ProjectSpec.model_validate(dict(r)) for r in rows], next_cursor
