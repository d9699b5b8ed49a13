"""The six generation techniques of the specification sheets, which are implemented, and the
settings each runs with.

Asking for one that is not implemented is a 422 that says so; it is never silently ignored. The
settings are data: the generation path (codegen/generate.py, models/generation_steps.py) reads
them from here, and GET /api/techniques shows the same values, so the catalog cannot drift from
what runs.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from models.common import MODEL_NAMES

ALL_BACKENDS = list(MODEL_NAMES)


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


class TechniqueParameter(BaseModel):
    default: Any = Field(description="The value the generation path uses")
    description: str


def parameters(settings: BaseModel) -> dict[str, TechniqueParameter]:
    """A technique's settings as the catalog shows them: each field's value and description."""
    return {
        name: TechniqueParameter(default=getattr(settings, name), description=field.description or "")
        for name, field in type(settings).model_fields.items()
    }


class TechniqueInfo(BaseModel):
    name: str
    description: str
    implemented: bool
    backends: list[str]
    parameters: dict[str, TechniqueParameter]


TECHNIQUES: dict[str, TechniqueInfo] = {
    t.name: t
    for t in [
        TechniqueInfo(
            name="retrieval_augmentation",
            description="Searches the tenant's knowledge base with the spec's description and signature, puts the "
            "best snippets in the prompt within a token budget, then re-queries once with the first "
            "draft (RepoCoder) and generates again. The snippets used are recorded in the provenance.",
            implemented=True,
            backends=ALL_BACKENDS,
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
            backends=ALL_BACKENDS,
            parameters=parameters(HIERARCHICAL),
        ),
        TechniqueInfo(
            name="syntax_aware_beam_search",
            description="Beam search whose beams are pruned when their code can no longer parse.",
            implemented=False,
            backends=["local_llama"],
            parameters={},
        ),
        TechniqueInfo(
            name="hybrid_grammar_neural",
            description="Decoding constrained by a grammar of the target language (grammar masks on the logits).",
            implemented=False,
            backends=["local_llama", "deepseek_8b"],
            parameters={},
        ),
        TechniqueInfo(
            name="tree_transformers",
            description="A model that reads and writes syntax trees instead of token streams.",
            implemented=False,
            backends=[],
            parameters={},
        ),
        TechniqueInfo(
            name="multi_head_attention",
            description="Multi-head attention, as every transformer backend computes it.",
            implemented=False,
            backends=[],
            parameters={},
        ),
    ]
}


def check(requested: list[str]) -> list[str]:
    """The requested techniques in order, or ValueError naming the unknown or unimplemented ones."""
    unknown = [t for t in requested if t not in TECHNIQUES]
    if unknown:
        raise ValueError(f"unknown technique(s): {', '.join(unknown)}; see GET /api/techniques")
    missing = [t for t in requested if not TECHNIQUES[t].implemented]
    if missing:
        raise ValueError(f"not implemented yet: {', '.join(missing)}; see GET /api/techniques")
    return list(dict.fromkeys(requested))
