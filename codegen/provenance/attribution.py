"""From attention weights to "which labelled part of the prompt each generated line relied on".

The inputs come from one teacher-forced pass (codegen.llama_engine.LlamaEngine.teacher_forced): for each
code token, the attention of the position that predicted it over the prompt's tokens, per layer and head;
optionally each layer's whole attention averaged over heads. Three methods turn them into one score per
code token and labelled span (codegen.provenance.spans.TokenSpan):

- `mean`: the attention mass on the span, averaged over every layer and head (the naive baseline);
- `rollout`: attention rollout (Abnar & Zuidema 2020): each layer's head-averaged attention mixed with
  the identity for the residual stream, A' = (A + I) / 2, multiplied through the layers, so that mass a
  later layer puts on an earlier position is traced back to the prompt tokens that position read;
- `weighted`: one non-negative weight per layer and head, fitted to leave-one-span-out effects (AT2);
  the score is the weighted sum of the per-head masses.

Scores per token are averaged over the tokens of each line of the code, and a line's scores are shown as
shares over the spans (they sum to 1 over the labelled spans; the template's tokens and the first
token, where attention sinks, are not spans and are left out).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from codegen.provenance.spans import TokenSpan


def span_mass(to_prompt: torch.Tensor, spans: Sequence[TokenSpan]) -> torch.Tensor:
    """layers x heads x G x P attention over the prompt -> layers x heads x G x S mass on each span."""
    return torch.stack([to_prompt[..., s.start : s.end].sum(-1) for s in spans], dim=-1)


def mean(mass: torch.Tensor) -> torch.Tensor:
    """G x S: the span masses averaged over layers and heads."""
    return mass.mean(dim=(0, 1))


def weighted(mass: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """G x S: the span masses summed with one non-negative weight per layer and head."""
    if weights.shape != mass.shape[:2]:
        raise ValueError(f"weights of shape {tuple(weights.shape)} for {tuple(mass.shape[:2])} layers x heads")
    return torch.einsum("lh,lhgs->gs", weights.clamp(min=0), mass)


def rollout(layers_mean: torch.Tensor, prompt_len: int, spans: Sequence[TokenSpan]) -> torch.Tensor:
    """G x S: attention rollout from each code token's predicting position back to the prompt's spans.
    `layers_mean` is layers x T x T (each layer's attention averaged over heads)."""
    t = layers_mean.shape[-1]
    eye = torch.eye(t, dtype=layers_mean.dtype)
    flow = eye
    for attention in layers_mean:
        mixed = 0.5 * attention + 0.5 * eye
        flow = (mixed / mixed.sum(-1, keepdim=True)) @ flow
    rows = flow[prompt_len - 1 : t - 1, :prompt_len]
    return torch.stack([rows[:, s.start : s.end].sum(-1) for s in spans], dim=-1)


def by_line(scores: torch.Tensor, token_lines: Sequence[int | None], total: bool = False) -> dict[int, torch.Tensor]:
    """... x G x S per token -> {line: ... x S}, the mean (`total`: the sum) over the line's tokens along
    the token axis (tokens of no line are left out)."""
    if len(token_lines) != scores.shape[-2]:
        raise ValueError(f"{len(token_lines)} token lines for {scores.shape[-2]} tokens")
    lines: dict[int, list[int]] = {}
    for i, line in enumerate(token_lines):
        if line is not None:
            lines.setdefault(line, []).append(i)
    reduce = torch.sum if total else torch.mean
    return {line: reduce(scores[..., idx, :], dim=-2) for line, idx in sorted(lines.items())}


def shares(scores: torch.Tensor) -> torch.Tensor:
    """A line's scores over the spans as shares summing to 1 (all zero stays zero)."""
    total = scores.sum(-1, keepdim=True)
    return torch.where(total > 0, scores / total.clamp(min=1e-12), torch.zeros_like(scores))


def token_lines(offsets: Sequence[tuple[int, int]], text: str, code: str) -> list[int | None]:
    """The line of `code` (from 1) that each generated token falls in, where `offsets` are the tokens'
    character ranges in `text` (the model's answer) and `code` is the block extracted from it; None for a
    token outside the code (a fence, words around it) or one that holds only line breaks."""
    at = text.find(code)
    out: list[int | None] = []
    for start, end in offsets:
        inside = [i for i in range(start, end) if at <= i < at + len(code) and text[i] != "\n"] if at >= 0 else []
        out.append(code.count("\n", 0, inside[0] - at) + 1 if inside else None)
    return out
