"""Labelled prompt spans as token positions (codegen/provenance/spans.py), on a real byte-level BPE with a
ChatML template, as the local engine renders and encodes a prompt."""

from __future__ import annotations

import pytest

from codegen.base import Message, Span
from codegen.local_llama import render_chat
from codegen.prompts import build_messages
from codegen.provenance.spans import SpanMismatch, token_spans
from models.builtin_templates import PYTHON_FUNCTION
from models.spec_view import spec_view
from tests.test_local_llama import CHATML, _bpe

VALUES = {
    "function_name": "clamp",
    "description": "Clamp x into the range from lo to hi.",
    "tests": ["assert clamp(5, 0, 3) == 3", "assert clamp(-1, 0, 3) == 0"],
}


@pytest.fixture(scope="module")
def tokenizer():
    from transformers import PreTrainedTokenizerFast

    tok = PreTrainedTokenizerFast(
        tokenizer_object=_bpe()._tokenizer, bos_token="<|im_start|>", eos_token="<|im_end|>", pad_token="<|endoftext|>"
    )
    tok.chat_template = CHATML
    return tok


def test_each_span_covers_the_tokens_of_its_text(tokenizer):
    messages = build_messages(
        spec_view(PYTHON_FUNCTION, VALUES), references=[("s1", "def bound(v, a, b):\n    return max(a, min(v, b))")]
    )
    rendered = render_chat(tokenizer, messages)
    ids, spans = token_spans(tokenizer, messages, rendered)
    assert ids == tokenizer(rendered, add_special_tokens=False)["input_ids"]  # what the engine encodes
    by_label = {s.label: s for s in spans}
    assert set(by_label) == {"description", "test:1", "test:2", "snippet:s1"}
    for span in spans:
        text = tokenizer.decode(ids[span.start : span.end])
        expected = next(messages[1].content[s.start : s.end] for s in messages[1].spans if s.label == span.label)
        assert expected in text and len(text) <= len(expected) + 2  # the span's tokens, at most a space more
        assert span.chars == len(expected)
    assert by_label["test:1"].end <= by_label["test:2"].start
    # the template's tokens are in no span: the first token and the role markers are attention sinks
    covered = {i for s in spans for i in range(s.start, s.end)}
    assert 0 not in covered and ids[0] == tokenizer.convert_tokens_to_ids("<|im_start|>")


def test_a_template_that_rewrites_the_content_is_refused(tokenizer):
    messages = [Message("user", "hello world", (Span("description", 0, 5),))]
    with pytest.raises(SpanMismatch):
        token_spans(tokenizer, messages, "<|im_start|>user\nHELLO world<|im_end|>\n")
