"""Remote model backends over the official SDKs: OpenAI (and any OpenAI-compatible server:
vLLM, llama.cpp server, Ollama) and Anthropic.

- `openai_api`: OpenAIBackend on settings.openai_* (base URL configurable);
- `deepseek_8b` over vLLM's OpenAI-compatible server: the same class on settings.vllm_base_url
  and settings.deepseek_model (see codegen/vllm_backend.deepseek_backend for the choice);
- `anthropic_api`: AnthropicBackend on settings.anthropic_*.

A tenant's own key (`chat(..., api_key=...)`) wins over the platform's. SDK retries are off
(max_retries=0): Temporal retries the activity, and RemoteModelError.retryable says whether it
should. Keys are always passed explicitly, so the SDKs never read credentials from the environment
or from profile files.
"""

from __future__ import annotations

import importlib
import threading
import time
from typing import Any, Protocol

from codegen.base import Completion, GenerationParams, Message, ModelStatus, ModelUnavailable
from models.settings import Settings

OPENAI_DEFAULT_BASE_URL = "https://api.openai.com/v1"
ANTHROPIC_DEFAULT_BASE_URL = "https://api.anthropic.com"
OPENAI_MAX_STOP = 4  # OpenAI's API takes at most 4 stop sequences; the rest are applied here
NO_KEY_PLACEHOLDER = "EMPTY"  # what vLLM's docs send to a server started without --api-key
_ERROR_TEXT_MAX = 300


class RemoteModelError(ModelUnavailable):
    """The provider refused or failed the call. `status`: its HTTP status (None: no answer).
    `retryable`: whether trying again can help (429, 5xx, network) or not (400, 401, 403, 404)."""

    def __init__(self, message: str, *, status: int | None = None, retryable: bool = True) -> None:
        super().__init__(message)
        self.status = status
        self.retryable = retryable


class _StatusError(Protocol):
    """The SDKs' APIStatusError (openai's and anthropic's): the provider's HTTP status."""

    status_code: int


def _retryable(status: int) -> bool:
    return status in (408, 409, 429) or status >= 500


def _error_text(err: Exception) -> str:
    """The provider's own error message when its body has one, else the SDK's; never a key."""
    body = getattr(err, "body", None)
    text = None
    if isinstance(body, dict):
        inner = body.get("error", body)
        if isinstance(inner, dict):
            text = inner.get("message")
        elif isinstance(inner, str):
            text = inner
    text = str(text or getattr(err, "message", None) or err or type(err).__name__)
    return text if len(text) <= _ERROR_TEXT_MAX else text[:_ERROR_TEXT_MAX] + "..."


def _cut_at_stop(text: str, stop: tuple[str, ...]) -> tuple[str, bool]:
    """Cut `text` at the first stop sequence (servers that got only some of them, or none)."""
    cuts = [i for s in stop if s and (i := text.find(s)) >= 0]
    return (text[: min(cuts)], True) if cuts else (text, False)


