"""Decoding, composed (as text-generation-inference does it, so a technique adds a part, not a loop): a list of
logits processors, a chooser, and stopping criteria, each its own object.

- A `Processor` changes the logits of B rows before the choice, each row with its own state: a
  grammar's matcher per row (`GrammarProcessor`). It is told which token each row took (`advance`)
  and, in beam search, which row each new row continues (`reorder`), so that its state follows the
  beams.
- A `Chooser` picks one row's token: `Greedy` or `Sampling` (temperature, top-p, its own generator).
  Beam search (codegen/beam_search.py) is the third way to choose, over all rows at once.
- `Stopping` ends a sequence: an end token (kept), the token budget, a stop condition on the tokens,
  or a dead end (every token masked). It says why in `reason`.

codegen/llama_engine.py's loops take these objects; a new decoding technique adds a processor or a
chooser, not another branch in the loop.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Protocol

import torch

if TYPE_CHECKING:
    import xgrammar

DEAD_END = "dead_end"  # every token was masked: the grammar allows no continuation


class Processor(Protocol):
    def __call__(self, logits: torch.Tensor) -> torch.Tensor:
        """Logits (B x vocab) of the first B rows, changed (in place or not)."""
        ...

    def advance(self, tokens: Sequence[int]) -> None:
        """Row i took tokens[i]."""

    def reorder(self, parents: Sequence[int]) -> None:
        """Row i now continues what row parents[i] was (beam search; called before `advance`)."""


class Chooser(Protocol):
    def __call__(self, logits: torch.Tensor) -> int: ...


class Greedy:
    def __call__(self, logits: torch.Tensor) -> int:
        return int(logits.argmax())


@dataclass
class Sampling:
    temperature: float
    top_p: float = 1.0
    generator: torch.Generator | None = None

    def __call__(self, logits: torch.Tensor) -> int:
        probs = torch.softmax(logits / self.temperature, dim=-1)
        if self.top_p < 1.0:
            sorted_p, order = probs.sort(descending=True)
            keep = sorted_p.cumsum(0) - sorted_p < self.top_p  # the smallest prefix whose mass reaches top_p
            probs = torch.zeros_like(probs).scatter_(0, order[keep], sorted_p[keep])
        return int(torch.multinomial(probs, 1, generator=self.generator))


GREEDY = Greedy()


def chooser(temperature: float, top_p: float = 1.0, generator: torch.Generator | None = None) -> Chooser:
    """Greedy at temperature 0, else sampling."""
    return GREEDY if temperature <= 0 else Sampling(temperature, top_p, generator)


@dataclass
class Stopping:
    """When a sequence ends. `done(tokens)` is asked after each new token; `reason` says why it ended."""

    eos: set[int]
    max_new: int
    checks: tuple[Callable[[list[int]], bool], ...] = ()
    reason: str | None = None

    def why(self, tokens: list[int]) -> str | None:
        """Why a sequence of these tokens ends ("stop" or "length"), or None while it goes on."""
        if (tokens and tokens[-1] in self.eos) or any(check(tokens) for check in self.checks):
            return "stop"
        return "length" if len(tokens) >= self.max_new else None

    def done(self, tokens: list[int]) -> bool:
        """Whether the sequence ends here; `reason` then says why."""
        self.reason = self.why(tokens)
        return self.reason is not None

    def dead_end(self) -> None:
        self.reason = DEAD_END


def apply(processors: Sequence[Processor], logits: torch.Tensor) -> torch.Tensor:
    for p in processors:
        logits = p(logits)
    return logits


def advance(processors: Sequence[Processor], tokens: Sequence[int]) -> None:
    for p in processors:
        p.advance(tokens)


def reorder(processors: Sequence[Processor], parents: Sequence[int]) -> None:
    for p in processors:
        p.reorder(parents)


def dead(logits: torch.Tensor) -> bool:
    """Whether a row's logits allow no token at all."""
    return bool(torch.isneginf(logits).all())


@dataclass
class GrammarProcessor:
    """A grammar's token masks (xgrammar), one matcher per row.

    `compiled` is an xgrammar CompiledGrammar (a JSON Schema or the Python grammar); the end tokens
    are the model's, allowed only where the grammar is complete. Rows that beam search duplicates get
    a fork of their parent's matcher; the others keep theirs. `mask_s` collects the time spent on
    masks per step (the cost `make bench-generate` reports)."""

    compiled: xgrammar.CompiledGrammar
    eos: set[int]
    rows: int = 1
    mask_s: list[float] = field(default_factory=list)

    def __post_init__(self) -> None:
        import xgrammar as xgr

        self._xgr = xgr
        self.matchers = [self._new() for _ in range(self.rows)]
        self.bitmask = xgr.allocate_token_bitmask(self.rows, self.compiled.tokenizer_info.vocab_size)

    def _new(self):
        return self._xgr.GrammarMatcher(self.compiled, override_stop_tokens=sorted(self.eos) or None)

    def __call__(self, logits: torch.Tensor) -> torch.Tensor:
        started = time.perf_counter()
        b = logits.shape[0]
        for i in range(b):
            if self.matchers[i].is_terminated():  # its end token was taken and decoding went on: nothing fits
                self.bitmask[i].zero_()
            else:
                self.matchers[i].fill_next_token_bitmask(self.bitmask, i)
        vocab = logits.shape[1]
        mask = self.bitmask[:b]
        self._xgr.apply_token_bitmask_inplace(logits, mask.to(logits.device), vocab_size=vocab)
        self.mask_s.append(time.perf_counter() - started)
        return logits

    def advance(self, tokens: Sequence[int]) -> None:
        for matcher, token in zip(self.matchers, tokens, strict=False):
            if not matcher.is_terminated() and not matcher.accept_token(int(token)):
                raise RuntimeError(f"the grammar refused token {token}, which its own mask allowed")

    def reorder(self, parents: Sequence[int]) -> None:
        seen: set[int] = set()
        fresh = []
        for p in parents:
            fresh.append(self.matchers[p] if p not in seen else self.matchers[p].fork())
            seen.add(p)
        self.matchers = fresh + self.matchers[len(fresh) :]
