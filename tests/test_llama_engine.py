"""codegen/llama_engine.py against transformers' own forward pass and generate(), on tiny models."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from codegen.base import GenerationParams, Message
from codegen.decoding import GREEDY, Sampling, Stopping
from codegen.llama_engine import Linear, LlamaEngine, Unsupported
from codegen.local_llama import LocalLlamaBackend
from models.settings import Settings

CHAT = [Message("user", "Write a python function named `add`.")]


@pytest.fixture(scope="module")
def hf(tiny_llama: Path):
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(str(tiny_llama), dtype=torch.float32).eval()


@torch.inference_mode()
def test_fp32_engine_gives_transformers_logits_at_every_position(hf):
    engine = LlamaEngine(hf, "fp32")
    ids = [1, 5, 17, 42, 99, 7, 3, 250, 11, 64]
    reference = hf(torch.tensor([ids])).logits[0]
    cache = engine.new_cache(len(ids))
    prefill = engine.forward(torch.tensor([ids[:4]]), 0, cache)  # the prompt in one pass
    torch.testing.assert_close(prefill, reference[3], atol=1e-4, rtol=1e-4)
    for pos in range(4, len(ids)):  # then one token at a time through the cache
        step = engine.forward(torch.tensor([[ids[pos]]]), pos, cache)
        torch.testing.assert_close(step, reference[pos], atol=1e-4, rtol=1e-4)


@torch.inference_mode()
def test_greedy_decoding_matches_transformers_generate(hf):
    prompt = [1, 5, 17, 42, 99]
    expected = hf.generate(
        torch.tensor([prompt]), max_new_tokens=24, min_new_tokens=24, do_sample=False, pad_token_id=0
    )[0, len(prompt) :].tolist()
    assert LlamaEngine(hf, "fp32").generate(prompt, Stopping(set(), 24)) == expected


@pytest.mark.parametrize("weights", ["bf16", "int8", "int4"])
@torch.inference_mode()
def test_reduced_weights_stay_close_to_fp32(hf, weights: str):
    ids = torch.tensor([[1, 5, 17, 42, 99, 7, 3]])
    exact = LlamaEngine(hf, "fp32")
    reduced = LlamaEngine(hf, weights)
    a = exact.forward(ids, 0, exact.new_cache(7))
    b = reduced.forward(ids, 0, reduced.new_cache(7))
    assert torch.nn.functional.cosine_similarity(a, b, dim=0) > 0.99
    assert reduced.bytes_per_token() < exact.bytes_per_token()


def test_int4_holds_a_q4_block_weight_exactly():
    """A matrix whose 32-wide blocks are d*q + m (q in 0..15), as a Q4_1 GGUF dequantizes to, comes back
    as the same 4-bit codes: the int4 product equals the dense product up to bf16 rounding."""
    g = torch.Generator().manual_seed(0)
    n, k = 64, 128
    q = torch.randint(0, 16, (n, k // 32, 32), generator=g).float()
    q[..., 0], q[..., 1] = 0, 15  # every block uses its full range, as the quantizer makes it
    d = (torch.rand(n, k // 32, 1, generator=g) * 0.02 + 0.001).bfloat16().float()
    m = (-torch.rand(n, k // 32, 1, generator=g) * 0.1).bfloat16().float()
    w = (q * d + m).reshape(n, k)
    linear = Linear(w, "int4", torch.bfloat16)
    assert linear.kind == "int4"
    x = torch.randn(3, k, generator=g).bfloat16()
    dense = x.float() @ w.t()
    torch.testing.assert_close(linear(x).float(), dense, atol=0.05, rtol=0.02)


@pytest.mark.parametrize("shape, kind", [((8, 48), "int8"), ((8, 40), "dense"), ((32, 64), "int4")])
def test_shapes_a_kernel_cannot_take_fall_back(shape: tuple[int, int], kind: str):
    """int4 wants 32-wide groups and 16-row tiles; int8 wants rows of a multiple of 16 inputs."""
    w = torch.randn(*shape, generator=torch.Generator().manual_seed(1))
    linear = Linear(w, "int4", torch.bfloat16)
    assert linear.kind == kind
    x = torch.randn(3, shape[1]).bfloat16()
    exact = x.float() @ w.t()
    assert (linear(x).float() - exact).norm() < 0.1 * exact.norm()  # 4 bits of a Gaussian: a few % off


def test_sampling_is_reproducible_with_a_seeded_generator(hf):
    engine = LlamaEngine(hf, "fp32")
    runs = [
        engine.generate([1, 5, 17], Stopping(set(), 16), chooser=Sampling(1.0, 0.9, torch.Generator().manual_seed(s)))
        for s in (3, 3, 4)
    ]
    assert runs[0] == runs[1] and runs[0] != runs[2]


def test_generation_ends_at_eos_and_at_the_stop_check(hf):
    engine = LlamaEngine(hf, "fp32")
    free = engine.generate([1, 5, 17], Stopping(set(), 12))
    at_eos = Stopping({free[3]}, 12)
    assert engine.generate([1, 5, 17], at_eos)[-1] == free[3] and at_eos.reason == "stop"
    checked = Stopping(set(), 12, checks=(lambda new: len(new) == 5,))
    assert engine.generate([1, 5, 17], checked) == free[:5] and checked.reason == "stop"
    budget = Stopping(set(), 12)
    assert engine.generate([1, 5, 17], budget) == free and budget.reason == "length"


@pytest.fixture(scope="module")
def tiny_mistral(tiny_llama: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny Llama's tokenizer with a Mistral model: an architecture the engine does not run."""
    import shutil

    from transformers import MistralConfig, MistralForCausalLM

    directory = tmp_path_factory.mktemp("mistral")
    for f in tiny_llama.iterdir():
        if f.name.startswith("tokenizer") or f.name == "special_tokens_map.json":
            shutil.copy(f, directory / f.name)
    llama = json_config(tiny_llama)
    torch.manual_seed(0)
    config = MistralConfig(
        vocab_size=llama["vocab_size"],
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=2,
        num_key_value_heads=1,
        eos_token_id=llama["eos_token_id"],
        bos_token_id=llama["bos_token_id"],
        pad_token_id=llama["pad_token_id"],
    )
    MistralForCausalLM(config).save_pretrained(directory)
    return directory


