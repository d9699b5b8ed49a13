"""Knowledge base benchmark (`make bench-kb`): retrieval quality, /similar latency, HNSW recall, embedding
throughput, for Qdrant Edge (the embedded default) and qdrant-client's local mode (the baseline), in one run.

One private PostgreSQL and Temporal dev server (bench/gateway.py's helpers); then, for each store in turn,
its own knowledge runtime and the real gateway app under uvicorn on a loopback port in this process (the
app shares the process's runtime, as the knowledge worker and the knowledge API share it under `make
run`: both embedded stores are single-writer). For one new tenant per store:

1. quality: the 164 HumanEval canonical solutions stored as snippets through the repository and
   indexed with knowledge.service.index_items; each problem's docstring queries POST /api/similar
   (top_k=10) in dense and hybrid mode: recall@1, recall@5, MRR. Also with the lines that name the
   function (doctests, examples) removed from the query, so the name cannot give the answer away.
2. throughput (the first store only): 836 padding snippets make 1,000; all 1,000 are (re-)indexed
   through index_items (PostgreSQL read, MiniLM encode in the product's batches, sparse vectors, store
   upsert), and the same 1,000 texts are encoded by sentence-transformers directly, in one call for all
   of them and in one call per activity-sized group (INDEX_BATCH_SIZE, 64).
3. at each size of --sizes (default 1k, 20k, 200k snippets in the tenant): the padding rows go to
   PostgreSQL for real. Up to 20k their dense vectors are their own, encoded by the product's embedder
   (once per run, shared by the stores); beyond, to keep the run within minutes, each is a mixture of two
   of those 20k real vectors (--padding noise: noise around the first 1,000 instead, a stress case).
   Their sparse vectors come from their own text. Then the time until
   the store's index is built after the last write (Edge builds HNSW in the background as writes
   come), /similar p50/p95 over
   HTTP one request at a time, dense and hybrid interleaved, the store's own query time, and recall@10
   of the dense search against the exact search of the same vectors. Local mode stops at --local-max
   (default 20k): it scores in Python over every point, and at 200k a run would take most of an hour.

    .venv/bin/python bench/kb.py [--latency-queries 50] [--sizes 1000,20000,200000] [--stores edge,local]

The figures go to tables (with the README's targets and the ratios to local mode), to
.specmill/bench/kb-<time>.json and, as JSON, to the last line of stdout. Everything started here is
stopped at the end, on errors and on Ctrl-C too.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import sys
import tempfile
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import httpx
import numpy as np

from bench.gateway import HOST, Run, make_settings, pct, start_infra, write_figures
from bench.kb_corpus import PADDING_NOTE, Problem, load_problems, padding
from infra import embedded
from infra.setup import prepare
from infra.temporal import exit_without_teardown
from knowledge import service
from knowledge.embedders import minilm_dir
from knowledge.runtime import KnowledgeRuntime, get_runtime
from knowledge.vectors import Point
from models.knowledge import IndexItem, SnippetCreate
from models.settings import Settings
from store.db import create_pool, tenant_tx
from store.snippets import create_snippet
from store.tenants import create_tenant

MODES = ("dense", "hybrid")
TOP_K = 10
SMALL = 1000
NOISE_SIGMA = 0.025  # per dimension: cosine to the base vector about 0.9 in 384 dimensions


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
        return {
            m: {
                "requests": len(s),
                "p50_ms": _ms(pct(sorted(s), 50)),
                "p95_ms": _ms(pct(sorted(s), 95)),
                "mean_ms": _ms(sum(s) / len(s)),
                "store_query_p50_ms": search[m][0],
                "store_query_p95_ms": search[m][1],
            }
            for m, s in samples.items()
        }

    async def search_only(self, queries: list[str]) -> dict:
        """The store's query alone (no encoding, PostgreSQL or HTTP), in process: (p50, p95) ms per mode."""
        name = self.runtime.default
        embedder = self.runtime.embedder(name)
        collection = await self.runtime.store.ensure_collection(name, embedder.dimension)
        vectors = await self.runtime.encode(name, queries)
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

    async def recall(self, queries: list[str]) -> dict:
        """Recall@10 of the store's dense search (HNSW on Edge) against the exact search of the same vectors:
        by id, and counting a hit whose score ties the exact 10th (the padding holds near-duplicates, whose
        order among themselves is noise)."""
        name = self.runtime.default
        collection = await self.runtime.store.ensure_collection(name, self.runtime.embedder(name).dimension)
        by_id = by_score = 0
        for q, v in zip(queries, await self.runtime.encode(name, queries), strict=False):
            args = dict(tenant_id=self.tenant.tenant_id, dense=v, text=q, top_k=TOP_K, hybrid=False)
            approx = await self.runtime.store.search(collection, **args)
            exact = await self.runtime.store.search(collection, **args, exact=True)
            by_id += len({h[0] for h in approx} & {h[0] for h in exact})
            by_score += sum(h[1] >= exact[-1][1] - 1e-6 for h in approx) if exact else 0
        n = TOP_K * len(queries)
        return {"by_id": round(by_id / n, 4), "ties_counted": round(by_score / n, 4)}

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
    """Each store in turn, on the same PostgreSQL and Temporal: a gateway and a knowledge runtime of its own."""
    t_start = time.monotonic()
    await prepare(settings)
    figures: dict = {"stores": {}}
    for i, store in enumerate(args.stores):
        own = settings.model_copy(update={"vector_store": store})
        figures["stores"][store] = await _measure_store(own, args, t_start, throughput=i == 0)
        if i == 0:
            figures["throughput"] = figures["stores"][store].pop("throughput")
    figures["total_s"] = round(time.monotonic() - t_start, 1)
    return figures


