"""Knowledge base benchmark (`make bench-kb`): retrieval quality, /similar latency, HNSW recall, the search's
tuning, the query encoder's levers and embedding throughput, in one run, for three stores:

- `edge`: Qdrant Edge (the embedded default) with the product's settings (knowledge/tuning.py: PRODUCT;
  knowledge/onnx_embedder.py: ENCODER);
- `baseline`: Qdrant Edge with the settings from before the tuning (BASELINE, BASELINE_ENCODER): every figure
  of `edge` is printed beside its baseline, measured in the same run on the same machine;
- `local`: qdrant-client's local mode (pure Python, exact), up to --local-max.

One private PostgreSQL and Temporal dev server (bench/gateway.py's helpers); then, for each store in turn,
its own knowledge runtime and the real gateway app under uvicorn on a loopback port in this process (the
app shares the process's runtime, as the knowledge worker and the knowledge API share it under `make
run`: both embedded stores are single-writer). For one new tenant per store:

1. quality: the 164 HumanEval canonical solutions stored as snippets through the repository and
   indexed with knowledge.service.index_items; each problem's docstring queries POST /api/similar
   (top_k=10) in dense and hybrid mode: recall@1, recall@5, MRR. Also with the lines that name the
   function (doctests, examples) removed from the query, so the name cannot give the answer away.
2. throughput (the Edge stores): 836 padding snippets make 1,000; all 1,000 are (re-)indexed through
   index_items (PostgreSQL read, MiniLM encode in the product's batches, sparse vectors, store upsert),
   and the same 1,000 texts are encoded by sentence-transformers directly, in one call for all of them
   and in one call per activity-sized group (INDEX_BATCH_SIZE).
3. at each size of --sizes (default 1k, 20k, 200k snippets in the tenant): the padding rows go to
   PostgreSQL for real. Up to 20k their dense vectors are their own, encoded by the product's embedder
   once and cached under .specmill/bench/kb-cache (bench/kb_corpus.py); beyond, each is a mixture of two
   of those 20k (--padding noise: noise around the first 1,000 instead, a stress case). Their sparse
   vectors come from their own text. Then the time until the store's index is built after the last write
   (Edge builds HNSW in the background as writes come), /similar p50/p95 over HTTP one request at a time
   (the --latency-queries first docstrings, the reported queries), dense and hybrid interleaved, the
   query's encoding alone and the store's own query time, and recall@10 of the dense search against the
   exact search of the same vectors, on the reported queries.
4. tuning (`edge`, at each size where the plan walks the graph): recall@10 and store time at each hnsw_ef
   of TUNING_EF, on --tune-queries held-out docstrings (problems outside the reported ones, drawn with
   their own seed: bench/kb_corpus.py held_out), and the ef the product's rule picks there. The rule's
   values (knowledge/tuning.py) were chosen on these held-out queries, never on the reported ones.
5. the encoder's levers, one at a time, in process: the reported queries one by one through each
   variant of the ONNX session (export, spinning, threads), interleaved query by query so that the
   machine's load hits each alike; the tokenizer's share; and --concurrency queries at once, one encoder
   call each against one batched call (knowledge/runtime.py QueryBatcher, with and without a window).

    .venv/bin/python bench/kb.py [--latency-queries 50] [--tune-queries 100] [--sizes 1000,20000,200000]
                                 [--stores baseline,edge,local]

The figures go to tables (each with its baseline, the targets and whether each was met, and why not when
missed), with the CPU model (/proc/cpuinfo), to .specmill/bench/kb-<time>.json and, as JSON, to the last
line of stdout. Everything started here is stopped at the end, on errors and on Ctrl-C too.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import signal
import sys
import tempfile
import time
import uuid
from dataclasses import asdict, replace
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import httpx
import numpy as np

from bench.gateway import HOST, Run, cpu_model, make_settings, pct, start_infra, write_figures
from bench.kb_corpus import (
    CACHE,
    NOISE_SIGMA,
    PADDING_NOTE,
    REAL_MAX,
    SMALL,
    Problem,
    held_out,
    load_problems,
    padding,
    padding_vectors,
    real_vectors,
)
from infra import embedded
from infra.setup import prepare
from infra.temporal import exit_without_teardown
from knowledge import service
from knowledge.embedders import minilm_dir
from knowledge.onnx_embedder import BASELINE_ENCODER
from knowledge.runtime import KnowledgeRuntime, get_runtime
from knowledge.tuning import BASELINE, PRODUCT
from knowledge.vectors import Point
from models.knowledge import IndexItem, SnippetCreate
from models.settings import Settings
from store.db import create_pool, tenant_tx
from store.snippets import create_snippet
from store.tenants import create_tenant

MODES = ("dense", "hybrid")
TOP_K = 10
TUNING_EF = (128, 256, 384, 512, 768, 1024)  # the held-out sweep's query beams
LEVER_SEED = 11  # the order of the encoder's variants, query by query
STORES = ("baseline", "edge", "local")


class Bench:
    def __init__(self, settings: Settings, pool, runtime: KnowledgeRuntime, tenant, client: httpx.AsyncClient):
        self.settings, self.pool, self.runtime, self.tenant, self.client = settings, pool, runtime, tenant, client
        self.ids: list[uuid.UUID] = []
        self.texts: list[str] = []

    # --- writing ---------------------------------------------------------------------------

    async def add_problems(self, problems: list[Problem]) -> None:
        """Through the repository, as POST /api/snippets does (outbox events included)."""
        for p in problems:
            snip = await create_snippet(
                self.pool,
                tenant_id=self.tenant.tenant_id,
                user_id=self.tenant.user_id,
                body=SnippetCreate(language="python", content=p.content),
                max_bytes=self.settings.snippet_max_bytes,
            )
            self.ids.append(snip.id)
            self.texts.append(service.snippet_text(snip.description, snip.content))

    async def add_padding(self, texts: list[str]) -> list[uuid.UUID]:
        """One multi-row transaction: the per-row API path would only add minutes of setup."""
        ids = [uuid.uuid4() for _ in texts]
        async with tenant_tx(self.pool, self.tenant.tenant_id) as conn:
            await conn.executemany(
                """insert into code_snippets (id, tenant_id, user_id, language, content, description, tags,
                   created_at) values ($1, $2, $3, 'python', $4, null, null, now() at time zone 'utc')""",
                [(i, self.tenant.tenant_id, self.tenant.user_id, t) for i, t in zip(ids, texts, strict=False)],
            )
        self.ids += ids
        self.texts += texts
        return ids

    async def index(self, ids: list[uuid.UUID]) -> float:
        """The product's indexing path, in the activity-sized batches the index workflow sends."""
        batch = self.settings.index_batch_size
        t0 = time.perf_counter()
        for start in range(0, len(ids), batch):
            await service.index_items(
                self.pool,
                self.runtime,
                self.tenant.tenant_id,
                [IndexItem(kind="snippet", id=i) for i in ids[start : start + batch]],
            )
        return time.perf_counter() - t0

    async def upsert_padding(self, ids: list[uuid.UUID], texts: list[str], vectors: np.ndarray) -> float:
        """Straight into the store, with the given dense vectors (the sparse ones come from the texts)."""
        embedder = self.runtime.embedder(self.runtime.default)
        collection = await self.runtime.store.ensure_collection(embedder.name, embedder.dimension)
        payload = {"tenant_id": str(self.tenant.tenant_id), "kind": "snippet", "language": "python", "tags": []}
        t0 = time.perf_counter()
        for start in range(0, len(ids), 256):
            points = [Point(ids[k], vectors[k], texts[k], payload) for k in range(start, min(start + 256, len(ids)))]
            await self.runtime.store.upsert(collection, points)
        return time.perf_counter() - t0

    # --- reading ---------------------------------------------------------------------------

    async def similar(self, query: str, mode: str) -> tuple[list[uuid.UUID], float]:
        t0 = time.perf_counter()
        resp = await self.client.post("/api/similar", json={"query": query, "top_k": TOP_K, "mode": mode})
        elapsed = time.perf_counter() - t0
        resp.raise_for_status()
        return [uuid.UUID(r["id"]) for r in resp.json()["items"]], elapsed

    async def quality(self, problems: list[Problem], field: str) -> dict:
        out = {}
        for mode in MODES:
            ranks = []
            for p, target in zip(problems, self.ids, strict=False):
                found, _ = await self.similar(getattr(p, field), mode)
                ranks.append(found.index(target) + 1 if target in found else None)
            n = len(ranks)
            out[mode] = {
                "recall@1": round(sum(r == 1 for r in ranks if r) / n, 4),
                "recall@5": round(sum(r <= 5 for r in ranks if r) / n, 4),
                "recall@10": round(sum(1 for r in ranks if r) / n, 4),
                "mrr@10": round(sum(1 / r for r in ranks if r) / n, 4),
                "queries": n,
            }
        return out

    async def latency(self, queries: list[str], warmup: int = 3) -> dict:
        for q in queries[:warmup]:
            for mode in MODES:
                await self.similar(q, mode)
        samples: dict[str, list[float]] = {m: [] for m in MODES}
        for i, q in enumerate(queries):
            for mode in MODES if i % 2 == 0 else MODES[::-1]:
                samples[mode].append((await self.similar(q, mode))[1])
        search = await self.search_only(queries)
        encode = await self.encode_only(queries)
        return {
            m: {
                "requests": len(s),
                "p50_ms": _ms(pct(sorted(s), 50)),
                "p95_ms": _ms(pct(sorted(s), 95)),
                "mean_ms": _ms(sum(s) / len(s)),
                "store_query_p50_ms": search[m][0],
                "store_query_p95_ms": search[m][1],
                "encode_p50_ms": encode,
            }
            for m, s in samples.items()
        }

    async def _collection(self) -> str:
        name = self.runtime.default
        return await self.runtime.store.ensure_collection(name, self.runtime.embedder(name).dimension)

    async def search_only(self, queries: list[str]) -> dict:
        """The store's query alone (no encoding, PostgreSQL or HTTP), in process: (p50, p95) ms per mode."""
        collection = await self._collection()
        vectors = await self.runtime.encode(self.runtime.default, queries)
        out = {}
        for mode in MODES:
            times = []
            for q, v in zip(queries, vectors, strict=False):
                t0 = time.perf_counter()
                await self.runtime.store.search(
                    collection, tenant_id=self.tenant.tenant_id, dense=v, text=q, top_k=TOP_K, hybrid=mode == "hybrid"
                )
                times.append(time.perf_counter() - t0)
            out[mode] = (_ms(pct(sorted(times), 50)), _ms(pct(sorted(times), 95)))
        return out

    async def encode_only(self, queries: list[str]) -> float:
        """The query's encoding alone, as /similar does it (encode_query: a thread, the batcher): p50 ms."""
        times = []
        for q in queries:
            t0 = time.perf_counter()
            await self.runtime.encode_query(self.runtime.default, q)
            times.append(time.perf_counter() - t0)
        return _ms(pct(sorted(times), 50))

    async def recall(self, queries: list[str]) -> dict:
        """Recall@10 of the store's dense search (the plan: exact or HNSW on Edge) against the exact search of the
        same vectors: by id, and counting a hit whose score ties the exact 10th (the padding holds
        near-duplicates, whose order among themselves is noise)."""
        collection = await self._collection()
        by_id = by_score = 0
        vectors = await self.runtime.encode(self.runtime.default, queries)
        for q, v, exact in zip(queries, vectors, await self.exact(queries, vectors), strict=True):
            approx = await self.runtime.store.search(
                collection, tenant_id=self.tenant.tenant_id, dense=v, text=q, top_k=TOP_K, hybrid=False
            )
            by_id += len({h[0] for h in approx} & {h[0] for h in exact})
            by_score += sum(h[1] >= exact[-1][1] - 1e-6 for h in approx) if exact else 0
        n = TOP_K * len(queries)
        return {"by_id": round(by_id / n, 4), "ties_counted": round(by_score / n, 4)}

    async def exact(self, queries: list[str], vectors: np.ndarray) -> list[list]:
        collection = await self._collection()
        return [
            await self.runtime.store.search(
                collection, tenant_id=self.tenant.tenant_id, dense=v, text=q, top_k=TOP_K, hybrid=False, exact=True
            )
            for q, v in zip(queries, vectors, strict=True)
        ]

    async def tuning(self, queries: list[str]) -> dict:
        """The held-out sweep: recall@10 by id against exact search, and the store's p50, at each ef of TUNING_EF
        (the product's other settings); then the ef the product's rule picks at this size."""
        store, collection = self.runtime.store, await self._collection()
        product = store.tuning
        plan = await store.plan(collection, self.tenant.tenant_id)
        out: dict = {"rule": "exact" if plan.exact else plan.hnsw_ef, "queries": len(queries), "by_ef": {}}
        if plan.exact:
            return out
        vectors = await self.runtime.encode(self.runtime.default, queries)
        exact = [{h[0] for h in hits} for hits in await self.exact(queries, vectors)]
        try:
            for ef in TUNING_EF:
                store.tuning = replace(product, ef_steps=((10**12, ef),), exact_max=0)
                hits, times = 0, []
                for q, v, truth in zip(queries, vectors, exact, strict=True):
                    t0 = time.perf_counter()
                    found = await store.search(
                        collection, tenant_id=self.tenant.tenant_id, dense=v, text=q, top_k=TOP_K, hybrid=False
                    )
                    times.append(time.perf_counter() - t0)
                    hits += len(truth & {h[0] for h in found})
                out["by_ef"][str(ef)] = {
                    "recall@10": round(hits / (TOP_K * len(queries)), 4),
                    "store_p50_ms": _ms(pct(sorted(times), 50)),
                }
        finally:
            store.tuning = product
        return out

    async def count(self) -> int:
        return await self.runtime.store.count(f"kb_{self.runtime.default}", self.tenant.tenant_id)


