"""Prompt-lookup speculation (codegen/speculation.py, LlamaEngine.generate with `lookup`): drafts from the
text itself, verified in one pass, and greedy decoding's tokens kept exactly, on many prompts, repair-like
prompts (an earlier answer in the prompt) and under a grammar. On a tiny random Llama (tests/tiny_models.py)."""

from __future__ import annotations

import random
from pathlib import Path

import pytest
import torch

from codegen.base import GenerationParams, Message
from codegen.decoding import Sampling, Stopping
from codegen.llama_engine import LlamaEngine
from codegen.local_llama import LocalLlamaBackend
from codegen.speculation import PromptLookup, Stats
from models.settings import Settings
from models.techniques.base import JsonSchema


def test_a_draft_is_what_followed_the_latest_occurrence_of_the_longest_matching_suffix():
    lookup = PromptLookup(draft=3, max_ngram=3, min_ngram=1)
    lookup.extend([5, 2, 3, 4, 9, 2, 3, 7, 8, 2, 3])
    assert lookup.propose() == [7, 8, 2]  # "8 2 3" never occurred before; "2 3" last did at 5..6
    lookup = PromptLookup(draft=2, max_ngram=3, min_ngram=1)
    lookup.extend([5, 1, 2, 3, 9, 9, 7, 2, 3, 6, 1, 2, 3])
    assert lookup.propose() == [9, 9]  # the 3-gram "1 2 3" wins over the later 2-gram "2 3"


def test_no_match_no_draft_and_short_ngrams_are_not_looked_up_below_the_minimum():
    lookup = PromptLookup(draft=4, max_ngram=3, min_ngram=2)
    lookup.extend([1, 2, 3, 4])
    assert lookup.propose() == []
    lookup.extend([9, 4])  # "4" occurred before, but a 1-gram is below the minimum
    assert lookup.propose() == []
    lookup.extend([9])  # "4 9" occurred before: what followed it
    assert lookup.propose() == [4, 9]


def test_a_draft_is_cut_at_the_end_of_what_is_known():
    lookup = PromptLookup(draft=8, max_ngram=2, min_ngram=1)
    lookup.extend([1, 2, 3, 1, 2])
    assert lookup.propose() == [3, 1, 2]


@pytest.fixture(scope="module")
def hf(tiny_llama: Path):
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(str(tiny_llama), dtype=torch.float32).eval()


def _prompts(vocab: int, n: int = 24) -> list[list[int]]:
    """Random prompts, and repair-like ones: a stretch repeated later, as an earlier answer in a prompt is."""
    rng = random.Random(7)
    out = []
    for i in range(n):
        body = [rng.randrange(3, vocab) for _ in range(rng.randrange(4, 40))]
        if i % 2:
            answer = [rng.randrange(3, vocab) for _ in range(rng.randrange(6, 30))]
            body = body + answer + [rng.randrange(3, vocab) for _ in range(5)] + answer[: rng.randrange(1, 6)]
        out.append(body)
    return out


@pytest.mark.parametrize("weights", ["int4", "int8", "bf16"])
def test_speculation_keeps_greedy_decodings_tokens_exactly(hf, weights: str):
    engine = LlamaEngine(hf, weights)
    why = engine.speculation()
    if why is not None:  # the backend then decodes without drafts (the next test): nothing to compare
        pytest.skip(f"speculation is off for {weights} on this machine: {why}")
    total = Stats()
    for prompt in _prompts(engine.vocab):
        for draft in (1, 8):
            plain = engine.generate(prompt, Stopping(set(), 48))
            stats = Stats()
            drafted = engine.generate(prompt, Stopping(set(), 48), lookup=PromptLookup(draft=draft), stats=stats)
            assert drafted == plain, (prompt, draft)
            total.add(stats)
    assert total.accepted > 50 and total.passes > 0  # drafts were verified, and many were taken


def test_speculation_keeps_the_log_probabilities_and_the_stopping_reason(hf):
    engine = LlamaEngine(hf, "int4")
    if engine.speculation() is not None:
        pytest.skip("speculation is off for int4 on this machine")
    prompt = _prompts(engine.vocab)[1]
    plain_lp, drafted_lp = [], []
    plain_stop, drafted_stop = Stopping({7}, 30), Stopping({7}, 30)
    plain = engine.generate(prompt, plain_stop, logprobs=plain_lp)
    drafted = engine.generate(prompt, drafted_stop, logprobs=drafted_lp, lookup=PromptLookup())
    assert drafted == plain and drafted_lp == plain_lp and drafted_stop.reason == plain_stop.reason


def test_speculation_refuses_to_sample(hf):
    engine = LlamaEngine(hf, "int4")
    with pytest.raises(ValueError, match="greedy"):
        engine.generate([1, 2, 3], Stopping(set(), 4), chooser=Sampling(0.8), lookup=PromptLookup())


@pytest.fixture(scope="module")
def backends(tiny_llama: Path, tmp_path_factory):
    def make(draft_tokens: int) -> LocalLlamaBackend:
        settings = Settings(
            _env_file=None,
            data_dir=tmp_path_factory.mktemp("spec"),
            local_model=str(tiny_llama),
            local_dtype="int4",
            local_draft_tokens=draft_tokens,
        )
        backend = LocalLlamaBackend(settings)
        backend.load()
        return backend

    return make(8), make(0)


REPAIR = [
    Message("system", "You write Python."),
    Message(
        "user",
        "Write `add(a, b)`.\n\nA previous attempt failed:\n```python\ndef add(a, b):\n    return a - b\n```\n"
        "AssertionError: add(2, 3) == 5. Fix it.",
    ),
]
SCHEMA = '{"type": "object", "properties": {"name": {"type": "string"}}, "required": ["name"]}'


@pytest.mark.parametrize(
    "params",
    [
        GenerationParams(max_new_tokens=64),
        GenerationParams(max_new_tokens=64, decoding=(JsonSchema(SCHEMA),)),  # a draft token the grammar masks ends it
        GenerationParams(max_new_tokens=64, temperature=0.8, seed=3),  # sampled: no drafts, the same tokens
    ],
    ids=["greedy", "grammar", "sampled"],
)
def test_the_backend_answers_the_same_with_speculation_on_and_off(backends, params):
    on, off = backends
    details = on.status().details["speculation"]
    assert off.status().details["speculation"] == {"on": False, "why": "LOCAL_DRAFT_TOKENS is 0"}
    if not details["on"]:  # this machine's kernels do not keep rows apart: it says why, and decodes plainly
        assert "differ" in details["why"]
    a, b = on.chat(REPAIR, params), off.chat(REPAIR, params)
    assert (a.text, a.tokens_out, a.finish_reason, a.logprob) == (b.text, b.tokens_out, b.finish_reason, b.logprob)
