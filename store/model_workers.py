"""Generation workers' reports of their models: one row per (worker, model), refreshed by the worker,
with what the model's backend declares of itself (models/availability.py): the gateway's whole view of
its models (api/availability.py).

Platform data, not a tenant's: it is read and written outside any tenant context (plain_tx), and the
table's one RLS policy lets the application role see every row. Liveness is judged on the database's
clock (seen_at is set with now() by the writer and compared with now() by the reader).
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import asyncpg

from models.availability import ModelDeclaration
from store.db import plain_tx

REPORT_INTERVAL_S = 15.0  # a generation worker reports its models this often (workers/queues.py)
LIVE_WITHIN_S = 3 * REPORT_INTERVAL_S  # a report counts (GET /api/models) while this recent
PRUNE_AFTER_S = 24 * 3600  # rows of workers that died without cleaning up are deleted after a day


@dataclass(frozen=True)
class ModelReport:
    """What one worker says of one model (a ModelStatus without its backend and model id)."""

    model: str  # the seed model name: local_llama, deepseek_8b, openai_api, anthropic_api
    state: str  # loaded | available | unavailable
    reason: str | None = None
    details: dict[str, Any] = field(default_factory=dict)
    declared: ModelDeclaration | None = None  # what its backend declares (codegen/base.py: declaration)


@dataclass(frozen=True)
class WorkerReport(ModelReport):
    worker_id: str = ""
    seen_at: datetime | None = None


def _json_safe(details: dict[str, Any]) -> dict[str, Any]:
    """The details as JSON can store them (a path or a dtype becomes its string)."""
    return json.loads(json.dumps(details or {}, default=str))


async def report(pool: asyncpg.Pool, *, worker_id: str, reports: Iterable[ModelReport]) -> None:
    """Upsert this worker's row for each model (seen now), and prune rows nobody refreshed for a day."""
    rows = [
        (
            worker_id,
            r.model,
            r.state,
            r.reason,
            _json_safe(r.details),
            None if r.declared is None else r.declared.model_dump(mode="json"),
        )
        for r in reports
    ]
    async with plain_tx(pool) as conn:
        await conn.executemany(
            """insert into model_workers (worker_id, model, state, reason, details, declared, seen_at)
               values ($1, $2, $3, $4, $5, $6, now())
               on conflict (worker_id, model) do update
                 set state = excluded.state, reason = excluded.reason, details = excluded.details,
                     declared = excluded.declared, seen_at = excluded.seen_at""",
            rows,
        )
        await conn.execute(
            "delete from model_workers where seen_at < now() - make_interval(secs => $1)", float(PRUNE_AFTER_S)
        )


async def forget(pool: asyncpg.Pool, *, worker_id: str) -> int:
    """Delete every row of this worker (its clean shutdown); return how many there were."""
    async with plain_tx(pool) as conn:
        done = await conn.execute("delete from model_workers where worker_id = $1", worker_id)
    return int(done.split()[-1])


LIVE_SQL = """select worker_id, model, state, reason, details, declared, seen_at from model_workers
               where seen_at >= now() - make_interval(secs => $1) and ($2::text is null or model = $2)
               order by seen_at desc, worker_id"""


async def live(pool: asyncpg.Pool, *, within_s: float, model: str | None = None) -> list[WorkerReport]:
    """Reports seen within the last `within_s` seconds (of one model, or all), newest first."""
    async with plain_tx(pool) as conn:
        rows = await conn.fetch(LIVE_SQL, float(within_s), model)
    return [worker_report(r) for r in rows]


def worker_report(row: asyncpg.Record | dict[str, Any]) -> WorkerReport:
    """A row of LIVE_SQL's (or of another statement's with its columns) as a report."""
    declared = row["declared"]
    return WorkerReport(
        model=row["model"],
        state=row["state"],
        reason=row["reason"],
        details=row["details"] or {},
        declared=None if declared is None else ModelDeclaration.model_validate(declared),
        worker_id=row["worker_id"],
        seen_at=row["seen_at"],
    )