def json_config(directory: Path) -> dict:
    import json

    return json.loads((directory / "config.json").read_text())


def test_other_architectures_are_unavailable_with_the_reason(tiny_mistral: Path, tmp_path: Path):
    """One decode path: a model the engine does not run is reported unavailable, never decoded otherwise."""
    from transformers import AutoModelForCausalLM

    from codegen.base import ModelUnavailable

    with pytest.raises(Unsupported):
        LlamaEngine(AutoModelForCausalLM.from_pretrained(str(tiny_mistral)), "fp32")
    settings = Settings(
        _env_file=None,
        data_dir=tmp_path,
        models_dir=tmp_path / "models",
        local_model=str(tiny_mistral),
        local_dtype="int4",
        local_device="cpu",
    )
    backend = LocalLlamaBackend(settings)
    with pytest.raises(ModelUnavailable, match="architecture 'mistral'"):
        backend.chat(CHAT, GenerationParams(max_new_tokens=6))
    status = backend.status()
    assert status.state == "unavailable" and "vLLM" in (status.reason or "")


@torch.inference_mode()
def test_batched_rows_give_the_logits_of_each_sequence_alone(hf):
    """The prompt fed once (row 0) and shared, then three continuations decoded in one pass per step:
    each row's logits equal those of its sequence decoded alone, within 1e-4 (fp32)."""
    engine = LlamaEngine(hf, "fp32")
    prompt = [1, 5, 17, 42, 99]
    steps = [[7, 8, 9], [3, 250, 3], [11, 64, 77]]  # per step, one token for each of the three rows
    cache = engine.new_cache(len(prompt) + len(steps), rows=3)
    first = engine.forward_rows(torch.tensor([prompt]), 0, cache)
    cache.share_prompt(len(prompt))
    batched = [first.expand(3, -1)]
    for pos, tokens in enumerate(steps, start=len(prompt)):
        batched.append(engine.forward_rows(torch.tensor([[t] for t in tokens]), pos, cache))
    for row in range(3):
        alone = engine.new_cache(len(prompt) + len(steps))
        logits = [engine.forward(torch.tensor([prompt]), 0, alone)]
        for pos, tokens in enumerate(steps, start=len(prompt)):
            logits.append(engine.forward(torch.tensor([[tokens[row]]]), pos, alone))
        for step, expected in enumerate(logits):
            torch.testing.assert_close(batched[step][row], expected, atol=1e-4, rtol=1e-4)


