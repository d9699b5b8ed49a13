"""Knowledge base: code snippets, project knowledge, similarity search (specification sheet 3)."""

from __future__ import annotations

import logging
import os
from typing import Annotated
from uuid import UUID

from fastapi import APIRouter, Depends, Query, Response
from fastapi.responses import JSONResponse

from api import availability
from api.deps import Cursor, Limit, PoolDep, PrincipalDep, ResourcesDep
from infra.temporal import tenant_priority
from knowledge import service
from knowledge.runtime import KnowledgeRuntime
from models.common import KNOWLEDGE, Page, Role
from models.knowledge import (
    INDEX_WORKFLOW,
    EmbedderInfo,
    IndexItem,
    IndexRequest,
    IndexWorkflowInput,
    KnowledgePublic,
    KnowledgeUpsert,
    Language,
    SimilarRequest,
    SimilarResponse,
    SnippetCreate,
    SnippetPublic,
    SnippetUpdate,
    index_workflow_id,
)
from store import knowledge as knowledge_repo
from store import snippets as snippet_repo
from store import usage

log = logging.getLogger("specmill.knowledge")
router = APIRouter(tags=["knowledge base"])


def _runtime(res: ResourcesDep) -> KnowledgeRuntime:
    return res.extras["knowledge"]


RuntimeDep = Annotated[KnowledgeRuntime, Depends(_runtime)]


async def _enqueue(res: ResourcesDep, tenant_id: UUID, items: list[IndexItem], response: Response) -> None:
    """Ask the tenant's index workflow to follow these rows. The write is already committed: if
    Temporal cannot be reached it stays safe in PostgreSQL and `specmill knowledge reindex` catches up."""
    s = res.settings
    try:
        if res.temporal is None:
            raise RuntimeError("no Temporal client")
        await res.temporal.start_workflow(
            INDEX_WORKFLOW,
            IndexWorkflowInput(tenant_id=tenant_id, batch_size=s.index_batch_size),
            id=index_workflow_id(tenant_id),
            task_queue=s.queue(KNOWLEDGE),
            start_signal="enqueue",
            start_signal_args=[IndexRequest(items=items)],
            static_summary=f"knowledge index of tenant {tenant_id}",
            priority=tenant_priority(tenant_id),
        )
        response.headers["X-Specmill-Index"] = "queued"
    except Exception as err:  # noqa: BLE001 - RPCError or a lazy client that cannot connect
        log.warning("index request for %s deferred: %s", [str(i.id) for i in items], err)
        response.headers["X-Specmill-Index"] = "deferred"


@router.get("/snippets", response_model=Page[SnippetPublic])
async def list_snippets(
    pool: PoolDep,
    p: PrincipalDep,
    limit: Limit = 50,
    cursor: Cursor = None,
    language: Language | None = None,
    tag: Annotated[str | None, Query(max_length=64)] = None,
    user_id: UUID | None = None,
    q: Annotated[str | None, Query(min_length=1, max_length=200, description="Free text")] = None,
):
    items, nxt = await snippet_repo.list_snippets(
        pool, tenant_id=p.tenant_id, language=language, tag=tag, user_id=user_id, q=q, limit=limit, cursor=cursor
    )
    return Page(items=items, next_cursor=nxt)


@router.post("/snippets", response_model=SnippetPublic, status_code=201)
async def create_snippet(body: SnippetCreate, response: Response, res: ResourcesDep, p: PrincipalDep):
    snip = await snippet_repo.create_snippet(
        res.pool, tenant_id=p.tenant_id, user_id=p.user_id, body=body, max_bytes=res.settings.snippet_max_bytes
    )
    await usage.record(res.pool, tenant_id=p.tenant_id, source=f"snippet:{snip.id}", kind="snippet")
    await _enqueue(res, p.tenant_id, [IndexItem(kind="snippet", id=snip.id)], response)
    return snip


@router.get("/snippets/{snippet_id}", response_model=SnippetPublic)
async def get_snippet(snippet_id: UUID, pool: PoolDep, p: PrincipalDep):
    return await snippet_repo.get_snippet(pool, tenant_id=p.tenant_id, snippet_id=snippet_id)


