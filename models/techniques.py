"""The six generation techniques of the specification sheets: which are implemented, what each needs
of a backend, the settings it runs with and the steps it adds.

The seam between techniques and backends (decoding is composed, codegen/decoding.py):
- a backend declares its capabilities (`Backend.capabilities`, codegen/base.py): the vocabulary is
  `CAPABILITIES` below;
- a technique declares, as `modes`, the capabilities it can run on, best first, and how it runs on
  each; `resolve` picks the first mode the backend has, or raises `Unsupported` naming what is
  missing (a 422 at the API, never a silent fallback to plain decoding);
- a technique's per-request parameters are a pydantic model (`BeamSettings`, `GrammarSettings`),
  validated at the API (`TechniqueOptions`) and shown with their defaults and ranges by
  GET /api/techniques; fixed settings (RETRIEVAL, HIERARCHICAL) are shown the same way.
The settings are data: the generation path (codegen/generate.py, models/generation_steps.py) reads
them from here, so the catalog cannot drift from what runs.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_serializer

from models.common import Strict


class RetrievalSettings(BaseModel):
    """retrieval_augmentation (RepoCoder: retrieve, draft, re-query with the draft, generate again)."""

    model_config = ConfigDict(frozen=True)

    top_k: int = Field(3, description="snippets per query")
    budget_tokens: int = Field(
        512, description="estimated prompt tokens the snippets may take (a quarter of their characters, plus 8 each)"
    )
    query_chars: int = Field(4000, description="characters of a query sent to the knowledge base (the rest is cut)")
    requery: bool = Field(
        True, description="re-query with the first draft and, when that finds new snippets, generate a second round"
    )


class HierarchicalSettings(BaseModel):
    """hierarchical_generation (plan the module, then one body per planned item)."""

    model_config = ConfigDict(frozen=True)

    plan_attempts: int = Field(3, description="answers asked for until the plan is valid, each told the last error")
    plan_min_tokens: int = Field(384, description="the plan's token budget: max_new_tokens, at least this")
    max_items: int = Field(12, description="functions and classes a plan may have")


RETRIEVAL = RetrievalSettings()
HIERARCHICAL = HierarchicalSettings()


class BeamSettings(Strict):
    """syntax_aware_beam_search, per request."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    width: int = Field(4, ge=1, le=8, description="beams kept at each step; each finished beam is a candidate")
    length_penalty: float = Field(
        1.0, ge=0.0, le=2.0, description="a beam's score is its log-probability / length ** length_penalty"
    )
    visible_tests: bool = Field(
        True,
        description="rerank the finished beams by the spec's own tests, run in the sandbox (after whether "
        "they parse, before their score)",
    )


class GrammarSettings(Strict):
    """hybrid_grammar_neural, per request."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    retries: int = Field(
        2,
        ge=0,
        le=4,
        description="backends that cannot take the grammar: answers asked for again, each told the parse "
        "error, when the code does not parse",
    )


class TechniqueOptions(Strict):
    """Per-request parameters of the techniques that have them (only for techniques also requested)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    syntax_aware_beam_search: BeamSettings | None = None
    hybrid_grammar_neural: GrammarSettings | None = None

    @model_serializer(mode="wrap")
    def _set_only(self, handler):
        """Only the techniques whose parameters were given: {} when none were."""
        return {name: value for name, value in handler(self).items() if value is not None}

    def beam(self) -> BeamSettings:
        return self.syntax_aware_beam_search or BeamSettings()

    def grammar(self) -> GrammarSettings:
        return self.hybrid_grammar_neural or GrammarSettings()


Capability = Literal["chat", "logits", "grammar", "json_schema", "beam_search", "batch"]
CAPABILITIES: dict[str, str] = {
    "chat": "answers a chat (every model)",
    "logits": "exposes its logits step by step to specmill's own decoding loop (codegen/llama_engine.py)",
    "grammar": "constrains its own decoding to a grammar (vLLM structured outputs)",
    "json_schema": "constrains its own decoding to a JSON Schema",
    "beam_search": "runs beam search itself (vLLM LLM.beam_search)",
    "batch": "decodes n candidates of one prompt together, one forward pass per step (generate_rows)",
}