@torch.inference_mode()
def test_reordered_rows_continue_the_sequences_they_were_given(hf):
    """Beams reordered in place (row 0 <- 2, rows 1 and 2 <- 0, a cycle included): each row then
    continues the history it took, as that history decoded alone would."""
    engine = LlamaEngine(hf, "fp32")
    prompt = [1, 5, 17, 42]
    histories = [[7, 8], [3, 250], [11, 64]]
    cache = engine.new_cache(len(prompt) + 3, rows=3)
    engine.forward_rows(torch.tensor([prompt]), 0, cache)
    cache.share_prompt(len(prompt))
    for i in range(2):
        engine.forward_rows(torch.tensor([[h[i]] for h in histories]), len(prompt) + i, cache)
    sources = [2, 0, 0]
    cache.reorder(sources, len(prompt) + 2)
    nxt = [5, 6, 7]
    got = engine.forward_rows(torch.tensor([[t] for t in nxt]), len(prompt) + 2, cache)
    for row, src in enumerate(sources):
        alone = engine.new_cache(len(prompt) + 3)
        engine.forward(torch.tensor([prompt + histories[src]]), 0, alone)
        expected = engine.forward(torch.tensor([[nxt[row]]]), len(prompt) + 2, alone)
        torch.testing.assert_close(got[row], expected, atol=1e-4, rtol=1e-4)
    with pytest.raises(ValueError, match="4 rows reordered in a cache of 3"):
        cache.reorder([0, 1, 2, 0], 1)


@torch.inference_mode()
def test_rows_decoded_together_are_the_sequences_decoded_alone(hf):
    """n candidates in one pass per step: a greedy row is greedy decoding, a sampled row is what its
    own seeded generator samples alone, and a row that ends leaves the others running."""
    engine = LlamaEngine(hf, "fp32")
    prompt = [1, 5, 17, 42, 99]
    greedy = engine.generate(prompt, Stopping(set(), 16))
    alone = [
        engine.generate(prompt, Stopping(set(), 16), chooser=Sampling(0.8, 1.0, torch.Generator().manual_seed(seed)))
        for seed in (1, 2)
    ]
    rows = engine.generate_rows(
        prompt,
        Stopping(set(), 16),
        [
            GREEDY,
            Sampling(0.8, 1.0, torch.Generator().manual_seed(1)),
            Sampling(0.8, 1.0, torch.Generator().manual_seed(2)),
        ],
    )
    assert rows.tokens == [greedy, *alone] and rows.reasons == ["length"] * 3
    stop_at = greedy[3]  # the greedy row ends at this token's first appearance; the sampled rows go on
    ended = engine.generate_rows(
        prompt, Stopping({stop_at}, 16), [GREEDY, Sampling(0.8, 1.0, torch.Generator().manual_seed(1))]
    )
    assert ended.tokens[0] == greedy[: greedy.index(stop_at) + 1]
    assert ended.reasons[0] == "stop"
    sampled = engine.generate(
        prompt, Stopping({stop_at}, 16), chooser=Sampling(0.8, 1.0, torch.Generator().manual_seed(1))
    )
    assert ended.tokens[1] == sampled


