"""Artifacts: a project's generated files, stored idempotently by content hash, with their provenance.

Each (project, instance, content_hash) is one row: storing the same code again reuses it. At most one
artifact of an instance is `current` (together they are the project's artifact tree), and a path of the
tree belongs to one instance at a time: `current_paths` says which, so that a round's new files avoid
the paths the current files of the other instances hold.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any
from uuid import UUID, uuid4

import asyncpg
from pydantic_core import to_jsonable_python

from models.pipeline import TEST_STATUSES, ArtifactPublic
from store.db import returned, tenant_tx
from store.errors import Conflict, Invalid, NotFound
from store.paging import keyset, limit_sql, page

MANIFEST = "manifest.json"  # the name the zip download gives its manifest; no artifact may take it

_COLS = (
    "id, tenant_id, project_id, instance_id, path, content, content_hash, values_hash, template_id, "
    "template_name, template_version, model, techniques, retrieved_snippets, generation_id, round, checks, "
    "test_status, tests, current, created_at, updated_at, reliance"
)


def _model(row: asyncpg.Record) -> ArtifactPublic:
    return ArtifactPublic.model_validate(dict(row))


def content_hash(content: str) -> str:
    return hashlib.sha256(content.encode("utf-8")).hexdigest()


def check_path(path: str) -> str:
    """A relative POSIX path inside the project's tree: no absolute path, `..`, `.`, empty segment,
    backslash or control character, and not the zip's manifest."""
    parts = path.split("/")
    if (
        not path
        or len(path) > 500
        or path.startswith("/")
        or "\\" in path
        or any(ord(c) < 32 for c in path)
        or any(p in ("", ".", "..") for p in parts)
    ):
        raise Invalid(f"artifact path {path!r} is not a relative path inside the project")
    if path == MANIFEST:
        raise Invalid(f"artifact path {MANIFEST!r} is reserved for the download's manifest")
    return path


async def _require_project(conn: asyncpg.Connection, tenant_id: UUID, project_id: UUID) -> None:
    """NotFound unless the project is this tenant's."""
    if not await conn.fetchval("select 1 from projects where tenant_id = $1 and id = $2", tenant_id, project_id):
        raise NotFound(f"project {project_id} not found")


async def _require_instance(conn: asyncpg.Connection, tenant_id: UUID, project_id: UUID, instance_id: UUID) -> None:
    """The instance, in this tenant's project, locked so that its artifacts change one writer at a time."""
    await _require_project(conn, tenant_id, project_id)
    found = await conn.fetchval(
        "select 1 from spec_instances where tenant_id = $1 and project_id = $2 and id = $3 for no key update",
        tenant_id,
        project_id,
        instance_id,
    )
    if not found:
        raise NotFound(f"instance {instance_id} not found in project {project_id}", extra={"instance_id": instance_id})


@dataclass(frozen=True)
class NewArtifact:
    """One instance's file for `store_artifacts`, with its provenance."""

    instance_id: UUID
    path: str
    content: str
    values_hash: str
    template_id: UUID | None
    template_name: str
    template_version: str
    model: str
    techniques: list[str]
    retrieved_snippets: list[Any]
    generation_id: UUID | None
    round: int
    checks: dict[str, Any]
    reliance: dict[str, Any] | None = None  # multi_head_attention: the kept candidate's


async def store_artifact(pool: asyncpg.Pool, *, tenant_id: UUID, project_id: UUID, **artifact: Any) -> ArtifactPublic:
    """Store the instance's file and make it the instance's only current artifact (`store_artifacts` of one):
    Conflict when another instance's current artifact holds `path`."""
    [stored] = await store_artifacts(pool, tenant_id=tenant_id, project_id=project_id, items=[NewArtifact(**artifact)])
    return stored