def _ms(seconds: float) -> float:
    return round(seconds * 1000, 2)


def direct_encode(texts: list[str], batch_size: int, activity_items: int) -> dict:
    """sentence-transformers on the same files, called directly: one call for all the texts, and one
    call per activity-sized group (what index_items gets from the index workflow)."""
    from sentence_transformers import SentenceTransformer

    model = SentenceTransformer(str(minilm_dir()), device="cpu", local_files_only=True)
    kw = dict(batch_size=batch_size, normalize_embeddings=True, convert_to_numpy=True, show_progress_bar=False)
    model.encode(texts[:16], **kw)  # warm-up
    t0 = time.perf_counter()
    vectors = model.encode(texts, **kw)
    one_call = time.perf_counter() - t0
    t0 = time.perf_counter()
    for start in range(0, len(texts), activity_items):
        model.encode(texts[start : start + activity_items], **kw)
    chunked = time.perf_counter() - t0
    return {"vectors": np.asarray(vectors, np.float32), "one_call_s": one_call, "per_activity_s": chunked}


# --- the run ---------------------------------------------------------------------------------


async def measure(settings: Settings, args: argparse.Namespace) -> dict:
    """Each store in turn, on the same PostgreSQL and Temporal: a gateway and a knowledge runtime of its own;
    then the encoder's levers, in process."""
    t_start = time.monotonic()
    await prepare(settings)
    figures: dict = {"stores": {}, "throughput": {}}
    for store in args.stores:
        own, tuning = store_settings(settings, store)
        figures["stores"][store] = await _measure_store(own, tuning, args, t_start)
        if "throughput" in figures["stores"][store]:
            figures["throughput"][store] = figures["stores"][store].pop("throughput")
    _say(t_start, "encoder", "levers, one at a time")
    queries = [p.query for p in load_problems()][: args.latency_queries]
    figures["encoder_levers"] = await encoder_levers(queries, settings.models_path / ".cache" / "onnx", args)
    figures["total_s"] = round(time.monotonic() - t_start, 1)
    return figures


