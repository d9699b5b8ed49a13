"""codegen/beam_search.py on the tiny random Llama: greedy at width 1, exact scores at width 4 (so
the cache rows followed their beams), and pruning of beams whose code can no longer parse."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from codegen.beam_search import beam_search
from codegen.decoding import Stopping
from codegen.llama_engine import LlamaEngine

PROMPT = [1, 5, 17, 42, 99]


@pytest.fixture(scope="module")
def engine(tiny_llama: Path) -> LlamaEngine:
    from transformers import AutoModelForCausalLM

    hf = AutoModelForCausalLM.from_pretrained(str(tiny_llama), dtype=torch.float32).eval()
    return LlamaEngine(hf, "fp32")


def _logprob(engine: LlamaEngine, tokens: list[int]) -> float:
    """The summed log-probability of `tokens` after PROMPT, decoded alone."""
    cache = engine.new_cache(len(PROMPT) + len(tokens))
    logits = engine.forward(torch.tensor([PROMPT]), 0, cache)
    total = 0.0
    for i, token in enumerate(tokens):
        total += float(torch.log_softmax(logits, -1)[token])
        if i + 1 < len(tokens):
            logits = engine.forward(torch.tensor([[token]]), len(PROMPT) + i, cache)
    return total


def test_width_one_is_greedy_token_for_token(engine):
    greedy = engine.generate(PROMPT, Stopping(set(), 24))
    result = beam_search(engine, PROMPT, 24, eos=set(), width=1)
    assert [h.tokens for h in result.hypotheses] == [greedy]
    assert result.hypotheses[0].finish_reason == "length"


def test_width_four_scores_are_those_of_each_sequence_alone(engine):
    result = beam_search(engine, PROMPT, 12, eos=set(), width=4)
    assert len(result.hypotheses) == 4 and len({tuple(h.tokens) for h in result.hypotheses}) == 4
    scores = [h.score(1.0) for h in result.hypotheses]
    assert scores == sorted(scores, reverse=True)
    for h in result.hypotheses:  # the beam's cache row held its own history all along
        assert h.logprob == pytest.approx(_logprob(engine, h.tokens), abs=1e-3)
    greedy = engine.generate(PROMPT, Stopping(set(), 12))
    assert result.hypotheses[0].logprob >= _logprob(engine, greedy) - 1e-3  # never worse than greedy


def test_a_beam_whose_code_can_no_longer_parse_is_pruned(engine):
    """Odd tokens write a stray ")" here: every beam that takes one is dropped, the others go on."""

    def code_of(tokens: list[int]) -> str:
        return "".join("x = 1\n" if t % 2 == 0 else ")\n" for t in tokens)

    result = beam_search(engine, PROMPT, 8, eos=set(), width=4, code_of=code_of)
    assert result.pruned > 0
    assert result.hypotheses and all(t % 2 == 0 for h in result.hypotheses for t in h.tokens)


def test_every_beam_pruned_is_said(engine):
    result = beam_search(engine, PROMPT, 4, eos=set(), width=2, code_of=lambda tokens: ")\n")
    assert result.hypotheses == [] and result.notes and "no continuation kept the code valid Python" in result.notes[0]


def test_eos_finishes_beams_with_stop(engine):
    greedy = engine.generate(PROMPT, Stopping(set(), 6))
    result = beam_search(engine, PROMPT, 6, eos={greedy[2]}, width=1)
    first = greedy.index(greedy[2])  # the end token's first appearance ends the beam, and is kept
    assert result.hypotheses[0].tokens == greedy[: first + 1] and result.hypotheses[0].finish_reason == "stop"


def test_a_beam_that_ends_with_code_that_does_not_parse_is_pruned_not_finished(engine):
    """The line-end check sees only whole lines; a beam that ends is checked whole: `x = (` cannot end."""
    greedy = engine.generate(PROMPT, Stopping(set(), 6))
    end = greedy[2]

    def code_of(tokens: list[int]) -> str:
        return "x = (" if tokens[-1] == end and len(tokens) == 3 else "x = 1"

    result = beam_search(engine, PROMPT, 6, eos={end}, width=1, code_of=code_of, newline_tokens=set())
    assert result.pruned == 1
    assert all(h.tokens != greedy[:3] for h in result.hypotheses)
    # what the answer finally is decides: nothing fenced yet (no code so far), but all of it is code
    result = beam_search(
        engine, PROMPT, 6, eos={end}, width=1, code_of=lambda tokens: "", final_code_of=code_of, newline_tokens=set()
    )
    assert result.pruned == 1


@pytest.mark.parametrize("width", [0, 9])
def test_width_out_of_range_is_refused(engine, width):
    with pytest.raises(ValueError, match="beam width must be 1..8"):
        beam_search(engine, PROMPT, 4, eos=set(), width=width)