async def store_artifacts(
    pool: asyncpg.Pool, *, tenant_id: UUID, project_id: UUID, items: list[NewArtifact]
) -> list[ArtifactPublic]:
    """Store these instances' files (a round's) and make each its instance's only current artifact, all in
    one transaction: a retry finds all of them or none.

    The same content again reuses its row (provenance, round, generation and checks updated; test results
    kept unless the values changed). The instances' current files give up their paths before any is taken,
    so these instances may trade paths among themselves. Invalid for a path outside the tree; Conflict
    for a path two of `items` share, or that the current artifact of an instance outside `items` holds.
    """
    for item in items:
        check_path(item.path)
    by_instance = {item.instance_id: item for item in items}
    if len(by_instance) != len(items):
        raise Invalid("one file per instance: an instance appears twice")
    paths: dict[str, UUID] = {}
    for item in items:
        if paths.setdefault(item.path, item.instance_id) != item.instance_id:
            raise Conflict(
                f"path {item.path!r} is wanted by instances {paths[item.path]} and {item.instance_id}",
                extra={"path": item.path},
            )
    ids = sorted(by_instance)
    async with tenant_tx(pool, tenant_id) as conn:
        for instance_id in ids:  # in id order: two writers never wait for each other's locks
            await _require_instance(conn, tenant_id, project_id, instance_id)
        holder = await conn.fetchrow(
            """select path, instance_id from artifacts
               where tenant_id = $1 and project_id = $2 and path = any($3::text[]) and current
                 and instance_id <> all($4::uuid[])
               order by path limit 1""",
            tenant_id,
            project_id,
            list(paths),
            ids,
        )
        if holder is not None:
            raise Conflict(
                f"path {holder['path']!r} is already the current file of instance {holder['instance_id']}",
                extra={"path": holder["path"], "instance_id": str(holder["instance_id"])},
            )
        await conn.execute(  # the upserts below make each instance's file current again, at its new path
            """update artifacts set current = false, updated_at = now() at time zone 'utc'
               where tenant_id = $1 and project_id = $2 and instance_id = any($3::uuid[]) and current""",
            tenant_id,
            project_id,
            ids,
        )
        try:
            return [
                _model(returned(await conn.fetchrow(_UPSERT, *_args(tenant_id, project_id, item), uuid4())))
                for item in items
            ]
        except asyncpg.UniqueViolationError as err:  # a concurrent writer of another instance took a path
            raise Conflict(
                "a path is already the current file of another instance", extra={"paths": list(paths)}
            ) from err


def _args(tenant_id: UUID, project_id: UUID, a: NewArtifact) -> tuple:
    return (
        tenant_id,
        project_id,
        a.instance_id,
        a.path,
        a.content,
        content_hash(a.content),
        a.values_hash,
        a.template_id,
        a.template_name,
        a.template_version,
        a.model,
        to_jsonable_python(list(a.techniques)),
        to_jsonable_python(list(a.retrieved_snippets)),
        a.generation_id,
        a.round,
        to_jsonable_python(dict(a.checks)),
        to_jsonable_python(a.reliance) if a.reliance is not None else None,
    )


_UPSERT = f"""insert into artifacts (id, tenant_id, project_id, instance_id, path, content, content_hash,
      values_hash, template_id, template_name, template_version, model, techniques,
      retrieved_snippets, generation_id, round, checks, reliance)
    values ($18, $1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17)
    on conflict (project_id, instance_id, content_hash) do update set
      path = excluded.path, values_hash = excluded.values_hash,
      template_id = excluded.template_id, template_name = excluded.template_name,
      template_version = excluded.template_version, model = excluded.model,
      techniques = excluded.techniques, retrieved_snippets = excluded.retrieved_snippets,
      generation_id = excluded.generation_id, round = excluded.round, checks = excluded.checks,
      reliance = excluded.reliance,
      test_status = case when artifacts.values_hash = excluded.values_hash then artifacts.test_status end,
      tests = case when artifacts.values_hash = excluded.values_hash then artifacts.tests end,
      current = true, updated_at = now() at time zone 'utc'
    returning {_COLS}"""


