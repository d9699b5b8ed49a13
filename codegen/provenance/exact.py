"""Exact leave-one-out reliance: how much each code token's log-probability drops when one labelled span
is removed from the prompt. One pass over the whole prompt and code, then one pass per span that reuses
the keys and values of the prompt before the span (the positions before it are unchanged by removing
it) and feeds only what follows it. This is the ground truth the attention-based estimates are judged
against (ContextCite, AT2)."""

from __future__ import annotations

from collections.abc import Sequence

import torch

from codegen.llama_engine import Cache, LlamaEngine
from codegen.provenance.spans import TokenSpan


def _check(spans: Sequence[TokenSpan], prompt_len: int) -> None:
    if any(s.start < 1 or s.end > prompt_len or s.start >= s.end for s in spans):
        raise ValueError("a span must lie within the prompt, after its first token")


def without(
    engine: LlamaEngine, ids: list[int], prompt_len: int, removed: Sequence[TokenSpan], whole: Cache
) -> torch.Tensor:
    """G: the code tokens' log-probabilities with the `removed` spans taken out of the prompt, reusing the
    keys and values of `whole` (a cache filled by a pass over all of `ids`) before the first of them."""
    _check(removed, prompt_len)
    cut = sorted({i for s in removed for i in range(s.start, s.end)})
    keep = set(range(len(ids))) - set(cut)
    kept = [ids[i] for i in sorted(keep)]
    cache = engine.new_cache(len(kept))
    cache.copy_prefix(whole, cut[0])
    return engine.logprobs_after(kept, cut[0], cache, prompt_len - len(cut))


def leave_one_out(engine: LlamaEngine, ids: list[int], prompt_len: int, spans: Sequence[TokenSpan]) -> torch.Tensor:
    """G x S: for each code token (ids[prompt_len:]) and span, the log-probability with the whole prompt
    minus the log-probability with the span removed (positive: the span helped predict the token)."""
    _check(spans, prompt_len)
    whole = engine.new_cache(len(ids))
    base = engine.logprobs_after(ids, 0, whole, prompt_len)
    drops = [base - without(engine, ids, prompt_len, [span], whole) for span in spans]
    return torch.stack(drops, dim=-1) if drops else torch.zeros(len(ids) - prompt_len, 0)


def passes(spans: Sequence[TokenSpan]) -> int:
    """Forward passes leave-one-out costs: the whole prompt once, then one per span."""
    return 1 + len(spans)
