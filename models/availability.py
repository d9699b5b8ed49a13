"""What a model's backend declares of itself, as a generation worker reports it with the model's state
(store/model_workers.py): all that the gateway's availability rule (api/availability.py) reads of a
model, so that the gateway never builds a backend. codegen/base.py (`declaration`) makes it from a
backend; the values a declaration names (the platform's key, the server's URL) are read from the
gateway's own settings.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict


class KeyNeed(BaseModel):
    """An API model: the tenant provider key that serves it, the platform's setting for it, and whether a
    call needs a key at all (a model server of our own may take none)."""

    model_config = ConfigDict(frozen=True)

    provider: str  # openai, anthropic, vllm (PUT /api/providers/{provider}/key)
    env: str  # the platform's key: OPENAI_API_KEY
    required: bool = True


class ServerNeed(BaseModel):
    """A model server of our own: it serves only while GET <the URL setting><path> answers."""

    model_config = ConfigDict(frozen=True)

    env: str  # the setting that holds the server's URL: VLLM_BASE_URL
    path: str  # what to ask under it: /models


class ModelDeclaration(BaseModel):
    model_config = ConfigDict(frozen=True)

    backend: str  # transformers, vllm, vllm-openai, openai, anthropic
    model: str  # what it runs: a file, a directory, a remote model id
    capabilities: tuple[str, ...] = ()  # models.techniques.CAPABILITIES
    key: KeyNeed | None = None
    server: ServerNeed | None = None
