"""One contract, two stores: Qdrant Edge (the embedded default) and qdrant-client (local mode here, the
stand-in for a Qdrant server, since no server binary runs on this machine). The same calls, the same
answers: tenancy, filters, dense and hybrid search, idempotent writes, deletes, persistence. Then the
tuning (knowledge/tuning.py) on Edge: the per-query plan is the one used, and a collection built with the
settings from before it is migrated on open, keeping its vectors."""

from __future__ import annotations

import json
import uuid
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import qdrant_edge as qe
from qdrant_client import models as qm

from knowledge.edge import EdgeVectorStore
from knowledge.errors import VectorStoreUnavailable
from knowledge.tuning import BASELINE, PRODUCT, Tuning
from knowledge.vectors import DENSE, Point, VectorStore

DIM = 16


def _open(kind: str, root: Path):
    if kind == "edge":
        return EdgeVectorStore.open(root / "edge")
    return VectorStore.open(url=None, api_key=None, path=str(root / "local"))


@pytest.fixture(params=["edge", "local"])
async def store(request, tmp_path):
    s = _open(request.param, tmp_path)
    yield s
    await s.close()


def _unit(seed: int) -> np.ndarray:
    v = np.random.default_rng(seed).normal(size=DIM).astype(np.float32)
    return v / np.linalg.norm(v)


def _point(tenant, seed: int, text: str = "", **payload) -> Point:
    return Point(
        id=uuid.uuid4(),
        dense=_unit(seed),
        text=text or f"snippet number {seed}",
        payload={"tenant_id": str(tenant), "kind": "snippet", "language": "python", "tags": [], **payload},
    )


async def _search(store, name, tenant, seed: int, *, hybrid=False, text="", top_k=5, **filters):
    return await store.search(
        name, tenant_id=tenant, dense=_unit(seed), text=text, top_k=top_k, hybrid=hybrid, **filters
    )


async def test_search_finds_the_nearest_point_of_the_tenant_only(store):
    a, b = uuid.uuid4(), uuid.uuid4()
    name = await store.ensure_collection("t", DIM)
    mine = [_point(a, seed) for seed in range(20)]
    theirs = [_point(b, seed) for seed in range(20)]  # the same vectors, another tenant
    await store.upsert(name, mine + theirs)
    hits = await _search(store, name, a, 7)
    assert [h[0] for h in await _search(store, name, a, 7, exact=True)] == [h[0] for h in hits]
    assert hits[0][0] == mine[7].id and hits[0][1] == pytest.approx(1.0, abs=1e-4) and hits[0][2] == "snippet"
    assert {h[0] for h in hits} <= {p.id for p in mine}
    assert await store.count(name, a) == 20 and await store.count(name, b) == 20
    assert await store.count(name, uuid.uuid4()) == 0


async def test_hybrid_search_finds_a_lexical_match_the_dense_arm_misses(store):
    tenant = uuid.uuid4()
    name = await store.ensure_collection("t", DIM)
    points = [_point(tenant, seed, text=f"ordinary helper {seed}") for seed in range(30)]
    rare = _point(tenant, 999, text="def frobnicate_widget(x): return x")
    await store.upsert(name, [*points, rare])
    dense_only = await _search(store, name, tenant, 3, text="frobnicate widget", top_k=3)
    hybrid = await _search(store, name, tenant, 3, text="frobnicate widget", top_k=3, hybrid=True)
    assert rare.id not in [h[0] for h in dense_only]
    assert rare.id in [h[0] for h in hybrid] and points[3].id in [h[0] for h in hybrid]


async def test_writes_are_idempotent_and_deletes_stay_in_the_tenant(store):
    a, b = uuid.uuid4(), uuid.uuid4()
    name = await store.ensure_collection("t", DIM)
    p = _point(a, 1)
    await store.upsert(name, [p])
    await store.upsert(name, [Point(id=p.id, dense=p.dense, text=p.text, payload={**p.payload, "language": "go"})])
    assert await store.count(name, a) == 1  # point id = row id: a retry writes the same point
    assert await _search(store, name, a, 1, language="python") == []
    assert (await _search(store, name, a, 1, language="go"))[0][0] == p.id
    await store.delete(name, [p.id], tenant_id=b)  # another tenant cannot delete it
    assert await store.count(name, a) == 1
    await store.delete(name, [p.id], tenant_id=a)
    assert await store.count(name, a) == 0


