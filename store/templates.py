"""Spec templates: a JSON Schema per (tenant, name, version)."""

from __future__ import annotations

import json
from uuid import UUID, uuid4

import asyncpg

from models import schema_safety
from models.builtin_templates import BUILTINS, SYSTEM_TENANT, builtin_id
from models.events import spec_template_event
from models.registry import TemplateCreate, TemplatePublic, TemplateUpdate
from store import events
from store.db import returned, tenant_tx
from store.errors import Conflict, Forbidden, Invalid, NotFound
from store.paging import keyset, page

_COLS = "id, tenant_id, name, version, description, schema, created_at, updated_at"


def _model(row: asyncpg.Record) -> TemplatePublic:
    return TemplatePublic.model_validate({**dict(row), "builtin": row["tenant_id"] == SYSTEM_TENANT})


async def _writable(conn: asyncpg.Connection, tenant_id: UUID, template_id: UUID) -> asyncpg.Record:
    """The tenant's own template, locked for change; a built-in one is read-only (403)."""
    row = await conn.fetchrow(
        f"select {_COLS} from spec_templates where tenant_id = $1 and id = $2 for update", tenant_id, template_id
    )
    if row is not None:
        return row
    if await conn.fetchval("select 1 from spec_templates where tenant_id = $1 and id = $2", SYSTEM_TENANT, template_id):
        raise Forbidden("built-in templates are read-only; create your own template (a new name or version)")
    raise NotFound(f"template {template_id} not found")


async def check_schema(schema: dict) -> None:
    """Invalid (422) unless `schema` can be a template's schema (models.schema_rules.schema_problems, run
    off the event loop with a deadline)."""
    try:
        problems = await schema_safety.check_schema(schema)
    except schema_safety.ValidationAborted as err:
        raise Invalid(str(err)) from err
    if problems:
        first = problems[0]
        raise Invalid(
            f"schema is not a valid JSON Schema (draft 2020-12): {first.path}: {first.message}",
            extra={"errors": [p.model_dump() for p in problems]},
        )


async def create_template(
    pool: asyncpg.Pool, *, tenant_id: UUID, user_id: UUID, body: TemplateCreate
) -> TemplatePublic:
    await check_schema(body.schema_)
    async with tenant_tx(pool, tenant_id) as conn:
        try:
            row = await conn.fetchrow(
                f"""insert into spec_templates (
                    id, tenant_id, name, version, description, schema, created_at, updated_at)
                    values ($1, $2, $3, $4, $5, $6, now() at time zone 'utc', now() at time zone 'utc')
                    returning {_COLS}""",
                uuid4(),
                tenant_id,
                body.name,
                body.version,
                body.description,
                body.schema_,
            )
        except asyncpg.UniqueViolationError as err:
            raise Conflict(f"template {body.name!r} version {body.version!r} already exists") from err
        tpl = _model(returned(row))
        await _emit(conn, "template.created", tpl, user_id)
    return tpl


async def _emit(conn: asyncpg.Connection, type_: str, tpl: TemplatePublic, user_id: UUID) -> None:
    await events.emit(
        conn,
        tenant_id=tpl.tenant_id,
        type=type_,
        subject_id=tpl.id,
        payload=spec_template_event(
            template_id=tpl.id, tenant_id=tpl.tenant_id, name=tpl.name, version=tpl.version, user_id=user_id
        ),
    )


async def get_template(pool: asyncpg.Pool, *, tenant_id: UUID, template_id: UUID) -> TemplatePublic:
    async with tenant_tx(pool, tenant_id) as conn:
        row = await conn.fetchrow(
            f"select {_COLS} from spec_templates where tenant_id in ($1, $3) and id = $2",
            tenant_id,
            template_id,
            SYSTEM_TENANT,
        )
    if row is None:
        raise NotFound(f"template {template_id} not found")
    return _model(row)


async def list_templates(
    pool: asyncpg.Pool,
    *,
    tenant_id: UUID,
    name: str | None,
    version: str | None,
    limit: int,
    cursor: str | None,
    builtin: bool | None = None,
) -> tuple[list[TemplatePublic], str | None]:
    """The tenant's templates and the built-in ones (`builtin`: only those / only the tenant's own)."""
    owners = {None: [tenant_id, SYSTEM_TENANT], True: [SYSTEM_TENANT], False: [tenant_id]}[builtin]
    args: list = [owners, name, version]
    after = keyset(cursor, args)
    args.append(limit + 1)
    async with tenant_tx(pool, tenant_id) as conn:
        rows = await conn.fetch(
            f"""select {_COLS} from spec_templates
                where tenant_id = any($1::uuid[]) and ($2::text is null or name = $2)
                  and ($3::text is null or version = $3)
                  and {after}
                order by created_at, id limit ${len(args)}""",
            *args,
        )
    rows, next_cursor = page(rows, limit)
    return [_model(r) for r in rows], next_cursor