@router.put("/snippets/{snippet_id}", response_model=SnippetPublic)
async def update_snippet(snippet_id: UUID, body: SnippetUpdate, response: Response, res: ResourcesDep, p: PrincipalDep):
    snip = await snippet_repo.update_snippet(
        res.pool,
        tenant_id=p.tenant_id,
        user_id=p.user_id,
        snippet_id=snippet_id,
        body=body,
        max_bytes=res.settings.snippet_max_bytes,
    )
    await _enqueue(res, p.tenant_id, [IndexItem(kind="snippet", id=snip.id)], response)
    return snip


@router.delete("/snippets/{snippet_id}", status_code=204)
async def delete_snippet(snippet_id: UUID, res: ResourcesDep, p: PrincipalDep):
    await snippet_repo.delete_snippet(res.pool, tenant_id=p.tenant_id, user_id=p.user_id, snippet_id=snippet_id)
    response = Response(status_code=204)
    await _enqueue(res, p.tenant_id, [IndexItem(kind="snippet", id=snippet_id)], response)
    return response


def _public(info: EmbedderInfo) -> EmbedderInfo:
    """What viewers and editors see of an embedder: no host paths (as GET /api/models, api/availability.py)."""
    model = info.model
    return info.model_copy(
        update={
            "model": os.path.basename(model.rstrip("/")) if model.startswith("/") else model,
            "error": availability.unpath(info.error),  # the same host-path rule as /api/models
        }
    )


@router.get("/knowledge/embedders", response_model=Page[EmbedderInfo])
async def embedders(runtime: RuntimeDep, p: PrincipalDep):
    """The configured embedders, in one page (next_cursor is null): loaded or not, and the default.
    `model` is where an embedder loads from: a host path for admins, its last part for everyone else."""
    items = runtime.info()
    return Page(items=items if p.role.at_least(Role.admin) else [_public(e) for e in items])


@router.get("/knowledge/{project_id}", response_model=Page[KnowledgePublic])
async def list_knowledge(
    project_id: UUID,
    pool: PoolDep,
    p: PrincipalDep,
    limit: Limit = 50,
    cursor: Cursor = None,
    key: Annotated[str | None, Query(max_length=200)] = None,
):
    items, nxt = await knowledge_repo.list_entries(
        pool, tenant_id=p.tenant_id, project_id=project_id, key=key, limit=limit, cursor=cursor
    )
    return Page(items=items, next_cursor=nxt)


@router.post(
    "/knowledge/{project_id}",
    response_model=KnowledgePublic,
    status_code=201,
    responses={200: {"description": "An existing key's value was updated"}},
)
async def upsert_knowledge(project_id: UUID, body: KnowledgeUpsert, res: ResourcesDep, p: PrincipalDep):
    entry, created = await knowledge_repo.upsert_entry(
        res.pool, tenant_id=p.tenant_id, user_id=p.user_id, project_id=project_id, body=body
    )
    response = JSONResponse(entry.model_dump(mode="json"), status_code=201 if created else 200)
    await _enqueue(res, p.tenant_id, [IndexItem(kind="knowledge", id=entry.id)], response)
    return response


@router.delete("/knowledge/{project_id}/{key:path}", status_code=204)  # keys may hold "/"
async def delete_knowledge(project_id: UUID, key: str, res: ResourcesDep, p: PrincipalDep):
    entry_id = await knowledge_repo.delete_entry(
        res.pool, tenant_id=p.tenant_id, user_id=p.user_id, project_id=project_id, key=key
    )
    response = Response(status_code=204)
    await _enqueue(res, p.tenant_id, [IndexItem(kind="knowledge", id=entry_id)], response)
    return response


@router.post("/similar", response_model=SimilarResponse)
async def similar(body: SimilarRequest, pool: PoolDep, runtime: RuntimeDep, p: PrincipalDep):
    return await service.similar(pool, runtime, p.tenant_id, body)
