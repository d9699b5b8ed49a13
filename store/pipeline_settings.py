"""Pipeline settings (tenant defaults, project overrides) and the templates attached to projects."""

from __future__ import annotations

from typing import Any
from uuid import UUID

import asyncpg

from models.builtin_templates import SYSTEM_TENANT
from models.common import MODEL_NAMES
from models.pipeline import (
    AttachedTemplate,
    DefaultTemplate,
    EffectiveSettings,
    ProjectSettingsUpdate,
    SavedSettings,
    TenantSettings,
    TenantSettingsUpdate,
    over_token_budget,
)
from models.techniques import check as check_techniques
from models.techniques import check_n, check_options
from store import fixed, templates
from store.db import returned, tenant_tx
from store.errors import Invalid, NotFound

_TENANT_COLS = "default_templates, generation_concurrency, debug_rounds, model, techniques, max_new_tokens, n, options"
_PROJECT_FIELDS = ("model", "techniques", "max_new_tokens", "debug_rounds", "n", "options")


def _check_model(model: str | None) -> None:
    if model is not None and model not in MODEL_NAMES:
        raise Invalid(f"unknown model {model!r}; one of: {', '.join(MODEL_NAMES)}")


def _checked_techniques(techniques: list[str] | None) -> list[str] | None:
    if techniques is None:
        return None
    try:
        return check_techniques(techniques)
    except ValueError as err:
        raise Invalid(str(err)) from err


def _check_candidates(settings: TenantSettings | EffectiveSettings, token_budget: int | None = None) -> None:
    """What a run could not start with: options of a technique not chosen, n > 1 with beam search (its
    beams are the candidates), or more tokens per instance than `token_budget` (None: not checked)."""
    try:
        check_options(settings.techniques, settings.options)
        check_n(settings.techniques, settings.n)
    except ValueError as err:
        raise Invalid(str(err)) from err
    why = None if token_budget is None else over_token_budget(settings, token_budget)
    if why:
        raise Invalid(why, extra={"setting": "PROJECT_TOKEN_BUDGET", "budget": token_budget})


async def _require_project(conn: asyncpg.Connection, tenant_id: UUID, project_id: UUID) -> None:
    if not await conn.fetchval("select 1 from projects where tenant_id = $1 and id = $2", tenant_id, project_id):
        raise NotFound(f"project {project_id} not found")


def _tenant_model(row: asyncpg.Record | dict[str, Any] | None) -> TenantSettings:
    return TenantSettings() if row is None else TenantSettings.model_validate(dict(row))


async def get_tenant_settings(pool: asyncpg.Pool, *, tenant_id: UUID) -> TenantSettings:
    async with tenant_tx(pool, tenant_id) as conn:
        row = await conn.fetchrow(f"select {_TENANT_COLS} from tenant_settings where tenant_id = $1", tenant_id)
    return _tenant_model(row)


async def _check_templates(pool: asyncpg.Pool, tenant_id: UUID, refs: list[DefaultTemplate]) -> None:
    for ref in refs:
        try:
            await templates.find_template(pool, tenant_id=tenant_id, name=ref.name, version=ref.version)
        except NotFound as err:
            raise Invalid(f"default template {err.message}", extra={"template": ref.model_dump()}) from err