class TechniqueParameter(BaseModel):
    default: Any = Field(description="The value the generation path uses unless the request sets it")
    description: str
    minimum: float | None = None
    maximum: float | None = None


def parameters(settings: type[BaseModel] | BaseModel) -> dict[str, TechniqueParameter]:
    """A technique's settings as the catalog shows them: each field's value, description and range."""
    model = settings if isinstance(settings, type) else type(settings)
    out = {}
    for name, field in model.model_fields.items():
        bounds = {}
        for meta in field.metadata:
            for attr, key in (("ge", "minimum"), ("le", "maximum")):
                if getattr(meta, attr, None) is not None:
                    bounds[key] = getattr(meta, attr)
        default = field.default if isinstance(settings, type) else getattr(settings, name)
        out[name] = TechniqueParameter(default=default, description=field.description or "", **bounds)
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
    languages: list[str] | None = Field(None, description="The spec languages it handles (None: any)")
    parameters: dict[str, TechniqueParameter]
    backends: list[str] = Field(
        default_factory=list, description="The models whose backends can run it (filled in by GET /api/techniques)"
    )


TECHNIQUES: dict[str, TechniqueInfo] = {
    t.name: t
    for t in [
        TechniqueInfo(
            name="retrieval_augmentation",
            description="Searches the tenant's knowledge base with the spec's description and signature, puts the "
            "best snippets in the prompt within a token budget, then re-queries once with the first "
            "draft (RepoCoder) and generates again. The snippets used are recorded in the provenance.",
            implemented=True,
            modes=[Mode(requires="chat", how="snippets in the prompt")],
            steps=["retrieve", "candidates", "retrieve with the draft", "candidates (second round)"],
            parameters=parameters(RETRIEVAL),
        ),
        TechniqueInfo(
            name="hierarchical_generation",
            description="Plans the module first: a JSON list of the functions and classes with signatures and "
            "one-line docstrings, checked (JSON, identifiers, each signature parses as a stub) and asked "
            "again with the validation error when invalid. Then generates each body with the plan as "
            "context (one model call per item, retrieved snippets included when retrieval_augmentation is "
            "also asked for) and assembles the module: imports once at the top, items in plan order. The "
            "plan is returned in the result; no valid plan after the retries fails the generation, saying why. "
            "max_new_tokens applies to each planned item's body; n candidates each have all their bodies. "
            "On local_llama the plan's decoding is constrained to its JSON Schema (xgrammar); other backends "
            "are checked and asked again.",
            implemented=True,
            modes=[Mode(requires="chat", how="the plan checked and asked again when invalid")],
            steps=["plan", "one body per planned item"],
            parameters=parameters(HIERARCHICAL),
        ),
        TechniqueInfo(
            name="syntax_aware_beam_search",
            description="Beam search over the model's own log-probabilities, with the prompt's cache shared by every "
            "beam. At each line end a beam whose code can no longer become valid Python (codeop) is pruned, "
            "and a beam that ends is kept only if its code parses; one that the token budget stops is cut "
            "back to its last line that parses. Each finished beam is a candidate; they are ranked by whether"
            " they parse, then by how many of the spec's own tests they pass in the sandbox (visible_tests), "
            "then by their length-normalised log-probability. Backends that do not expose their logits step "
            "by step cannot run it: a 422 says so, it never falls back to greedy decoding. n must be 1.",
            implemented=True,
            modes=[
                Mode(requires="logits", how="specmill's beam loop over the batched engine, pruning at line ends"),
                Mode(requires="beam_search", how="the backend's own beam search (vLLM), without pruning"),
            ],
            steps=["beam search (width candidates)", "visible tests in the sandbox", "rank"],
            languages=["python"],
            parameters=parameters(BeamSettings),
        ),
        TechniqueInfo(
            name="hybrid_grammar_neural",
            description="Decoding constrained by a grammar of Python (codegen/python_grammar.py): at each step "
            "the grammar's matcher (xgrammar) masks every token that would make the answer ungrammatical, "
            "so the model writes one fenced code block of imports, functions, classes and statements. "
            "Python's indentation is handled inside the grammar: one copy of the statement rules per "
            "indentation column. On local_llama the mask is applied in specmill's engine (one matcher per "
            "beam when combined with syntax_aware_beam_search); deepseek_8b passes the same grammar to "
            "vLLM's structured outputs; openai_api and anthropic_api cannot take a grammar, so their "
            "answer is checked with Python's parser and asked again with the error, up to `retries` times. "
            "An answer the token budget stops is cut back to its last line that parses.",
            implemented=True,
            modes=[
                Mode(requires="logits", how="grammar masks in specmill's engine"),
                Mode(requires="grammar", how="the grammar passed to the backend's structured outputs"),
                Mode(requires="chat", how="the answer parsed, and asked again with the error up to `retries`"),
            ],
            steps=["constrained decoding, or check and ask again"],
            languages=["python"],
            parameters=parameters(GrammarSettings),
        ),
        TechniqueInfo(
            name="tree_transformers",
            description="A model that reads and writes syntax trees instead of token streams.",
            implemented=False,
            modes=[],
            steps=[],
            parameters={},
        ),
        TechniqueInfo(
            name="multi_head_attention",
            description="Multi-head attention, as every transformer backend computes it.",
            implemented=False,
            modes=[],
            steps=[],
            parameters={},
        ),
    ]
}


