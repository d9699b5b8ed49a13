"""codegen/provenance/explain.py end to end on a tiny Llama: a real prompt with labelled spans, a fenced
answer teacher-forced after it, each method's per-line scores and the summary a user reads."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from codegen.llama_engine import LlamaEngine
from codegen.local_llama import render_chat
from codegen.prompts import build_messages
from codegen.provenance import exact
from codegen.provenance.explain import MEASURES, explain, fenced, summary
from models.builtin_templates import PYTHON_FUNCTION
from models.spec_view import spec_view

VALUES = {
    "function_name": "add",
    "description": "Add two numbers.",
    "tests": ["assert add(1, 2) == 3", "assert add(2, 2) == 4"],
}
CODE = "def add(a, b):\n    return a + b"


@pytest.fixture(scope="module")
def tiny(tiny_llama: Path):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(str(tiny_llama), dtype=torch.float32).eval()
    return model, AutoTokenizer.from_pretrained(str(tiny_llama))


def _explain(model, tokenizer, method: str, weights=None):
    messages = build_messages(spec_view(PYTHON_FUNCTION, VALUES), references=[("s1", "def add(x, y): return x + y")])
    rendered = render_chat(tokenizer, messages)
    return explain(LlamaEngine(model, "fp32"), tokenizer, messages, rendered, fenced(CODE), CODE, method, weights)


@pytest.mark.parametrize("method", ["exact", "mean", "rollout", "estimate"])
def test_every_line_of_the_code_gets_a_score_per_span(tiny, method: str):
    model, tokenizer = tiny
    layers, heads = model.config.num_hidden_layers, model.config.num_attention_heads
    out = _explain(model, tokenizer, method, torch.ones(layers, heads) if method == "estimate" else None)
    assert [s.label for s in out.spans] == ["description", "test:1", "test:2", "snippet:s1"]
    assert set(out.lines) == {1, 2}  # the fence's tokens belong to no line
    assert all(scores.shape == (4,) for scores in out.lines.values())
    assert out.forward_passes == (1 + 4 if method == "exact" else 1)
    shown = summary(out, CODE)
    assert shown["measure"] == MEASURES[method]
    assert [line["text"] for line in shown["lines"]] == CODE.split("\n")
    for line in shown["lines"]:
        shares = [s["share"] for s in line["spans"]]
        assert shares == sorted(shares, reverse=True) and len(shares) <= 3
    total = sum(s["share"] for s in shown["spans"])
    assert total == pytest.approx(1.0, abs=0.01) or total == 0.0


def test_exact_is_the_leave_one_out_drop_of_each_token(tiny):
    model, tokenizer = tiny
    out = _explain(model, tokenizer, "exact")
    messages = build_messages(spec_view(PYTHON_FUNCTION, VALUES), references=[("s1", "def add(x, y): return x + y")])
    from codegen.provenance.spans import token_spans

    prompt_ids, spans = token_spans(tokenizer, messages, render_chat(tokenizer, messages))
    answer_ids = tokenizer(fenced(CODE), add_special_tokens=False)["input_ids"]
    direct = exact.leave_one_out(LlamaEngine(model, "fp32"), prompt_ids + answer_ids, len(prompt_ids), spans)
    torch.testing.assert_close(out.token_scores, direct)


def test_the_estimate_needs_its_fitted_weights_and_a_known_method(tiny):
    model, tokenizer = tiny
    with pytest.raises(ValueError, match="fitted head weights"):
        _explain(model, tokenizer, "estimate", None)
    with pytest.raises(ValueError, match="only the estimate"):
        _explain(model, tokenizer, "mean", torch.ones(2, 2))
    with pytest.raises(ValueError, match="method"):
        _explain(model, tokenizer, "source")


def test_a_model_with_shuffled_weights_attributes_differently(tiny, tiny_llama: Path):
    from transformers import AutoModelForCausalLM

    model, tokenizer = tiny
    shuffled = AutoModelForCausalLM.from_pretrained(str(tiny_llama), dtype=torch.float32).eval()
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for parameter in shuffled.model.layers.parameters():
            flat = parameter.view(-1)
            flat.copy_(flat[torch.randperm(flat.numel(), generator=generator)])
    for method in ("exact", "mean"):
        a, b = _explain(model, tokenizer, method), _explain(shuffled, tokenizer, method)
        assert not torch.allclose(a.token_scores, b.token_scores, atol=1e-4)


def test_removing_one_span_drops_each_line_by_its_leave_one_out_sum(tiny):
    from codegen.provenance import attribution
    from codegen.provenance.explain import removal_drops

    model, tokenizer = tiny
    out = _explain(model, tokenizer, "exact")
    engine = LlamaEngine(model, "fp32")
    first, both = removal_drops(engine, out, [[out.spans[0]], out.spans[:2]])
    expected = attribution.by_line(out.token_scores, out.token_lines, total=True)
    assert set(first) == set(expected) == {1, 2}
    for line, drops in expected.items():
        assert first[line] == pytest.approx(float(drops[0]), abs=1e-4)
    assert set(both) == {1, 2}
