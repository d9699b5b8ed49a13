"""The vector store through qdrant-client: a Qdrant server or cluster (QDRANT_URL), or qdrant-client's
local mode (VECTOR_STORE=local, pure Python: the baseline of make bench-kb). The embedded default is
Qdrant Edge (knowledge/edge.py), with the same methods and the same points.

One collection per embedder (`kb_<embedder>`), each point named by the id of the snippet or
knowledge entry it indexes, with a dense vector and a lexical sparse vector. Multi-tenancy follows
Qdrant's guidance: a keyword payload index on tenant_id marked `is_tenant`, and every search
filtered by tenant. Texts and metadata stay in PostgreSQL; the payload holds only what filters need.
On a server, the index's settings and each query's plan are knowledge/tuning.py's, as on Edge.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import Any
from uuid import UUID

import numpy as np
from qdrant_client import AsyncQdrantClient
from qdrant_client import models as qm

from knowledge import sparse
from knowledge.errors import VectorStoreUnavailable
from knowledge.tuning import INT8_QUANTILE, PRODUCT, Sizes, Tuning, subset_key

DENSE, LEXICAL = "dense", "lexical"
RRF_CANDIDATES = 4  # each arm of a hybrid query fetches top_k * this before fusion
RRF_K = 2  # the rank constant of reciprocal rank fusion, on both stores (Qdrant's default)
FILTER_FIELDS = ("kind", "language", "tags", "project_id")  # keyword indexes besides the tenant key
SIZES_TTL_S = 30.0  # a Qdrant server's counts, which other processes' writes change, are at most this old


@dataclass
class Point:
    id: UUID
    dense: np.ndarray
    text: str
    payload: dict[str, Any]


def collection_name(embedder: str) -> str:
    return f"kb_{embedder}"


class VectorStore:
    """`server`: a Qdrant server or cluster, which builds the collection as `tuning` says and searches with its
    per-query plan. Local mode scans every point in Python whatever it is told: neither applies there."""

    def __init__(self, client: AsyncQdrantClient, *, server: bool = False, tuning: Tuning = PRODUCT) -> None:
        self.client, self.server, self.tuning = client, server, tuning
        self.sizes = Sizes(ttl=SIZES_TTL_S)
        self._ready: set[str] = set()

    @classmethod
    def open(cls, *, url: str | None, api_key: str | None, path: str | None, tuning: Tuning = PRODUCT) -> "VectorStore":
        if url:
            return cls(AsyncQdrantClient(url=url, api_key=api_key, timeout=10), server=True, tuning=tuning)
        return cls(AsyncQdrantClient(path=path), tuning=tuning)

    async def close(self) -> None:
        await self.client.close()

    async def ensure_collection(self, embedder: str, dimension: int, *, reset_if_corrupt: bool = False) -> str:
        """The embedder's collection, created when new (a server keeps its own storage whole:
        `reset_if_corrupt` is Edge's); an existing one on a server is migrated to the tuning (`_migrate`)."""
        name = collection_name(embedder)
        if name in self._ready:
            return name
        try:
            if not await self.client.collection_exists(name):
                await self.client.create_collection(
                    name,
                    vectors_config={DENSE: qm.VectorParams(size=dimension, distance=qm.Distance.COSINE)},
                    sparse_vectors_config={LEXICAL: qm.SparseVectorParams(modifier=qm.Modifier.IDF)},
                    hnsw_config=self._hnsw(),
                    quantization_config=self._quantization(),
                    optimizers_config=qm.OptimizersConfigDiff(indexing_threshold=self.tuning.indexing_threshold_kb),
                )
            elif self.server:
                await self._migrate(name)
            keyword = qm.KeywordIndexType.KEYWORD
            for field, schema in (
                ("tenant_id", qm.KeywordIndexParams(type=keyword, is_tenant=True)),
                *((f, qm.KeywordIndexParams(type=keyword)) for f in FILTER_FIELDS),
            ):
                with warnings.catch_warnings():  # local mode notes that it ignores payload indexes
                    warnings.simplefilter("ignore", UserWarning)
                    await self.client.create_payload_index(name, field, schema)
        except Exception as err:  # noqa: BLE001 - connection and server errors alike
            raise VectorStoreUnavailable(str(err)) from err
        self._ready.add(name)
        return name

    def _hnsw(self) -> qm.HnswConfigDiff:
        t = self.tuning
        return qm.HnswConfigDiff(m=t.m, ef_construct=t.ef_construct, full_scan_threshold=t.full_scan_kb)

    def _quantization(self) -> qm.ScalarQuantization | None:
        if not self.tuning.int8:
            return None
        return qm.ScalarQuantization(
            scalar=qm.ScalarQuantizationConfig(type=qm.ScalarType.INT8, quantile=INT8_QUANTILE, always_ram=True)
        )

    async def _migrate(self, name: str) -> None:
        """An existing collection built with other settings (before make bench-kb's tuning) gets the tuning's
        HNSW and quantisation: the server rebuilds its segments in the background, from the stored vectors,
        which stay as they are, and answers from the old ones meanwhile. No reindex."""
        config = (await self.client.get_collection(name)).config
        hnsw, quantized = config.hnsw_config, config.quantization_config is not None
        t = self.tuning
        if (hnsw.m, hnsw.ef_construct, hnsw.full_scan_threshold, quantized) == (
            t.m,
            t.ef_construct,
            t.full_scan_kb,
            t.int8,
        ):
            return
        await self.client.update_collection(
            name, hnsw_config=self._hnsw(), quantization_config=self._quantization() or qm.Disabled.DISABLED
        )

    async def upsert(self, collection: str, points: list[Point]) -> None:
        if not points:
            return
        structs = [
            qm.PointStruct(
                id=str(p.id),
                payload=p.payload,
                vector={DENSE: p.dense.tolist(), LEXICAL: sparse.document_vector(p.text)},
            )
            for p in points
        ]
        await self._call(self.client.upsert(collection, points=structs, wait=True))
        self.sizes.forget(collection, {str(p.payload.get("tenant_id")) for p in points})

    async def delete(self, collection: str, ids: list[UUID], *, tenant_id: UUID) -> None:
        """Delete these points of this tenant: an id that is another tenant's point is left alone."""
        if ids:
            only = qm.Filter(must=[qm.HasIdCondition(has_id=[str(i) for i in ids]), tenant_condition(qm, tenant_id)])
            await self._call(self.client.delete(collection, points_selector=qm.FilterSelector(filter=only), wait=True))
            self.sizes.forget(collection, {str(tenant_id)})

    async def delete_tenant_except(self, collection: str, tenant_id: UUID, keep: set[UUID]) -> int:
        """Remove the tenant's points whose ids are not in `keep` (stale after a re-index)."""
        stale = [i for i in await self.point_ids(collection, tenant_id) if i not in keep]
        await self.delete(collection, stale, tenant_id=tenant_id)
        return len(stale)

    async def point_ids(self, collection: str, tenant_id: UUID) -> set[UUID]:
        ids: set[UUID] = set()
        offset = None
        while True:
            points, offset = await self._call(
                self.client.scroll(
                    collection,
                    scroll_filter=_tenant(tenant_id),
                    limit=1000,
                    offset=offset,
                    with_payload=False,
                    with_vectors=False,
                )
            )
            ids.update(UUID(str(p.id)) for p in points)
            if offset is None:
                return ids

    async def dimension(self, collection: str) -> int:
        info = await self._call(self.client.get_collection(collection))
        return info.config.params.vectors[DENSE].size

    async def count(self, collection: str, tenant_id: UUID) -> int:
        return (await self._call(self.client.count(collection, count_filter=_tenant(tenant_id), exact=True))).count

    async def search(
        self,
        collection: str,
        *,
        tenant_id: UUID,
        dense: np.ndarray,
        text: str,
        top_k: int,
        hybrid: bool,
        language: str | None = None,
        tags: list[str] | None = None,
        project_id: UUID | None = None,
        exact: bool = False,
    ) -> list[tuple[UUID, float, str]]:
        """(id, score, kind) best first. Always filtered by tenant; the dense search as `plan` says on a server
        (local mode scans every point anyway); exact: it scans every point of the tenant."""
        flt = search_filter(qm, tenant_id, language, tags, project_id)
        params = None
        if self.server:
            params = (
                qm.SearchParams(exact=True)
                if exact
                else await self.plan(collection, tenant_id, language, tags, project_id)
            )
        if hybrid:
            limit = top_k * RRF_CANDIDATES
            result = await self._call(
                self.client.query_points(
                    collection,
                    prefetch=[
                        qm.Prefetch(query=dense.tolist(), using=DENSE, filter=flt, limit=limit, params=params),
                        qm.Prefetch(query=sparse.query_vector(text), using=LEXICAL, filter=flt, limit=limit),
                    ],
                    query=qm.RrfQuery(rrf=qm.Rrf(k=RRF_K)),
                    limit=top_k,
                    with_payload=["kind"],
                )
            )
        else:
            result = await self._call(
                self.client.query_points(
                    collection,
                    query=dense.tolist(),
                    using=DENSE,
                    query_filter=flt,
                    limit=top_k,
                    with_payload=["kind"],
                    search_params=params,
                )
            )
        return [(UUID(str(p.id)), float(p.score), (p.payload or {}).get("kind", "snippet")) for p in result.points]

    async def plan(
        self,
        collection: str,
        tenant_id: UUID,
        language: str | None = None,
        tags: list[str] | None = None,
        project_id: UUID | None = None,
    ) -> qm.SearchParams:
        """The tuning's dense-search parameters for this query, as Edge's (knowledge/edge.py): from the server's
        estimate of its filtered subset and the collection's size, each cached for SIZES_TTL_S."""
        flt = search_filter(qm, tenant_id, language, tags, project_id)

        async def subset() -> int:
            return (await self._call(self.client.count(collection, count_filter=flt, exact=False))).count

        async def everyone() -> int:
            return (await self._call(self.client.get_collection(collection))).points_count or 0

        key = subset_key(language, tags, project_id)
        return await self.tuning.plan(qm, self.sizes, collection, tenant_id, key, subset, everyone)

    async def ping(self) -> None:
        await self._call(self.client.get_collections())

    async def wait_optimized(self) -> None:
        """A Qdrant server builds its indexes itself, and local mode has none: nothing to wait for."""

    def state(self) -> dict[str, Any]:
        return {}

    async def _call(self, awaitable):
        try:
            return await awaitable
        except VectorStoreUnavailable:
            raise
        except Exception as err:  # noqa: BLE001 - httpx, grpc and server errors: the store is unavailable
            raise VectorStoreUnavailable(f"{type(err).__name__}: {err}") from err


