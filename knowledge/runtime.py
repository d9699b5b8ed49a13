"""The knowledge runtime of one process: its embedders and its vector store, created once.

Qdrant's local mode locks its directory to one process, so every part of a process (the API's
routes and the knowledge worker's activities) must share one runtime: `get_runtime` memoises it.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
import weakref
from dataclasses import dataclass, field

import numpy as np

from knowledge.embedders import Embedder, EmbedderSpec, configured
from knowledge.errors import EmbedderUnavailable
from knowledge.onnx_embedder import ENCODER, EncoderOptions
from knowledge.tuning import PRODUCT, Tuning
from models.knowledge import EmbedderInfo
from models.settings import Settings

log = logging.getLogger("specmill.knowledge")
# Queries per encoder call at most. 1: each query is its own call, in turn (the embedder's lock). make bench-kb
# measured the batching of concurrent queries on this 2-core machine: 8 queries at once waited a p50 of 155 ms
# for one batched call against 69 ms for a call each (MiniLM is compute-bound here: a batch costs about as much
# as its queries one by one, and every query waits for all of them). More cores may turn that around.
QUERY_BATCH = 1


class KnowledgeRuntime:
    """`tuning`: the vector store's index and search settings; `encoder`: ONNX Runtime's; `query_batch`: queries
    per encoder call (each the product's unless given: make bench-kb gives the settings from before its tuning,
    as its baseline)."""

    def __init__(
        self,
        settings: Settings,
        *,
        tuning: Tuning = PRODUCT,
        encoder: EncoderOptions = ENCODER,
        query_batch: int = QUERY_BATCH,
    ) -> None:
        self.settings, self.encoder, self.query_batch = settings, encoder, query_batch
        self.specs: dict[str, EmbedderSpec] = configured(settings.codebert_model_dir)
        self._embedders: dict[str, Embedder] = {}
        self._errors: dict[str, str] = {}
        self._lock = threading.Lock()
        self._batchers: dict[str, QueryBatcher] = {}
        self.store = open_store(settings, tuning)

    @property
    def default(self) -> str:
        return self.settings.default_embedder

    def embedder(self, name: str) -> Embedder:
        if name not in self.specs:
            raise KeyError(name)
        with self._lock:
            if name not in self._embedders and name not in self._errors:
                try:
                    self._embedders[name] = self.specs[name].load(
                        self.settings.embedding_batch_size, self.settings.models_path / ".cache" / "onnx", self.encoder
                    )
                    log.info(
                        "embedder %s loaded from %s (%s)", name, self.specs[name].model, self._embedders[name].engine
                    )
                except Exception as err:  # noqa: BLE001 - reported by /api/knowledge/embedders
                    log.error("embedder %s failed to load: %s", name, err)
                    self._errors[name] = f"{type(err).__name__}: {err}"
        if name in self._errors:
            raise EmbedderUnavailable(f"embedder {name!r} is unavailable: {self._errors[name]}")
        return self._embedders[name]

    def loaded(self) -> list[Embedder]:
        """Every configured embedder that loads (loading them now if needed)."""
        out = []
        for name in self.specs:
            try:
                out.append(self.embedder(name))
            except EmbedderUnavailable:
                pass
        return out

    def info(self) -> list[EmbedderInfo]:
        from knowledge.vectors import collection_name

        return [
            EmbedderInfo(
                name=name,
                model=spec.model,
                collection=collection_name(name),
                dimension=self._embedders[name].dimension if name in self._embedders else None,
                engine=self._embedders[name].engine if name in self._embedders else None,
                loaded=name in self._embedders,
                default=name == self.default,
                error=self._errors.get(name),
            )
            for name, spec in self.specs.items()
        ]

    async def encode(self, name: str, texts: list[str]):
        embedder = self.embedder(name)
        return await asyncio.to_thread(embedder.encode, texts)

    async def encode_query(self, name: str, text: str) -> np.ndarray:
        """One query's vector, on a thread; with `query_batch` > 1, queries that arrive together share one
        encoder call (QueryBatcher)."""
        embedder = self.embedder(name)
        if self.query_batch <= 1:
            return (await asyncio.to_thread(embedder.encode, [text]))[0]
        if name not in self._batchers:
            self._batchers[name] = QueryBatcher(embedder, window=0.0, max_batch=self.query_batch)
        return await self._batchers[name].encode(text)


@dataclass
class _Queue:
    waiting: list[tuple[str, asyncio.Future]] = field(default_factory=list)
    drain: asyncio.Task | None = None


class QueryBatcher:
    """An embedder's queries, batched: the first query of an idle encoder starts a call at once (after `window`
    seconds, when set); the queries that arrive while a call runs wait for it and then go together, up to
    `max_batch` in one call. Calls run on a thread, never on the event loop. A batch pads its texts to the
    longest and masks the padding, so a vector is the one its query gets alone (tests/test_embedders.py)."""

    def __init__(self, embedder: Embedder, *, window: float, max_batch: int = 32) -> None:
        self.embedder, self.window, self.max_batch = embedder, window, max_batch
        self._queues: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, _Queue] = weakref.WeakKeyDictionary()
        self.calls = 0  # encoder calls made, for the bench and the tests

    async def encode(self, text: str) -> np.ndarray:
        loop = asyncio.get_running_loop()
        queue = self._queues.setdefault(loop, _Queue())  # a runtime outlives an event loop in the tests
        future = loop.create_future()
        queue.waiting.append((text, future))
        if queue.drain is None or queue.drain.done():
            queue.drain = loop.create_task(self._drain(queue))
        return await future

    async def _drain(self, queue: _Queue) -> None:
        if self.window:
            await asyncio.sleep(self.window)
        while queue.waiting:
            batch, queue.waiting = queue.waiting[: self.max_batch], queue.waiting[self.max_batch :]
            self.calls += 1
            try:
                vectors = await asyncio.to_thread(self.embedder.encode, [text for text, _ in batch])
            except Exception as err:  # noqa: BLE001 - each waiting query gets the encoder's error
                for _, future in batch:
                    if not future.done():
                        future.set_exception(err)
                continue
            for (_, future), vector in zip(batch, vectors, strict=True):
                if not future.done():  # a request that went away leaves a cancelled future
                    future.set_result(vector)


REBUILT_MARK = ".rebuilt-from-postgres"


def pending_rebuild(settings: Settings) -> str | None:
    """Why the Qdrant Edge store must be rebuilt from PostgreSQL, the source of truth (None: it need not):
    a local-mode index from before the upgrade is there, and Edge has not been rebuilt since."""
    if settings.qdrant_url or settings.vector_store != "edge":
        return None
    old = settings.qdrant_local_path / "collection"
    if not old.is_dir() or not any(old.iterdir()) or (settings.edge_dir / REBUILT_MARK).exists():
        return None
    return f"{settings.qdrant_local_path} holds a qdrant-client local-mode index from before Qdrant Edge"


def mark_rebuilt(settings: Settings, tenants: int) -> None:
    settings.edge_dir.mkdir(parents=True, exist_ok=True)
    (settings.edge_dir / REBUILT_MARK).write_text(f"{time.strftime('%Y-%m-%dT%H:%M:%S%z')} {tenants} tenant(s)\n")


def open_store(settings: Settings, tuning: Tuning = PRODUCT):
    """The vector store this deployment uses: a Qdrant server (QDRANT_URL), else the embedded one,
    Qdrant Edge by default (VECTOR_STORE=local: qdrant-client's local mode). Opened only in the process
    that owns it: both embedded stores are single-writer."""
    from knowledge.vectors import VectorStore

    if settings.qdrant_url:
        return VectorStore.open(url=settings.qdrant_url, api_key=settings.qdrant_api_key, path=None, tuning=tuning)
    if settings.vector_store == "local":
        settings.qdrant_local_path.mkdir(parents=True, exist_ok=True)
        return VectorStore.open(url=None, api_key=None, path=str(settings.qdrant_local_path), tuning=tuning)
    from knowledge.edge import EdgeVectorStore

    return EdgeVectorStore.open(settings.edge_dir, tuning)


_RUNTIMES: dict[tuple, KnowledgeRuntime] = {}
_RUNTIMES_LOCK = threading.Lock()


def get_runtime(settings: Settings, **tuning) -> KnowledgeRuntime:
    """The process's runtime for these settings; the first call makes it (with `tuning`: KnowledgeRuntime's
    keywords, which make bench-kb's baseline gives), later ones get it."""
    key = (
        settings.qdrant_url,
        settings.vector_store,
        str(settings.qdrant_local_path.resolve()),
        str(settings.edge_dir.resolve()),
        str(settings.codebert_model_dir),
    )
    with _RUNTIMES_LOCK:
        if key not in _RUNTIMES:
            _RUNTIMES[key] = KnowledgeRuntime(settings, **tuning)
        return _RUNTIMES[key]
