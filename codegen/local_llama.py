"""`local_llama`: a Llama-architecture model run in process on specmill's engine (codegen/llama_engine.py).

What it runs comes from `LOCAL_MODEL` (codegen/local_files.py): a pulled model's name
(`smollm2-135m-instruct`), a path to a `.gguf` file, or a Hugging Face model directory.

Every request decodes through codegen/llama_engine.py (fused products, a cache allocated once, one Python
loop; greedy calls with prompt-lookup speculation, codegen/speculation.py). A model of another
architecture is reported unavailable with the reason (serve it through vLLM instead), never decoded some
other way. Weights (`LOCAL_DTYPE`): `auto` (the default: the fastest of int4, int8, bf16 and fp32 on
this CPU that chooses fp32's greedy tokens, near-ties aside, timed at load: codegen/kernels.py), `int4`
(groupwise 4-bit, which for a Q4 GGUF is the file's own weights), `int8` (weight-only, per row), `bf16`
or `fp32`; int4/int8 are CPU kernels and become bf16 on CUDA (said in the model's details). The model
loads once per process, under its own lock; generation is serialised by another, and grammars compile
under a third (codegen/grammars.py).
"""

from __future__ import annotations

import contextlib
import logging
import shutil
import threading
import time
from pathlib import Path

from codegen.base import Alternative, Completion, GenerationParams, Message, ModelStatus, ModelUnavailable
from codegen.grammars import Grammars
from codegen.local_files import Source, converted, load_hf, pick_device, resolve
from codegen.speculation import PromptLookup, Stats

DTYPES = ("auto", "int4", "int8", "bf16", "fp32")

log = logging.getLogger(__name__)


