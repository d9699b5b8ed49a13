"""Remote model backends at their wire protocol, and deepseek_8b's two ways to run.

The OpenAI and Anthropic servers here are a PROTOCOL FAKE: a small local HTTP server that this
test starts, implementing POST /v1/chat/completions and POST /v1/messages with canned answers and
recording every request. No real model and no network is involved; what is tested is what the
official SDKs send through our backends (model, messages, system, max_tokens, temperature, stop,
auth headers) and how our backends read the answers and the failures.
"""

from __future__ import annotations

import importlib.util
import json
import socket
import threading
from collections import deque
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from codegen.base import GenerationParams, Message, ModelUnavailable
from codegen.remote import AnthropicBackend, OpenAIBackend, RemoteModelError, anthropic_backend, openai_backend
from codegen.vllm_backend import NO_GPU, NO_VLLM, VLLMBackend, deepseek_backend
from models.settings import Settings

CHAT = [Message("system", "You write Python."), Message("user", "Write add(a, b).")]


@dataclass
class Seen:
    path: str
    headers: dict[str, str]
    body: dict


@dataclass
class ProtocolFake:
    """A protocol fake of the OpenAI and Anthropic HTTP APIs (not a model)."""

    url: str = ""
    requests: list[Seen] = field(default_factory=list)
    queued: deque = field(default_factory=deque)  # (status, body) answers to give before the default

    def answer(self, status: int, body: dict) -> None:
        self.queued.append((status, body))

    @property
    def last(self) -> Seen:
        return self.requests[-1]


def _openai_ok(body: dict) -> dict:
    return {
        "id": "chatcmpl-fake",
        "object": "chat.completion",
        "created": 0,
        "model": body.get("model"),
        "choices": [
            {
                "index": 0,
                "finish_reason": "stop",
                "message": {"role": "assistant", "content": "def add(a, b):\n    return a + b\n"},
            }
        ],
        "usage": {"prompt_tokens": 21, "completion_tokens": 13, "total_tokens": 34},
    }


def _anthropic_ok(body: dict) -> dict:
    return {
        "id": "msg_fake",
        "type": "message",
        "role": "assistant",
        "model": body.get("model"),
        "content": [{"type": "text", "text": "def add(a, b):\n"}, {"type": "text", "text": "    return a + b\n"}],
        "stop_reason": "end_turn",
        "stop_sequence": None,
        "usage": {"input_tokens": 17, "output_tokens": 11},
    }


@pytest.fixture(scope="module")
def fake():
    state = ProtocolFake()

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args):  # quiet
            pass

        def do_POST(self):
            raw = self.rfile.read(int(self.headers.get("Content-Length") or 0))
            body = json.loads(raw or b"{}")
            state.requests.append(Seen(self.path, {k.lower(): v for k, v in self.headers.items()}, body))
            if state.queued:
                status, answer = state.queued.popleft()
            elif self.path == "/v1/chat/completions":
                status, answer = 200, _openai_ok(body)
            elif self.path == "/v1/messages":
                status, answer = 200, _anthropic_ok(body)
            else:
                status, answer = 404, {"error": {"message": f"no route {self.path}"}}
            data = json.dumps(answer).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    state.url = f"http://127.0.0.1:{server.server_address[1]}"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield state
    server.shutdown()
    server.server_close()


@pytest.fixture
def settings(fake) -> Settings:
    """Explicit values: nothing may come from the environment or an env file."""
    fake.queued.clear()
    return Settings(
        _env_file=None,
        openai_base_url=f"{fake.url}/v1",
        openai_api_key="sk-platform-0000",
        openai_model="gpt-fake",
        anthropic_base_url=fake.url,
        anthropic_api_key="ak-platform-0000",
        anthropic_model="claude-fake",
        vllm_base_url=None,
        vllm_api_key=None,
        provider_keys_secret=None,
    )


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]  # nothing listens there once the socket closes


# --- OpenAI ---------------------------------------------------------------------------------