class _RemoteBackend:
    """What the OpenAI and Anthropic backends share: keys, status, timing and error mapping."""

    sdk = ""  # the SDK module's name
    default_base_url = ""
    # Their APIs take no grammar and expose no logits step by step: techniques that need more are
    # refused (models.techniques.resolve), or run as check-and-ask-again (hybrid_grammar_neural).
    capabilities = frozenset({"chat"})

    def __init__(
        self,
        *,
        name: str,
        backend: str,
        model: str,
        provider: str,
        key_env: str,
        base_url: str | None,
        url_env: str = "",
        api_key: str | None,
        tenant_keys: bool = False,
        key_required: bool = True,
        timeout: float = 300.0,
        probe_path: str | None = None,
    ) -> None:
        self.name = name
        self.backend = backend
        self.model = model
        self.provider = provider  # which tenant provider key serves this model: openai, anthropic, vllm
        self.key_env = key_env
        self.url_env = url_env  # the setting that moves base_url (its environment variable)
        self.base_url = (base_url or self.default_base_url).rstrip("/")
        self._api_key = api_key or None
        self.tenant_keys = tenant_keys
        self.key_required = key_required
        self.timeout = timeout
        # a server of our own (vLLM) is only available while it answers: GET this URL tells (api/availability.py)
        self.probe_url = f"{self.base_url}{probe_path}" if probe_path else None
        self._http: Any = None
        self._lock = threading.Lock()

    # --- contract ----------------------------------------------------------------------
    def status(self) -> ModelStatus:
        details = {
            "provider": self.provider,
            "base_url": self.base_url,
            "platform_key": self._api_key is not None,
            "tenant_keys": self.tenant_keys,
        }
        reason = self._unconfigured_reason()
        if reason:
            return ModelStatus(self.name, self.backend, self.model, "unavailable", reason, details)
        return ModelStatus(self.name, self.backend, self.model, "available", None, details)

    def load(self) -> None:
        """Nothing to load for a remote model; unconfigured: ModelUnavailable with the reason."""
        reason = self._unconfigured_reason()
        if reason:
            raise ModelUnavailable(reason)

    def chat(self, messages: list[Message], params: GenerationParams, *, api_key: str | None = None) -> Completion:
        key = api_key or self._api_key
        if not key:
            if self.key_required:
                raise ModelUnavailable(f"no API key: set {self.key_env} or store a tenant key")
            key = NO_KEY_PLACEHOLDER
        whose = "the tenant's" if api_key else "the platform's"
        started = time.perf_counter()
        text, tokens_in, tokens_out, finish = self._call(key, whose, messages, params)
        text, cut = _cut_at_stop(text, params.stop)
        return Completion(
            text=text,
            tokens_in=tokens_in,
            tokens_out=tokens_out,
            latency_s=time.perf_counter() - started,
            finish_reason="stop" if cut else finish,
        )

    @property
    def platform_key(self) -> bool:
        """Whether the platform has a key of its own for this model (settings)."""
        return self._api_key is not None

    # --- helpers -----------------------------------------------------------------------
    def _unconfigured_reason(self) -> str | None:
        if self.key_required and self._api_key is None and not self.tenant_keys:
            return f"no API key: set {self.key_env} or store a tenant key"
        return None

    def _shared_http(self):
        """One connection pool per backend, shared by the per-key SDK clients (thread-safe)."""
        with self._lock:
            if self._http is None:
                self._http = importlib.import_module(self.sdk).DefaultHttpxClient()
            return self._http

    def _call(self, key: str, whose: str, messages: list[Message], params: GenerationParams):
        raise NotImplementedError

    def _failure(self, err: Exception, whose: str) -> RemoteModelError:
        """Map an SDK exception to RemoteModelError with the reason (status, provider's message)."""
        sdk = importlib.import_module(self.sdk)
        status_error: type[_StatusError] = sdk.APIStatusError
        if isinstance(err, status_error):
            status = err.status_code
            what = f"{whose} API key was refused" if status in (401, 403) else "the request failed"
            return RemoteModelError(
                f"{self.name}: {self.base_url} answered HTTP {status} ({what}): {_error_text(err)}",
                status=status,
                retryable=_retryable(status),
            )
        if isinstance(err, sdk.APITimeoutError):
            return RemoteModelError(f"{self.name}: {self.base_url} did not answer within {self.timeout:.0f}s")
        if isinstance(err, sdk.APIConnectionError):
            cause = err.__cause__ or err
            return RemoteModelError(f"{self.name}: cannot reach {self.base_url}: {type(cause).__name__}: {cause}")
        return RemoteModelError(
            f"{self.name}: {self.base_url} gave an answer that cannot be used: {_error_text(err)}", retryable=False
        )


class OpenAIBackend(_RemoteBackend):
    """POST {base_url}/chat/completions through the official `openai` SDK (sync client)."""

    sdk = "openai"
    default_base_url = OPENAI_DEFAULT_BASE_URL

    def request(self, messages: list[Message], params: GenerationParams) -> dict[str, Any]:
        """The keyword arguments of chat.completions.create for this chat."""
        body: dict[str, Any] = {
            "model": self.model,
            "messages": [{"role": m.role, "content": m.content} for m in messages],
            "max_tokens": params.max_new_tokens,
            "temperature": params.temperature,
            "top_p": params.top_p,
        }
        stop = [s for s in params.stop if s][:OPENAI_MAX_STOP]
        if stop:
            body["stop"] = stop
        if params.seed is not None:
            body["seed"] = params.seed
        return body

    def _call(self, key: str, whose: str, messages: list[Message], params: GenerationParams):
        import openai

        client = openai.OpenAI(
            api_key=key, base_url=self.base_url, max_retries=0, timeout=self.timeout, http_client=self._shared_http()
        )
        try:
            resp = client.chat.completions.create(**self.request(messages, params))
        except openai.OpenAIError as err:
            raise self._failure(err, whose) from err
        choices = getattr(resp, "choices", None)
        if not choices:
            raise RemoteModelError(f"{self.name}: {self.base_url} answered without a choice", retryable=False)
        choice = choices[0]
        usage = getattr(resp, "usage", None)
        return (
            choice.message.content or "",
            (usage.prompt_tokens or 0) if usage else 0,
            (usage.completion_tokens or 0) if usage else 0,
            "length" if choice.finish_reason == "length" else "stop",
        )


