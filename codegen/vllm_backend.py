"""deepseek_8b on vLLM: in process on a GPU generation worker, or over a vLLM server.

In process needs the optional extra (`pip install .[gpu]`, which brings vllm) and a CUDA GPU;
without them the model says precisely why it is unavailable and is never replaced by another.
Set VLLM_BASE_URL to use a vLLM OpenAI-compatible server instead (codegen/remote.py).
"""

from __future__ import annotations

import importlib.util
import threading
import time
from typing import Any

from codegen.base import Alternative, Backend, Completion, GenerationParams, Message, ModelStatus, ModelUnavailable
from codegen.remote import vllm_server_backend
from models.settings import Settings

NO_VLLM = "vllm is not installed (pip install .[gpu])"
NO_GPU = "no CUDA GPU"
SERVER_HINT = "or set VLLM_BASE_URL to serve deepseek_8b from a vLLM server"


def _cuda_available() -> bool:
    try:
        import torch
    except ImportError:  # pragma: no cover - torch is a dependency
        return False
    return bool(torch.cuda.is_available())


class VLLMBackend:
    """vllm.LLM in this process: loaded once, one generation at a time (the engine batches inside)."""

    backend = "vllm"
    # vLLM runs beam search itself (LLM.beam_search) and constrains decoding to a grammar or a JSON
    # Schema (structured outputs); its logits are not exposed step by step to our loop.
    capabilities = frozenset({"chat", "beam_search", "grammar", "json_schema"})

    def __init__(self, *, model: str, name: str = "deepseek_8b", **engine_args: Any) -> None:
        self.name = name
        self.model = model  # a Hugging Face id (in the local cache) or a local directory
        self.provider = None  # local weights: no provider key
        self.engine_args = {"gpu_memory_utilization": 0.85, **engine_args}
        self._llm: Any = None
        self._reason: str | None = None
        self._checked = False
        self._lock = threading.Lock()

    def unavailable_reason(self) -> str | None:
        """Why this process cannot run vLLM (None: it can). Checked once; GPUs do not come and go."""
        if not self._checked:
            missing = []
            if importlib.util.find_spec("vllm") is None:
                missing.append(NO_VLLM)
            if not _cuda_available():
                missing.append(NO_GPU)
            self._reason = "; ".join(missing) or None
            self._checked = True
        return self._reason

    def status(self) -> ModelStatus:
        details = {
            "in_process": True,
            **{k: v for k, v in self.engine_args.items() if isinstance(v, (int, float, str))},
        }
        if self._llm is not None:
            return ModelStatus(self.name, self.backend, self.model, "loaded", None, details)
        reason = self.unavailable_reason()
        if reason:
            return ModelStatus(self.name, self.backend, self.model, "unavailable", f"{reason} ({SERVER_HINT})", details)
        return ModelStatus(self.name, self.backend, self.model, "available", None, details)

    def load(self) -> None:
        with self._lock:
            if self._llm is not None:
                return
            reason = self.unavailable_reason()
            if reason:
                raise ModelUnavailable(f"{reason} ({SERVER_HINT})")
            try:
                from vllm import LLM  # pyright: ignore[reportMissingImports] - the gpu extra

                self._llm = LLM(model=self.model, **self.engine_args)
            except Exception as err:  # noqa: BLE001 - weights missing, out of memory, a broken install
                raise ModelUnavailable(f"vLLM could not load {self.model}: {type(err).__name__}: {err}") from err

    def chat(self, messages: list[Message], params: GenerationParams, *, api_key: str | None = None) -> Completion:
        """`api_key` is ignored: the weights are local. A grammar or JSON Schema goes to vLLM's structured
        outputs; `params.beam` runs vLLM's own beam search (no pruning: its loop is not ours)."""
        self.load()
        chat = [{"role": m.role, "content": m.content} for m in messages]
        started = time.perf_counter()
        with self._lock:  # vllm.LLM is not safe to call from several threads at once
            try:
                if params.beam is not None:
                    return self._beam(chat, params, started)
                out = self._llm.chat(chat, sampling_params=self._sampling(params), use_tqdm=False)[0]
            except Exception as err:  # noqa: BLE001 - a prompt too long for the context, CUDA errors
                raise ModelUnavailable(f"vLLM failed: {type(err).__name__}: {err}") from err
        gen = out.outputs[0]
        return Completion(
            text=gen.text,
            tokens_in=len(out.prompt_token_ids or ()),
            tokens_out=len(gen.token_ids or ()),
            latency_s=time.perf_counter() - started,
            finish_reason="length" if gen.finish_reason == "length" else "stop",
        )

    def _sampling(self, params: GenerationParams):
        from vllm import SamplingParams  # pyright: ignore[reportMissingImports] - the gpu extra
        from vllm.sampling_params import StructuredOutputsParams  # pyright: ignore[reportMissingImports] - the gpu extra

        structured = None
        if params.grammar:
            structured = StructuredOutputsParams(grammar=params.grammar)
        elif params.json_schema:
            structured = StructuredOutputsParams(json=params.json_schema)
        return SamplingParams(
            max_tokens=params.max_new_tokens,
            temperature=params.temperature,
            top_p=params.top_p,
            stop=[s for s in params.stop if s] or None,
            seed=params.seed,
            structured_outputs=structured,
        )

    def _beam(self, chat: list[dict], params: GenerationParams, started: float) -> Completion:
        from vllm.inputs import TokensPrompt  # pyright: ignore[reportMissingImports] - the gpu extra
        from vllm.sampling_params import BeamSearchParams  # pyright: ignore[reportMissingImports] - the gpu extra

        if params.grammar or params.json_schema:
            raise ValueError("vLLM's beam search takes no grammar: ask for one of the two techniques")
        tokenizer = self._llm.get_tokenizer()
        prompt = tokenizer.apply_chat_template(chat, tokenize=True, add_generation_prompt=True)
        beam = params.beam
        assert beam is not None  # chat calls it for beam search only
        out = self._llm.beam_search(
            [TokensPrompt(prompt_token_ids=prompt)],
            BeamSearchParams(
                beam_width=beam.width, max_tokens=params.max_new_tokens, length_penalty=beam.length_penalty
            ),
        )[0]
        alternatives = []
        for seq in out.sequences:
            new = list(seq.tokens[len(prompt) :])
            alternatives.append(
                Alternative(
                    text=tokenizer.decode(new, skip_special_tokens=True),
                    tokens_out=len(new),
                    logprob=round(float(seq.cum_logprob), 4),
                    score=round(float(seq.cum_logprob) / max(1, len(new)) ** beam.length_penalty, 4),
                    finish_reason="length" if len(new) >= params.max_new_tokens else "stop",
                )
            )
        alternatives.sort(key=lambda a: a.score, reverse=True)
        return Completion(
            text=alternatives[0].text if alternatives else "",
            tokens_in=len(prompt),
            tokens_out=sum(a.tokens_out for a in alternatives),
            latency_s=time.perf_counter() - started,
            finish_reason=alternatives[0].finish_reason if alternatives else "stop",
            alternatives=tuple(alternatives),
        )


def deepseek_backend(settings: Settings) -> Backend:
    """deepseek_8b: a vLLM server when VLLM_BASE_URL is set, otherwise vLLM in this process."""
    if settings.vllm_base_url:
        return vllm_server_backend(settings)
    return VLLMBackend(model=settings.deepseek_model)