def test_openai_request_shape_and_answer(fake, settings):
    backend = openai_backend(settings)
    params = GenerationParams(max_new_tokens=64, temperature=0.2, top_p=0.9, stop=("\nclass ",), seed=7)
    out = backend.chat(CHAT, params)

    seen = fake.last
    assert seen.path == "/v1/chat/completions"
    assert seen.headers["authorization"] == "Bearer sk-platform-0000"
    assert seen.body["model"] == "gpt-fake"
    assert seen.body["messages"] == [
        {"role": "system", "content": "You write Python."},
        {"role": "user", "content": "Write add(a, b)."},
    ]
    assert seen.body["max_tokens"] == 64
    assert seen.body["temperature"] == 0.2 and seen.body["top_p"] == 0.9
    assert seen.body["stop"] == ["\nclass "] and seen.body["seed"] == 7
    assert not seen.body.get("stream")

    assert out.text == "def add(a, b):\n    return a + b\n"
    assert (out.tokens_in, out.tokens_out) == (21, 13)
    assert out.finish_reason == "stop" and out.latency_s > 0


def test_openai_tenant_key_beats_platform_key(fake, settings):
    openai_backend(settings).chat(CHAT, GenerationParams(), api_key="sk-tenant-1111")
    assert fake.last.headers["authorization"] == "Bearer sk-tenant-1111"
    assert "sk-platform-0000" not in json.dumps(fake.last.headers)


def test_openai_no_key_at_all(fake, settings):
    backend = openai_backend(settings.model_copy(update={"openai_api_key": None}))
    before = len(fake.requests)
    with pytest.raises(ModelUnavailable, match="no API key: set OPENAI_API_KEY or store a tenant key"):
        backend.chat(CHAT, GenerationParams())
    assert len(fake.requests) == before  # nothing was sent
    status = backend.status()
    assert status.state == "unavailable" and status.reason == "no API key: set OPENAI_API_KEY or store a tenant key"
    # With tenant keys enabled, the model is available: a tenant may bring its own key.
    with_tenants = openai_backend(settings.model_copy(update={"openai_api_key": None, "provider_keys_secret": "s"}))
    assert with_tenants.status().state == "available"
    assert with_tenants.chat(CHAT, GenerationParams(), api_key="sk-tenant-2222").tokens_out == 13


def test_openai_length_and_stops_beyond_four(fake, settings):
    fake.answer(
        200,
        {
            **_openai_ok({"model": "gpt-fake"}),
            "choices": [
                {"index": 0, "finish_reason": "length", "message": {"role": "assistant", "content": "a\nb\nEND c"}}
            ],
        },
    )
    out = openai_backend(settings).chat(CHAT, GenerationParams(stop=("1", "2", "3", "4", "END")))
    assert fake.last.body["stop"] == ["1", "2", "3", "4"]  # OpenAI takes at most 4 ...
    assert out.text == "a\nb\n" and out.finish_reason == "stop"  # ... the fifth is applied here

    fake.answer(
        200,
        {
            **_openai_ok({"model": "gpt-fake"}),
            "choices": [{"index": 0, "finish_reason": "length", "message": {"role": "assistant", "content": "def f("}}],
            "usage": None,
        },
    )
    out = openai_backend(settings).chat(CHAT, GenerationParams(max_new_tokens=3))
    assert out.finish_reason == "length" and (out.tokens_in, out.tokens_out) == (0, 0)


@pytest.mark.parametrize(
    "status,retryable,words",
    [
        (401, False, ["HTTP 401", "the platform's API key was refused", "Incorrect API key provided"]),
        (500, True, ["HTTP 500", "the server had an error"]),
        (429, True, ["HTTP 429", "rate limit"]),
    ],
)
def test_openai_http_errors(fake, settings, status, retryable, words):
    message = {401: "Incorrect API key provided", 500: "the server had an error", 429: "rate limit reached"}[status]
    fake.answer(status, {"error": {"message": message, "type": "x", "code": None}})
    before = len(fake.requests)
    with pytest.raises(RemoteModelError) as info:
        openai_backend(settings).chat(CHAT, GenerationParams())
    assert len(fake.requests) == before + 1  # the SDK did not retry: Temporal does
    err = info.value
    assert isinstance(err, ModelUnavailable) and err.status == status and err.retryable is retryable
    for word in words:
        assert word in str(err)
    assert "sk-platform-0000" not in str(err)


def test_openai_tenant_key_refused_says_whose(fake, settings):
    fake.answer(401, {"error": {"message": "Incorrect API key provided", "type": "invalid_request_error"}})
    with pytest.raises(ModelUnavailable, match="the tenant's API key was refused"):
        openai_backend(settings).chat(CHAT, GenerationParams(), api_key="sk-tenant-3333")


