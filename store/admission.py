"""What admitting a tenant's model work reads and writes (api/admission.py, api/availability.py), in as
few round trips as it takes:

- `read`: the live generation workers' reports (store/model_workers.py: platform rows, visible in any
  tenant's transaction), the providers the tenant stored a key for (store/provider_keys.py) and its
  generation_concurrency (store/pipeline_settings.py), in one statement;
- `take_generation_slot`: one of the tenant's generation slots (store/leases.py) and the generation's
  row (store/generations.py), in one transaction: both or neither.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any
from uuid import UUID

import asyncpg

from models.pipeline import TenantSettings
from store import generations, leases
from store.db import tenant_tx
from store.model_workers import LIVE_WITHIN_S, WorkerReport, worker_report


@dataclass(frozen=True)
class Facts:
    reports: list[WorkerReport]  # live ones, newest first
    provider_keys: frozenset[str]  # providers with a key of the tenant's own: openai, anthropic, vllm
    generation_concurrency: int  # the tenant's setting (its default where it set none)


_READ = """
select k.providers, s.concurrency,
       w.worker_id, w.model, w.state, w.reason, w.details, w.declared, w.seen_at
from (select coalesce(array_agg(provider order by provider), '{}') as providers
        from tenant_provider_keys where tenant_id = $1) k
cross join (select (select generation_concurrency from tenant_settings where tenant_id = $1) as concurrency) s
left join lateral (
  select worker_id, model, state, reason, details, declared, seen_at from model_workers
  where seen_at >= now() - make_interval(secs => $2)
) w on true
order by w.seen_at desc, w.worker_id
"""


async def read(pool: asyncpg.Pool, *, tenant_id: UUID, within_s: float = LIVE_WITHIN_S) -> Facts:
    async with tenant_tx(pool, tenant_id) as conn:
        rows = await conn.fetch(_READ, tenant_id, float(within_s))
    first = rows[0]  # the left join keeps one row when no report is live
    concurrency = first["concurrency"]
    return Facts(
        reports=[worker_report(r) for r in rows if r["worker_id"] is not None],
        provider_keys=frozenset(first["providers"]),
        generation_concurrency=TenantSettings().generation_concurrency if concurrency is None else concurrency,
    )


async def take_generation_slot(
    pool: asyncpg.Pool,
    *,
    tenant_id: UUID,
    holder: str,
    limit: int,
    ttl_s: float,
    generation_id: UUID,
    user_id: UUID,
    model: str,
    techniques: list[str],
    request: dict[str, Any],
    project_id: UUID | None,
    instance_id: UUID | None,
) -> bool:
    """Take `holder`'s generation lease and insert the generation's row; False (nothing written) when
    all `limit` of the tenant's slots are busy."""
    async with tenant_tx(pool, tenant_id) as conn:
        if not await leases.take(conn, tenant_id=tenant_id, holder=holder, limit=limit, ttl_s=ttl_s):
            return False
        await generations.insert_generation(
            conn,
            generation_id=generation_id,
            tenant_id=tenant_id,
            user_id=user_id,
            model=model,
            techniques=techniques,
            request=request,
            project_id=project_id,
            instance_id=instance_id,
        )
    return True
