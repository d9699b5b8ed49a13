"""The embedded vector store: Qdrant Edge (`qdrant-edge-py`), Qdrant's own engine inside this process.

The same contract as knowledge.vectors.VectorStore, which keeps qdrant-client for a Qdrant server or
cluster (QDRANT_URL) and its local mode (VECTOR_STORE=local). One shard per embedder, a directory
`<EDGE_PATH>/kb_<embedder>`, each point named by the id of the snippet or knowledge entry it indexes,
with a dense vector and the lexical sparse vector (IDF modifier). tenant_id is a keyword index marked
as the tenant key, and every query, count and delete is filtered by tenant.

A shard is single-writer: the process that owns the knowledge runtime opens it (under `make run`, the
knowledge worker, which also serves the knowledge API). Edge calls block, so each one runs on a thread.
After writes the store builds its HNSW index in the background (`optimize`, one at a time, again while
writes keep coming), off the request path; `state()` says how far it is, for /health/knowledge.

The index's settings and each query's plan (exact or HNSW, and its beam) are knowledge/tuning.py's, the
same as the Qdrant-server store's; a shard built with other settings gets them when it is opened.
"""

from __future__ import annotations

import asyncio
import json
import logging
import threading
import time
from pathlib import Path
from typing import Any
from uuid import UUID

import numpy as np
import qdrant_edge as qe

from knowledge import sparse
from knowledge.errors import VectorStoreUnavailable
from knowledge.tuning import INT8_QUANTILE, PRODUCT, Sizes, Tuning, subset_key
from knowledge.vectors import (
    DENSE,
    FILTER_FIELDS,
    LEXICAL,
    RRF_CANDIDATES,
    RRF_K,
    Point,
    collection_name,
    search_filter,
    tenant_condition,
)

log = logging.getLogger("specmill.knowledge")
SCROLL_PAGE = 1000