def store_settings(settings: Settings, store: str) -> tuple[Settings, dict]:
    """The settings of a store's runtime, and its tuning (KnowledgeRuntime's keywords): the baseline is Edge in
    a directory of its own, with the index, search and encoder settings from before the tuning."""
    if store == "baseline":
        own = settings.model_copy(update={"vector_store": "edge", "edge_path": settings.data_dir / "edge-baseline"})
        return own, {"tuning": BASELINE, "encoder": BASELINE_ENCODER}
    return settings.model_copy(update={"vector_store": store}), {}


async def _measure_store(settings: Settings, tuning: dict, args: argparse.Namespace, t_start: float) -> dict:
    pool = await create_pool(settings)
    runtime = get_runtime(settings, **tuning)  # the gateway app below finds this same runtime
    import uvicorn

    from api.app import create_app

    port = embedded.free_port()
    server = uvicorn.Server(uvicorn.Config(create_app(settings), host=HOST, port=port, log_level="warning"))
    serving = asyncio.create_task(server.serve())
    try:
        while not server.started:
            if serving.done():
                serving.result()
            await asyncio.sleep(0.05)
        created = await create_tenant(pool, name=f"bench-kb-{uuid.uuid4().hex[:6]}")
        async with httpx.AsyncClient(
            base_url=f"http://{HOST}:{port}", timeout=120, headers={"X-API-Key": created.api_key}
        ) as client:
            bench = Bench(settings, pool, runtime, created, client)
            return await _stages(bench, args, t_start, store="baseline" if tuning else settings.vector_store)
    finally:
        server.should_exit = True
        await serving
        await runtime.store.close()
        await pool.close()