class LocalLlamaBackend:
    """The `local_llama` model: see the module docstring."""

    name = "local_llama"
    backend = "transformers"
    capabilities = frozenset({"chat", "logits", "json_schema", "batch"})

    def __init__(
        self, settings, *, model: str | None = None, dtype: str | None = None, device: str | None = None
    ) -> None:
        self.models_path = Path(settings.models_path)
        self.local_model = model or settings.local_model
        self.dtype = dtype or settings.local_dtype
        self.local_device = device or settings.local_device
        self.draft_tokens = settings.local_draft_tokens
        if self.dtype not in DTYPES:
            raise ValueError(f"local dtype must be one of {', '.join(DTYPES)}, not {self.dtype!r}")
        self._load_lock = threading.Lock()
        self._gen_lock = threading.Lock()
        self._engine = None  # a LlamaEngine
        self._grammars: Grammars | None = None  # made at load, for the model's tokenizer
        self._decoded: list[str] | None = None  # each token's text, once beam search asks (_token_set)
        self._token_sets: dict[str, set[int]] = {}
        self._config = None
        self._tokenizer = None
        self._source: Source | None = None
        self._details: dict = {}
        self._error: str | None = None
        self._speculate = False  # prompt-lookup speculation: on once load() found it exact on this machine
        self.speculated = Stats()  # what it did, every greedy call together

    # --- status and loading ---------------------------------------------------------------

    @property
    def loaded(self) -> bool:
        return self._config is not None

    def status(self) -> ModelStatus:
        if self.loaded and self._source is not None:
            details = dict(self._details)
            acceptance = self.speculated.acceptance  # drafted tokens the model then chose itself
            if self._speculate and acceptance is not None:
                details["speculation"] = {**details["speculation"], "acceptance": round(acceptance, 3)}
            return ModelStatus(self.name, self.backend, str(self._source.path), "loaded", details=details)
        details = {"dtype": self.dtype, "device": self.local_device}
        try:
            source = resolve(self.local_model, self.models_path)
        except ModelUnavailable as err:
            return ModelStatus(self.name, self.backend, self.local_model, "unavailable", str(err), details)
        details["format"] = source.format
        if self.local_device == "cuda":  # (no torch import otherwise: the gateway asks for statuses too)
            try:
                pick_device(self.local_device)
            except ModelUnavailable as err:
                return ModelStatus(self.name, self.backend, str(source.path), "unavailable", str(err), details)
        cache = source.cache_dir(self.models_path)  # a GGUF's (None: an HF directory)
        if cache is not None:
            details["converted"] = (cache / "config.json").exists()
        if self._error:
            return ModelStatus(self.name, self.backend, str(source.path), "unavailable", self._error, details)
        return ModelStatus(self.name, self.backend, str(source.path), "available", details=details)

    def load(self) -> None:
        if self.loaded:
            return
        with self._load_lock:
            if self.loaded:
                return
            try:
                self._load()
                self._error = None
            except ModelUnavailable as err:
                self._error = str(err)
                raise
            except Exception as err:  # a corrupt file, an unsupported architecture, out of memory
                self._error = f"load failed: {type(err).__name__}: {err}"
                raise ModelUnavailable(self._error) from err

    def _load(self) -> None:
        import torch

        from codegen import kernels, llama_engine

        started = time.perf_counter()
        source = resolve(self.local_model, self.models_path)
        device = pick_device(self.local_device)
        directory, how, temporary = source.path, "hf", False
        if source.format == "gguf":
            directory, how, temporary = converted(source, self.models_path)
        try:
            model, tokenizer = load_hf(directory, torch.float32)
        finally:
            if temporary:
                shutil.rmtree(directory, ignore_errors=True)
        # transformers wraps `to` in functools.wraps, which pyright does not bind as a method
        model = model.to(device).eval()  # pyright: ignore[reportArgumentType]
        dtype, notes = self.dtype, []
        if dtype in ("int8", "int4", "auto") and device != "cpu":
            dtype = "bf16"
            notes.append(f"{self.dtype} kernels are CPU-only: bf16 on {device}")
        why = llama_engine.supported(model)
        if why is not None:
            raise ModelUnavailable(
                f"specmill's engine does not run this model ({why}): local_llama runs Llama-architecture "
                "models; serve others through vLLM (VLLM_BASE_URL)"
            )
        choice = None
        if dtype == "auto":
            probe = tokenizer(kernels.PROBE, add_special_tokens=False)["input_ids"]
            choice = kernels.choose(lambda weights: llama_engine.LlamaEngine(model, weights), probe)
            engine, dtype = choice.engine, choice.weights
        else:
            engine = llama_engine.LlamaEngine(model, dtype)
        self._details = {
            "engine": "specmill-llama",
            "kernel_choice": choice.details() if choice else {"chosen": dtype, "by": "LOCAL_DTYPE"},
            "kernels": engine.kinds,
            "weight_mb_per_token": round(engine.bytes_per_token() / 1e6, 1),
            "speculation": self._check_speculation(engine),
        }
        self._details.update(
            {
                "format": source.format,
                "dtype": dtype,
                "device": device,
                "loaded_from": str(directory),
                "load": how,
                "load_s": round(time.perf_counter() - started, 2),
                "architecture": getattr(model.config, "model_type", None),
                "context": getattr(model.config, "max_position_embeddings", None),
                "parameters": sum(p.numel() for p in model.parameters()),
            }
        )
        if notes:
            self._details["note"] = "; ".join(notes)
        self._tokenizer, self._source, self._generation_defaults = tokenizer, source, model.generation_config
        self._engine, self._grammars = engine, Grammars(tokenizer, model.config.vocab_size)
        self._config = model.config
        log.info(
            "local_llama: %s loaded (%s, %s) in %.1f s",
            source.path,
            how,
            self._details["engine"],
            self._details["load_s"],
        )

    def _check_speculation(self, engine) -> dict:
        """Whether greedy calls speculate: asked for (LOCAL_DRAFT_TOKENS), and exact on this machine."""
        if not self.draft_tokens:
            return {"on": False, "why": "LOCAL_DRAFT_TOKENS is 0"}
        why = engine.speculation(draft=self.draft_tokens)
        self._speculate = why is None
        if why is not None:
            log.warning("local_llama: prompt-lookup speculation is off: %s", why)
            return {"on": False, "why": why}
        return {"on": True, "draft_tokens": self.draft_tokens, "greedy_only": True}

    # --- generation -----------------------------------------------------------------------

    def chat(self, messages: list[Message], params: GenerationParams, *, api_key: str | None = None) -> Completion:
        self.load()
        started = time.perf_counter()
        prompt, max_new = self._prompt(messages, params.max_new_tokens)
        eos = self._eos()
        with self._gen_lock:
            if params.beam is not None:
                return self._beam_completion(prompt, max_new, params, eos, started)
            logprobs: list[float] = []
            new_ids, reason = self._decode(prompt, max_new, params, eos, logprobs)
        return self._completion(
            new_ids, reason, len(prompt), params.stop, time.perf_counter() - started, logprob=sum(logprobs)
        )

    @contextlib.contextmanager
    def engine_session(self):
        """(engine, tokenizer) of the loaded model, held under the generation lock: for work that reads
        the model beside generation (codegen/provenance)."""
        self.load()
        assert self._engine is not None  # load() made it
        with self._gen_lock:
            yield self._engine, self._tokenizer

    def explain(self, messages: list[Message], answer: str, code: str, method: str, head_weights=None):
        """Which labelled parts of `messages` each line of `code` (extracted from `answer`, the model's
        reply to them) relied on (codegen/provenance/explain.py)."""
        from codegen.provenance.explain import explain

        with self.engine_session() as (engine, tokenizer):
            rendered = render_chat(tokenizer, messages)
            return explain(engine, tokenizer, messages, rendered, answer, code, method, head_weights)

    def chat_many(
        self, messages: list[Message], params: list[GenerationParams], *, api_key: str | None = None
    ) -> list[Completion]:
        """One answer per `params` to the same messages, decoded together in one batched pass
        (`generate_rows`: the prompt fed once, one forward pass per step for every row still running).
        Each row keeps its own temperature and seed, so each answer is the one `chat` would give
        alone. Each latency is its share of the pass. Calls that cannot share a pass (beam search,
        different budgets, stops or grammars) go one by one."""
        from codegen.decoding import Stopping, chooser

        self.load()
        shared = {(p.max_new_tokens, p.stop, p.grammar, p.json_schema) for p in params}
        if len(params) < 2 or len(shared) > 1 or any(p.beam for p in params):
            return [self.chat(messages, p) for p in params]
        started = time.perf_counter()
        first = params[0]
        prompt, max_new = self._prompt(messages, first.max_new_tokens)
        eos = self._eos()
        stop = stop_checker(self._tokenizer, first.stop)
        assert self._engine is not None  # load() made it
        with self._gen_lock:
            choosers = [chooser(p.temperature, p.top_p, self._generator(p)) for p in params]
            rows = self._engine.generate_rows(
                prompt,
                Stopping(eos, max_new, checks=(stop,) if stop else ()),
                choosers,
                self._processors(first, eos, rows=len(params)),
            )
        share = (time.perf_counter() - started) / len(params)
        return [
            self._completion(tokens, reason, len(prompt), first.stop, share, logprob=logprob)
            for tokens, reason, logprob in zip(rows.tokens, rows.reasons, rows.logprobs, strict=True)
        ]

    def _prompt(self, messages: list[Message], max_new_tokens: int) -> tuple[list[int], int]:
        """The chat's prompt tokens, and the new tokens that fit beside them in the context."""
        tokenizer = self._tokenizer
        assert tokenizer is not None  # load() set it
        prompt = tokenizer(render_chat(tokenizer, messages), add_special_tokens=False)["input_ids"]
        context = self._details.get("context") or 0
        max_new = max(0, int(max_new_tokens))
        if context:
            if len(prompt) >= context:
                raise ValueError(f"prompt of {len(prompt)} tokens does not fit the model's context of {context}")
            max_new = min(max_new, context - len(prompt))
        return prompt, max_new

    def _completion(
        self,
        new_ids: list[int],
        reason: str,
        tokens_in: int,
        stop: tuple[str, ...],
        latency_s: float,
        logprob: float | None = None,
    ) -> Completion:
        from codegen.decoding import DEAD_END

        assert self._tokenizer is not None  # load() set it
        text = self._tokenizer.decode(new_ids, skip_special_tokens=True)
        cut = _cut(text, stop)
        if cut is not None:
            text, reason = text[:cut], "stop"
        notes = ("the grammar allowed no continuation: the answer stops there",) if reason == DEAD_END else ()
        return Completion(
            text=text,
            tokens_in=tokens_in,
            tokens_out=len(new_ids),
            latency_s=latency_s,
            finish_reason=reason,
            notes=notes,
            logprob=round(logprob, 4) if logprob is not None else None,
        )

    def _generator(self, params: GenerationParams):
        """A sampled call's own generator, seeded by its `seed` (None: greedy needs none)."""
        import torch

        if params.temperature <= 0:
            return None
        assert self._engine is not None  # only the engine samples with a generator of its own
        generator = torch.Generator(device=self._engine.device)
        generator.manual_seed(params.seed if params.seed is not None else torch.seed())
        return generator

    def _eos(self) -> set[int]:
        assert self._tokenizer is not None  # load() set it
        return set(_as_list(self._generation_defaults.eos_token_id) or _as_list(self._tokenizer.eos_token_id))

    def compiled(self, kind: str, text: str):
        """A grammar ("ebnf") or JSON Schema ("json") compiled for this model's tokenizer (codegen/grammars.py)."""
        self.load()
        assert self._grammars is not None  # load() made it
        return self._grammars.compiled(kind, text)

    def _processors(self, params: GenerationParams, eos: set[int], rows: int = 1) -> list:
        """The logits processors a request asks for: its grammar's masks or its JSON Schema's."""
        from codegen.decoding import GrammarProcessor

        out = []
        for kind, text in (("ebnf", params.grammar), ("json", params.json_schema)):
            if text:
                out.append(GrammarProcessor(self.compiled(kind, text), eos, rows=rows))
        return out

    def _decode(self, prompt: list[int], max_new: int, params: GenerationParams, eos: set[int], logprobs: list[float]):
        from codegen.decoding import Stopping, chooser

        stop = stop_checker(self._tokenizer, params.stop)
        stopping = Stopping(eos, max_new, checks=(stop,) if stop else ())
        assert self._engine is not None  # chat decodes here only with the engine
        speculate = self._speculate and params.temperature <= 0
        stats = Stats()
        tokens = self._engine.generate(
            prompt,
            stopping,
            chooser=chooser(params.temperature, params.top_p, self._generator(params)),
            processors=self._processors(params, eos),
            logprobs=logprobs,
            lookup=PromptLookup(draft=self.draft_tokens) if speculate else None,
            stats=stats,
        )
        self.speculated.add(stats)
        return tokens, stopping.reason or "stop"

    def _beam_completion(self, prompt, max_new, params: GenerationParams, eos: set[int], started: float) -> Completion:
        """syntax_aware_beam_search: the finished beams, best first, as the completion's alternatives."""
        from codegen.beam_search import beam_search
        from codegen.decoding import DEAD_END
        from codegen.prompts import extract_code

        assert self._engine is not None and self._tokenizer is not None  # load() set them
        beam, tokenizer = params.beam, self._tokenizer
        assert beam is not None  # chat calls it for beam search only
        stop = stop_checker(tokenizer, params.stop)
        closed, ticks = _fence_closed(tokenizer), self._token_set("`")
        result = beam_search(
            self._engine,
            prompt,
            max_new,
            eos=eos,
            width=beam.width,
            length_penalty=beam.length_penalty,
            code_of=(lambda tokens: _fenced_code(tokenizer.decode(tokens, skip_special_tokens=True)))
            if beam.prune
            else None,
            newline_tokens=self._token_set("\n"),
            should_stop=(lambda tokens: (tokens[-1] in ticks and closed(tokens)) or bool(stop and stop(tokens))),
            processors=self._processors(params, eos, rows=beam.width),
            # what the candidate's code will be (an answer with no opening fence is all code)
            final_code_of=lambda tokens: extract_code(tokenizer.decode(tokens, skip_special_tokens=True)),
        )
        alternatives = []
        for h in result.hypotheses:
            text = tokenizer.decode(h.tokens, skip_special_tokens=True)
            cut = _cut(text, params.stop)
            alternatives.append(
                Alternative(
                    text=text if cut is None else text[:cut],
                    tokens_out=len(h.tokens),
                    logprob=round(h.logprob, 4),
                    score=round(h.score(beam.length_penalty), 4),
                    finish_reason=h.finish_reason,
                )
            )
        notes = list(result.notes)
        if result.pruned:
            notes.append(f"{result.pruned} beam(s) pruned at a line end: their code could no longer parse")
        if result.dead_ends:
            notes.append(f"{result.dead_ends} beam step(s) ended in a grammar dead end")
        first = alternatives[0] if alternatives else None
        return Completion(
            text=first.text if first else "",
            tokens_in=len(prompt),
            tokens_out=sum(a.tokens_out for a in alternatives),
            latency_s=time.perf_counter() - started,
            finish_reason=first.finish_reason if first else DEAD_END,
            alternatives=tuple(alternatives),
            notes=tuple(notes),
        )

    def _token_set(self, char: str) -> set[int]:
        """The tokens whose text holds `char` (a line end: where beams are checked; a backtick: where the
        fence may close), found once per model."""
        decoded = self._decoded
        if decoded is None:
            assert self._tokenizer is not None  # load() set it
            decoded = self._decoded = self._tokenizer.batch_decode([[i] for i in range(len(self._tokenizer))])
        if char not in self._token_sets:
            self._token_sets[char] = {i for i, text in enumerate(decoded) if char in text}
        return self._token_sets[char]


