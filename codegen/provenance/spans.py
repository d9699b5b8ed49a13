"""From a prompt's labelled character spans (codegen.base.Span) to token positions in the prompt a local
model reads: the chat template is rendered as the engine renders it (codegen.local_llama.render_chat),
tokenized with offsets, and each span covers the tokens that overlap its characters. The template's own
tokens (role markers, the first token) belong to no span: they are where attention sinks, not what the
code relied on."""

from __future__ import annotations

from dataclasses import dataclass

from codegen.base import Message


@dataclass(frozen=True)
class TokenSpan:
    label: str
    start: int  # the first prompt token of the span
    end: int  # one past its last
    chars: int  # its length in characters


class SpanMismatch(ValueError):
    """The rendered prompt does not hold a message's content verbatim (a chat template that rewrites it)."""


def token_spans(tokenizer, messages: list[Message], rendered: str) -> tuple[list[int], list[TokenSpan]]:
    """The prompt's token ids (as the engine encodes `rendered`) and every labelled span's tokens."""
    encoded = tokenizer(rendered, add_special_tokens=False, return_offsets_mapping=True)
    ids, offsets = list(encoded["input_ids"]), [tuple(o) for o in encoded["offset_mapping"]]
    out: list[TokenSpan] = []
    cursor = 0
    for message in messages:
        at = rendered.find(message.content, cursor)
        if at < 0:
            raise SpanMismatch(f"the chat template does not hold the {message.role} message verbatim")
        cursor = at + len(message.content)
        for span in message.spans:
            first, last = at + span.start, at + span.end
            tokens = [i for i, (a, b) in enumerate(offsets) if a < last and b > first and b > a]
            if tokens:
                out.append(TokenSpan(span.label, tokens[0], tokens[-1] + 1, span.end - span.start))
    return ids, out