def _say(t_start: float, store: str, text: str) -> None:
    print(f"[{time.monotonic() - t_start:6.1f}s] {store}: {text}", flush=True)


_REAL: list[np.ndarray] = []  # the first REAL_MAX snippets' vectors, read (or encoded) once per run


async def _real(runtime: KnowledgeRuntime, problems: list[Problem]) -> np.ndarray:
    if not _REAL:
        embedder = runtime.embedder(runtime.default)
        _REAL.append(await asyncio.to_thread(real_vectors, embedder.encode, f"{embedder.name}:{model_key()}", problems))
    return _REAL[0]


def model_key() -> str:
    """MiniLM's weights, which alone decide its vectors (any of its encoders gives them: tests/test_embedders.py)."""
    import hashlib

    digest = hashlib.sha256()
    for name in ("config.json", "model.safetensors"):
        digest.update((minilm_dir() / name).read_bytes())
    return digest.hexdigest()


async def _stages(bench: Bench, args: argparse.Namespace, t_start: float, *, store: str) -> dict:
    problems = load_problems()
    figures: dict = {"problems": len(problems)}
    _say(t_start, store, f"storing and indexing {len(problems)} HumanEval solutions")
    await bench.add_problems(problems)
    figures["index_164_s"] = round(await bench.index(bench.ids), 2)
    assert await bench.count() == len(problems)
    await bench.runtime.store.wait_optimized()
    _say(t_start, store, f"quality: {len(problems)} queries x {len(MODES)} modes x 2 query forms")
    figures["quality"] = {
        "docstring": await bench.quality(problems, "query"),
        "docstring_without_name_lines": await bench.quality(problems, "query_no_name"),
    }
    _say(t_start, store, f"{SMALL} snippets")
    await bench.add_padding(padding(problems, SMALL - len(problems)))
    product_s = await bench.index(bench.ids)
    if store != "local":
        direct = direct_encode(bench.texts, bench.settings.embedding_batch_size, bench.settings.index_batch_size)
        figures["throughput"] = _throughput(len(bench.texts), product_s, direct)
    assert await bench.count() == SMALL
    queries = [p.query for p in problems][: args.latency_queries]
    tune = [p.query for p in held_out(problems, args.latency_queries, args.tune_queries)]
    figures["latency"], figures["index_build_s"], figures["recall@10"], figures["skipped"] = {}, {}, {}, {}
    figures["tuning"] = {}
    for size in args.sizes:
        if size > len(bench.ids):
            if store == "local" and size > args.local_max:
                figures["skipped"][str(size)] = f"local mode beyond --local-max {args.local_max}"
                _say(t_start, store, f"{size} skipped: {figures['skipped'][str(size)]}")
                continue
            _say(t_start, store, f"padding to {size} snippets")
            first = len(bench.ids)
            texts = padding(problems, size - first, start=first - len(problems))
            ids = await bench.add_padding(texts)
            vectors = padding_vectors(await _real(bench.runtime, problems), first, len(texts), args.padding)
            figures.setdefault("pad_upsert_s", {})[str(size)] = round(
                await bench.upsert_padding(ids, texts, vectors), 2
            )
            assert await bench.count() == size
        t0 = time.perf_counter()
        await bench.runtime.store.wait_optimized()
        figures["index_build_s"][str(size)] = round(time.perf_counter() - t0, 2)
        figures.setdefault("index_state", {})[str(size)] = bench.runtime.store.state()
        _say(t_start, store, f"latency and recall at {size} snippets")
        figures["latency"][str(size)] = await bench.latency(queries)
        figures["recall@10"][str(size)] = await bench.recall(queries)
        if store == "edge":
            _say(t_start, store, f"tuning sweep at {size} snippets, {len(tune)} held-out queries")
            figures["tuning"][str(size)] = await bench.tuning(tune)
    return figures