async def put_tenant_settings(
    pool: asyncpg.Pool, *, tenant_id: UUID, update: TenantSettingsUpdate, token_budget: int | None = None
) -> TenantSettings:
    """Merge `update` into the tenant's settings: a field left out keeps its value, null resets it to the
    default. Every default template must resolve now (Invalid names the one that does not), and the
    merged settings stay within `token_budget` per instance and run (Invalid, nothing stored)."""
    fields = update.model_dump(exclude_unset=True)
    defaults = TenantSettings().model_dump()
    fields = {k: defaults[k] if v is None else v for k, v in fields.items()}
    _check_model(fields.get("model"))
    if "techniques" in fields:
        fields["techniques"] = _checked_techniques(fields["techniques"])
    if fields.get("default_templates"):
        refs = [DefaultTemplate.model_validate(r) for r in fields["default_templates"]]
        await _check_templates(pool, tenant_id, refs)
        unique = {(r.name, r.version): r.model_dump() for r in refs}  # first of each, in order
        fields["default_templates"] = list(unique.values())
    async with tenant_tx(pool, tenant_id) as conn:
        await conn.execute("insert into tenant_settings (tenant_id) values ($1) on conflict do nothing", tenant_id)
        current = await conn.fetchrow(
            f"select {_TENANT_COLS} from tenant_settings where tenant_id = $1 for update", tenant_id
        )
        merged_settings = TenantSettings.model_validate({**dict(returned(current)), **fields})
        _check_candidates(merged_settings, token_budget)
        merged = merged_settings.model_dump()
        row = await conn.fetchrow(
            f"""update tenant_settings set default_templates = $2, generation_concurrency = $3, debug_rounds = $4,
                  model = $5, techniques = $6, max_new_tokens = $7, n = $8, options = $9,
                  updated_at = now() at time zone 'utc'
                where tenant_id = $1 returning {_TENANT_COLS}""",
            tenant_id,
            merged["default_templates"],
            merged["generation_concurrency"],
            merged["debug_rounds"],
            merged["model"],
            merged["techniques"],
            merged["max_new_tokens"],
            merged["n"],
            merged["options"],
        )
    return _tenant_model(row)


async def effective_in(conn: asyncpg.Connection, tenant_id: UUID, project_id: UUID) -> EffectiveSettings:
    """The project's settings as its next run would take them, read in the caller's transaction."""
    row = await conn.fetchrow(
        f"""select ps.model as p_model, ps.techniques as p_techniques, ps.max_new_tokens as p_max_new_tokens,
                   ps.debug_rounds as p_debug_rounds, ps.n as p_n, ps.options as p_options,
                   ts.tenant_id is not null as has_tenant,
                   {", ".join(f"ts.{c}" for c in _TENANT_COLS.split(", "))}
            from projects p
              left join project_settings ps on ps.project_id = p.id and ps.tenant_id = p.tenant_id
              left join tenant_settings ts on ts.tenant_id = p.tenant_id
            where p.tenant_id = $1 and p.id = $2""",
        tenant_id,
        project_id,
    )
    if row is None:
        raise NotFound(f"project {project_id} not found")
    tenant = _tenant_model({c: row[c] for c in _TENANT_COLS.split(", ")} if row["has_tenant"] else None)
    values: dict[str, Any] = {"generation_concurrency": tenant.generation_concurrency}
    for name in _PROJECT_FIELDS:
        own = row[f"p_{name}"]
        values[name] = getattr(tenant, name) if own is None else own
    return EffectiveSettings.model_validate(values)


async def effective_settings(pool: asyncpg.Pool, *, tenant_id: UUID, project_id: UUID) -> EffectiveSettings:
    async with tenant_tx(pool, tenant_id) as conn:
        return await effective_in(conn, tenant_id, project_id)


async def runnable_settings(
    pool: asyncpg.Pool, *, tenant_id: UUID, project_id: UUID, token_budget: int
) -> EffectiveSettings:
    """The settings a run of the project would start with, if it may (Invalid says why not: saved
    before the budget was lowered, or made of the tenant's defaults and the project's own together)."""
    effective = await effective_settings(pool, tenant_id=tenant_id, project_id=project_id)
    _check_candidates(effective, token_budget)
    return effective


