"""The contract every model backend implements, and what a generation call returns.

Backends are synchronous: generation is CPU/GPU-bound or a blocking SDK call, so the generation
worker runs it in synchronous activities on a thread pool (never on the event loop).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal, Protocol, TypeGuard, TypeVar, runtime_checkable

from models.availability import KeyNeed, ModelDeclaration, ServerNeed
from models.techniques.base import Beam, Decoding, Grammar, JsonSchema

P = TypeVar("P", Beam, Grammar, JsonSchema)

Role = Literal["system", "user", "assistant"]


@dataclass(frozen=True)
class Span:
    """A labelled part of a message: characters [start, end) of its content. Labels name what the part
    holds: `description`, `signature`, `test:1`, `snippet:<id>`, `plan_item`, `failure` (codegen/prompts.py)."""

    label: str
    start: int
    end: int


@dataclass(frozen=True)
class Message:
    role: Role
    content: str
    spans: tuple[Span, ...] = ()  # where the prompt's labelled parts are in `content`; never sent to a model


@dataclass(frozen=True)
class GenerationParams:
    max_new_tokens: int = 256
    temperature: float = 0.0  # 0: greedy
    top_p: float = 1.0
    stop: tuple[str, ...] = ()
    seed: int | None = None
    # What the techniques add to decoding (models/techniques/base.py: Beam, Grammar, JsonSchema): a backend
    # turns each part into its own logits processors, beam loop or structured outputs. A part reaches only
    # backends with a capability for it (models.techniques.resolve checks); a JSON Schema on a backend
    # without one is ignored (callers check the answer anyway).
    decoding: tuple[Decoding, ...] = ()

    def part(self, kind: type[P]) -> P | None:
        return next((p for p in self.decoding if isinstance(p, kind)), None)

    @property
    def beam(self) -> Beam | None:
        return self.part(Beam)

    @property
    def grammar(self) -> str | None:
        """The EBNF text of a grammar part."""
        part = self.part(Grammar)
        return part.ebnf if part is not None else None

    @property
    def json_schema(self) -> str | None:
        part = self.part(JsonSchema)
        return part.text if part is not None else None


@dataclass(frozen=True)
class Alternative:
    """One finished beam of a beam search."""

    text: str
    tokens_out: int
    logprob: float  # summed over its tokens
    score: float  # logprob / tokens_out ** length_penalty: the order of the beams
    finish_reason: str


@dataclass(frozen=True)
class Completion:
    text: str
    tokens_in: int
    tokens_out: int
    latency_s: float
    finish_reason: str = "stop"  # "stop" | "length" | "dead_end" (the grammar allowed no token)
    # beam search: every finished beam, best first (text is the first one's); empty otherwise
    alternatives: tuple[Alternative, ...] = ()
    notes: tuple[str, ...] = ()  # what decoding observed: beams pruned, grammar dead ends
    # the sum of its tokens' log-probabilities, where the backend reports them (None: it does not)
    logprob: float | None = None


@dataclass
class ModelStatus:
    """What GET /api/models says of one model."""

    name: str  # the seed's model name: local_llama, deepseek_8b, openai_api, anthropic_api
    backend: str  # transformers, vllm, vllm-openai, openai, anthropic
    model: str  # what it runs: a file, a directory, a remote model id
    state: Literal["loaded", "available", "unavailable"]
    reason: str | None = None  # why unavailable; never silently replaced by another model
    details: dict = field(default_factory=dict)


class ModelUnavailable(Exception):
    """The model cannot serve: missing files, no GPU, no API key, server unreachable."""


class Backend(Protocol):
    """What availability reads of a backend (api/availability.py) is its `status()`, its `capabilities`
    and, where it has them, what KeyedBackend and ServedBackend declare: `declaration` collects them, a
    generation worker reports them (store/model_workers.py), and the gateway reads the reports."""

    name: str
    # What it can do, in the vocabulary of models.techniques.CAPABILITIES; techniques are checked
    # against it (models.techniques.resolve) before anything runs.
    capabilities: frozenset[str]

    def status(self) -> ModelStatus: ...

    def load(self) -> None:
        """Make the model ready (idempotent); raise ModelUnavailable with the reason."""

    def chat(self, messages: list[Message], params: GenerationParams, *, api_key: str | None = None) -> Completion:
        """One completion for a chat. `api_key`: the tenant's own provider key, used ahead of the
        platform's (remote backends only). Raise ModelUnavailable if the model cannot serve."""
        ...


class BatchBackend(Backend, Protocol):
    """A backend with the "batch" capability: several answers to one chat in one pass."""

    def chat_many(
        self, messages: list[Message], params: list[GenerationParams], *, api_key: str | None = None
    ) -> list[Completion]:
        """One completion per `params`, as `chat` would give each alone."""
        ...


def batches(backend: Backend) -> TypeGuard[BatchBackend]:
    """Whether the backend has `chat_many` (its "batch" capability)."""
    return "batch" in backend.capabilities


@runtime_checkable
class KeyedBackend(Backend, Protocol):
    """A backend that calls a provider with a key (codegen/remote.py): a tenant's own key for `provider`
    goes ahead of the platform's setting `key_env`; without either it serves only if not `key_required`."""

    provider: str  # openai, anthropic, vllm
    key_env: str
    key_required: bool


@runtime_checkable
class ServedBackend(Backend, Protocol):
    """A backend over a model server of our own: it serves only while `probe_url` answers. `url_env` is
    the setting that holds `base_url`, under which `probe_url` lies."""

    base_url: str
    url_env: str
    probe_url: str | None


def declaration(backend: Backend, status: ModelStatus) -> ModelDeclaration:
    """What availability reads of this backend (the protocol's docstring), with its status's backend and model."""
    key = server = None
    if isinstance(backend, KeyedBackend):
        key = KeyNeed(provider=backend.provider, env=backend.key_env, required=backend.key_required)
    if isinstance(backend, ServedBackend) and backend.probe_url and backend.url_env:
        server = ServerNeed(env=backend.url_env, path=backend.probe_url.removeprefix(backend.base_url))
    return ModelDeclaration(
        backend=status.backend,
        model=status.model,
        capabilities=tuple(sorted(backend.capabilities)),
        key=key,
        server=server,
    )
