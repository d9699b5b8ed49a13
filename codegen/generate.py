"""Candidate generation: the one path from a generation job to candidates, for the product and the eval.

The generation activities (activities/generation.py) call these functions on a thread and add only
Temporal's concerns: heartbeats, the tenant's API key, and error types for retries. `make eval`
(codegen/evaluate.py) calls the very same functions in process. `chat(messages, params)` is one
model call; everything else (the view of the spec, the prompt, the references within their budget,
the decoding parameters, extraction, the parse check, the plan and its bodies) happens here.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Protocol

from codegen import hierarchical
from codegen.base import Completion, GenerationParams, Message
from codegen.declared_imports import with_imports
from codegen.prompts import build_messages, extract_code, parses, syntax_error
from codegen.syntax_check import parsing_prefix
from models.generation import Candidate, CandidatesResult, ModelTask, Plan, PlanItem, Reference
from models.spec_view import SpecView
from models.techniques import REGISTRY, Mode, resolve
from models.techniques.base import JsonSchema
from models.techniques.hierarchical_generation import SETTINGS as HIERARCHICAL
from models.techniques.retrieval_augmentation import SETTINGS as RETRIEVAL


class Chat(Protocol):
    """One model call, and what the model behind it can do (models.techniques.CAPABILITIES). With the
    `batch` capability, `many` answers the same messages once per params in one batched pass."""

    capabilities: frozenset[str]

    def __call__(self, messages: list[Message], params: GenerationParams) -> Completion: ...

    def many(self, messages: list[Message], params: list[GenerationParams]) -> list[Completion]: ...


class ModelCall:
    """A backend's chat as a `Chat` (with the tenant's provider key, when it has one). `call` and
    `many` wrap the backend's own `chat` and `chat_many` (the activities map their errors)."""

    def __init__(self, backend, api_key: str | None = None, call=None, many=None) -> None:
        self.capabilities = frozenset(backend.capabilities)
        self._call = call or (lambda messages, params: backend.chat(messages, params, api_key=api_key))
        self._many = many or (lambda messages, params: backend.chat_many(messages, params, api_key=api_key))

    def __call__(self, messages: list[Message], params: GenerationParams) -> Completion:
        return self._call(messages, params)

    def many(self, messages: list[Message], params: list[GenerationParams]) -> list[Completion]:
        if "batch" not in self.capabilities:
            return [self(messages, p) for p in params]
        return self._many(messages, params)


Progress = Callable[..., None]  # called with the candidate (and item) index after each model call

TOKENS_PER_CHAR = 0.25  # a reference's share of the prompt budget is estimated from its length
TOKENS_PER_REFERENCE = 8  # its framing in the prompt
SAMPLED_TEMPERATURE = 0.8
SAMPLED_TOP_P = 0.95  # nucleus sampling for the sampled candidates (what the selectors were measured on)


def within_budget(references: list[Reference], budget_tokens: int = RETRIEVAL.budget_tokens) -> list[Reference]:
    """The references that fit the budget, best first (one too long is skipped, later ones may fit)."""
    chosen, used = [], 0
    for ref in references:
        cost = int(len(ref.content) * TOKENS_PER_CHAR) + TOKENS_PER_REFERENCE
        if used + cost > budget_tokens:
            continue
        chosen.append(ref)
        used += cost
    return chosen


def candidate_temperature(job: ModelTask, index: int) -> float:
    """Greedy asked for n > 1: the first candidate is greedy, the others sampled so that they differ."""
    if job.temperature == 0.0 and index > 0:
        return SAMPLED_TEMPERATURE
    return job.temperature


def modes(chat: Chat, job: ModelTask, view: SpecView) -> dict[str, Mode]:
    """How each of the job's techniques runs on this model: as the caller resolved them (the API does),
    else resolved here (Unsupported, a ValueError, when one cannot run)."""
    if job.modes is not None:
        return job.modes
    return resolve(job.techniques, model=job.model, capabilities=chat.capabilities, language=view.language, n=job.n)


