"""What a run has fixed: the specs and settings it runs with, and which run a write made now reaches.

A run fixes its specs when its check reads them (`fix_snapshot`: the first run when its specs complete,
a later run as it starts) and its settings with them (a later run: when the gateway claims it,
store/runs.py claim_rerun). Both take the project's row lock, and so does every spec and setting write
(`applies_to`, first in its transaction): a write lands wholly before the snapshot (the run that is going
uses it) or wholly after (the next run does), and its answer says which.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any
from uuid import UUID

import asyncpg

from models.common import TERMINAL_STATES, AppliesTo, ProjectState
from store.db import tenant_tx
from store.errors import NotFound


async def fix_snapshot(
    pool: asyncpg.Pool,
    *,
    tenant_id: UUID,
    project_id: UUID,
    key: str,
    run_id: UUID,
    read: Callable[[], Awaitable[dict[str, Any]]],
) -> dict[str, Any]:
    """What check `key` of run `run_id` reads: the snapshot stored by an earlier attempt, else `read()`'s,
    stored, with the project marked as running on fixed specs and settings (under its row lock)."""
    async with tenant_tx(pool, tenant_id) as conn:
        if not await conn.fetchval(
            "select 1 from projects where tenant_id = $1 and id = $2 for update", tenant_id, project_id
        ):
            raise NotFound(f"project {project_id} not found")
        stored = await conn.fetchval("select result from run_snapshots where key = $1", key)
        if stored is not None:
            return stored
        result = await read()
        await conn.execute(
            "insert into run_snapshots (key, run_id, tenant_id, project_id, result) values ($1, $2, $3, $4, $5)",
            key,
            run_id,
            tenant_id,
            project_id,
            result,
        )
        await conn.execute(
            "update projects set fixed_run_id = $3 where tenant_id = $1 and id = $2", tenant_id, project_id, run_id
        )
    return result


async def unfix_snapshot(pool: asyncpg.Pool, *, tenant_id: UUID, project_id: UUID, key: str, run_id: UUID) -> None:
    """The check found problems (or failed): its snapshot is dropped and the specs are open again."""
    async with tenant_tx(pool, tenant_id) as conn:
        await conn.execute(
            "update projects set fixed_run_id = null where tenant_id = $1 and id = $2 and fixed_run_id = $3",
            tenant_id,
            project_id,
            run_id,
        )
        await conn.execute("delete from run_snapshots where key = $1", key)


async def applies_to(
    conn: asyncpg.Connection, *, tenant_id: UUID, project_id: UUID, settings: bool
) -> tuple[AppliesTo, str]:
    """Which run a spec (or, `settings`, a setting) written in the caller's transaction reaches, and a
    sentence saying so. Takes the project's row lock first (see `fix_snapshot`). A run fixes its specs
    when they are checked (the first run: when they complete; a later run: as it starts) and its
    settings with them (a later run: when it is claimed, POST .../runs)."""
    row = await conn.fetchrow(
        "select state, fixed_run_id, run_id from projects where tenant_id = $1 and id = $2 for share",
        tenant_id,
        project_id,
    )
    if row is None:
        raise NotFound(f"project {project_id} not found")
    state, what = ProjectState(row["state"]), "settings" if settings else "specs"
    if state in TERMINAL_STATES:
        return "next run", f"no run is going: the project's next run (POST .../runs) uses these {what}"
    still_open = row["fixed_run_id"] is None and (
        not settings or state in (ProjectState.initialization, ProjectState.spec_definition)
    )
    if still_open:
        return "this run", f"the run that is going has not fixed its {what} yet: it uses these"
    going = f"run {row['run_id']}" if row["run_id"] else "the run that is going"
    return "next run", f"{going} keeps the {what} it started with; the next run (POST .../runs) uses these"