async def update_template(
    pool: asyncpg.Pool, *, tenant_id: UUID, user_id: UUID, template_id: UUID, body: TemplateUpdate
) -> TemplatePublic:
    fields = body.model_dump(exclude_unset=True, by_alias=True)
    if "schema" in fields:
        if fields["schema"] is None:
            raise Invalid("schema cannot be null")
        await check_schema(fields["schema"])
    async with tenant_tx(pool, tenant_id) as conn:
        await _writable(conn, tenant_id, template_id)
        if "schema" in fields:
            await _check_instances_still_valid(conn, tenant_id, template_id, fields["schema"])
        row = await conn.fetchrow(
            f"""update spec_templates set
                  description = case when $3 then $4 else description end,
                  schema = coalesce($5, schema),
                  updated_at = now() at time zone 'utc'
                where tenant_id = $1 and id = $2 returning {_COLS}""",
            tenant_id,
            template_id,
            "description" in fields,
            fields.get("description"),
            fields.get("schema"),
        )
        tpl = _model(returned(row))
        await _emit(conn, "template.updated", tpl, user_id)
    return tpl


async def _check_instances_still_valid(
    conn: asyncpg.Connection, tenant_id: UUID, template_id: UUID, schema: dict
) -> None:
    rows = await conn.fetch(
        "select id, values from spec_instances where tenant_id = $1 and template_id = $2", tenant_id, template_id
    )
    broken = []
    for r in rows:
        try:
            violations = await schema_safety.check_values(schema, r["values"])
        except schema_safety.ValidationAborted as err:
            raise Invalid(f"checking instance {r['id']} against the new schema: {err}") from err
        if violations:
            broken.append({"instance_id": str(r["id"]), "errors": [v.model_dump() for v in violations]})
    if broken:
        raise Conflict(
            "the new schema would invalidate existing instances; create a new version instead",
            extra={"instances": broken},
        )


async def delete_template(pool: asyncpg.Pool, *, tenant_id: UUID, template_id: UUID) -> None:
    async with tenant_tx(pool, tenant_id) as conn:
        await _writable(conn, tenant_id, template_id)
        used = await conn.fetchval(
            "select count(*) from spec_instances where tenant_id = $1 and template_id = $2", tenant_id, template_id
        )
        if used:
            raise Conflict(f"template is used by {used} instance(s); delete them first", extra={"instances": used})
        await conn.execute("delete from spec_templates where tenant_id = $1 and id = $2", tenant_id, template_id)


def _version_key(version: str) -> tuple:
    """Versions order as PEP 440 ones when they parse (1.10.0 after 1.9.0), after those that do not."""
    from packaging.version import InvalidVersion, Version

    try:
        return (1, Version(version))
    except InvalidVersion:
        return (0, version)


async def find_template(pool: asyncpg.Pool, *, tenant_id: UUID, name: str, version: str | None) -> TemplatePublic:
    """A template by name (and version; none: the latest). The tenant's own wins over a built-in one."""
    async with tenant_tx(pool, tenant_id) as conn:
        rows = await conn.fetch(
            f"""select {_COLS} from spec_templates where tenant_id in ($1, $2) and name = $3
                  and ($4::text is null or version = $4)""",
            tenant_id,
            SYSTEM_TENANT,
            name,
            version,
        )
    if not rows:
        raise NotFound(f"template {name!r}" + (f" version {version!r}" if version else "") + " not found")
    own = [r for r in rows if r["tenant_id"] == tenant_id] or rows
    return _model(max(own, key=lambda r: _version_key(r["version"])))


async def install_builtins(conn) -> int:
    """Upsert the built-in templates (admin connection; idempotent). Returns how many changed. A new row's
    created_at follows BUILTINS' order (a microsecond apart), so lists, ordered by it, show the built-ins
    in that order (python-function 1.0.0 before 1.1.0) even when they are installed together."""
    await conn.execute(
        "insert into tenants (id, name) values ($1, 'system') on conflict (id) do nothing", SYSTEM_TENANT
    )
    changed = 0
    for order, (name, version, description, schema) in enumerate(BUILTINS):
        status = await conn.execute(
            """insert into spec_templates (id, tenant_id, name, version, description, schema, created_at, updated_at)
               values ($1, $2, $3, $4, $5, $6::jsonb, now() at time zone 'utc' + $7::int * interval '1 microsecond',
                 now() at time zone 'utc')
               on conflict (id) do update set description = excluded.description, schema = excluded.schema,
                 updated_at = now() at time zone 'utc'
               where spec_templates.schema is distinct from excluded.schema
                  or spec_templates.description is distinct from excluded.description""",
            builtin_id(name, version),
            SYSTEM_TENANT,
            name,
            version,
            description,
            json.dumps(schema),
            order,
        )
        changed += int(status.split()[-1])
    return changed
