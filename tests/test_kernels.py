"""The local engine's weights chosen at load (codegen/kernels.py): each candidate built and timed on the
same greedy steps, one that writes other tokens than the reference refused, the fastest of the rest kept;
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
    assert reference.weights == "bf16" and reference.same_tokens
    assert [t.weights for t in choice.trials] == ["bf16", "int8", "int4"]
    eligible = [t for t in choice.trials if t.same_tokens]
    assert choice.weights == min(eligible, key=lambda t: t.ms_per_step or 0).weights
    assert choice.engine.weights == choice.weights
    # the engine kept writes the reference's greedy tokens
    truth, _ = kernels.probe(LlamaEngine(model, "bf16"), prompt)
    assert kernels.probe(choice.engine, prompt)[0] == truth
    details = choice.details()
    assert details["chosen"] == choice.weights and details["reference"] == "bf16"
    assert set(details["candidates"]) == {"bf16", "int8", "int4"}
    assert all(c["ms_per_step"] > 0 for c in details["candidates"].values())
    assert details["cpu"]["cores"] and "torch_capability" in details["cpu"]


def test_a_candidate_with_other_tokens_or_no_kernel_is_never_chosen(model_and_prompt, tiny_llama: Path):
    """A faster engine that writes other tokens (here: a one-layer model with other weights) is refused;
    a candidate that cannot be built is reported with its error."""
    from transformers import AutoConfig, LlamaForCausalLM

    model, prompt = model_and_prompt
    config = AutoConfig.from_pretrained(tiny_llama, local_files_only=True)
    config.num_hidden_layers = 1
    torch.manual_seed(1)
    other = LlamaEngine(LlamaForCausalLM(config).eval(), "bf16")
    assert kernels.probe(other, prompt)[0] != kernels.probe(LlamaEngine(model, "bf16"), prompt)[0]

    def build(weights: str) -> LlamaEngine:
        if weights == "int4":
            raise RuntimeError("no int4 kernel here")
        return other if weights == "int8" else LlamaEngine(model, weights)

    choice = kernels.choose(build, prompt)
    trials = {t.weights: t for t in choice.trials}
    assert trials["int8"].same_tokens is False and trials["int8"].ms_per_step
    assert trials["int4"].error == "RuntimeError: no int4 kernel here" and trials["int4"].same_tokens is None
    assert choice.weights == "bf16" and choice.engine is not other


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