async def _measure_store(settings: Settings, args: argparse.Namespace, t_start: float, *, throughput: bool) -> dict:
    pool = await create_pool(settings)
    runtime = get_runtime(settings)  # the gateway app below finds this same runtime
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
            return await _stages(bench, args, t_start, throughput=throughput)
    finally:
        server.should_exit = True
        await serving
        await runtime.store.close()
        await pool.close()


def _say(t_start: float, store: str, text: str) -> None:
    print(f"[{time.monotonic() - t_start:6.1f}s] {store}: {text}", flush=True)


async def _stages(bench: Bench, args: argparse.Namespace, t_start: float, *, throughput: bool) -> dict:
    store = bench.settings.vector_store
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
    direct = direct_encode(bench.texts, bench.settings.embedding_batch_size, bench.settings.index_batch_size)
    if throughput:
        figures["throughput"] = _throughput(len(bench.texts), product_s, direct)
    assert await bench.count() == SMALL
    queries = [p.query for p in problems][: args.latency_queries]
    figures["latency"], figures["index_build_s"], figures["recall@10"], figures["skipped"] = {}, {}, {}, {}
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
            vectors = await pad_vectors(bench.runtime, args.padding, direct["vectors"], first, texts)
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
    return figures


# Padding vectors, shared by the stores of one run: snippet j's vector (j counts from the first HumanEval
# solution). Below REAL_MAX they are the embedder's own, encoded once; beyond it `--padding mixture` mixes
# two of those (a * u + (1 - a) * v, a in [0.5, 1), renormalised: between real snippets, on the data's own
# directions), and `--padding noise` (the old design, a stress case) adds N(0, NOISE_SIGMA) per dimension to
# one of the first SMALL (near-duplicate clusters of size/SMALL points whose order among themselves is noise).
REAL_MAX = 20_000
_REAL: list[np.ndarray] = []


async def pad_vectors(runtime: KnowledgeRuntime, how: str, first_set: np.ndarray, first: int, texts: list[str]):
    out = np.zeros((len(texts), first_set.shape[1]), np.float32)
    if how == "noise":
        rng = np.random.default_rng(first + len(texts))
        for k in range(len(texts)):
            vec = first_set[(first + k) % SMALL] + rng.normal(0, NOISE_SIGMA, first_set.shape[1]).astype(np.float32)
            out[k] = vec / np.linalg.norm(vec)
        return out
    if not _REAL:
        _REAL.extend(first_set)
    real = max(0, min(len(texts), REAL_MAX - first))
    if len(_REAL) < first + real:  # the store measured first encodes them; the next one reuses them
        todo = texts[len(_REAL) - first : real]
        _REAL.extend(await runtime.encode(runtime.default, todo))
    if real:
        out[:real] = np.stack(_REAL[first : first + real])
    for k in range(real, len(texts)):
        rng = np.random.default_rng(first + k)  # snippet j's mixture depends on j alone
        u, v = rng.integers(0, len(_REAL), 2)
        a = rng.uniform(0.5, 1.0)
        vec = a * _REAL[u] + (1 - a) * _REAL[v]
        out[k] = vec / np.linalg.norm(vec)
    return out


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


# --- the report ------------------------------------------------------------------------------


