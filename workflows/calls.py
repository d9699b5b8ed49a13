"""Activities are called through the table of models/activities.py: its name and its result type.

Everything a tenant's workflow schedules carries the tenant as its fairness key (Temporal's task-queue
fairness dispatches the keys of a queue's backlog in turn), and a tenant's sandboxed tests and model
calls hold one of its slots (store/leases.py), so one tenant's flood waits for its own share.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Awaitable
from datetime import timedelta
from typing import Any, TypeVar
from uuid import UUID

from temporalio import workflow
from temporalio.common import Priority, RetryPolicy

with workflow.unsafe.imports_passed_through():
    from models.activities import ACQUIRE_GENERATION_SLOT, RELEASE_GENERATION_SLOT, ActivityType
    from models.generation import LeaseInput

A = TypeVar("A")
R = TypeVar("R")

# Runs recorded before this patch scheduled their work with no fairness key.
FAIRNESS_PATCH = "tenant-fairness-keys"
LEASE_RETRY = RetryPolicy(initial_interval=timedelta(seconds=1), maximum_interval=timedelta(seconds=30))
LEASE_WAIT_MAX_S = 10.0
# A sandbox slot outlives one test activity's 30-minute limit; the workflow releases it sooner, and only
# a workflow that ended without releasing (terminated by an operator) leaves it to expire.
SANDBOX_LEASE_TTL_S = 3600.0


def fair(tenant_id: UUID) -> dict[str, Any]:
    """The `priority` option that names the tenant as the fairness key (nothing for older runs)."""
    if not workflow.patched(FAIRNESS_PATCH):
        return {}
    return {"priority": Priority(fairness_key=str(tenant_id))}


def execute(act: ActivityType[A, R], arg: A, *, tenant_id: UUID | None = None, **options: Any) -> Awaitable[R]:
    """`workflow.execute_activity` for one of the table's activities (an awaitable of its result); with
    `tenant_id`, dispatched under the tenant's fairness key."""
    if tenant_id is not None:
        options.update(fair(tenant_id))
    return workflow.execute_activity(act.name, arg, result_type=act.result, **options)


def _lease(act: ActivityType[LeaseInput, R], lease: LeaseInput, queue: str, summary: str) -> Awaitable[R]:
    return execute(
        act,
        lease,
        tenant_id=lease.tenant_id,
        task_queue=queue,
        start_to_close_timeout=timedelta(seconds=30),
        retry_policy=LEASE_RETRY,
        summary=summary,
    )


@contextlib.asynccontextmanager
async def tenant_slot(lease: LeaseInput, queue: str, what: str) -> AsyncIterator[None]:
    """Hold one of the tenant's slots of `lease.kind` while the body runs: wait for it on a durable timer
    (no worker slot is held meanwhile, backing off to LEASE_WAIT_MAX_S), release it after, even when the
    body fails or the run is cancelled."""
    wait = 1.0
    while not await _lease(ACQUIRE_GENERATION_SLOT, lease, queue, f"a {lease.kind} slot of the tenant: {what}"):
        await workflow.sleep(wait)
        wait = min(wait * 2, LEASE_WAIT_MAX_S)
    try:
        yield
    finally:
        await _lease(RELEASE_GENERATION_SLOT, lease, queue, f"release the tenant's {lease.kind} slot")
