"""Beam search over the Llama engine, with beams pruned when their code can no longer parse.

Our own loop over codegen/llama_engine.py (transformers' beam search would run a second engine):
- the prompt is fed once and its cache shared by every beam (`Cache.share_prompt`);
- each step feeds the live beams' last tokens in one pass (`forward_rows`), scores every
  continuation of every beam by its summed log-probability, and keeps the best `width`;
- kept beams take their parents' cache rows in place (`Cache.reorder`);
- a beam whose token completes a line is checked by `viable` (codegen/syntax_check.py) on the
  code written so far; one that can no longer become valid Python is dropped (`pruned`);
- a beam that emits an end token, or meets `should_stop`, is finished when its code parses as a
  whole (`complete`), and pruned when it does not; at `max_new` every live beam is finished with
  reason "length".
Finished beams are ranked by log-probability over length ** length_penalty (1.0: the mean per
token). At width 1, without pruning, the result is greedy decoding, token for token.

This module decodes; choosing among the finished beams by whether they parse and pass the spec's
visible tests happens above it.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import torch

from codegen import decoding
from codegen.decoding import Processor
from codegen.llama_engine import LlamaEngine
from codegen.syntax_check import complete, complete_lines, viable

MAX_WIDTH = 8


@dataclass
class Hypothesis:
    tokens: list[int]
    logprob: float
    finish_reason: str  # "stop" (an end token or a stop condition) | "length"

    def score(self, length_penalty: float) -> float:
        return self.logprob / max(1, len(self.tokens)) ** length_penalty


@dataclass
class BeamResult:
    hypotheses: list[Hypothesis]  # best first
    pruned: int = 0  # beams dropped because their code could no longer parse
    dead_ends: int = 0  # beams a processor (the grammar) left no token
    steps: int = 0
    notes: list[str] = field(default_factory=list)


@torch.inference_mode()
def beam_search(
    engine: LlamaEngine,
    prompt: list[int],
    max_new: int,
    *,
    eos: set[int],
    width: int = 4,
    length_penalty: float = 1.0,
    code_of: Callable[[list[int]], str] | None = None,
    newline_tokens: set[int] | None = None,
    should_stop: Callable[[list[int]], bool] | None = None,
    processors: Sequence[Processor] = (),
    final_code_of: Callable[[list[int]], str] | None = None,
) -> BeamResult:
    """The `width` best continuations of `prompt`. `code_of(tokens)` gives the code a beam has written
    (for the syntax check); it runs when a beam's last token is in `newline_tokens` (None: every step).
    A beam that ends must parse as a whole: `final_code_of(tokens)` (default `code_of`) gives the code
    its answer finally is. Without `code_of` nothing is pruned. `processors` (a grammar's masks, one
    state per row) change each step's logits and follow the beams: `reorder` before `advance`, as
    codegen/decoding.py says; a beam they leave no token is a dead end and is dropped (counted in
    `dead_ends`)."""
    if not 1 <= width <= MAX_WIDTH:
        raise ValueError(f"beam width must be 1..{MAX_WIDTH}, not {width}")
    if max_new <= 0:
        return BeamResult(hypotheses=[Hypothesis([], 0.0, "length")])
    cache = engine.new_cache(len(prompt) + max_new, rows=width)
    logits = engine.forward_rows(torch.tensor([prompt], device=engine.device), 0, cache)
    cache.share_prompt(len(prompt))
    beams: list[tuple[list[int], float]] = [([], 0.0)]  # (tokens, summed log-probability), row i = beam i
    finished: list[Hypothesis] = []
    result = BeamResult(hypotheses=[])
    while beams:
        result.steps += 1
        live = decoding.apply(processors, logits[: len(beams)])
        # a fully masked row gives NaN: -inf too (nan_to_num would turn -inf itself into a finite number)
        logprobs = torch.log_softmax(live, dim=-1).nan_to_num(nan=-math.inf, neginf=-math.inf)
        result.dead_ends += sum(decoding.dead(row) for row in live)
        totals = logprobs + torch.tensor([lp for _, lp in beams], device=logprobs.device)[:, None]
        # 2 x width candidates: enough to refill the beam after some finish or are pruned
        top = torch.topk(totals.flatten(), min(2 * width, totals.numel()))
        kept: list[tuple[list[int], float, int]] = []  # (tokens, log-probability, parent row)
        for value, flat in zip(top.values.tolist(), top.indices.tolist(), strict=True):
            if value == -math.inf:
                break  # the rest are masked out too
            parent, token = divmod(flat, logprobs.shape[1])
            tokens = beams[parent][0] + [token]
            if token in eos or (should_stop is not None and should_stop(tokens)):
                if code_of is not None and not complete((final_code_of or code_of)(tokens)):
                    result.pruned += 1  # it ended, and what it wrote does not parse
                else:
                    finished.append(Hypothesis(tokens, value, "stop"))
            elif (
                code_of is not None
                and (newline_tokens is None or token in newline_tokens)
                and not viable(complete_lines(code_of(tokens)))
            ):
                result.pruned += 1
            elif len(tokens) >= max_new:
                finished.append(Hypothesis(tokens, value, "length"))
            else:
                kept.append((tokens, value, parent))
            if len(kept) == width:
                break
        if len(finished) >= width and (
            not kept
            or max(h.score(length_penalty) for h in finished) >= max(lp / len(t) ** length_penalty for t, lp, _ in kept)
        ):
            break  # enough finished, and no live beam scores better yet
        if not kept:
            break
        cache.reorder([parent for _, _, parent in kept], len(prompt) + len(kept[0][0]) - 1)
        decoding.reorder(processors, [parent for _, _, parent in kept])
        decoding.advance(processors, [tokens[-1] for tokens, _, _ in kept])
        beams = [(tokens, lp) for tokens, lp, _ in kept]
        feed = torch.tensor([[tokens[-1]] for tokens, _ in beams], device=engine.device)
        logits = engine.forward_rows(feed, len(prompt) + len(beams[0][0]) - 1, cache)
    if not finished:
        why = (
            "the grammar allowed no continuation" if result.dead_ends else "no continuation kept the code valid Python"
        )
        result.notes.append(f"no beam finished: {why}")
    finished.sort(key=lambda h: h.score(length_penalty), reverse=True)
    result.hypotheses = finished[:width]
    return result
