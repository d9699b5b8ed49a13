"""Knowledge worker activities (task queue `knowledge`): embedding and index maintenance."""

from __future__ import annotations

import time

import asyncpg
from pydantic import ValidationError
from temporalio import activity
from temporalio.exceptions import ApplicationError

from activities.errors import permanent_failures
from infra import metrics
from knowledge import service
from knowledge.errors import VectorStoreUnavailable
from knowledge.runtime import KnowledgeRuntime
from models.activities import (
    INDEX_ITEMS,
    LIST_TENANT_ITEMS,
    PRUNE_TENANT_POINTS,
    PUBLISH_GENERATED,
    RETRIEVE_REFERENCES,
)
from models.generation import Reference, RetrieveInput
from models.knowledge import (
    IndexInput,
    IndexItem,
    IndexResult,
    ReindexPage,
    ReindexPageInput,
    SimilarRequest,
    SnippetCreate,
)
from models.orchestrator import PublishInput, PublishResult, generated_snippet_id
from store import artifacts, snippets, usage
from store.errors import Invalid


class KnowledgeActivities:
    def __init__(self, pool: asyncpg.Pool, runtime: KnowledgeRuntime) -> None:
        self._pool, self._runtime = pool, runtime

    @activity.defn(name=INDEX_ITEMS.name)
    @permanent_failures
    async def index_items(self, inp: IndexInput) -> IndexResult:
        """Make the index match the database for these items; heartbeats after each encoded batch."""
        started = time.perf_counter()
        try:
            out = await service.index_items(
                self._pool, self._runtime, inp.tenant_id, inp.items, heartbeat=lambda done: activity.heartbeat(done)
            )
        except VectorStoreUnavailable as err:  # retried by Temporal until Qdrant is back
            raise ApplicationError(f"vector store unavailable: {err}", type="VectorStoreUnavailable") from err
        kinds = {item.kind for item in inp.items}
        kind = next(iter(kinds)) if len(kinds) == 1 else "mixed"
        metrics.INDEXED.labels(kind).inc(out.upserted)
        metrics.INDEX_SECONDS.labels(kind).observe(time.perf_counter() - started)
        if out.upserted:
            info = activity.info()  # a retry records the same key: counted once
            await usage.record(
                self._pool,
                tenant_id=inp.tenant_id,
                source=f"index:{info.workflow_id}:{info.activity_id}",
                kind="embedding",
                units=out.upserted,
            )
        return out

    @activity.defn(name=LIST_TENANT_ITEMS.name)
    @permanent_failures
    async def list_tenant_items(self, inp: ReindexPageInput) -> ReindexPage:
        """A page of the tenant's rows to re-index. The first page first opens every embedder's collection,
        moving aside a shard that does not load (it is rebuilt empty, and the reindexes refill it)."""
        if inp.after is None:
            try:
                for embedder in self._runtime.loaded():
                    await self._runtime.store.ensure_collection(
                        embedder.name, embedder.dimension, reset_if_corrupt=True
                    )
            except VectorStoreUnavailable as err:
                raise ApplicationError(f"vector store unavailable: {err}", type="VectorStoreUnavailable") from err
        items = await snippets.tenant_items(self._pool, tenant_id=inp.tenant_id, after=inp.after, limit=inp.limit)
        return ReindexPage(items=items, last=items[-1].id if items else None)

    @activity.defn(name=PRUNE_TENANT_POINTS.name)
    @permanent_failures
    async def prune_tenant_points(self, inp: ReindexPageInput) -> int:
        """After a re-index: delete the tenant's points whose rows no longer exist."""
        keep, after = set(), None
        while True:
            page = await snippets.tenant_items(self._pool, tenant_id=inp.tenant_id, after=after, limit=5000)
            keep |= {i.id for i in page}
            if len(page) < 5000:
                break
            after = page[-1].id
            activity.heartbeat(len(keep))
        removed = 0
        try:
            for embedder in self._runtime.loaded():
                name = await self._runtime.store.ensure_collection(embedder.name, embedder.dimension)
                removed += await self._runtime.store.delete_tenant_except(name, inp.tenant_id, keep)
        except VectorStoreUnavailable as err:
            raise ApplicationError(f"vector store unavailable: {err}", type="VectorStoreUnavailable") from err
        return removed

    @activity.defn(name=PUBLISH_GENERATED.name)
    @permanent_failures
    async def publish_generated(self, inp: PublishInput) -> PublishResult:
        """Generated code that passed its tests becomes a snippet of the tenant (tagged `generated`),
        indexed at once: knowledge.updated goes out with each new row, and a retry adds nothing."""
        ids, max_bytes = [], self._runtime.settings.snippet_max_bytes
        for artifact_id in inp.artifact_ids:
            art = await artifacts.get_artifact(self._pool, tenant_id=inp.tenant_id, artifact_id=artifact_id)
            try:
                body = SnippetCreate(
                    language="python",
                    content=art.content,
                    tags=["generated", f"project:{inp.project_id}"],
                    description=f"{art.path}: generated from {art.template_name} "
                    f"{art.template_version} by {art.model}, tests passed "
                    f"(project {inp.project_id})",
                )
                snip = await snippets.create_snippet(
                    self._pool,
                    tenant_id=inp.tenant_id,
                    user_id=inp.user_id,
                    body=body,
                    max_bytes=max_bytes,
                    snippet_id=generated_snippet_id(artifact_id),
                )
            except (Invalid, ValidationError) as err:  # e.g. larger than SNIPPET_MAX_BYTES: it stays an artifact only
                activity.logger.info("artifact %s not published: %s", artifact_id, err)
                continue
            ids.append(snip.id)
        if ids:
            await self.index_items(
                IndexInput(tenant_id=inp.tenant_id, items=[IndexItem(kind="snippet", id=i) for i in ids])
            )
        return PublishResult(snippet_ids=ids)

    @activity.defn(name=RETRIEVE_REFERENCES.name)
    @permanent_failures
    async def retrieve_references(self, inp: RetrieveInput) -> list[Reference]:
        """The tenant's snippets most like `query` (hybrid search), for retrieval augmentation."""
        try:
            found = await service.similar(
                self._pool, self._runtime, inp.tenant_id, SimilarRequest(query=inp.query, top_k=inp.top_k)
            )
        except VectorStoreUnavailable as err:
            raise ApplicationError(f"vector store unavailable: {err}", type="VectorStoreUnavailable") from err
        return [Reference(id=hit.id, content=hit.content, score=hit.score) for hit in found.items]