async def record_test_result(
    pool: asyncpg.Pool, *, tenant_id: UUID, artifact_id: UUID, test_status: str, tests: dict[str, Any]
) -> ArtifactPublic:
    """Record the outcome of running the instance's tests against this artifact (the last run wins)."""
    if test_status not in TEST_STATUSES:
        raise Invalid(f"unknown test status {test_status!r}; one of: {', '.join(TEST_STATUSES)}")
    async with tenant_tx(pool, tenant_id) as conn:
        row = await conn.fetchrow(
            f"""update artifacts set test_status = $3, tests = $4, updated_at = now() at time zone 'utc'
                where tenant_id = $1 and id = $2 returning {_COLS}""",
            tenant_id,
            artifact_id,
            test_status,
            to_jsonable_python(dict(tests)),
        )
    if row is None:
        raise NotFound(f"artifact {artifact_id} not found")
    return _model(row)


async def get_artifact(pool: asyncpg.Pool, *, tenant_id: UUID, artifact_id: UUID) -> ArtifactPublic:
    async with tenant_tx(pool, tenant_id) as conn:
        row = await conn.fetchrow(
            f"select {_COLS} from artifacts where tenant_id = $1 and id = $2", tenant_id, artifact_id
        )
    if row is None:
        raise NotFound(f"artifact {artifact_id} not found")
    return _model(row)


async def list_artifacts(
    pool: asyncpg.Pool, *, tenant_id: UUID, project_id: UUID, current_only: bool = True
) -> list[ArtifactPublic]:
    """The project's artifacts by path (all of them, newest first within a path, unless current_only)."""
    async with tenant_tx(pool, tenant_id) as conn:
        await _require_project(conn, tenant_id, project_id)
        rows = await conn.fetch(
            f"""select {_COLS} from artifacts where tenant_id = $1 and project_id = $2 and ($3 = false or current)
                order by path, current desc, created_at desc, id""",
            tenant_id,
            project_id,
            current_only,
        )
    return [_model(r) for r in rows]


async def artifacts_page(
    pool: asyncpg.Pool, *, tenant_id: UUID, project_id: UUID, current_only: bool, limit: int, cursor: str | None
) -> tuple[list[ArtifactPublic], str | None]:
    """GET .../artifacts: one page of the project's artifacts, oldest first, and the next page's cursor."""
    args: list = [tenant_id, project_id, current_only]
    after = keyset(cursor, args)
    async with tenant_tx(pool, tenant_id) as conn:
        await _require_project(conn, tenant_id, project_id)
        rows = await conn.fetch(
            f"""select {_COLS} from artifacts where tenant_id = $1 and project_id = $2 and ($3 = false or current)
                and {after} order by created_at, id {limit_sql(limit, args)}""",
            *args,
        )
    rows, next_cursor = page(rows, limit)
    return [_model(r) for r in rows], next_cursor


async def _current(pool: asyncpg.Pool, tenant_id: UUID, project_id: UUID, column: str) -> dict[UUID, Any]:
    """instance_id -> `column` of its current artifact (instances with none are absent)."""
    async with tenant_tx(pool, tenant_id) as conn:
        rows = await conn.fetch(
            f"select instance_id, {column} from artifacts where tenant_id = $1 and project_id = $2 and current",
            tenant_id,
            project_id,
        )
    return {r["instance_id"]: r[column] for r in rows}


async def current_paths(pool: asyncpg.Pool, *, tenant_id: UUID, project_id: UUID) -> dict[UUID, str]:
    """instance_id -> path of its current artifact (instances with none are absent)."""
    return await _current(pool, tenant_id, project_id, "path")


async def current_values_hashes(pool: asyncpg.Pool, *, tenant_id: UUID, project_id: UUID) -> dict[UUID, str]:
    """instance_id -> values_hash of its current artifact (instances with none are absent)."""
    return await _current(pool, tenant_id, project_id, "values_hash")


async def current_test_statuses(pool: asyncpg.Pool, *, tenant_id: UUID, project_id: UUID) -> dict[UUID, str | None]:
    """instance_id -> test_status of its current artifact (None: not tested; instances with none are absent)."""
    return await _current(pool, tenant_id, project_id, "test_status")
