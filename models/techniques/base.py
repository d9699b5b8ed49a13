"""What a generation technique is: one object, in its own module, that owns everything about it.

A technique (`Technique`) says, in one place:
- what the catalog shows of it (GET /api/techniques): its description, its modes (the backend
  capabilities it runs on, best first, and how it runs on each), the steps it adds, the languages it
  handles;
- its settings: `options`, a pydantic model of the parameters a request may set (validated at the
  API, shown with their defaults and ranges), or `fixed`, settings it always runs with;
- its conflicts with the other requested techniques and with `n` (`conflicts`: a 422 saying why);
- what it adds to the decoding of each candidate (`decoding`: parts of `Decoding`, which a backend
  turns into its own logits processors, chooser or structured outputs);
- what it adds to a generation's steps (`prepare`, `extend`, `choose`): these run inside the
  generation workflow, so they stay deterministic and reach the world only through `Run.steps`;
- the work it does on a worker (`activities`: step name -> "module:function"), which the generic
  `technique_step` activity imports and runs on the generation worker (activities/generation.py).

The registry (models/techniques/__init__.py) lists the modules. Nothing else names a technique.
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar, Literal

from pydantic import BaseModel, Field

if TYPE_CHECKING:
    from models.generation import CandidatesResult, GenerationInput, Plan, Reference
    from models.generation_steps import Steps
    from models.spec_view import SpecView

Capability = Literal["chat", "logits", "grammar", "json_schema", "beam_search", "batch"]
CAPABILITIES: dict[str, str] = {
    "chat": "answers a chat (every model)",
    "logits": "exposes its logits step by step to specmill's own decoding loop (codegen/llama_engine.py)",
    "grammar": "constrains its own decoding to a grammar (vLLM structured outputs)",
    "json_schema": "constrains its own decoding to a JSON Schema",
    "beam_search": "runs beam search itself (vLLM LLM.beam_search)",
    "batch": "decodes n candidates of one prompt together, one forward pass per step (generate_rows)",
}


class Unsupported(ValueError):
    """A technique the backend, the language or the other settings cannot run (a 422)."""


class TechniqueParameter(BaseModel):
    default: Any = Field(description="The value the generation path uses unless the request sets it")
    description: str
    minimum: float | None = None
    maximum: float | None = None


def parameters(settings: type[BaseModel] | BaseModel | None) -> dict[str, TechniqueParameter]:
    """A technique's settings as the catalog shows them: each field's value, description and range."""
    if settings is None:
        return {}
    model = settings if isinstance(settings, type) else type(settings)
    out = {}
    for name, info in model.model_fields.items():
        bounds = {}
        for meta in info.metadata:
            for attr, key in (("ge", "minimum"), ("le", "maximum"), ("gt", "minimum"), ("lt", "maximum")):
                if getattr(meta, attr, None) is not None:
                    bounds[key] = getattr(meta, attr)
        default = info.default if isinstance(settings, type) else getattr(settings, name)
        out[name] = TechniqueParameter(default=default, description=info.description or "", **bounds)
    return out


class Mode(BaseModel):
    """One way a technique runs: on a backend with `requires`, like `how`."""

    requires: Capability
    how: str


class TechniqueInfo(BaseModel):
    name: str
    description: str
    implemented: bool
    modes: list[Mode] = Field(description="The capabilities it runs on, best first, and how it runs on each")
    steps: list[str] = Field(description="What it adds to a generation")
    languages: list[str] | None = Field(default=None, description="The spec languages it handles (None: any)")
    parameters: dict[str, TechniqueParameter]
    backends: list[str] = Field(
        default_factory=list, description="The models whose backends can run it (filled in by GET /api/techniques)"
    )
    unavailable: str | None = Field(
        default=None, description="Why it cannot run on this platform now, and the command that fixes it (None: it can)"
    )
    measured: dict[str, Any] | None = Field(
        default=None, description="What its own figures say of it, where it measures itself (multi_head_attention)"
    )


# --- what a technique adds to decoding: parts a backend turns into its own processors --------------------


@dataclass(frozen=True)
class Beam:
    """Beam search: `width` beams, ranked by log-probability / length ** penalty; `prune`: drop at line
    ends the beams whose code can no longer parse (codegen/syntax_check.py)."""

    width: int = 4
    length_penalty: float = 1.0
    prune: bool = True


@dataclass(frozen=True)
class Grammar:
    """An EBNF grammar (xgrammar's dialect) the answer must follow: masks in specmill's engine (`logits`),
    or the backend's structured outputs (`grammar`)."""

    ebnf: str


@dataclass(frozen=True)
class JsonSchema:
    """A JSON Schema (as JSON text) the answer must follow, on backends with `logits` or `json_schema`."""

    text: str


Decoding = Beam | Grammar | JsonSchema


# --- a generation's steps, as the techniques extend them ------------------------------------------------


@dataclass
class Run:
    """One generation as its steps go: what the techniques' step hooks read and change."""

    inp: GenerationInput
    steps: Steps
    references: list[Reference] = field(default_factory=list)
    used: dict[Any, Reference] = field(default_factory=dict)  # every reference a round saw, by id
    plan: Plan | None = None
    # techniques' additions to the provenance, by technique (scores, what was reranked)
    notes: dict[str, Any] = field(default_factory=dict)
    # references found by a later query, reordered before they are used (tree_transformers' reranking)
    rerank: Any = None  # async (draft code, references) -> references

    def settings(self, technique: Technique) -> Any:
        return technique.settings(self.inp.options)


class Technique:
    """The base every technique module's one object derives from; the defaults add nothing."""

    name: ClassVar[str]
    description: ClassVar[str]
    modes: ClassVar[tuple[Mode, ...]] = ()
    steps: ClassVar[tuple[str, ...]] = ()
    languages: ClassVar[tuple[str, ...] | None] = None
    options: ClassVar[type[BaseModel] | None] = None  # per-request parameters
    fixed: ClassVar[BaseModel | None] = None  # settings it always runs with
    implemented: ClassVar[bool] = True
    # a technique aimed at syntax: an answer the token budget stops is cut back to its last line that parses
    targets_syntax: ClassVar[bool] = False
    # it returns several candidates from one call (beam search): something to choose among even with n = 1
    makes_candidates: ClassVar[bool] = False
    retrieves: ClassVar[bool] = False  # it puts retrieved snippets in the prompt
    # work on the generation worker: step name -> "module:function(payload: dict, context) -> dict"
    activities: ClassVar[dict[str, str]] = {}
    # what it needs on the machine: "module:function(models path) -> why it is unavailable, or None"
    needs: ClassVar[str | None] = None

    def info(self) -> TechniqueInfo:
        return TechniqueInfo(
            name=self.name,
            description=self.description,
            implemented=self.implemented,
            modes=list(self.modes),
            steps=list(self.steps),
            languages=list(self.languages) if self.languages is not None else None,
            parameters=parameters(self.options or self.fixed),
        )

    def settings(self, options: BaseModel) -> Any:
        """Its settings for a request: the request's parameters, else their defaults, else `fixed`."""
        if self.options is None:
            return self.fixed
        return getattr(options, self.name, None) or self.options()

    def conflicts(self, others: Collection[Technique], n: int) -> str | None:
        """Why it cannot run beside `others` (the other requested techniques) or with `n` candidates."""
        return None

    def refuses(self, settings: Any, view: SpecView, others: Collection[Technique], options: BaseModel) -> str | None:
        """Why it cannot serve this spec with these settings (a 422 before anything runs), or None."""
        return None

    def decoding(self, settings: Any, mode: Mode) -> tuple[Decoding, ...]:
        """What it adds to each candidate's decoding when it runs in `mode`."""
        return ()

    def answer_retries(self, settings: Any, mode: Mode) -> int:
        """Answers asked for again, told the parse error, when the code does not parse (0: none)."""
        return 0

    def ranks_by_tests(self, settings: Any) -> bool | None:
        """Whether candidates are ranked by the visible tests (None: no opinion, the default rule decides)."""
        return None

    async def prepare(self, run: Run) -> None:
        """Before the first round of candidates."""

    async def extend(self, run: Run, out: CandidatesResult) -> CandidatesResult:
        """After the first round: more rounds, or the candidates changed."""
        return out

    async def choose(self, run: Run, out: CandidatesResult) -> CandidatesResult:
        """After the visible tests ran: scores that decide which candidate is kept."""
        return out
