"""The dense index's build and search settings, the same on both stores (knowledge/edge.py, knowledge/vectors.py),
and the point counts a search plan needs. No qdrant import here: the gateway's process imports this module
without owning a store."""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, Hashable
from dataclasses import dataclass
from uuid import UUID

INT8_QUANTILE = 0.99  # scalar quantisation's range: the central 99% of the values (Qdrant's recommendation)


@dataclass(frozen=True)
class Tuning:
    """How both stores build and search the dense index; make bench-kb chose the values (README, "Knowledge base"
    under the measured figures: the procedure, on held-out queries, and its figures).

    Build (per collection): HNSW links per node `m` and build beam `ef_construct`, and scalar int8 quantisation
    of the dense vectors beside the float32 originals, which stay as written (a search walks the graph on the int8
    copies and rescores `oversampling` x top_k candidates on the originals). Search (per query): a tenant's
    filtered subset of at most `exact_max` points is scanned exactly (its own points, not the graph: recall 1);
    a larger one walks the graph with the query beam `hnsw_ef` of the first `ef_steps` entry whose bound is at
    least the collection's points (the last entry's beyond).

    Before this tuning (BASELINE): m 32 and ef_construct 200 (Qdrant's defaults are 16 and 100), hnsw_ef 128 for
    every query, no quantisation. One graph per tenant instead of a global one (m 0, payload_m 32, Qdrant's
    multi-tenant layout) was tried then: 0.936 in the bench, and twice the store's query time at 20k."""

    m: int = 32
    ef_construct: int = 800
    int8: bool = True
    oversampling: float = 2.0
    ef_steps: tuple[tuple[int, int], ...] = ((20_000, 128), (200_000, 512))
    exact_max: int = 10_000
    full_scan_kb: int = 10_000  # Qdrant's default: a segment scans, not searches, a filter matching fewer
    indexing_threshold_kb: int | None = None  # None: Qdrant's; tests lower it to give a toy collection a graph

    def hnsw_ef(self, points: int) -> int:
        return next((ef for bound, ef in self.ef_steps if points <= bound), self.ef_steps[-1][1])

    def exact(self, subset: int) -> bool:
        return subset <= self.exact_max

    async def plan(
        self,
        types,
        sizes: Sizes,
        collection: str,
        tenant_id: UUID,
        key: Hashable,
        subset: Callable[[], Awaitable[int]],
        everyone: Callable[[], Awaitable[int]],
    ):
        """The dense search's SearchParams for one query, from its store's counters (`subset`: the tenant's points
        that match the query's filters, `key` naming them; `everyone`: the collection's), cached in `sizes`; the
        collection is counted only when the subset is too large to scan."""
        n = await sizes.count(collection, tenant_id, subset, key)
        points = n if self.exact(n) else await sizes.count(collection, None, everyone)
        return self.params(types, subset=n, points=points)

    def params(self, types, *, subset: int, points: int):
        """The dense search's SearchParams (`types`: qdrant_client.models or qdrant_edge) for a filtered subset of
        `subset` points in a collection of `points`."""
        if self.exact(subset):
            return types.SearchParams(exact=True)
        rescore = types.QuantizationSearchParams(rescore=True, oversampling=self.oversampling) if self.int8 else None
        return types.SearchParams(hnsw_ef=self.hnsw_ef(points), quantization=rescore)


# The settings before make bench-kb's tuning (m 32, ef_construct 200, hnsw_ef 128, no quantisation, Qdrant's own
# full-scan threshold only): the bench's baseline, and what an existing collection was built with.
BASELINE = Tuning(ef_construct=200, int8=False, ef_steps=((0, 128),), exact_max=0)
PRODUCT = Tuning()


class Sizes:
    """The point counts a search plan needs, cached: the collection's, and each filtered subset's (a tenant's
    points that match a query's filters, keyed by the tenant and the filters). A write through the store forgets
    the collection's count and its tenants' (a count begun before a write is not kept); `ttl` bounds the age of a
    count that other processes' writes may change (a Qdrant server with several writers; None: this process is
    the only writer)."""

    def __init__(self, ttl: float | None) -> None:
        self.ttl = ttl
        self._counts: dict[tuple[str, str | None, Hashable], tuple[int, float]] = {}
        self._writes: dict[str, int] = {}

    async def count(
        self, collection: str, tenant_id: UUID | None, counter: Callable[[], Awaitable[int]], key: Hashable = ()
    ) -> int:
        """The cached count of the tenant's subset `key` (tenant None: the collection's), else `counter()`'s, kept."""
        slot = (collection, str(tenant_id) if tenant_id else None, key)
        hit = self._counts.get(slot)
        if hit is not None and (self.ttl is None or time.monotonic() - hit[1] <= self.ttl):
            return hit[0]
        writes = self._writes.get(collection, 0)
        count = await counter()
        if self._writes.get(collection, 0) == writes:
            self._counts[slot] = (count, time.monotonic())
        return count

    def forget(self, collection: str, tenants: set[str]) -> None:
        self._writes[collection] = self._writes.get(collection, 0) + 1
        for slot in [k for k in self._counts if k[0] == collection and (k[1] is None or k[1] in tenants)]:
            del self._counts[slot]


def subset_key(language: str | None, tags: list[str] | None, project_id: UUID | None) -> Hashable:
    """A query's filters besides the tenant, as a key of Sizes."""
    return (language, tuple(sorted(tags or ())), str(project_id) if project_id else None)