async def test_delete_tenant_except_removes_only_the_stale_points_of_that_tenant(store):
    a, b = uuid.uuid4(), uuid.uuid4()
    name = await store.ensure_collection("t", DIM)
    keep, stale, other = [_point(a, s) for s in range(3)], [_point(a, s) for s in range(3, 5)], [_point(b, 9)]
    await store.upsert(name, keep + stale + other)
    assert await store.delete_tenant_except(name, a, {p.id for p in keep}) == 2
    assert await store.count(name, a) == 3 and await store.count(name, b) == 1
    assert await store.point_ids(name, a) == {p.id for p in keep} and await store.dimension(name) == DIM


async def test_filters_by_tags_and_project_knowledge(store):
    tenant, project = uuid.uuid4(), uuid.uuid4()
    name = await store.ensure_collection("t", DIM)
    math = _point(tenant, 1, tags=["math"])
    plain = _point(tenant, 2)
    entry = _point(tenant, 3, kind="knowledge", project_id=str(project))
    elsewhere = _point(tenant, 4, kind="knowledge", project_id=str(uuid.uuid4()))
    await store.upsert(name, [math, plain, entry, elsewhere])
    assert [h[0] for h in await _search(store, name, tenant, 1, tags=["math"])] == [math.id]
    found = {h[0]: h[2] for h in await _search(store, name, tenant, 3, top_k=10)}
    assert entry.id not in found and elsewhere.id not in found  # knowledge only with its project
    found = {h[0]: h[2] for h in await _search(store, name, tenant, 3, top_k=10, project_id=project)}
    assert found[entry.id] == "knowledge" and elsewhere.id not in found and math.id in found


@pytest.mark.parametrize("kind", ["edge", "local"])
async def test_points_survive_closing_and_opening_again(kind, tmp_path):
    tenant = uuid.uuid4()
    points = [_point(tenant, s) for s in range(5)]
    first = _open(kind, tmp_path)
    await first.upsert(await first.ensure_collection("t", DIM), points)
    await first.wait_optimized()
    await first.close()
    again = _open(kind, tmp_path)
    try:
        name = await again.ensure_collection("t", DIM)
        assert await again.count(name, tenant) == 5
        assert (await _search(again, name, tenant, 2))[0][0] == points[2].id
    finally:
        await again.close()


async def test_edge_builds_its_index_off_the_request_path_and_says_so(tmp_path):
    store = EdgeVectorStore.open(tmp_path / "edge")
    try:
        tenant = uuid.uuid4()
        name = await store.ensure_collection("t", DIM)
        await store.upsert(name, [_point(tenant, s) for s in range(200)])
        await store.wait_optimized()
        state = store.state()[name]
        assert state["points"] == 200 and not state["optimizing"] and state["optimized_at"] is not None
        await store.ping()
    finally:
        await store.close()


async def test_a_corrupt_edge_shard_is_unavailable_with_its_reason_until_a_reindex_resets_it(tmp_path):
    tenant = uuid.uuid4()
    first = EdgeVectorStore.open(tmp_path / "edge")
    await first.upsert(await first.ensure_collection("t", DIM), [_point(tenant, s) for s in range(3)])
    await first.wait_optimized()
    await first.close()
    (tmp_path / "edge" / "kb_t" / "edge_config.json").write_text("{not json")  # a damaged shard

    store = EdgeVectorStore.open(tmp_path / "edge")
    try:
        with pytest.raises(VectorStoreUnavailable, match="the Qdrant Edge shard kb_t does not open: "):
            await store.ensure_collection("t", DIM)
        with pytest.raises(VectorStoreUnavailable, match="kb_t: "):
            await store.ping()  # /health/knowledge says unavailable, with this reason
        name = await store.ensure_collection("t", DIM, reset_if_corrupt=True)  # what a reindex does first
        await store.ping()
        assert await store.count(name, tenant) == 0  # empty: the reindex refills it from PostgreSQL
        [aside] = [p.name for p in (tmp_path / "edge").iterdir() if p.name.startswith("kb_t.corrupt-")]
        assert (tmp_path / "edge" / aside / "segments").is_dir()  # the damaged files are kept, not deleted
    finally:
        await store.close()