def _throughput(n: int, product_s: float, direct: dict) -> dict:
    rows = {
        "product_index_items": product_s,
        "st_encode_one_call": direct["one_call_s"],
        "st_encode_per_activity": direct["per_activity_s"],
    }
    out = {k: {"seconds": round(v, 2), "snippets_per_s": round(n / v, 1)} for k, v in rows.items()}
    out["texts"] = n
    out["ratio_product_over_st_one_call"] = round(direct["one_call_s"] / product_s, 3)
    out["ratio_product_over_st_per_activity"] = round(direct["per_activity_s"] / product_s, 3)
    return out


# --- the encoder's levers --------------------------------------------------------------------


PRODUCT_ENCODER = "product: baseline + no spinning"


def lever_variants() -> dict:
    """The encoder's variants, each one lever away from the baseline or from the product (ENCODER)."""
    from knowledge.onnx_embedder import ENCODER

    return {
        "baseline (default export, spinning, 1 thread per CPU)": BASELINE_ENCODER,
        PRODUCT_ENCODER: ENCODER,
        "baseline + fused graph": replace(BASELINE_ENCODER, fused=True),
        "product + fused graph": replace(ENCODER, fused=True),
        "product, 1 intra-op thread": replace(ENCODER, threads=1),
    }


async def encoder_levers(queries: list[str], cache_dir: Path, args: argparse.Namespace) -> dict:
    """One query at a time through each variant, the variants in a new random order for each query (a fixed
    order favours some positions), rounds of all the queries: p50 and p95 of the encode call; the tokenizer's
    share; then the batching of concurrent queries."""
    from knowledge.onnx_embedder import OnnxSentenceEmbedder

    variants = {
        label: OnnxSentenceEmbedder("minilm", minilm_dir(), cache_dir=cache_dir, options=options)
        for label, options in lever_variants().items()
    }
    times: dict[str, list[float]] = {label: [] for label in variants}
    order = random.Random(LEVER_SEED)
    for _ in range(args.lever_rounds):
        for q in queries:
            for label in order.sample(list(variants), len(variants)):
                t0 = time.perf_counter()
                await asyncio.to_thread(variants[label].encode, [q])
                times[label].append(time.perf_counter() - t0)
    out: dict = {
        "rounds": args.lever_rounds,
        "one_query": {
            label: {"p50_ms": _ms(pct(sorted(t), 50)), "p95_ms": _ms(pct(sorted(t), 95))} for label, t in times.items()
        },
    }
    product = variants[PRODUCT_ENCODER]
    tokenize = []
    for q in queries:
        t0 = time.perf_counter()
        product._tok.encode_batch([q])
        tokenize.append(time.perf_counter() - t0)
    out["tokenize_p50_ms"] = round(pct(sorted(tokenize), 50) * 1000, 3)
    out["concurrent"] = await _batching(product, queries, args, order)
    return out


async def _batching(embedder, queries: list[str], args: argparse.Namespace, order: random.Random) -> dict:
    """--concurrency queries sent at once, group after group: each its own encoder call (on threads, one at a
    time: the embedder's lock), or through QueryBatcher (window 0: calls start at once; and a 2-ms window).
    Per query: the time from its sending to its vector. Per group: encoder calls."""
    from knowledge.runtime import QueryBatcher

    n = args.concurrency
    groups = [queries[i : i + n] for i in range(0, len(queries) - n + 1, n)]
    ways = {
        "one call per query": None,
        "batched, window 0": QueryBatcher(embedder, window=0.0),
        "batched, window 2 ms": QueryBatcher(embedder, window=0.002),
    }
    samples: dict[str, list[float]] = {w: [] for w in ways}
    for _ in range(args.lever_rounds):
        for group in groups:
            for way in order.sample(list(ways), len(ways)):
                batcher = ways[way]

                async def one(q: str, batcher=batcher) -> float:
                    t0 = time.perf_counter()
                    if batcher is None:
                        await asyncio.to_thread(embedder.encode, [q])
                    else:
                        await batcher.encode(q)
                    return time.perf_counter() - t0

                samples[way] += await asyncio.gather(*(one(q) for q in group))
    calls = {w: (b.calls if b else len(groups) * n * args.lever_rounds) for w, b in ways.items()}
    return {
        way: {
            "p50_ms": _ms(pct(sorted(t), 50)),
            "p95_ms": _ms(pct(sorted(t), 95)),
            "calls_per_group": round(calls[way] / (len(groups) * args.lever_rounds), 2),
        }
        for way, t in samples.items()
    } | {"concurrency": n, "groups": len(groups) * args.lever_rounds}


# --- the report ------------------------------------------------------------------------------


