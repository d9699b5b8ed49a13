"""One contract, two stores: Qdrant Edge (the embedded default) and qdrant-client (local mode here, the
stand-in for a Qdrant server, since no server binary runs on this machine). The same calls, the same
answers: tenancy, filters, dense and hybrid search, idempotent writes, deletes, persistence."""

from __future__ import annotations

import uuid
from pathlib import Path

import numpy as np
import pytest

from knowledge.edge import EdgeVectorStore
from knowledge.errors import VectorStoreUnavailable
from knowledge.vectors import Point, VectorStore

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
