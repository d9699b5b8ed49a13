"""syntax_aware_beam_search: beam search over the model's log-probabilities, pruning at line ends the
beams whose code can no longer parse; each finished beam is a candidate."""

from __future__ import annotations

from collections.abc import Collection

from pydantic import ConfigDict, Field

from models.common import Strict
from models.techniques.base import Beam, Decoding, Mode, Technique


class BeamSettings(Strict):
    model_config = ConfigDict(extra="forbid", frozen=True)

    width: int = Field(default=4, ge=1, le=8, description="beams kept at each step; each finished beam is a candidate")
    length_penalty: float = Field(
        default=1.0, ge=0.0, le=2.0, description="a beam's score is its log-probability / length ** length_penalty"
    )
    visible_tests: bool = Field(
        default=True,
        description="rerank the finished beams by the spec's own tests, run in the sandbox (after whether "
        "they parse, before their score)",
    )


class SyntaxAwareBeamSearch(Technique):
    name = "syntax_aware_beam_search"
    description = (
        "Beam search over the model's own log-probabilities, with the prompt's cache shared by every "
        "beam. At each line end a beam whose code can no longer become valid Python (codeop) is pruned, "
        "and a beam that ends is kept only if its code parses; one that the token budget stops is cut "
        "back to its last line that parses. Each finished beam is a candidate; they are ranked by whether"
        " they parse, then by how many of the spec's own tests they pass in the sandbox (visible_tests), "
        "then by their length-normalised log-probability. Backends that do not expose their logits step "
        "by step cannot run it: a 422 says so, it never falls back to greedy decoding. n must be 1."
    )
    modes = (
        Mode(requires="logits", how="specmill's beam loop over the batched engine, pruning at line ends"),
        Mode(requires="beam_search", how="the backend's own beam search (vLLM), without pruning"),
    )
    steps = ("beam search (width candidates)", "visible tests in the sandbox", "rank")
    languages = ("python",)
    options = BeamSettings
    targets_syntax = True
    makes_candidates = True

    def conflicts(self, others: Collection[Technique], n: int) -> str | None:
        if n != 1:
            return f"{self.name} returns its `width` finished beams as the candidates: n must be 1"
        return None

    def decoding(self, settings: BeamSettings, mode: Mode) -> tuple[Decoding, ...]:
        return (Beam(settings.width, settings.length_penalty, prune=mode.requires == "logits"),)

    def ranks_by_tests(self, settings: BeamSettings) -> bool | None:
        return settings.visible_tests


TECHNIQUE = SyntaxAwareBeamSearch()