def report(figures: dict, args: argparse.Namespace, settings: Settings) -> dict:
    cpu = cpu_model()
    print(f"\nmachine: {cpu}, {os.cpu_count()} CPUs (load average at the end {os.getloadavg()[0]:.1f})")
    for store, cells in figures["stores"].items():
        _report_quality(store, cells, settings)
    _report_latency(figures, args)
    _report_tuning(figures)
    _report_levers(figures.get("encoder_levers"))
    for store, t in figures["throughput"].items():
        _report_throughput(store, t, settings)
    _report_targets(figures)
    return {
        "benchmark": "kb",
        "time": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "cpu_model": cpu,
        "params": {
            "top_k": TOP_K,
            "latency_queries": args.latency_queries,
            "tune_queries": args.tune_queries,
            "tuning_ef": TUNING_EF,
            "sizes": args.sizes,
            "stores": args.stores,
            "local_max": args.local_max,
            "embedder": settings.default_embedder,
            "embedding_batch_size": settings.embedding_batch_size,
            "index_batch_size": settings.index_batch_size,
            "cpus": os.cpu_count(),
            "padding": args.padding,
            "real_max": REAL_MAX,
            "noise_sigma": NOISE_SIGMA,
            "product_tuning": asdict(PRODUCT),
            "baseline_tuning": asdict(BASELINE),
        },
        "padding": PADDING_NOTE,
        **figures,
    }


def _report_quality(store: str, cells: dict, settings: Settings) -> None:
    print(
        f"\nHumanEval retrieval, store {store}: {cells['problems']} canonical solutions as python snippets "
        f"(docstring cut out), one query per problem, POST /api/similar top_k={TOP_K}, embedder "
        f"{settings.default_embedder}"
    )
    head = f"{'query':<34}{'mode':<8}{'recall@1':>9}{'recall@5':>9}{'recall@10':>10}{'MRR@10':>8}"
    print(head + "\n" + "-" * len(head))
    for form, label in (("docstring", "docstring"), ("docstring_without_name_lines", "docstring, lines naming f cut")):
        for mode in MODES:
            r = cells["quality"][form][mode]
            print(
                f"{label:<34}{mode:<8}{r['recall@1']:>9.3f}{r['recall@5']:>9.3f}{r['recall@10']:>10.3f}"
                f"{r['mrr@10']:>8.3f}"
            )


def _report_latency(figures: dict, args: argparse.Namespace) -> None:
    print(
        f"\n/similar latency: HTTP on loopback to the gateway app (uvicorn, this process), one request at a "
        f"time, the {args.latency_queries} reported docstring queries per cell, {os.cpu_count()} CPUs; the query's "
        f"encoding alone and the store's own query time beside it; recall@10 (by id) of the dense search against "
        f"exact search of the same vectors, on the reported queries"
    )
    head = (
        f"{'store':<9}{'snippets':>9}  {'mode':<8}{'p50 ms':>8}{'p95 ms':>8}{'encode':>8}{'store p50':>10}"
        f"{'store p95':>10}{'recall@10':>10}{'index wait s':>14}"
    )
    print(head + "\n" + "-" * len(head))
    for store, cells in figures["stores"].items():
        for size, by_mode in cells["latency"].items():
            for mode in MODES:
                c = by_mode[mode]
                recall = f"{cells['recall@10'][size]['by_id']:.4f}" if mode == "dense" else ""
                build = f"{cells['index_build_s'][size]:.1f}" if mode == "dense" else ""
                print(
                    f"{store:<9}{int(size):>9}  {mode:<8}{c['p50_ms']:>8.1f}{c['p95_ms']:>8.1f}"
                    f"{c['encode_p50_ms']:>8.1f}{c['store_query_p50_ms']:>10.2f}{c['store_query_p95_ms']:>10.2f}{recall:>10}{build:>14}"
                )
        for size, why in cells["skipped"].items():
            print(f"{store:<9}{int(size):>9}  skipped: {why}")
    beyond = (
        "mixtures a*u + (1-a)*v of two of those vectors, a in [0.5, 1), renormalised"
        if args.padding == "mixture"
        else f"real vectors of the first {SMALL} plus N(0, {NOISE_SIGMA}) per dimension, renormalised"
    )
    print(f"padding: {PADDING_NOTE}. Rows 1-{REAL_MAX} are encoded for real; the rest are {beyond}.")


def _report_tuning(figures: dict) -> None:
    edge = figures["stores"].get("edge")
    if not edge or not edge["tuning"]:
        return
    t = PRODUCT
    print(
        f"\ntuning (edge): the held-out queries (docstrings of other problems than the reported ones, seeded draw), "
        f"recall@10 by id against exact search and the store's p50 at each hnsw_ef; m {t.m}, ef_construct "
        f"{t.ef_construct}, int8 {t.int8} (rescored, oversampling {t.oversampling}); the rule: exact up to "
        f"{t.exact_max} points of the tenant, else hnsw_ef by the collection's size {list(t.ef_steps)}"
    )
    head = f"{'snippets':>9}{'hnsw_ef':>9}{'held-out recall@10':>20}{'store p50 ms':>14}  rule"
    print(head + "\n" + "-" * len(head))
    for size, sweep in edge["tuning"].items():
        if sweep["rule"] == "exact":
            print(f"{int(size):>9}{'exact':>9}{'1.0000':>20}{'':>14}  <- (the tenant has at most exact_max points)")
            continue
        for ef, row in sweep["by_ef"].items():
            mark = "  <-" if int(ef) == sweep["rule"] else ""
            print(f"{int(size):>9}{int(ef):>9}{row['recall@10']:>20.4f}{row['store_p50_ms']:>14.2f}{mark}")