class EdgeVectorStore:
    def __init__(self, root: Path, tuning: Tuning = PRODUCT) -> None:
        self.root, self.tuning = root, tuning
        self.sizes = Sizes(ttl=None)  # this process is the shard's only writer: its writes forget what they change
        self._shards: dict[str, qe.EdgeShard] = {}
        self._open_lock = threading.Lock()
        self._optimizing: dict[str, threading.Thread] = {}
        self._dirty: set[str] = set()
        self._state_lock = threading.Lock()
        self._optimized_at: dict[str, float] = {}
        self._errors: dict[str, str] = {}

    @classmethod
    def open(cls, root: Path, tuning: Tuning = PRODUCT) -> "EdgeVectorStore":
        root.mkdir(parents=True, exist_ok=True)
        return cls(root, tuning)

    async def close(self) -> None:
        for thread in list(self._optimizing.values()):
            await asyncio.to_thread(thread.join)
        with self._open_lock:
            for shard in self._shards.values():
                shard.flush()
                shard.close()
            self._shards.clear()

    # --- shards -------------------------------------------------------------------------------

    def _config(self, dimension: int) -> qe.EdgeConfig:
        t = self.tuning
        int8 = qe.ScalarQuantizationConfig(type=qe.ScalarType.Int8, quantile=INT8_QUANTILE, always_ram=True)
        return qe.EdgeConfig(
            vectors={DENSE: qe.EdgeVectorParams(size=dimension, distance=qe.Distance.Cosine)},
            sparse_vectors={LEXICAL: qe.EdgeSparseVectorParams(modifier=qe.Modifier.Idf)},
            hnsw_config=qe.HnswIndexConfig(m=t.m, ef_construct=t.ef_construct, full_scan_threshold=t.full_scan_kb),
            quantization_config=int8 if t.int8 else None,
            optimizers=qe.EdgeOptimizersConfig(indexing_threshold=t.indexing_threshold_kb)
            if t.indexing_threshold_kb
            else None,
        )

    def _open(self, name: str, dimension: int, reset_if_corrupt: bool) -> qe.EdgeShard:
        """The shard, created or loaded with the tuning's config. Loading applies it on open: Edge checks that the
        stored vectors fit and writes the new HNSW and quantisation settings into the shard's config; the next
        `optimize` (asked for here) rebuilds the segments built otherwise from their stored vectors, which
        stay as they are, and queries use the old segments until then. No reindex."""
        with self._open_lock:
            if name in self._shards:
                return self._shards[name]
            path = self.root / name
            config, loaded = self._config(dimension), False
            if path.exists() and any(path.iterdir()):
                try:
                    shard, loaded = qe.EdgeShard.load(str(path), config), True
                except Exception as err:  # noqa: BLE001 - the engine's words are the reason
                    if not reset_if_corrupt:
                        raise
                    aside = path.with_name(f"{name}.corrupt-{time.strftime('%Y%m%dT%H%M%S')}")
                    path.rename(aside)
                    log.error(
                        "%s does not load (%s): moved to %s, rebuilt empty; the reindex refills it", path, err, aside
                    )
                    shard = self._create(path, config)
            else:
                shard = self._create(path, config)
            self._shards[name] = shard
        if loaded:
            self._optimize_soon(name)
        return shard

    @staticmethod
    def _create(path: Path, config: qe.EdgeConfig) -> qe.EdgeShard:
        shard = qe.EdgeShard.create(str(path), config)
        shard.update(qe.UpdateOperation.create_field_index("tenant_id", qe.KeywordIndexParams(is_tenant=True)))
        for field in FILTER_FIELDS:
            shard.update(qe.UpdateOperation.create_field_index(field, qe.PayloadSchemaType.Keyword))
        return shard

    async def ensure_collection(self, embedder: str, dimension: int, *, reset_if_corrupt: bool = False) -> str:
        """The embedder's shard, opened once (created when new). One that does not load makes the store
        unavailable with the engine's reason, until a reindex (`reset_if_corrupt`) moves it aside."""
        name = collection_name(embedder)
        if name in self._shards:  # open already: every /similar asks, and needs no thread for it
            return name
        try:
            await asyncio.to_thread(self._open, name, dimension, reset_if_corrupt)
        except Exception as err:  # noqa: BLE001 - a shard that does not load: the store is unavailable
            self._errors[name] = f"{type(err).__name__}: {err}"
            raise VectorStoreUnavailable(f"the Qdrant Edge shard {name} does not open: {err}") from err
        self._errors.pop(name, None)
        return name

    def _shard(self, name: str) -> qe.EdgeShard:
        try:
            return self._shards[name]
        except KeyError:
            raise VectorStoreUnavailable(f"collection {name} is not open (ensure_collection first)") from None

    async def _run(self, fn, *args):
        try:
            return await asyncio.to_thread(fn, *args)
        except VectorStoreUnavailable:
            raise
        except Exception as err:  # noqa: BLE001 - the engine's own errors: the store is unavailable
            raise VectorStoreUnavailable(f"{type(err).__name__}: {err}") from err

    # --- writes -------------------------------------------------------------------------------

    async def upsert(self, collection: str, points: list[Point]) -> None:
        """The points, their sparse vectors computed on the same thread as the write (off the loop)."""
        if not points:
            return
        await self._run(_write, self._shard(collection), points)
        self.sizes.forget(collection, {str(p.payload.get("tenant_id")) for p in points})
        self._optimize_soon(collection)

    async def delete(self, collection: str, ids: list[UUID], *, tenant_id: UUID) -> None:
        """Delete these points of this tenant: an id that is another tenant's point is left alone."""
        if ids:
            only = qe.Filter(must=[qe.HasIdCondition(point_ids={str(i) for i in ids}), tenant_condition(qe, tenant_id)])
            await self._run(self._shard(collection).update, qe.UpdateOperation.delete_points_by_filter(only))
            self.sizes.forget(collection, {str(tenant_id)})

    async def delete_tenant_except(self, collection: str, tenant_id: UUID, keep: set[UUID]) -> int:
        """Remove the tenant's points whose ids are not in `keep` (stale after a re-index)."""
        stale = [i for i in await self.point_ids(collection, tenant_id) if i not in keep]
        await self.delete(collection, stale, tenant_id=tenant_id)
        return len(stale)

    async def point_ids(self, collection: str, tenant_id: UUID) -> set[UUID]:
        shard, ids, offset = self._shard(collection), set(), None
        while True:
            request = qe.ScrollRequest(
                offset=offset,
                limit=SCROLL_PAGE,
                filter=qe.Filter(must=[tenant_condition(qe, tenant_id)]),
                with_payload=False,
            )
            records, offset = await self._run(shard.scroll, request)
            ids.update(UUID(str(r.id)) for r in records)
            if offset is None:
                return ids

    async def dimension(self, collection: str) -> int:
        """The dense vectors' size, as the shard stored it (its edge_config.json)."""
        config = json.loads((self.root / collection / "edge_config.json").read_text())
        return int(config["vectors"][DENSE]["size"])

    # --- reads --------------------------------------------------------------------------------

    async def count(self, collection: str, tenant_id: UUID) -> int:
        request = qe.CountRequest(filter=qe.Filter(must=[tenant_condition(qe, tenant_id)]), exact=True)
        return await self._run(self._shard(collection).count, request)

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
        """(id, score, kind) best first. Always filtered by tenant; hybrid: RRF by the engine; the dense search as
        `plan` says, or exact: it scans every point of the tenant (make bench-kb's recall reference)."""
        flt = search_filter(qe, tenant_id, language, tags, project_id)
        nearest = qe.Query.Nearest(dense.astype(np.float32).tolist(), using=DENSE)
        params = (
            qe.SearchParams(exact=True) if exact else await self.plan(collection, tenant_id, language, tags, project_id)
        )
        if hybrid:
            limit = top_k * RRF_CANDIDATES
            lexical = qe.Query.Nearest(_sparse(sparse.query_vector(text)), using=LEXICAL)
            request = qe.QueryRequest(
                limit=top_k,
                prefetches=[
                    qe.Prefetch(limit=limit, query=nearest, filter=flt, params=params),
                    qe.Prefetch(limit=limit, query=lexical, filter=flt),
                ],
                query=qe.Fusion.Rrf(k=RRF_K),  # pyright: ignore[reportArgumentType] - the stub leaves Rrf out of Fusion
                with_payload=["kind"],
            )
        else:
            request = qe.QueryRequest(limit=top_k, query=nearest, filter=flt, with_payload=["kind"], params=params)
        hits = await self._run(self._shard(collection).query, request)
        return [(UUID(str(h.id)), float(h.score), (h.payload or {}).get("kind", "snippet")) for h in hits]

    async def plan(
        self,
        collection: str,
        tenant_id: UUID,
        language: str | None = None,
        tags: list[str] | None = None,
        project_id: UUID | None = None,
    ) -> qe.SearchParams:
        """The tuning's dense-search parameters for this query: from the size of its filtered subset (the engine's
        estimate from the payload indexes, about 0.02 ms) and the shard's, cached until a write through this
        store changes them."""
        shard = self._shard(collection)
        flt = search_filter(qe, tenant_id, language, tags, project_id)

        async def subset() -> int:
            return await self._run(shard.count, qe.CountRequest(filter=flt, exact=False))

        async def everyone() -> int:
            return (await self._run(shard.info)).points_count

        key = subset_key(language, tags, project_id)
        return await self.tuning.plan(qe, self.sizes, collection, tenant_id, key, subset, everyone)

    async def ping(self) -> None:
        if self._errors:
            raise VectorStoreUnavailable("; ".join(f"{k}: {v}" for k, v in self._errors.items()))
        for shard in list(self._shards.values()):
            await self._run(shard.info)

    # --- the HNSW index, off the request path -------------------------------------------------

    def _optimize_soon(self, name: str) -> None:
        """Build the index of `name` on a background thread; a write during a build asks for another."""
        with self._state_lock:
            self._dirty.add(name)
            if name in self._optimizing:
                return
            thread = threading.Thread(
                target=self._optimize_loop, args=(name,), name=f"edge-optimize-{name}", daemon=True
            )
            self._optimizing[name] = thread
        thread.start()

    def _optimize_loop(self, name: str) -> None:
        while True:
            with self._state_lock:
                if name not in self._dirty:
                    del self._optimizing[name]
                    return
                self._dirty.discard(name)
            started = time.monotonic()
            try:
                changed = self._shards[name].optimize()
                self._shards[name].flush()
            except Exception as err:  # noqa: BLE001 - reported by state(); the next write tries again
                log.error("optimizing %s failed: %s", name, err)
                self._errors[name] = f"optimize: {type(err).__name__}: {err}"
                continue
            self._optimized_at[name] = time.time()
            if changed:
                log.info("%s: HNSW index built in %.1f s", name, time.monotonic() - started)

    async def wait_optimized(self) -> None:
        """Until no index build is running or asked for (bench and tests)."""
        while True:
            with self._state_lock:
                threads = list(self._optimizing.values())
            if not threads:
                return
            for thread in threads:
                await asyncio.to_thread(thread.join)

    def state(self) -> dict[str, Any]:
        """Each open shard: points, indexed vectors, segments, whether an index build is running."""
        out: dict[str, Any] = {}
        for name, shard in list(self._shards.items()):
            info = shard.info()
            out[name] = {
                "points": info.points_count,
                "indexed_vectors": info.indexed_vectors_count,
                "segments": info.segments_count,
                "optimizing": name in self._optimizing,
                "optimized_at": self._optimized_at.get(name),
            }
        return out


def _write(shard: qe.EdgeShard, points: list[Point]) -> None:
    edge_points = [
        qe.Point(
            id=str(p.id),
            vector={DENSE: p.dense.astype(np.float32).tolist(), LEXICAL: _sparse(sparse.document_vector(p.text))},
            payload=p.payload,
        )
        for p in points
    ]
    shard.update(qe.UpdateOperation.upsert_points(edge_points))


def _sparse(vector) -> qe.SparseVector:
    return qe.SparseVector(indices=list(vector.indices), values=list(vector.values))
