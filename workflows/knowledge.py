"""Knowledge indexing workflows (task queue `knowledge`).

KnowledgeIndexWorkflow: one per tenant (`knowledge-index-<tenant>`), fed by signal-with-start from
every write; it batches the ids it is sent and indexes them, retrying while Qdrant is away, so the
index catches up by itself. KnowledgeReindexWorkflow rebuilds a tenant's vectors from PostgreSQL.
"""

from __future__ import annotations

from datetime import timedelta

from temporalio import workflow
from temporalio.common import RetryPolicy

from workflows.calls import execute

with workflow.unsafe.imports_passed_through():
    from models.activities import INDEX_ITEMS, LIST_TENANT_ITEMS, PRUNE_TENANT_POINTS
    from models.knowledge import (
        INDEX_WORKFLOW,
        REINDEX_WORKFLOW,
        IndexInput,
        IndexItem,
        IndexRequest,
        IndexWorkflowInput,
        ReindexInput,
        ReindexPageInput,
        ReindexResult,
    )

# Until Qdrant answers again: no attempt limit, backing off to one try a minute.
INDEX_RETRY = RetryPolicy(
    initial_interval=timedelta(seconds=1), backoff_coefficient=2.0, maximum_interval=timedelta(seconds=60)
)
IDLE = timedelta(hours=1)
BATCHES_BEFORE_CONTINUE = 500


def _index(inp: IndexInput):
    return execute(
        INDEX_ITEMS,
        inp,
        tenant_id=inp.tenant_id,
        start_to_close_timeout=timedelta(minutes=10),
        heartbeat_timeout=timedelta(seconds=60),
        retry_policy=INDEX_RETRY,
        summary=f"index {len(inp.items)} item(s)",
    )


@workflow.defn(name=INDEX_WORKFLOW)
class KnowledgeIndexWorkflow:
    @workflow.init
    def __init__(self, inp: IndexWorkflowInput) -> None:
        self._pending: dict[str, IndexItem] = {str(i.id): i for i in inp.pending}

    @workflow.signal(name="enqueue")
    def enqueue(self, req: IndexRequest) -> None:
        for item in req.items:
            self._pending[str(item.id)] = item

    @workflow.query(name="pending")
    def pending(self) -> int:
        return len(self._pending)

    @workflow.run
    async def run(self, inp: IndexWorkflowInput) -> None:
        for _ in range(BATCHES_BEFORE_CONTINUE):
            try:
                await workflow.wait_condition(lambda: bool(self._pending), timeout=IDLE)
            except TimeoutError:
                return  # idle for an hour: the next write starts a fresh run
            batch = [self._pending.pop(key) for key in list(self._pending)[: inp.batch_size]]
            await _index(IndexInput(tenant_id=inp.tenant_id, items=batch))
        await workflow.wait_condition(workflow.all_handlers_finished)
        workflow.continue_as_new(
            IndexWorkflowInput(tenant_id=inp.tenant_id, batch_size=inp.batch_size, pending=list(self._pending.values()))
        )


@workflow.defn(name=REINDEX_WORKFLOW)
class KnowledgeReindexWorkflow:
    """Rebuild one tenant's vectors: every row re-indexed page by page, then stale points pruned."""

    def __init__(self) -> None:
        self._indexed = 0

    @workflow.query(name="progress")
    def progress(self) -> int:
        return self._indexed

    @workflow.run
    async def run(self, inp: ReindexInput) -> ReindexResult:
        after = None
        while True:
            page = await execute(
                LIST_TENANT_ITEMS,
                ReindexPageInput(tenant_id=inp.tenant_id, after=after, limit=256),
                tenant_id=inp.tenant_id,
                start_to_close_timeout=timedelta(seconds=60),
                retry_policy=RetryPolicy(maximum_interval=timedelta(seconds=30)),
                summary="list rows",
            )
            if not page.items:
                break
            await _index(IndexInput(tenant_id=inp.tenant_id, items=page.items))
            self._indexed += len(page.items)
            after = page.last
        removed = await execute(
            PRUNE_TENANT_POINTS,
            ReindexPageInput(tenant_id=inp.tenant_id),
            tenant_id=inp.tenant_id,
            start_to_close_timeout=timedelta(minutes=10),
            heartbeat_timeout=timedelta(seconds=60),
            retry_policy=INDEX_RETRY,
            summary="prune stale points",
        )
        return ReindexResult(indexed=self._indexed, removed=removed)