def test_openai_connection_refused(settings):
    port = _closed_port()
    backend = openai_backend(settings.model_copy(update={"openai_base_url": f"http://127.0.0.1:{port}/v1"}))
    with pytest.raises(RemoteModelError, match=f"cannot reach http://127.0.0.1:{port}/v1") as info:
        backend.chat(CHAT, GenerationParams())
    assert info.value.status is None and info.value.retryable


# --- Anthropic ------------------------------------------------------------------------------


def test_anthropic_request_shape_and_answer(fake, settings):
    backend = anthropic_backend(settings)
    chat = [*CHAT, Message("system", "Answer with code only.")]
    out = backend.chat(chat, GenerationParams(max_new_tokens=50, temperature=0.0, stop=("\n\n\n", "```")))

    seen = fake.last
    assert seen.path == "/v1/messages"
    # The pinned SDK sends the key as a Bearer token; the backend adds the classic x-api-key.
    assert seen.headers["x-api-key"] == "ak-platform-0000"
    assert seen.headers["authorization"] == "Bearer ak-platform-0000"
    assert seen.headers.get("anthropic-version")
    assert seen.body["model"] == "claude-fake"
    assert seen.body["system"] == "You write Python.\n\nAnswer with code only."
    assert seen.body["messages"] == [{"role": "user", "content": "Write add(a, b)."}]
    assert seen.body["max_tokens"] == 50
    assert "temperature" not in seen.body and "top_p" not in seen.body  # not in the pinned SDK's API
    assert seen.body["stop_sequences"] == ["```"]  # whitespace-only ones are refused by the API

    assert out.text == "def add(a, b):\n    return a + b\n"
    assert (out.tokens_in, out.tokens_out) == (17, 11)
    assert out.finish_reason == "stop" and out.latency_s > 0

    cut = backend.chat(chat, GenerationParams(stop=("\n    ",)))  # whitespace-only: applied here
    assert "stop_sequences" not in fake.last.body
    assert cut.text == "def add(a, b):"


def test_anthropic_tenant_key_and_length(fake, settings):
    fake.answer(200, {**_anthropic_ok({"model": "claude-fake"}), "stop_reason": "max_tokens"})
    out = anthropic_backend(settings).chat(CHAT, GenerationParams(max_new_tokens=5), api_key="ak-tenant-4444")
    assert fake.last.headers["x-api-key"] == "ak-tenant-4444"
    assert fake.last.headers["authorization"] == "Bearer ak-tenant-4444"
    assert "ak-platform-0000" not in json.dumps(fake.last.headers)
    assert out.finish_reason == "length"


def test_anthropic_sampling_when_asked(fake, settings):
    """For older models and compatible servers: temperature (clamped to 0..1) and top_p are sent."""
    backend = AnthropicBackend(
        name="anthropic_api",
        backend="anthropic",
        model="claude-old",
        provider="anthropic",
        key_env="ANTHROPIC_API_KEY",
        base_url=fake.url,
        api_key="ak-1",
        send_sampling=True,
    )
    backend.chat(CHAT, GenerationParams(temperature=1.7, top_p=0.5))
    assert fake.last.body["temperature"] == 1.0 and fake.last.body["top_p"] == 0.5
    backend.chat(CHAT, GenerationParams(temperature=0.0))
    assert fake.last.body["temperature"] == 0.0 and "top_p" not in fake.last.body


def test_anthropic_no_key(fake, settings):
    backend = anthropic_backend(settings.model_copy(update={"anthropic_api_key": None}))
    with pytest.raises(ModelUnavailable, match="no API key: set ANTHROPIC_API_KEY or store a tenant key"):
        backend.chat(CHAT, GenerationParams())
    assert backend.status().state == "unavailable"


@pytest.mark.parametrize(
    "status,kind,retryable",
    [(401, "authentication_error", False), (500, "api_error", True), (529, "overloaded_error", True)],
)
def test_anthropic_http_errors(fake, settings, status, kind, retryable):
    fake.answer(status, {"type": "error", "error": {"type": kind, "message": f"fake {kind}"}})
    with pytest.raises(RemoteModelError) as info:
        anthropic_backend(settings).chat(CHAT, GenerationParams())
    assert info.value.status == status and info.value.retryable is retryable
    assert f"HTTP {status}" in str(info.value) and f"fake {kind}" in str(info.value)


