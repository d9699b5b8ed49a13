"""The model manager: the seed's four model names, each served by its configured backend.

A model that cannot serve says why (GET /api/models) and is never silently replaced by another.
"""

from __future__ import annotations

import threading
from collections.abc import Callable

from codegen.base import Backend, ModelStatus
from models.common import MODEL_NAMES
from models.settings import Settings


def _local(settings: Settings) -> Backend:
    from codegen.local_llama import LocalLlamaBackend

    return LocalLlamaBackend(settings)


def _deepseek(settings: Settings) -> Backend:
    from codegen.vllm_backend import deepseek_backend

    return deepseek_backend(settings)


def _openai(settings: Settings) -> Backend:
    from codegen.remote import openai_backend

    return openai_backend(settings)


def _anthropic(settings: Settings) -> Backend:
    from codegen.remote import anthropic_backend

    return anthropic_backend(settings)


FACTORIES: dict[str, Callable[[Settings], Backend]] = {
    "local_llama": _local,
    "deepseek_8b": _deepseek,
    "openai_api": _openai,
    "anthropic_api": _anthropic,
}
assert tuple(FACTORIES) == MODEL_NAMES


class ModelManager:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._backends: dict[str, Backend] = {}
        self._lock = threading.Lock()

    def backend(self, name: str) -> Backend:
        """The backend of a seed model name (KeyError for any other name)."""
        factory = FACTORIES[name]
        with self._lock:
            if name not in self._backends:
                self._backends[name] = factory(self.settings)
            return self._backends[name]

    def statuses(self) -> list[ModelStatus]:
        return [self.backend(name).status() for name in MODEL_NAMES]

    def provider(self, name: str) -> str | None:
        """Which tenant provider key serves this model (openai, anthropic, vllm), if any."""
        return getattr(self.backend(name), "provider", None)