@torch.inference_mode()
def test_teacher_forced_attention_and_log_probabilities_are_transformers_own(tiny_llama: Path):
    from transformers import AutoModelForCausalLM

    eager = AutoModelForCausalLM.from_pretrained(
        str(tiny_llama), dtype=torch.float32, attn_implementation="eager"
    ).eval()
    ids, prompt = [1, 5, 17, 42, 99, 7, 3, 250, 11, 64], 6
    out = eager(torch.tensor([ids]), output_attentions=True)
    forced = LlamaEngine(eager, "fp32").teacher_forced(ids, prompt, full=True)
    targets = torch.tensor(ids[prompt:])[:, None]
    expected_logprobs = torch.log_softmax(out.logits[0, prompt - 1 : -1], -1).gather(1, targets)[:, 0]
    torch.testing.assert_close(forced.logprobs, expected_logprobs, atol=1e-4, rtol=1e-4)
    heads = eager.config.num_attention_heads
    assert forced.to_prompt.shape == (len(out.attentions), heads, len(ids) - prompt, prompt)  # layers x heads x G x P
    assert forced.layers_mean is not None
    for layer, attention in enumerate(out.attentions):
        rows = attention[0, :, prompt - 1 : -1, :prompt]
        torch.testing.assert_close(forced.to_prompt[layer], rows, atol=1e-5, rtol=1e-4)
        torch.testing.assert_close(forced.layers_mean[layer], attention[0].mean(0), atol=1e-5, rtol=1e-4)
    with pytest.raises(ValueError):
        LlamaEngine(eager, "fp32").teacher_forced(ids, len(ids))  # nothing after the prompt


@torch.inference_mode()
def test_leave_one_out_reuses_the_prefix_and_equals_a_fresh_pass_without_the_span(hf):
    from codegen.provenance.exact import leave_one_out, without
    from codegen.provenance.spans import TokenSpan

    engine = LlamaEngine(hf, "fp32")
    ids, prompt = [1, 5, 17, 42, 99, 7, 3, 250, 11, 64, 12, 30], 8
    spans = [TokenSpan("a", 2, 4, 0), TokenSpan("b", 5, 7, 0)]
    drops = leave_one_out(engine, ids, prompt, spans)
    assert drops.shape == (len(ids) - prompt, 2)
    full = torch.log_softmax(hf(torch.tensor([ids])).logits[0, prompt - 1 : -1], -1)
    full = full.gather(1, torch.tensor(ids[prompt:])[:, None])[:, 0]
    for j, span in enumerate(spans):
        kept = ids[: span.start] + ids[span.end :]
        cut = prompt - (span.end - span.start)
        alone = torch.log_softmax(hf(torch.tensor([kept])).logits[0, cut - 1 : -1], -1)
        alone = alone.gather(1, torch.tensor(kept[cut:])[:, None])[:, 0]
        torch.testing.assert_close(drops[:, j], full - alone, atol=1e-4, rtol=1e-4)
    # both spans out at once, the prefix before the first reused
    whole = engine.new_cache(len(ids))
    engine.logprobs_after(ids, 0, whole, prompt)
    kept = ids[:2] + ids[4:5] + ids[7:]
    joint = torch.log_softmax(hf(torch.tensor([kept])).logits[0, prompt - 4 - 1 : -1], -1)
    joint = joint.gather(1, torch.tensor(kept[prompt - 4 :])[:, None])[:, 0]
    torch.testing.assert_close(without(engine, ids, prompt, spans, whole), joint, atol=1e-4, rtol=1e-4)
    with pytest.raises(ValueError):
        leave_one_out(engine, ids, prompt, [TokenSpan("sink", 0, 2, 0)])  # the first token is never a span