async def put_project_settings(
    pool: asyncpg.Pool,
    *,
    tenant_id: UUID,
    project_id: UUID,
    update: ProjectSettingsUpdate,
    token_budget: int | None = None,
) -> SavedSettings:
    """Merge `update` into the project's own settings (null: back to the tenant's default); returns the
    settings the project's runs use from now on, which must stay within `token_budget` per instance and
    run (Invalid, nothing stored), and which run that is: the one going, if it has not fixed its
    settings yet, else the next (store/fixed.py)."""
    fields = update.model_dump(exclude_unset=True)
    _check_model(fields.get("model"))
    if "techniques" in fields:
        fields["techniques"] = _checked_techniques(fields["techniques"])
    async with tenant_tx(pool, tenant_id) as conn:
        applies_to, note = await fixed.applies_to(conn, tenant_id=tenant_id, project_id=project_id, settings=True)
        await conn.execute(
            "insert into project_settings (project_id, tenant_id) values ($1, $2) on conflict do nothing",
            project_id,
            tenant_id,
        )
        sets = ", ".join(f"{name} = ${i}" for i, name in enumerate(fields, start=3))
        await conn.execute(
            f"""update project_settings set {sets + ", " if sets else ""}updated_at = now() at time zone 'utc'
                where tenant_id = $1 and project_id = $2""",
            tenant_id,
            project_id,
            *fields.values(),
        )
        effective = await effective_in(conn, tenant_id, project_id)
        _check_candidates(effective, token_budget)  # Invalid rolls the update back
        return SavedSettings(**effective.model_dump(), applies_to=applies_to, note=note)


# --- templates attached to a project -----------------------------------------------------


async def _latest_builtins(conn: asyncpg.Connection) -> list[UUID]:
    rows = await conn.fetch("select id, name, version from spec_templates where tenant_id = $1", SYSTEM_TENANT)
    latest: dict[str, asyncpg.Record] = {}
    for r in rows:
        best = latest.get(r["name"])
        if best is None or templates._version_key(r["version"]) > templates._version_key(best["version"]):
            latest[r["name"]] = r
    return [latest[name]["id"] for name in sorted(latest)]


async def _attached(conn: asyncpg.Connection, tenant_id: UUID, project_id: UUID) -> list[AttachedTemplate]:
    rows = await conn.fetch(
        """select t.id, t.name, t.version, t.tenant_id = $3 as builtin
           from project_templates pt join spec_templates t on t.id = pt.template_id
           where pt.tenant_id = $1 and pt.project_id = $2
           order by pt.attached_at, t.name, t.version, t.id""",
        tenant_id,
        project_id,
        SYSTEM_TENANT,
    )
    return [AttachedTemplate.model_validate(dict(r)) for r in rows]


async def attach_templates(pool: asyncpg.Pool, *, tenant_id: UUID, project_id: UUID) -> list[UUID]:
    """Attach the tenant's default templates (or, when it configured none, the latest version of every
    built-in one) to the project. Idempotent: attaching again adds nothing. Returns every attached id.
    A configured default that no longer resolves (deleted since) is NotFound."""
    settings = await get_tenant_settings(pool, tenant_id=tenant_id)
    ids: list[UUID] = []
    for ref in settings.default_templates:
        tpl = await templates.find_template(pool, tenant_id=tenant_id, name=ref.name, version=ref.version)
        ids.append(tpl.id)
    async with tenant_tx(pool, tenant_id) as conn:
        await _require_project(conn, tenant_id, project_id)
        if not settings.default_templates:
            ids = await _latest_builtins(conn)
        try:
            await conn.executemany(
                """insert into project_templates (project_id, tenant_id, template_id) values ($1, $2, $3)
                   on conflict (project_id, template_id) do nothing""",
                [(project_id, tenant_id, tid) for tid in dict.fromkeys(ids)],
            )
        except asyncpg.ForeignKeyViolationError as err:  # a default template deleted meanwhile
            raise NotFound("a default template was deleted while it was being attached") from err
        return [t.id for t in await _attached(conn, tenant_id, project_id)]


async def attached_templates(pool: asyncpg.Pool, *, tenant_id: UUID, project_id: UUID) -> list[AttachedTemplate]:
    """The project's attached templates with their name and version (GET /api/projects/{id}/templates)."""
    async with tenant_tx(pool, tenant_id) as conn:
        await _require_project(conn, tenant_id, project_id)
        return await _attached(conn, tenant_id, project_id)


async def list_project_templates(pool: asyncpg.Pool, *, tenant_id: UUID, project_id: UUID) -> list[UUID]:
    return [t.id for t in await attached_templates(pool, tenant_id=tenant_id, project_id=project_id)]
