"""Prompt-lookup speculation: drafts for codegen/llama_engine.py's greedy loop, taken from the text itself.

Much of what a model writes for a spec is already in its prompt: the signature, the names the spec
uses, and in a repair round most of the previous attempt. `PromptLookup` finds the latest earlier place
where the last few tokens (an n-gram, longest first) occurred, in the prompt or in what was generated
so far, and proposes the tokens that followed there as a draft. The engine feeds the draft in one
forward pass and keeps the longest prefix that greedy decoding would have chosen itself, plus the
token it chose where they part, so the answer is token for token the one decoding without drafts
gives (the engine checks that its kernels make that hold on this machine: `LlamaEngine.speculation`).

Lookups are O(1) per token: an index from each n-gram to the latest position after it, updated as
tokens arrive.
"""

from __future__ import annotations

from dataclasses import dataclass, field

MAX_NGRAM = 3  # the longest n-gram looked up (longer ones first)
MIN_NGRAM = 2  # the shortest: a single token matches too often to be worth a verification
DRAFT = 8  # tokens proposed at most per pass


@dataclass
class Stats:
    """What speculation did in one generation: verification passes, tokens drafted and accepted."""

    passes: int = 0
    drafted: int = 0
    accepted: int = 0

    @property
    def acceptance(self) -> float | None:
        return self.accepted / self.drafted if self.drafted else None

    def add(self, other: Stats) -> None:
        self.passes += other.passes
        self.drafted += other.drafted
        self.accepted += other.accepted


@dataclass
class PromptLookup:
    """Drafts from n-gram matches in the tokens seen so far (`extend` them as they come)."""

    draft: int = DRAFT
    max_ngram: int = MAX_NGRAM
    min_ngram: int = MIN_NGRAM
    tokens: list[int] = field(default_factory=list)
    _after: dict[tuple[int, ...], int] = field(default_factory=dict)  # n-gram -> the position after its latest

    def extend(self, tokens: list[int]) -> None:
        for token in tokens:
            self.tokens.append(token)
            end = len(self.tokens)
            # the n-grams that end just before this token now have a continuation: index them
            for n in range(self.min_ngram, self.max_ngram + 1):
                if end - 1 - n >= 0:
                    self._after[tuple(self.tokens[end - 1 - n : end - 1])] = end - 1

    def propose(self) -> list[int]:
        """The tokens that followed the latest earlier occurrence of the longest matching suffix."""
        for n in range(min(self.max_ngram, len(self.tokens)), self.min_ngram - 1, -1):
            at = self._after.get(tuple(self.tokens[-n:]))
            if at is not None:
                return self.tokens[at : at + self.draft]
        return []