def candidate_params(job: ModelTask, round_: int, index: int, modes: dict[str, Mode] | None = None) -> GenerationParams:
    """The decoding of one candidate: greedy or sampled, and what each technique adds to it where the
    model runs it (a beam search, the Python grammar)."""
    temperature = candidate_temperature(job, index)
    parts = tuple(
        part
        for name, mode in (modes or {}).items()
        for part in REGISTRY[name].decoding(REGISTRY[name].settings(job.options), mode)
    )
    return GenerationParams(
        max_new_tokens=job.max_new_tokens,
        temperature=temperature,
        top_p=SAMPLED_TOP_P if temperature > 0 else 1.0,
        seed=1000 * round_ + index,
        decoding=parts,
    )


def plan_params(job: ModelTask) -> GenerationParams:
    """The plan is greedy and constrained to its JSON Schema where the backend can (local_llama)."""
    return GenerationParams(
        max_new_tokens=max(job.max_new_tokens, HIERARCHICAL.plan_min_tokens),
        seed=0,
        decoding=(JsonSchema(json.dumps(hierarchical.PLAN_SCHEMA)),),
    )


def _references(references: list[Reference]) -> list[tuple[str, str]] | None:
    """The snippets the prompt shows, with their ids (the prompt labels each one by its id)."""
    return [(str(r.id), r.content) for r in within_budget(references)] if references else None


def candidate_messages(view: SpecView, references: list[Reference], feedback: str | None) -> list[Message]:
    """The prompt of a round of candidates (multi_head_attention explains the kept one against it)."""
    return build_messages(view, references=_references(references), feedback=feedback)


def body_prompt(view: SpecView, plan: Plan, item: PlanItem, references: list[Reference]) -> list[Message]:
    """The prompt of one planned item's body under hierarchical_generation (multi_head_attention explains
    the item's code against it)."""
    return hierarchical.body_messages(view, plan, item, references=_references(references))


def candidates(
    chat: Chat,
    job: ModelTask,
    references: list[Reference],
    round_: int,
    progress: Progress | None = None,
) -> CandidatesResult:
    """`job.n` candidates for one spec, one model call each (or one beam search, whose finished beams
    are the candidates), with the references in the prompt."""
    view = job.view
    how = modes(chat, job, view)
    messages = candidate_messages(view, references, job.feedback)
    retries = max(
        (REGISTRY[name].answer_retries(REGISTRY[name].settings(job.options), mode) for name, mode in how.items()),
        default=0,
    )
    out: list[Candidate] = []
    batched = _batched(chat, job, round_, how, messages, retries)
    for i in range(job.n):
        params = candidate_params(job, round_, i, how)
        if batched is not None:
            completion, attempts = batched[i], 1
        else:
            completion, attempts = _asked_until_it_parses(chat, messages, params, view.language, retries)
        answers = _answers(completion)
        for text, extra in answers:
            code = extract_code(text, view.language)
            finish = extra.get("finish_reason", completion.finish_reason)
            notes = list(completion.notes)
            if finish == "length" and _syntax_aware(how) and view.language == "python":
                code, note = _cut_back(code)
                notes += [note] if note else []
            completed = with_imports(code, view.imports)
            if completed != code:
                notes.append("the spec's declared imports that the code lacked were added at its top")
                code = completed
            out.append(
                Candidate(
                    model=job.model,
                    techniques=job.techniques,
                    code=code,
                    tokens_in=completion.tokens_in,
                    tokens_out=extra.get("tokens_out", completion.tokens_out),
                    latency_s=round(completion.latency_s / len(answers), 3),  # a beam search's time, shared
                    parses=parses(code, view.language),
                    finish_reason=finish,
                    round=round_,
                    score=extra.get("score"),
                    mean_logprob=_mean(
                        extra.get("logprob", completion.logprob), extra.get("tokens_out", completion.tokens_out)
                    ),
                    attempts=attempts,
                    notes=notes,
                )
            )
        if progress:
            progress(i + 1)
    return CandidatesResult(candidates=out, path=view.path, language=view.language)


def _mean(logprob: float | None, tokens: int) -> float | None:
    return round(logprob / tokens, 4) if logprob is not None and tokens > 0 else None


def _syntax_aware(how: dict[str, Mode]) -> bool:
    return any(REGISTRY[name].targets_syntax for name in how)


def _cut_back(code: str) -> tuple[str, str | None]:
    """An answer the token budget stopped, under a decoding technique that targets syntax: its code up to
    the last whole line where it parses (a loop in a string or a bracket otherwise leaves nothing that
    runs). Unchanged when it parses already or when no prefix does; the note says what was cut."""
    if parses(code):
        return code, None
    prefix = parsing_prefix(code)
    if prefix is None:
        return code, None
    kept, total = prefix.count("\n") + 1, code.count("\n") + 1
    return prefix, f"the token budget ran out: the code was cut back to its first {kept} of {total} lines, which parse"


