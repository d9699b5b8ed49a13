"""The local engine's weights chosen at load (codegen/kernels.py): each candidate built and timed on the
same greedy steps, one that chooses other tokens than the fp32 reference where its choice is clear refused,
the fastest of the rest kept;
LocalLlamaBackend with LOCAL_DTYPE=auto runs the choice and says it in its details."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from codegen import kernels
from codegen.llama_engine import LlamaEngine
from codegen.local_files import load_hf
from codegen.local_llama import LocalLlamaBackend
from models.settings import Settings


@pytest.fixture(scope="module")
def model_and_prompt(tiny_llama: Path):
    model, tokenizer = load_hf(tiny_llama, torch.float32)
    return model.eval(), tokenizer(kernels.PROBE, add_special_tokens=False)["input_ids"]


def test_the_fastest_candidate_with_the_references_tokens_is_chosen(model_and_prompt):
    model, prompt = model_and_prompt
    choice = kernels.choose(lambda weights: LlamaEngine(model, weights), prompt)
    reference = choice.trials[0]
    assert reference.weights == "fp32" and reference.same_tokens
    assert [t.weights for t in choice.trials] == ["fp32", "bf16", "int8", "int4"]
    eligible = [t for t in choice.trials if t.same_tokens]
    assert choice.weights == min(eligible, key=lambda t: t.ms_per_step or 0).weights
    assert choice.engine.weights == choice.weights
    # the engine kept chooses the reference's tokens wherever the reference's choice is clear
    truth = kernels.run(LlamaEngine(model, "fp32"), prompt)
    got = kernels.run(choice.engine, prompt, feed=truth.tokens)
    clear = [s for s, m in enumerate(truth.margins) if m >= kernels.TIE_MARGIN]
    assert [got.tokens[s] for s in clear] == [truth.tokens[s] for s in clear]
    details = choice.details()
    assert details["chosen"] == choice.weights and details["reference"] == "fp32"
    assert set(details["candidates"]) == {"fp32", "bf16", "int8", "int4"}
    assert all(c["ms_per_step"] > 0 for c in details["candidates"].values())
    assert details["cpu"]["cores"] and "torch_capability" in details["cpu"]


@pytest.fixture(scope="module")
def other(tiny_llama: Path) -> LlamaEngine:
    """An engine that chooses other tokens: a one-layer model with other weights."""
    from transformers import AutoConfig, LlamaForCausalLM

    config = AutoConfig.from_pretrained(tiny_llama, local_files_only=True)
    config.num_hidden_layers = 1
    torch.manual_seed(1)
    return LlamaEngine(LlamaForCausalLM(config).eval(), "fp32")


def test_a_candidate_with_other_tokens_or_no_kernel_is_never_chosen(model_and_prompt, other: LlamaEngine):
    """An engine that chooses other tokens at clear steps (every step counted as clear here) is refused,
    however fast; a candidate that cannot be built is reported with its error."""
    model, prompt = model_and_prompt
    truth = kernels.run(LlamaEngine(model, "fp32"), prompt)
    assert kernels.run(other, prompt, feed=truth.tokens).tokens != truth.tokens

    def build(weights: str) -> LlamaEngine:
        if weights == "int4":
            raise RuntimeError("no int4 kernel here")
        return other if weights == "int8" else LlamaEngine(model, weights)

    choice = kernels.choose(build, prompt, tie_margin=0.0)
    trials = {t.weights: t for t in choice.trials}
    assert trials["int8"].same_tokens is False and trials["int8"].differs_at and trials["int8"].ms_per_step
    assert trials["int4"].error == "RuntimeError: no int4 kernel here" and trials["int4"].same_tokens is None
    assert choice.weights in ("fp32", "bf16") and choice.engine is not other


def test_near_ties_are_not_compared(model_and_prompt, other: LlamaEngine):
    """Steps whose reference margin is under the tie margin are skipped, not compared: with a margin no
    step reaches, even the other model passes, and the trial says how many steps it skipped."""
    model, prompt = model_and_prompt
    reference = LlamaEngine(model, "fp32")
    choice = kernels.choose(lambda w: reference if w == "fp32" else other, prompt, ("bf16", "fp32"), tie_margin=1e9)
    skipped = choice.trials[1]
    assert skipped.same_tokens and not skipped.differs_at
    assert skipped.near_ties == kernels.WARMUP_STEPS + kernels.PROBE_STEPS


def test_local_llama_auto_runs_the_choice_and_says_it(tiny_llama: Path, tmp_path: Path):
    settings = Settings(
        _env_file=None, data_dir=tmp_path, local_model=str(tiny_llama), local_device="cpu", local_draft_tokens=0
    )
    assert settings.local_dtype == "auto"  # the default
    backend = LocalLlamaBackend(settings)
    backend.load()
    details = backend.status().details
    choice = details["kernel_choice"]
    assert details["dtype"] == choice["chosen"] == backend._engine.weights
    assert choice["candidates"][choice["chosen"]]["same_tokens"] is True
    explicit = LocalLlamaBackend(settings.model_copy(update={"local_dtype": "int8"}))
    explicit.load()
    assert explicit.status().details["kernel_choice"] == {"chosen": "int8", "by": "LOCAL_DTYPE"}