# The filters, written once for both stores: qdrant_client.models and qdrant_edge name their filter
# classes and fields alike (Filter, FieldCondition, MatchValue, MatchAny), so `types` is either module.


def tenant_condition(types, tenant_id: UUID):
    return types.FieldCondition(key="tenant_id", match=types.MatchValue(value=str(tenant_id)))


def search_filter(types, tenant_id: UUID, language: str | None, tags: list[str] | None, project_id: UUID | None):
    """The tenant's points, snippets only unless `project_id` adds that project's knowledge entries."""

    def match(key: str, value: str):
        return types.FieldCondition(key=key, match=types.MatchValue(value=value))

    must: list[Any] = [tenant_condition(types, tenant_id)]
    if language:
        must.append(match("language", language))
    if tags:
        must.append(types.FieldCondition(key="tags", match=types.MatchAny(any=list(tags))))
    snippets = match("kind", "snippet")
    if project_id is None:
        must.append(snippets)
    else:  # snippets, or this project's knowledge entries
        knowledge = types.Filter(must=[match("kind", "knowledge"), match("project_id", str(project_id))])
        must.append(types.Filter(should=[snippets, knowledge]))
    return types.Filter(must=must)


def _tenant(tenant_id: UUID) -> qm.Filter:
    return qm.Filter(must=[tenant_condition(qm, tenant_id)])