def _batched(
    chat: Chat, job: ModelTask, round_: int, how: dict[str, Mode], messages: list[Message], retries: int
) -> list[Completion] | None:
    """n > 1 candidates on a model with the `batch` capability: all of them from one batched pass
    (None: one call each, as when a check-and-retry may ask again for any one of them)."""
    if job.n < 2 or retries or "batch" not in chat.capabilities:
        return None
    return chat.many(messages, [candidate_params(job, round_, i, how) for i in range(job.n)])


def _answers(completion: Completion) -> list[tuple[str, dict]]:
    """The answers in a completion: each finished beam of a beam search, else its one text."""
    if not completion.alternatives:
        return [(completion.text, {})]
    return [
        (a.text, {"tokens_out": a.tokens_out, "finish_reason": a.finish_reason, "score": a.score, "logprob": a.logprob})
        for a in completion.alternatives
    ]


def _asked_until_it_parses(
    chat: Chat, messages: list[Message], params: GenerationParams, language: str, retries: int
) -> tuple[Completion, int]:
    """hybrid_grammar_neural on a model that cannot take the grammar: the answer checked with Python's
    parser and asked for again, told the error, up to `retries` more times. (The completion returned
    is the last one; tokens and latency add up over the attempts.)"""
    completion = chat(messages, params)
    attempts, tokens_in, tokens_out, latency = 1, completion.tokens_in, completion.tokens_out, completion.latency_s
    while attempts <= retries:
        error = syntax_error(extract_code(completion.text, language))
        if error is None:
            break
        messages = [
            *messages,
            Message("assistant", completion.text),
            Message("user", f"That code does not parse: {error}. Answer again with the whole corrected code."),
        ]
        completion = chat(messages, params)
        attempts += 1
        tokens_in, tokens_out = tokens_in + completion.tokens_in, tokens_out + completion.tokens_out
        latency += completion.latency_s
    if attempts == 1:
        return completion, 1
    return (
        Completion(
            text=completion.text,
            tokens_in=tokens_in,
            tokens_out=tokens_out,
            latency_s=latency,
            finish_reason=completion.finish_reason,
            notes=(*completion.notes, f"asked {attempts} times until the code parsed or the retries ran out"),
        ),
        attempts,
    )


def plan(chat: Chat, job: ModelTask, attempts: int = HIERARCHICAL.plan_attempts) -> Plan:
    """hierarchical_generation, step 1: a checked plan; PlanError when none is valid after `attempts`."""
    params = plan_params(job)
    return hierarchical.make_plan(lambda messages: chat(messages, params), job.view, attempts=attempts)


def bodies(
    chat: Chat,
    job: ModelTask,
    plan: Plan,
    references: list[Reference],
    round_: int,
    progress: Progress | None = None,
) -> CandidatesResult:
    """hierarchical_generation, step 2: per candidate, one model call per planned item, then the module
    assembled in plan order (imports once at the top)."""
    view = job.view
    out: list[Candidate] = []
    for i in range(job.n):
        params = candidate_params(job, round_, i)
        pieces, t_in, t_out, latency, finish = [], 0, 0, 0.0, "stop"
        for j, item in enumerate(plan.items):
            completion = chat(body_prompt(view, plan, item, references), params)
            pieces.append(hierarchical.build_piece(item, completion.text, plan, view.language))
            t_in, t_out = t_in + completion.tokens_in, t_out + completion.tokens_out
            latency += completion.latency_s
            finish = "length" if completion.finish_reason == "length" else finish
            if progress:
                progress(i, j + 1)
        code = with_imports(hierarchical.assemble(pieces), view.imports)
        out.append(
            Candidate(
                model=job.model,
                techniques=job.techniques,
                code=code,
                tokens_in=t_in,
                tokens_out=t_out,
                latency_s=round(latency, 3),
                parses=parses(code, view.language),
                finish_reason=finish,
                round=round_,
                missing_items=[p.item.name for p in pieces if not p.written],
            )
        )
    return CandidatesResult(candidates=out, path=view.path, language=view.language)