class AnthropicBackend(_RemoteBackend):
    """POST {base_url}/v1/messages through the official `anthropic` SDK (sync client).

    System messages go into `system`; whitespace-only stop sequences, which the API refuses, are
    applied here instead. Sampling: the Messages API of the pinned SDK (2.13) has no temperature or
    top_p any more, and recent Claude models refuse them, so by default neither is sent (the
    model's own sampling applies; greedy decoding is not available). `send_sampling=True` sends
    them anyway (temperature clamped to 0..1, top_p only when below 1), for older models and
    Anthropic-compatible servers that take them.
    """

    sdk = "anthropic"
    default_base_url = ANTHROPIC_DEFAULT_BASE_URL

    def __init__(self, *, send_sampling: bool = False, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.send_sampling = send_sampling

    def request(self, messages: list[Message], params: GenerationParams) -> dict[str, Any]:
        system = "\n\n".join(m.content for m in messages if m.role == "system")
        body: dict[str, Any] = {
            "model": self.model,
            "messages": [{"role": m.role, "content": m.content} for m in messages if m.role != "system"],
            "max_tokens": params.max_new_tokens,
        }
        if system:
            body["system"] = system
        if self.send_sampling:
            sampling: dict[str, Any] = {"temperature": min(max(params.temperature, 0.0), 1.0)}
            if params.top_p < 1.0:
                sampling["top_p"] = params.top_p
            body["extra_body"] = sampling
        stop = [s for s in params.stop if s.strip()]
        if stop:
            body["stop_sequences"] = stop
        return body

    def _call(self, key: str, whose: str, messages: list[Message], params: GenerationParams):
        import anthropic

        # The pinned SDK sends the key as `Authorization: Bearer`; x-api-key too, the header the
        # Messages API has always taken and that Anthropic-compatible servers look for.
        client = anthropic.Anthropic(
            api_key=key,
            base_url=self.base_url,
            max_retries=0,
            timeout=self.timeout,
            http_client=self._shared_http(),
            default_headers={"x-api-key": key},
        )
        try:
            resp = client.messages.create(**self.request(messages, params))
        except anthropic.AnthropicError as err:
            raise self._failure(err, whose) from err
        blocks = getattr(resp, "content", None)
        if blocks is None:
            raise RemoteModelError(f"{self.name}: {self.base_url} answered without content", retryable=False)
        text = "".join(getattr(b, "text", "") for b in blocks if getattr(b, "type", None) == "text")
        usage = getattr(resp, "usage", None)
        return (
            text,
            (usage.input_tokens or 0) if usage else 0,
            (usage.output_tokens or 0) if usage else 0,
            "length" if resp.stop_reason == "max_tokens" else "stop",
        )


# --- the seed's remote models, from settings ---------------------------------------------


def openai_backend(settings: Settings) -> OpenAIBackend:
    return OpenAIBackend(
        name="openai_api",
        backend="openai",
        model=settings.openai_model,
        provider="openai",
        key_env="OPENAI_API_KEY",
        base_url=settings.openai_base_url,
        url_env="OPENAI_BASE_URL",
        api_key=settings.openai_api_key,
        tenant_keys=settings.provider_keys_secret is not None,
    )


def anthropic_backend(settings: Settings) -> AnthropicBackend:
    return AnthropicBackend(
        name="anthropic_api",
        backend="anthropic",
        model=settings.anthropic_model,
        provider="anthropic",
        key_env="ANTHROPIC_API_KEY",
        base_url=settings.anthropic_base_url,
        url_env="ANTHROPIC_BASE_URL",
        api_key=settings.anthropic_api_key,
        tenant_keys=settings.provider_keys_secret is not None,
    )


def vllm_server_backend(settings: Settings) -> OpenAIBackend:
    """deepseek_8b over vLLM's OpenAI-compatible server at settings.vllm_base_url (…/v1).
    A key is optional: a server started without --api-key accepts any."""
    if not settings.vllm_base_url:
        raise ValueError("vllm_base_url is not set")
    return OpenAIBackend(
        name="deepseek_8b",
        backend="vllm-openai",
        model=settings.deepseek_model,
        provider="vllm",
        key_env="VLLM_API_KEY",
        base_url=settings.vllm_base_url,
        url_env="VLLM_BASE_URL",
        api_key=settings.vllm_api_key,
        tenant_keys=settings.provider_keys_secret is not None,
        key_required=False,
        probe_path="/models",
    )
