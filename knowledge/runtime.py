"""The knowledge runtime of one process: its embedders and its vector store, created once.

Qdrant's local mode locks its directory to one process, so every part of a process (the API's
routes and the knowledge worker's activities) must share one runtime: `get_runtime` memoises it.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time

from knowledge.embedders import Embedder, EmbedderSpec, configured
from knowledge.errors import EmbedderUnavailable
from models.knowledge import EmbedderInfo
from models.settings import Settings

log = logging.getLogger("specmill.knowledge")


class KnowledgeRuntime:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.specs: dict[str, EmbedderSpec] = configured(settings.codebert_model_dir)
        self._embedders: dict[str, Embedder] = {}
        self._errors: dict[str, str] = {}
        self._lock = threading.Lock()
        self.store = open_store(settings)

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
                        self.settings.embedding_batch_size, self.settings.models_path / ".cache" / "onnx"
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


def open_store(settings: Settings):
    """The vector store this deployment uses: a Qdrant server (QDRANT_URL), else the embedded one,
    Qdrant Edge by default (VECTOR_STORE=local: qdrant-client's local mode). Opened only in the process
    that owns it: both embedded stores are single-writer."""
    from knowledge.vectors import VectorStore

    if settings.qdrant_url:
        return VectorStore.open(url=settings.qdrant_url, api_key=settings.qdrant_api_key, path=None)
    if settings.vector_store == "local":
        settings.qdrant_local_path.mkdir(parents=True, exist_ok=True)
        return VectorStore.open(url=None, api_key=None, path=str(settings.qdrant_local_path))
    from knowledge.edge import EdgeVectorStore

    return EdgeVectorStore.open(settings.edge_dir)


_RUNTIMES: dict[tuple, KnowledgeRuntime] = {}
_RUNTIMES_LOCK = threading.Lock()


def get_runtime(settings: Settings) -> KnowledgeRuntime:
    key = (
        settings.qdrant_url,
        settings.vector_store,
        str(settings.qdrant_local_path.resolve()),
        str(settings.edge_dir.resolve()),
        str(settings.codebert_model_dir),
    )
    with _RUNTIMES_LOCK:
        if key not in _RUNTIMES:
            _RUNTIMES[key] = KnowledgeRuntime(settings)
        return _RUNTIMES[key]
