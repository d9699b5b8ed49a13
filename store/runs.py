"""Runs of a project: one row per Temporal run of its workflow.

The gateway claims a rerun (`claim_rerun`: the project leaves its terminal state before the run starts,
so two reruns cannot both start and GET never shows the last run's ending) and inserts the row once
Temporal gave the run its id (`started`); the workflow's record_project_state activity upserts the same
row on each transition (`on_transition`), so a gateway that died in between loses nothing.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any
from uuid import UUID

import asyncpg

from models.common import TERMINAL_STATES, ProjectState
from models.orchestrator import RecordProgressInput, RecordStateInput, RunPublic
from models.outcome import Outcome
from models.pipeline import EffectiveSettings
from models.progress import RunProgress
from store import leases, pipeline_settings
from store.db import returned, tenant_tx
from store.errors import Conflict, NotFound
from store.paging import keyset, page

_COLS = (
    "id, project_id, scope, instance_ids, state, settings, outcome, reason, created_at, updated_at, ended_at,"
    " extract(epoch from ended_at - created_at)::float8 as duration_s, trace_id, progress"
)


def _model(row: asyncpg.Record) -> RunPublic:
    run = RunPublic.model_validate(dict(row))
    return run if run.progress is None else run.model_copy(update={"progress": shown_progress(run.progress)})


def shown_progress(progress: RunProgress) -> RunProgress:
    """A stored progress as the API shows it now (a running run's elapsed time goes on)."""
    return progress.read_at(datetime.now(UTC))


async def claim_rerun(
    pool: asyncpg.Pool, *, tenant_id: UUID, project_id: UUID, max_running: int
) -> tuple[ProjectState, UUID | None, EffectiveSettings]:
    """Move a project that has ended into code_generation for its next run; its last state and run, and
    the settings the run takes, read under the same lock (a setting written after reaches the next run).
    Its specs are open until the run's check reads them (`fix_snapshot`).

    Conflict (with the running run's id) when it has not ended: one run at a time. Busy when the tenant
    already runs `max_running` other projects."""
    async with tenant_tx(pool, tenant_id) as conn:
        row = await conn.fetchrow(
            "select state, run_id from projects where tenant_id = $1 and id = $2 for update", tenant_id, project_id
        )
        if row is None:
            raise NotFound(f"project {project_id} not found")
        state = ProjectState(row["state"])
        if state not in TERMINAL_STATES:
            raise Conflict(
                f"project is {state.value}: a run is going; start another once it has ended",
                extra={"state": state.value, "run_id": str(row["run_id"]) if row["run_id"] else None},
            )
        await leases.check_run_slot(conn, tenant_id=tenant_id, project_id=project_id, limit=max_running)
        await conn.execute(
            "update projects set state = $3, reason = null, fixed_run_id = null, updated_at = now() at time zone 'utc'"
            " where tenant_id = $1 and id = $2",
            tenant_id,
            project_id,
            ProjectState.code_generation.value,
        )
        settings = await pipeline_settings.effective_in(conn, tenant_id, project_id)
    return state, row["run_id"], settings


async def release_rerun(
    pool: asyncpg.Pool, *, tenant_id: UUID, project_id: UUID, state: ProjectState, run_id: UUID | None
) -> None:
    """The run could not start: the project goes back to the state (and run) it had."""
    async with tenant_tx(pool, tenant_id) as conn:
        await conn.execute(
            "update projects set state = $3, run_id = $4 where tenant_id = $1 and id = $2 and state = $5",
            tenant_id,
            project_id,
            state.value,
            run_id,
            ProjectState.code_generation.value,
        )


async def started(
    pool: asyncpg.Pool,
    *,
    tenant_id: UUID,
    project_id: UUID,
    run_id: UUID,
    scope: str,
    state: ProjectState,
    instance_ids: list[UUID] | None,
    settings: dict[str, Any] | None = None,
    trace_id: str | None = None,
) -> RunPublic:
    """The row of a run Temporal has just started, with the settings it was given (the activity may have
    made it first: then it stays). The project's row is locked first, as record_state locks it, so the
    two never deadlock."""
    async with tenant_tx(pool, tenant_id) as conn:
        await conn.execute("select 1 from projects where tenant_id = $1 and id = $2 for update", tenant_id, project_id)
        await conn.execute(
            """insert into project_runs (id, tenant_id, project_id, scope, instance_ids, state, trace_id, settings)
               values ($1, $2, $3, $4, $5, $6, $7, $8)
               on conflict (id) do update
                 set instance_ids = coalesce(project_runs.instance_ids, excluded.instance_ids),
                     trace_id = coalesce(project_runs.trace_id, excluded.trace_id),
                     settings = coalesce(project_runs.settings, excluded.settings)""",
            run_id,
            tenant_id,
            project_id,
            scope,
            instance_ids,
            state.value,
            trace_id,
            settings,
        )
        await conn.execute(
            "update projects set run_id = $3 where tenant_id = $1 and id = $2 and run_id is distinct from $3",
            tenant_id,
            project_id,
            run_id,
        )
        row = await conn.fetchrow(f"select {_COLS} from project_runs where id = $1", run_id)
    return _model(returned(row))


async def on_transition(conn: asyncpg.Connection, inp: RecordStateInput) -> None:
    """Inside record_state's transaction, after a fresh transition: the run's row and the project's
    latest run, reason and outcome. Runs recorded before runs existed (no run id) have no row."""
    try:
        run_id = UUID(inp.run_id)
    except ValueError:
        return
    ended = inp.to_state in TERMINAL_STATES
    await conn.execute(
        """insert into project_runs
             (id, tenant_id, project_id, scope, state, settings, outcome, reason, ended_at, progress)
           values ($1, $2, $3, $4, $5, $6, $7, $8, case when $9 then now() at time zone 'utc' end, $10)
           on conflict (id) do update set state = excluded.state,
             settings = coalesce(excluded.settings, project_runs.settings),
             outcome = coalesce(excluded.outcome, project_runs.outcome),
             reason = case when $9 then excluded.reason else project_runs.reason end,
             ended_at = coalesce(project_runs.ended_at, excluded.ended_at),
             progress = case when excluded.progress is not null  -- a transition's full record, if newer
               and coalesce((project_runs.progress->>'seq')::int, 0) < (excluded.progress->>'seq')::int
               then excluded.progress else project_runs.progress end,
             updated_at = now() at time zone 'utc'""",
        run_id,
        inp.tenant_id,
        inp.project_id,
        inp.scope or "initial",
        inp.to_state.value,
        inp.settings.model_dump(mode="json") if inp.settings else None,
        inp.outcome.model_dump(mode="json") if inp.outcome else None,
        inp.reason if ended else None,
        ended,
        inp.progress.model_dump(mode="json") if inp.progress else None,
    )
    if not ended:
        await conn.execute(
            "update projects set run_id = $3 where tenant_id = $1 and id = $2", inp.tenant_id, inp.project_id, run_id
        )
        return
    previous = await conn.fetchval(
        "select outcome from projects where tenant_id = $1 and id = $2", inp.tenant_id, inp.project_id
    )
    await conn.execute(
        "update projects set run_id = $3, reason = $4, outcome = $5 where tenant_id = $1 and id = $2",
        inp.tenant_id,
        inp.project_id,
        run_id,
        inp.reason,
        _project_outcome(inp.outcome, previous).model_dump(mode="json") if inp.outcome else None,
    )


async def record_progress(conn: asyncpg.Connection, inp: RecordProgressInput) -> RunProgress | None:
    """The run's progress with the workflow's record laid over it (`RunProgress.merged`: records may land
    in any order, and carry only what changed); None when it changes nothing (a retry)."""
    run_id = UUID(inp.run_id)
    stored = await conn.fetchval(
        "select progress from project_runs where tenant_id = $1 and id = $2 for update", inp.tenant_id, run_id
    )
    current = RunProgress.model_validate(stored) if stored is not None else None
    merged = current.merged(inp.progress) if current is not None else inp.progress
    if merged == current:
        return None
    await conn.execute(
        "update project_runs set progress = $3, updated_at = now() at time zone 'utc' where tenant_id = $1 and id = $2",
        inp.tenant_id,
        run_id,
        merged.model_dump(mode="json"),
    )
    return merged


def _project_outcome(run: Outcome, previous: dict | None) -> Outcome:
    """The project's outcome: this run's instances, then those it did not run as an earlier run left them."""
    if not previous:
        return run
    ran = {i.instance_id for i in run.instances}
    kept = [i for i in Outcome.model_validate(previous).instances if i.instance_id not in ran]
    return run.model_copy(update={"instances": [*run.instances, *kept]})


async def list_runs(
    pool: asyncpg.Pool, *, tenant_id: UUID, project_id: UUID, limit: int, cursor: str | None
) -> tuple[list[RunPublic], str | None]:
    args: list = [tenant_id, project_id]
    after = keyset(cursor, args)
    args.append(limit + 1)
    async with tenant_tx(pool, tenant_id) as conn:
        rows = await conn.fetch(
            f"""select {_COLS} from project_runs where tenant_id = $1 and project_id = $2 and {after}
                order by created_at, id limit ${len(args)}""",
            *args,
        )
    rows, nxt = page(rows, limit)
    return [_model(r) for r in rows], nxt


async def get_run(pool: asyncpg.Pool, *, tenant_id: UUID, project_id: UUID, run_id: UUID) -> RunPublic:
    async with tenant_tx(pool, tenant_id) as conn:
        row = await conn.fetchrow(
            f"select {_COLS} from project_runs where tenant_id = $1 and project_id = $2 and id = $3",
            tenant_id,
            project_id,
            run_id,
        )
    if row is None:
        raise NotFound(f"run {run_id} not found")
    return _model(row)