def report(figures: dict, args: argparse.Namespace, settings: Settings) -> dict:
    for store, cells in figures["stores"].items():
        _report_quality(store, cells, settings)
    _report_latency(figures, args)
    _report_targets(figures)
    _report_throughput(figures["throughput"], settings)
    return {
        "benchmark": "kb",
        "time": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "params": {
            "top_k": TOP_K,
            "latency_queries": args.latency_queries,
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
        f"time, {args.latency_queries} docstring queries per cell, {os.cpu_count()} CPUs; the store's own "
        f"query time beside it; recall@10 of the dense search against exact search of the same vectors"
    )
    head = (
        f"{'store':<7}{'snippets':>9}  {'mode':<8}{'p50 ms':>8}{'p95 ms':>8}{'store p50':>10}{'store p95':>10}"
        f"{'recall@10':>10}{'index wait s':>14}"
    )
    print(head + "\n" + "-" * len(head))
    for store, cells in figures["stores"].items():
        for size, by_mode in cells["latency"].items():
            for mode in MODES:
                c = by_mode[mode]
                recall = f"{cells['recall@10'][size]['by_id']:.4f}" if mode == "dense" else ""
                build = f"{cells['index_build_s'][size]:.1f}" if mode == "dense" else ""
                print(
                    f"{store:<7}{int(size):>9}  {mode:<8}{c['p50_ms']:>8.1f}{c['p95_ms']:>8.1f}"
                    f"{c['store_query_p50_ms']:>10.2f}{c['store_query_p95_ms']:>10.2f}{recall:>10}{build:>14}"
                )
        for size, why in cells["skipped"].items():
            print(f"{store:<7}{int(size):>9}  skipped: {why}")
    beyond = (
        "mixtures a*u + (1-a)*v of two of those vectors, a in [0.5, 1), renormalised"
        if args.padding == "mixture"
        else f"real vectors of the first {SMALL} plus N(0, {NOISE_SIGMA}) per dimension, renormalised"
    )
    print(f"padding: {PADDING_NOTE}. Rows 1-{REAL_MAX} are encoded for real; the rest are {beyond}.")


TARGETS = [  # (what, size, mode, field, bound, at most?)
    ("/similar p50 ms", "20000", "dense", "p50_ms", 20.0, True),
    ("/similar p50 ms", "20000", "hybrid", "p50_ms", 20.0, True),
    ("/similar p50 ms", "200000", "dense", "p50_ms", 40.0, True),
    ("/similar p50 ms", "200000", "hybrid", "p50_ms", 40.0, True),
    ("store query p50 ms", "200000", "dense", "store_query_p50_ms", 5.0, True),
    ("store query p50 ms", "200000", "hybrid", "store_query_p50_ms", 5.0, True),
]


def _report_targets(figures: dict) -> None:
    edge, local = figures["stores"].get("edge"), figures["stores"].get("local")
    if edge is None:
        return
    print("\ntargets (Qdrant Edge), and the ratio to local mode measured in the same run")
    head = f"{'figure':<22}{'snippets':>9}  {'mode':<8}{'target':>8}{'edge':>9}{'met':>5}{'local':>9}{'local/edge':>11}"
    print(head + "\n" + "-" * len(head))
    for what, size, mode, field, bound, _ in TARGETS:
        if size not in edge["latency"]:
            continue
        value = edge["latency"][size][mode][field]
        base = local["latency"].get(size, {}).get(mode, {}).get(field) if local else None
        ratio = f"{base / value:.1f}x" if base else "-"
        print(
            f"{what:<22}{int(size):>9}  {mode:<8}{bound:>8.1f}{value:>9.2f}{'yes' if value <= bound else 'no':>5}"
            f"{(f'{base:.1f}' if base else '-'):>9}{ratio:>11}"
        )
    for size, recall in edge["recall@10"].items():
        for kind in ("by_id", "ties_counted"):
            print(
                f"{'HNSW recall@10 ' + kind:<22}{int(size):>9}  {'dense':<8}{0.99:>8.2f}{recall[kind]:>9.4f}"
                f"{'yes' if recall[kind] >= 0.99 else 'no':>5}"
            )


def _report_throughput(t: dict, settings: Settings) -> None:
    print(
        f"\nembedding throughput, the same {t['texts']} texts (164 HumanEval snippets + padding), MiniLM, "
        f"batch {settings.embedding_batch_size}"
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


def main(args: argparse.Namespace) -> int:
    root = Path(tempfile.mkdtemp(prefix="specmill-bench-kb-"))
    run = Run(root)
    failed = False
    try:
        settings = make_settings(root, rate_limit="100000000/minute")
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
        description="Knowledge base: HumanEval retrieval quality, /similar latency, embedding throughput."
    )
    p.add_argument("--latency-queries", type=int, default=50, help="queries per mode and size (default 50)")
    p.add_argument(
        "--sizes",
        default="1000,20000,200000",
        help="snippets in the tenant at each latency point (default 1000,20000,200000)",
    )
    p.add_argument("--stores", default="edge,local", help="stores to measure, in order (default edge,local)")
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
    if not 1 <= args.latency_queries <= 164 or args.sizes[0] < SMALL or not set(args.stores) <= {"edge", "local"}:
        p.error(f"need 1 <= --latency-queries <= 164, sizes >= {SMALL}, stores among edge,local")
    return args


def _sigterm(_signum, _frame):
    signal.raise_signal(signal.SIGINT)


if __name__ == "__main__":
    signal.signal(signal.SIGTERM, _sigterm)
    exit_without_teardown(main(parse_args()))
