"""Indexing and similarity search: PostgreSQL is the source of truth, the index follows it.

Indexing is state-based: given ids, it reads their current rows and makes the index match (upsert
what exists, delete what does not), so it is idempotent, order-independent and safe to retry.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from uuid import UUID

import asyncpg

from knowledge.runtime import KnowledgeRuntime
from models.knowledge import IndexItem, IndexResult, SimilarHit, SimilarRequest, SimilarResponse
from store import knowledge as knowledge_repo
from store import snippets as snippet_repo
from store.errors import Invalid
from store.projects import get_project


def snippet_text(description: str | None, content: str) -> str:
    return f"{description}\n\n{content}" if description else content


def knowledge_text(key: str, value) -> str:
    return f"{key}\n{json.dumps(value, ensure_ascii=False, sort_keys=True)}"


async def index_items(
    pool: asyncpg.Pool,
    runtime: KnowledgeRuntime,
    tenant_id: UUID,
    items: list[IndexItem],
    heartbeat: Callable[[int], None] = lambda done: None,
) -> IndexResult:
    snippets = await snippet_repo.get_snippets(
        pool, tenant_id=tenant_id, ids=[i.id for i in items if i.kind == "snippet"]
    )
    entries = await knowledge_repo.get_entries(
        pool, tenant_id=tenant_id, ids=[i.id for i in items if i.kind == "knowledge"]
    )
    present: list[tuple[UUID, str, dict]] = []
    for s in snippets.values():
        present.append(
            (
                s.id,
                snippet_text(s.description, s.content),
                {"tenant_id": str(tenant_id), "kind": "snippet", "language": s.language, "tags": s.tags or []},
            )
        )
    for e in entries.values():
        present.append(
            (
                e.id,
                knowledge_text(e.key, e.value),
                {
                    "tenant_id": str(tenant_id),
                    "kind": "knowledge",
                    "language": "json",
                    "tags": [],
                    "project_id": str(e.project_id),
                },
            )
        )
    absent = [i.id for i in items if i.id not in snippets and i.id not in entries]
    # Texts of similar length encode together: a batch is padded to its longest text, so mixing a
    # long snippet with short ones wastes most of the batch (sentence-transformers sorts the same way).
    present.sort(key=lambda p: len(p[1]))
    from knowledge.vectors import Point  # qdrant-client: only in the process that owns the store

    batch = runtime.settings.embedding_batch_size
    done = 0
    for embedder in runtime.loaded():
        collection = await runtime.store.ensure_collection(embedder.name, embedder.dimension)
        writing = None  # the previous batch's upsert, overlapping this batch's encoding
        try:
            for start in range(0, len(present), batch):
                chunk = present[start : start + batch]
                vectors = await runtime.encode(embedder.name, [text for _, text, _ in chunk])
                points = [
                    Point(pid, vec, text, payload) for (pid, text, payload), vec in zip(chunk, vectors, strict=True)
                ]
                if writing is not None:
                    await writing
                    heartbeat(done)
                writing = asyncio.ensure_future(runtime.store.upsert(collection, points))
                done += len(chunk)
            if writing is not None:
                await writing
                heartbeat(done)
        finally:
            if writing is not None and not writing.done():  # an error left the last write going: let it end
                await asyncio.gather(writing, return_exceptions=True)
        await runtime.store.delete(collection, absent, tenant_id=tenant_id)
    return IndexResult(upserted=len(present), deleted=len(absent))


async def similar(
    pool: asyncpg.Pool, runtime: KnowledgeRuntime, tenant_id: UUID, req: SimilarRequest
) -> SimilarResponse:
    name = req.embedder or runtime.default
    if name not in runtime.specs:
        raise Invalid(f"unknown embedder {name!r}; configured: {', '.join(runtime.specs)}")
    if req.project_id is not None:
        await get_project(pool, tenant_id=tenant_id, project_id=req.project_id)  # NotFound: another tenant's too
    embedder = runtime.embedder(name)
    collection = await runtime.store.ensure_collection(name, embedder.dimension)
    vector = await runtime.encode_query(name, req.query)
    hits = await runtime.store.search(
        collection,
        tenant_id=tenant_id,
        dense=vector,
        text=req.query,
        top_k=req.top_k,
        hybrid=req.mode == "hybrid",
        language=req.language,
        tags=req.tags,
        project_id=req.project_id,
    )
    snippets = await snippet_repo.get_snippets(pool, tenant_id=tenant_id, ids=[i for i, _, k in hits if k == "snippet"])
    entries = await knowledge_repo.get_entries(
        pool, tenant_id=tenant_id, ids=[i for i, _, k in hits if k == "knowledge"]
    )
    results: list[SimilarHit] = []
    for pid, score, _kind in hits:  # a row deleted since it was indexed is skipped: PostgreSQL decides
        if pid in snippets:
            s = snippets[pid]
            results.append(
                SimilarHit(
                    id=pid,
                    score=score,
                    language=s.language,
                    description=s.description,
                    content=s.content,
                    tags=s.tags or [],
                )
            )
        elif pid in entries:
            e = entries[pid]
            results.append(
                SimilarHit(
                    id=pid,
                    score=score,
                    kind="knowledge",
                    language="json",
                    description=e.key,
                    content=json.dumps(e.value, ensure_ascii=False),
                    tags=[],
                )
            )
    return SimilarResponse(items=results, mode=req.mode, embedder=name)