class Unsupported(ValueError):
    """A technique the backend, the language or the other settings cannot run (a 422)."""


def check(requested: list[str]) -> list[str]:
    """The requested techniques in order, or ValueError naming the unknown or unimplemented ones."""
    unknown = [t for t in requested if t not in TECHNIQUES]
    if unknown:
        raise ValueError(f"unknown technique(s): {', '.join(unknown)}; see GET /api/techniques")
    missing = [t for t in requested if not TECHNIQUES[t].implemented]
    if missing:
        raise ValueError(f"not implemented yet: {', '.join(missing)}; see GET /api/techniques")
    return list(dict.fromkeys(requested))


def check_options(techniques: list[str], options: TechniqueOptions) -> None:
    """ValueError when `options` sets parameters of a technique that is not among `techniques`."""
    unused = [name for name in options.model_fields_set if name not in techniques]
    if unused:
        raise ValueError(f"options for {', '.join(unused)}, which is not among the requested techniques")


def mode_for(technique: str, capabilities: frozenset[str]) -> Mode | None:
    """The first of the technique's modes the capabilities allow (None: it cannot run there)."""
    return next((m for m in TECHNIQUES[technique].modes if m.requires in capabilities), None)


def resolve(
    requested: list[str], *, model: str, capabilities: frozenset[str], language: str = "python", n: int = 1
) -> dict[str, Mode]:
    """How each requested technique runs on `model`: {technique: mode}, in request order. Unsupported
    (a ValueError) names what is missing: the capability, the language, or a setting that conflicts."""
    out: dict[str, Mode] = {}
    for name in check(requested):
        info = TECHNIQUES[name]
        mode = mode_for(name, capabilities)
        if mode is None:
            needs = " or ".join(f"`{m.requires}` ({CAPABILITIES[m.requires]})" for m in info.modes)
            has = ", ".join(sorted(capabilities)) or "none"
            raise Unsupported(f"{name} cannot run on {model}: it needs {needs}; {model} has: {has}")
        if info.languages is not None and language not in info.languages:
            raise Unsupported(f"{name} handles {', '.join(info.languages)} only, and this spec is {language}")
        out[name] = mode
    decoding = [t for t in ("syntax_aware_beam_search", "hybrid_grammar_neural") if t in out]
    if decoding and "hierarchical_generation" in out:
        raise Unsupported(
            f"{' and '.join(decoding)} cannot be combined with hierarchical_generation: its bodies are decoded "
            "one planned item at a time, without the module's grammar"
        )
    check_n(list(out), n)
    return out


def check_n(techniques: list[str], n: int) -> None:
    """Unsupported when `n` candidates cannot be asked of these techniques: beam search's beams are them."""
    if "syntax_aware_beam_search" in techniques and n != 1:
        raise Unsupported("syntax_aware_beam_search returns its `width` finished beams as the candidates: n must be 1")


def supported_backends(technique: str, capabilities: dict[str, frozenset[str]]) -> list[str]:
    """The models (of {model: capabilities}) that can run the technique."""
    if not TECHNIQUES[technique].implemented:
        return []
    return [model for model, caps in capabilities.items() if mode_for(technique, caps) is not None]