def _report_levers(levers: dict | None) -> None:
    if not levers:
        return
    print(
        f"\nthe query encoder's levers (MiniLM on ONNX Runtime), in process: the reported queries one at a time, "
        f"{levers['rounds']} rounds, the variants interleaved query by query"
    )
    head = f"{'variant':<56}{'p50 ms':>8}{'p95 ms':>8}"
    print(head + "\n" + "-" * len(head))
    for label, row in levers["one_query"].items():
        print(f"{label:<56}{row['p50_ms']:>8.2f}{row['p95_ms']:>8.2f}")
    print(f"{'tokenization alone (warm), its share of each of them':<56}{levers['tokenize_p50_ms']:>8.3f}")
    c = levers["concurrent"]
    print(f"\n{c['concurrency']} queries at once ({c['groups']} groups), product encoder: time to each query's vector")
    head = f"{'way':<56}{'p50 ms':>8}{'p95 ms':>8}{'calls':>7}"
    print(head + "\n" + "-" * len(head))
    for way, row in c.items():
        if isinstance(row, dict):
            print(f"{way:<56}{row['p50_ms']:>8.2f}{row['p95_ms']:>8.2f}{row['calls_per_group']:>7.1f}")


def _report_throughput(store: str, t: dict, settings: Settings) -> None:
    print(
        f"\nembedding throughput, store {store}: the same {t['texts']} texts (164 HumanEval snippets + padding), "
        f"MiniLM, batch {settings.embedding_batch_size}"
    )
    head = f"{'path':<62}{'seconds':>9}{'snippets/s':>12}"
    print(head + "\n" + "-" * len(head))
    n = settings.index_batch_size
    for key, label in (
        ("product_index_items", f"product: service.index_items (PG, encode, upsert), {n}/call"),
        ("st_encode_one_call", "sentence-transformers encode, one call for all"),
        ("st_encode_per_activity", f"sentence-transformers encode, one call per {n} texts"),
    ):
        print(f"{label:<62}{t[key]['seconds']:>9.2f}{t[key]['snippets_per_s']:>12.1f}")
    print(
        f"ratio product / direct: {t['ratio_product_over_st_one_call']:.3f} (one call), "
        f"{t['ratio_product_over_st_per_activity']:.3f} ({n} per call)"
    )


TARGETS = [  # (what, size, mode, field, bound, at most?)
    ("/similar p50 ms", "20000", "dense", "p50_ms", 15.0, True),
    ("/similar p50 ms", "20000", "hybrid", "p50_ms", 15.0, True),
    ("/similar p50 ms", "200000", "dense", "p50_ms", 40.0, True),
    ("/similar p50 ms", "200000", "hybrid", "p50_ms", 40.0, True),
    ("store query p50 ms", "200000", "dense", "store_query_p50_ms", 5.0, True),
    ("store query p50 ms", "200000", "hybrid", "store_query_p50_ms", 5.0, True),
    ("HNSW recall@10", "200000", "dense", "recall", 0.99, False),
    ("throughput x encode", "1000", "-", "throughput", 0.9, False),
]


def _value(cells: dict | None, figures: dict, store: str, size: str, mode: str, field: str) -> float | None:
    if field == "throughput":
        t = figures["throughput"].get(store)
        return t["ratio_product_over_st_one_call"] if t else None
    if cells is None:
        return None
    if field == "recall":
        return cells["recall@10"].get(size, {}).get("by_id")
    return cells["latency"].get(size, {}).get(mode, {}).get(field)


def _report_targets(figures: dict) -> None:
    stores = figures["stores"]
    edge, base, local = stores.get("edge"), stores.get("baseline"), stores.get("local")
    if edge is None:
        return
    print(
        "\ntargets (edge: the product's settings), each beside its baseline (the settings before the tuning) "
        "and local mode, measured in this run"
    )
    head = f"{'figure':<22}{'snippets':>9}  {'mode':<8}{'target':>9}{'baseline':>10}{'edge':>9}{'met':>5}{'local':>9}"
    print(head + "\n" + "-" * len(head))
    missed = []
    for what, size, mode, field, bound, at_most in TARGETS:
        value = _value(edge, figures, "edge", size, mode, field)
        if value is None:
            continue
        before = _value(base, figures, "baseline", size, mode, field)
        there = _value(local, figures, "local", size, mode, field) if field != "throughput" else None
        met = value <= bound if at_most else value >= bound
        sign = "<=" if at_most else ">="
        print(
            f"{what:<22}{int(size):>9}  {mode:<8}{sign + f'{bound:g}':>9}{_fmt(before):>10}{_fmt(value):>9}"
            f"{'yes' if met else 'no':>5}{_fmt(there):>9}"
        )
        if not met:
            missed.append((what, size, mode, field, _why(figures, size, mode, field)))
    for what, size, mode, _, why in missed:
        print(f"missed: {what} at {int(size)} ({mode}): {why}")


