"""For one generated answer: which labelled parts of its prompt each line of its code relied on.

The prompt is rendered and tokenized as the local engine does (codegen.provenance.spans); the answer is
teacher-forced after it. `exact` removes each span in turn and measures the drop of the code's
log-probability (codegen.provenance.exact); `estimate` reads the attention of one pass and weighs each
layer and head by fitted weights (codegen.provenance.attribution.weighted); `mean` and `rollout` are
the baselines it is measured against. Scores below zero (removing the span made the line likelier) count
as zero in the shares.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import torch

from codegen.base import Message
from codegen.llama_engine import LlamaEngine
from codegen.provenance import attribution, exact
from codegen.provenance.spans import TokenSpan, token_spans

METHODS = ("estimate", "exact", "mean", "rollout")
MEASURES = {
    "estimate": "model reliance (estimate, attention-based)",
    "exact": "model reliance (exact, leave-one-out)",
    "mean": "model reliance (mean attention over heads and layers, a baseline)",
    "rollout": "model reliance (attention rollout, a baseline)",
}
TOP_SPANS = 3  # spans shown per line
RELIED_ON = 0.1  # a span holding at least this share of some line is "relied on"


@dataclass
class Explained:
    method: str
    spans: list[TokenSpan]
    lines: dict[int, torch.Tensor]  # line of the code -> its score per span (same order as `spans`)
    token_scores: torch.Tensor  # G x S, per code token (G: the answer's tokens)
    token_lines: list[int | None]
    forward_passes: int
    seconds: float
    mass: torch.Tensor | None = None  # layers x heads x G x S, for the attention methods but rollout
    ids: list[int] | None = None  # the prompt's and the answer's tokens
    prompt_len: int = 0


def explain(
    engine: LlamaEngine,
    tokenizer,
    messages: list[Message],
    rendered: str,
    answer: str,
    code: str,
    method: str,
    head_weights: torch.Tensor | None = None,
) -> Explained:
    """Score every line of `code` (the block extracted from `answer`) against each labelled span of the
    prompt (`messages`, rendered by the chat template as `rendered`)."""
    if method not in METHODS:
        raise ValueError(f"method must be one of {', '.join(METHODS)}")
    if (method == "estimate") != (head_weights is not None):
        raise ValueError("the estimate needs fitted head weights, and only the estimate takes them")
    started = time.perf_counter()
    prompt_ids, spans = token_spans(tokenizer, messages, rendered)
    encoded = tokenizer(answer, add_special_tokens=False, return_offsets_mapping=True)
    answer_ids, offsets = list(encoded["input_ids"]), [tuple(o) for o in encoded["offset_mapping"]]
    if not answer_ids:
        raise ValueError("the answer is empty")
    ids, prompt_len = prompt_ids + answer_ids, len(prompt_ids)
    lines = attribution.token_lines(offsets, answer, code)
    mass = None
    if not spans:
        scores, passes = torch.zeros(len(answer_ids), 0), 0
    elif method == "exact":
        scores, passes = exact.leave_one_out(engine, ids, prompt_len, spans), exact.passes(spans)
    else:
        forced = engine.teacher_forced(ids, prompt_len, full=method == "rollout")
        passes = 1
        if method == "rollout":
            assert forced.layers_mean is not None  # asked for with full=True
            scores = attribution.rollout(forced.layers_mean, prompt_len, spans)
        else:
            mass = attribution.span_mass(forced.to_prompt, spans)
            scores = attribution.mean(mass) if head_weights is None else attribution.weighted(mass, head_weights)
    return Explained(
        method=method,
        spans=spans,
        lines=attribution.by_line(scores, lines),
        token_scores=scores,
        token_lines=lines,
        forward_passes=passes,
        seconds=time.perf_counter() - started,
        mass=mass,
        ids=ids,
        prompt_len=prompt_len,
    )


def nothing(method: str) -> Explained:
    """An explanation of no line against no span (what there is to say of code that cannot be located)."""
    return Explained(method, [], {}, torch.zeros(0, 0), [], forward_passes=0, seconds=0.0)


def combine(parts: list[tuple[Explained, int]]) -> Explained:
    """Several answers' explanations as one over the code they make up, each `(explained, offset)` holding
    an answer's code from line `offset + 1` on (hierarchical_generation: each planned item explained
    against its own prompt). Spans are matched by label (a label's length is its first prompt's): `plan_item`
    is, for each line, the item its answer was asked for."""
    if not parts:
        raise ValueError("nothing to combine")
    first: dict[str, TokenSpan] = {}
    for explained, _ in parts:
        for span in explained.spans:
            first.setdefault(span.label, span)
    column = {label: i for i, label in enumerate(first)}
    lines: dict[int, torch.Tensor] = {}
    scores, token_lines = [], []
    for explained, offset in parts:
        to = torch.tensor([column[s.label] for s in explained.spans], dtype=torch.long)
        widened = explained.token_scores.new_zeros(explained.token_scores.shape[0], len(column))
        widened[:, to] = explained.token_scores
        scores.append(widened)
        token_lines += [None if line is None else line + offset for line in explained.token_lines]
        for line, row in explained.lines.items():
            lines[line + offset] = row.new_zeros(len(column)).index_copy(0, to, row)
    return Explained(
        method=parts[0][0].method,
        spans=list(first.values()),
        lines=lines,
        token_scores=torch.cat(scores),
        token_lines=token_lines,
        forward_passes=sum(e.forward_passes for e, _ in parts),
        seconds=sum(e.seconds for e, _ in parts),
    )


def removal_drops(engine: LlamaEngine, explained: Explained, removals: list[list[TokenSpan]]) -> list[dict[int, float]]:
    """For each set of spans removed together: per line, how much the line's log-probability (the sum over
    its tokens) drops. One pass over the whole prompt, then one per set."""
    ids, prompt_len = explained.ids, explained.prompt_len
    assert ids is not None  # explain() keeps them
    whole = engine.new_cache(len(ids))
    base = engine.logprobs_after(ids, 0, whole, prompt_len)
    out = []
    for removed in removals:
        drop = (base - exact.without(engine, ids, prompt_len, removed, whole))[:, None]
        lines = attribution.by_line(drop, explained.token_lines, total=True)
        out.append({line: float(v[0]) for line, v in lines.items()})
    return out


def summary(explained: Explained, code: str, top: int = TOP_SPANS) -> dict:
    """What a user reads: per line its top spans as shares, and per span the share of the whole code that
    relied on it (whether any line relied on it at all)."""
    code_lines = code.split("\n")
    spans = explained.spans
    per_line, totals, relied = [], torch.zeros(len(spans)), set()
    for line, scores in explained.lines.items():
        positive = scores.clamp(min=0)
        shares = attribution.shares(positive)
        totals += positive
        relied |= {spans[i].label for i in range(len(spans)) if shares[i] >= RELIED_ON}
        order = [int(i) for i in torch.argsort(shares, descending=True)[:top] if shares[i] > 0]
        per_line.append(
            {
                "line": line,
                "text": code_lines[line - 1] if line - 1 < len(code_lines) else "",
                "spans": [{"label": spans[i].label, "share": round(float(shares[i]), 3)} for i in order],
            }
        )
    overall = attribution.shares(totals)
    return {
        "method": explained.method,
        "measure": MEASURES[explained.method],
        "spans": [
            {
                "label": s.label,
                "tokens": s.end - s.start,
                "chars": s.chars,
                "share": round(float(overall[i]), 3),
                "relied_on": s.label in relied,
            }
            for i, s in enumerate(spans)
        ],
        "lines": per_line,
        "forward_passes": explained.forward_passes,
        "seconds": round(explained.seconds, 3),
    }


def fenced(code: str, language: str = "python") -> str:
    """The answer a model gives for `code` in the product's prompt format (one fenced block): what is
    teacher-forced when only the extracted code was kept."""
    return f"```{language}\n{code}\n```"