def test_anthropic_connection_refused(settings):
    port = _closed_port()
    backend = anthropic_backend(settings.model_copy(update={"anthropic_base_url": f"http://127.0.0.1:{port}"}))
    with pytest.raises(ModelUnavailable, match="cannot reach"):
        backend.chat(CHAT, GenerationParams())


# --- deepseek_8b ----------------------------------------------------------------------------


def test_deepseek_over_vllm_openai_server(fake, settings):
    configured = settings.model_copy(
        update={"vllm_base_url": f"{fake.url}/v1", "deepseek_model": "deepseek-ai/DeepSeek-R1-Distill-Llama-8B"}
    )
    backend = deepseek_backend(configured)
    assert isinstance(backend, OpenAIBackend)
    status = backend.status()
    assert (status.name, status.backend, status.state) == ("deepseek_8b", "vllm-openai", "available")
    assert status.model == "deepseek-ai/DeepSeek-R1-Distill-Llama-8B"

    out = backend.chat(CHAT, GenerationParams(max_new_tokens=16))
    assert fake.last.path == "/v1/chat/completions"
    assert fake.last.body["model"] == "deepseek-ai/DeepSeek-R1-Distill-Llama-8B"
    assert fake.last.headers["authorization"] == "Bearer EMPTY"  # a vLLM server without --api-key
    assert out.tokens_out == 13

    keyed = deepseek_backend(configured.model_copy(update={"vllm_api_key": "vllm-key-5555"}))
    keyed.chat(CHAT, GenerationParams())
    assert fake.last.headers["authorization"] == "Bearer vllm-key-5555"
    keyed.chat(CHAT, GenerationParams(), api_key="vllm-tenant-6666")
    assert fake.last.headers["authorization"] == "Bearer vllm-tenant-6666"


def _vllm_runnable() -> bool:
    if importlib.util.find_spec("vllm") is None:
        return False
    import torch

    return torch.cuda.is_available()


@pytest.mark.skipif(_vllm_runnable(), reason="vllm and a GPU are present: the in-process test below runs")
def test_in_process_vllm_unavailable_here_with_its_reason(settings):
    backend = deepseek_backend(settings)  # no VLLM_BASE_URL: in process
    assert isinstance(backend, VLLMBackend)
    status = backend.status()
    assert (status.name, status.backend, status.state) == ("deepseek_8b", "vllm", "unavailable")
    if importlib.util.find_spec("vllm") is None:
        assert NO_VLLM in status.reason and "pip install .[gpu]" in status.reason
    import torch

    if not torch.cuda.is_available():
        assert NO_GPU in status.reason
    assert "VLLM_BASE_URL" in status.reason
    with pytest.raises(ModelUnavailable, match="vllm is not installed|no CUDA GPU"):
        backend.chat(CHAT, GenerationParams())


def _tiny_llama(directory) -> None:
    """A randomly initialised Llama with a small word-level tokenizer and a chat template."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    words = "def add a b return + ( ) : , system user assistant you write python".split()
    vocab = {t: i for i, t in enumerate(["<unk>", "<s>", "</s>", *words])}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="<unk>", bos_token="<s>", eos_token="</s>")
    fast.chat_template = (
        "{% for m in messages %}{{ m['role'] }} {{ m['content'] }} {% endfor %}"
        "{% if add_generation_prompt %}assistant {% endif %}"
    )
    fast.save_pretrained(directory)
    config = LlamaConfig(
        vocab_size=len(vocab),
        hidden_size=256,
        intermediate_size=512,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=4,
        max_position_embeddings=512,
        bos_token_id=1,
        eos_token_id=2,
    )
    LlamaForCausalLM(config).save_pretrained(directory)


@pytest.mark.skipif(not _vllm_runnable(), reason="needs vllm (pip install .[gpu]) and a CUDA GPU")
def test_in_process_vllm_generates(tmp_path):
    _tiny_llama(tmp_path)
    backend = VLLMBackend(
        model=str(tmp_path), dtype="float16", enforce_eager=True, max_model_len=256, gpu_memory_utilization=0.3
    )
    assert backend.status().state == "available"
    out = backend.chat(CHAT, GenerationParams(max_new_tokens=8, temperature=0.0, seed=0))
    assert backend.status().state == "loaded"
    assert out.tokens_in > 0 and 1 <= out.tokens_out <= 8 and out.latency_s > 0
    again = backend.chat(CHAT, GenerationParams(max_new_tokens=8, temperature=0.0, seed=0))
    assert again.text == out.text  # greedy is deterministic