def _fenced_code(text: str) -> str:
    """The code of the answer's first fenced block so far ("" before its fence opens: prose is not checked)."""
    start = text.find("```")
    if start < 0:
        return ""
    line_end = text.find("\n", start)
    if line_end < 0:
        return ""
    body = text[line_end + 1 :]
    close = body.find("```")
    return body if close < 0 else body[:close]


def _fence_closed(tokenizer):
    """`closed(tokens)`: whether the answer's first fenced block has closed (the rest would be prose)."""

    def closed(tokens: list[int]) -> bool:
        return tokenizer.decode(tokens, skip_special_tokens=True).count("```") >= 2

    return closed


def render_chat(tokenizer, messages: list[Message]) -> str:
    chat = [{"role": m.role, "content": m.content} for m in messages]
    if getattr(tokenizer, "chat_template", None):
        return tokenizer.apply_chat_template(chat, tokenize=False, add_generation_prompt=True)
    # a base model without a chat template: the plain concatenation
    return "\n\n".join(m.content for m in messages) + "\n"


def stop_checker(tokenizer, stop: tuple[str, ...]):
    """`check(new_ids) -> bool`: whether the generated text now contains a stop string (None: no stops).

    Each check decodes only the last few tokens: enough to hold a stop string that ends in the
    newest token (every token stands for at least one byte of text)."""
    stop = tuple(s for s in stop if s)
    if not stop:
        return None
    window = max(len(s.encode()) for s in stop) + 2

    def check(new_ids: list[int]) -> bool:
        return _cut(tokenizer.decode(new_ids[-window:], skip_special_tokens=True), stop) is not None

    return check


def _cut(text: str, stop: tuple[str, ...]) -> int | None:
    """Where the first stop string starts in text, or None."""
    hits = [i for i in (text.find(s) for s in stop if s) if i >= 0]
    return min(hits) if hits else None


def _as_list(value) -> list[int]:
    if value is None:
        return []
    return list(value) if isinstance(value, (list, tuple)) else [int(value)]