def _fmt(v: float | None) -> str:
    return "-" if v is None else f"{v:.4f}" if v < 1 else f"{v:.2f}"


def _why(figures: dict, size: str, mode: str, field: str) -> str:
    edge = figures["stores"]["edge"]
    if field == "throughput":
        t = figures["throughput"]["edge"]
        return (
            f"index_items {t['product_index_items']['snippets_per_s']} snippets/s against "
            f"{t['st_encode_one_call']['snippets_per_s']} for one sentence-transformers call"
        )
    sweep = edge["tuning"].get(size, {})
    if field == "recall":
        rows = sweep.get("by_ef", {})
        rule = sweep.get("rule")
        held = rows.get(str(rule), {}).get("recall@10")
        reach = [(int(ef), r) for ef, r in rows.items() if r["recall@10"] >= 0.99]
        first = (
            f"the smallest swept ef reaching 0.99 there is {reach[0][0]} (store p50 {reach[0][1]['store_p50_ms']} ms)"
            if reach
            else f"no swept ef reaches 0.99 there (best {max((r['recall@10'] for r in rows.values()), default=0):.4f})"
        )
        return f"the rule's hnsw_ef {rule} gave {held} on the held-out queries; {first}"
    c = edge["latency"][size][mode]
    if field == "store_query_p50_ms":
        return f"hnsw_ef {sweep.get('rule')} (the rule); the held-out sweep's store times: " + ", ".join(
            f"ef {ef} {r['store_p50_ms']} ms" for ef, r in sweep.get("by_ef", {}).items()
        )
    rest = c["p50_ms"] - c["encode_p50_ms"] - c["store_query_p50_ms"]
    return (
        f"p50 {c['p50_ms']} ms = the query's encoding {c['encode_p50_ms']} ms + the store's query "
        f"{c['store_query_p50_ms']} ms + {rest:.1f} ms for HTTP, authentication and PostgreSQL (p50s: they add "
        f"up only roughly)"
    )


def main(args: argparse.Namespace) -> int:
    root = Path(tempfile.mkdtemp(prefix="specmill-bench-kb-"))
    run = Run(root)
    failed = False
    try:
        settings = make_settings(root, rate_limit="100000000/minute")
        # the exported ONNX graphs, kept from run to run (bench/kb_corpus.py keeps the padding's vectors there too)
        settings = settings.model_copy(update={"models_dir": CACHE / "models"})
        print(f"starting PostgreSQL and Temporal in {root} ...", flush=True)
        start_infra(run, settings)
        figures = report(asyncio.run(measure(settings, args)), args, settings)
        out = write_figures("kb", figures)
        print(f"\nwritten to {out.relative_to(ROOT)}; total {figures['total_s']:.1f} s")
        print(json.dumps(figures, separators=(",", ":")))
        return 0
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except Exception:
        failed = True
        raise
    finally:
        run.finish(keep=args.keep, failed=failed)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description="Knowledge base: HumanEval retrieval quality, /similar latency, HNSW recall and its tuning, "
        "the query encoder's levers, embedding throughput; each against its baseline."
    )
    p.add_argument("--latency-queries", type=int, default=50, help="reported queries per mode and size (default 50)")
    p.add_argument("--tune-queries", type=int, default=100, help="held-out queries of the tuning sweep (default 100)")
    p.add_argument("--lever-rounds", type=int, default=3, help="rounds of the encoder's levers (default 3)")
    p.add_argument("--concurrency", type=int, default=8, help="queries at once in the batching lever (default 8)")
    p.add_argument(
        "--sizes",
        default="1000,20000,200000",
        help="snippets in the tenant at each latency point (default 1000,20000,200000)",
    )
    p.add_argument(
        "--stores",
        default=",".join(STORES),
        help=f"stores to measure, in order, among {','.join(STORES)} (default all)",
    )
    p.add_argument(
        "--local-max", type=int, default=20_000, help="local mode is not measured beyond this size (default 20000)"
    )
    p.add_argument(
        "--padding",
        choices=("mixture", "noise"),
        default="mixture",
        help=f"dense vectors past {REAL_MAX} snippets: mixtures of two real ones (default), or noise around the "
        f"first {SMALL} (near-duplicate clusters, a stress case for HNSW)",
    )
    p.add_argument("--keep", action="store_true", help="keep the temp dir (logs, data) at the end")
    args = p.parse_args(argv)
    args.sizes = sorted({int(n) for n in args.sizes.split(",")})
    args.stores = [s for s in args.stores.split(",") if s]
    if (
        not 1 <= args.latency_queries <= 164
        or not 1 <= args.tune_queries <= 164 - args.latency_queries
        or args.sizes[0] < SMALL
        or not set(args.stores) <= set(STORES)
        or args.lever_rounds < 1
        or args.concurrency < 2
    ):
        p.error(
            f"need 1 <= --latency-queries <= 164, 1 <= --tune-queries <= 164 - --latency-queries, sizes >= {SMALL}, "
            f"stores among {','.join(STORES)}, --lever-rounds >= 1, --concurrency >= 2"
        )
    return args


def _sigterm(_signum, _frame):
    signal.raise_signal(signal.SIGINT)


if __name__ == "__main__":
    signal.signal(signal.SIGTERM, _sigterm)
    exit_without_teardown(main(parse_args()))