# --- the tuning: per-query plan, an existing collection migrated on open ---------------------------------

TOY_DIM = 32
# A graph too poor to be exact (m 4, ef_construct 8, walked with hnsw_ef 10), indexed from the first points
# (indexing threshold 1 KB), and no full scan by Qdrant's own planner unless a filter matches under 8 points.
TOY = Tuning(m=4, ef_construct=8, ef_steps=((10**9, 10),), exact_max=300, full_scan_kb=1, indexing_threshold_kb=1)


def _toy_points(tenant, count: int, seed: int, language: str = "python") -> list[Point]:
    rng = np.random.default_rng(seed)
    vectors = rng.normal(size=(count, TOY_DIM)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    payload = {"tenant_id": str(tenant), "kind": "snippet", "language": language, "tags": []}
    return [Point(id=uuid.uuid4(), dense=v, text=f"toy {i}", payload=payload) for i, v in enumerate(vectors)]


async def _recall(store, name, tenant, points: list[Point], queries: np.ndarray, **filters) -> float:
    """Recall@10 of the store's search against brute force over `points` (numpy): the tenant's points that
    match `filters`."""
    matrix = np.stack([p.dense for p in points])
    hits = 0
    for q in queries:
        truth = {points[i].id for i in np.argsort(-(matrix @ q))[:10]}
        found = await store.search(name, tenant_id=tenant, dense=q, text="", top_k=10, hybrid=False, **filters)
        hits += len(truth & {h[0] for h in found})
    return hits / (10 * len(queries))


async def test_a_small_tenant_is_searched_exactly_and_a_large_one_with_the_ef_its_size_gets(tmp_path):
    store = EdgeVectorStore.open(tmp_path / "edge", TOY)
    try:
        small, large = uuid.uuid4(), uuid.uuid4()
        name = await store.ensure_collection("toy", TOY_DIM)
        few, many, go = _toy_points(small, 200, 1), _toy_points(large, 4000, 2), _toy_points(large, 150, 9, "go")
        await store.upsert(name, few + many + go)
        await store.wait_optimized()
        assert store.state()[name]["indexed_vectors"] > 0  # a graph exists: the plan decides how it is used
        queries = np.stack([p.dense for p in _toy_points(None, 20, 3)])

        assert (await store.plan(name, small)).exact  # 200 points <= exact_max
        assert await _recall(store, name, small, few, queries) == 1.0
        store.tuning = replace(TOY, exact_max=0)  # the same tenant walked through the poor graph instead
        graph_recall = await _recall(store, name, small, few, queries)
        assert graph_recall < 1.0

        store.tuning = TOY
        assert (await store.plan(name, large, language="go")).exact  # the large tenant's 150 go points
        assert await _recall(store, name, large, go, queries, language="go") == 1.0

        assert (await store.plan(name, large)).hnsw_ef == 10  # 4,350 points in the collection
        narrow = await _recall(store, name, large, many, queries, language="python")
        store.tuning = replace(TOY, ef_steps=((1000, 10), (10**9, 4000)))  # a collection this size: ef 4000
        assert (await store.plan(name, large)).hnsw_ef == 4000
        wide = await _recall(store, name, large, many, queries, language="python")
        assert wide - narrow >= 0.5  # about 0.2 against above 0.9: the beam asked for is the one walked
    finally:
        await store.close()


async def test_a_subset_count_is_cached_until_a_write_changes_it(tmp_path):
    store = EdgeVectorStore.open(tmp_path / "edge", TOY)
    try:
        tenant = uuid.uuid4()
        name = await store.ensure_collection("toy", TOY_DIM)
        await store.upsert(name, _toy_points(tenant, 300, 4))
        assert (await store.plan(name, tenant)).exact  # 300 <= exact_max
        other = uuid.uuid4()
        await store.upsert(name, _toy_points(other, 500, 6))  # another tenant's write: this one's count stays
        assert (await store.plan(name, tenant)).exact and not (await store.plan(name, other)).exact
        await store.upsert(name, _toy_points(tenant, 1, 5))  # the 301st point: the graph, from now on
        assert (await store.plan(name, tenant)).hnsw_ef == 10 and not (await store.plan(name, tenant)).exact
        await store.delete(name, [next(iter(await store.point_ids(name, tenant)))], tenant_id=tenant)
        assert (await store.plan(name, tenant)).exact
    finally:
        await store.close()


def _segment_configs(shard: Path) -> list[dict]:
    return [
        json.loads((s / "segment.json").read_text())["config"]["vector_data"]["dense"]
        for s in (shard / "segments").iterdir()
        if (s / "segment.json").exists()
    ]


async def test_an_existing_collection_is_migrated_on_open_and_keeps_answering_with_its_vectors(tmp_path):
    tenant = uuid.uuid4()
    points = _toy_points(tenant, 2000, 6)
    before = EdgeVectorStore.open(tmp_path / "edge", replace(BASELINE, indexing_threshold_kb=1))
    name = await before.ensure_collection("toy", TOY_DIM)
    await before.upsert(name, points)
    await before.wait_optimized()
    await before.close()
    graphs = [c for c in _segment_configs(tmp_path / "edge" / name) if c["index"]["type"] == "hnsw"]
    assert graphs and all(c["index"]["options"]["ef_construct"] == 200 and not c["quantization_config"] for c in graphs)
    stored = {r.id: r.vector[DENSE] for r in _retrieve(tmp_path / "edge" / name, points)}

    after = EdgeVectorStore.open(tmp_path / "edge", replace(PRODUCT, indexing_threshold_kb=1))
    try:
        name = await after.ensure_collection("toy", TOY_DIM)  # opened with the tuning: answers at once
        hit = await after.search(name, tenant_id=tenant, dense=points[7].dense, text="", top_k=3, hybrid=False)
        assert hit[0][0] == points[7].id and hit[0][1] == pytest.approx(1.0, abs=1e-4)
        await after.wait_optimized()  # the segments are rebuilt with the tuning, from the stored vectors
        graphs = [c for c in _segment_configs(tmp_path / "edge" / name) if c["index"]["type"] == "hnsw"]
        assert graphs and all(c["index"]["options"]["ef_construct"] == PRODUCT.ef_construct for c in graphs)
        assert all(
            c["quantization_config"] == {"scalar": {"type": "int8", "quantile": 0.99, "always_ram": True}}
            for c in graphs
        )
        assert {
            r.id: r.vector[DENSE] for r in after._shards[name].retrieve([str(p.id) for p in points], False, True)
        } == stored
        queries = np.stack([p.dense for p in _toy_points(None, 10, 7)])
        assert await _recall(after, name, tenant, points, queries) == 1.0  # 2,000 points: exact
    finally:
        await after.close()


def _retrieve(shard: Path, points: list[Point]):
    edge = qe.EdgeShard.load(str(shard))
    try:
        return edge.retrieve([str(p.id) for p in points], False, True)
    finally:
        edge.close()


async def test_both_stores_plan_alike_and_local_mode_still_answers_exactly(tmp_path):
    from knowledge.tuning import Sizes

    sizes = Sizes(ttl=None)
    calls = []

    async def counter():
        calls.append(1)
        return 5

    assert await sizes.count("c", None, counter) == await sizes.count("c", None, counter) == 5 and len(calls) == 1
    for types in (qe, qm):
        assert PRODUCT.params(types, subset=50, points=10**6).exact
        big = PRODUCT.params(types, subset=PRODUCT.exact_max + 1, points=200_000)
        assert big.hnsw_ef == PRODUCT.hnsw_ef(200_000) and not big.exact
        assert big.quantization.rescore and big.quantization.oversampling == PRODUCT.oversampling
    local = _open("local", tmp_path)
    try:
        tenant = uuid.uuid4()
        name = await local.ensure_collection("toy", TOY_DIM)
        points = _toy_points(tenant, 100, 8)
        await local.upsert(name, points)
        assert await _recall(local, name, tenant, points, np.stack([p.dense for p in points[:5]])) == 1.0
    finally:
        await local.close()
