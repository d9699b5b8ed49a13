"""The six generation techniques of the specification sheets, and which are implemented.

Asking for one that is not implemented is a 422 that says so; it is never silently ignored.
"""

from __future__ import annotations

from pydantic import BaseModel

ALL_BACKENDS = ["local_llama", "deepseek_8b", "openai_api", "anthropic_api"]


class TechniqueInfo(BaseModel):
    name: str
    description: str
    implemented: bool
    backends: list[str]
    parameters: dict[str, str]


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
            parameters={
                "top_k": "snippets per query (3)",
                "budget_chars": "characters of snippets in the prompt (2000)",
                "requery": "re-query with the first draft (true)",
            },
        ),
        TechniqueInfo(
            name="hierarchical_generation",
            description="Plans the module first: a JSON list of the functions and classes with signatures and "
            "one-line docstrings, checked (JSON, identifiers, each signature parses as a stub) and asked "
            "again with the validation error when invalid. Then generates each body with the plan as "
            "context (one model call per item, retrieved snippets included when retrieval_augmentation is "
            "also asked for) and assembles the module: imports once at the top, items in plan order. The "
            "plan is returned in the result; no valid plan after the retries fails the generation, saying why.",
            implemented=True,
            backends=ALL_BACKENDS,
            parameters={
                "plan_attempts": "answers asked for until the plan is valid, each told the last error (3)",
                "plan_max_new_tokens": "the plan's token budget: max_new_tokens, at least 384",
                "max_new_tokens": "per planned item's body; n: candidates, each with all its bodies",
                "constrained_decoding": "local_llama: the plan's decoding is constrained to its JSON Schema "
                "(xgrammar); other backends: check and retry only",
            },
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
