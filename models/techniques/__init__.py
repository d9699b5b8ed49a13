"""The six generation techniques of the specification sheets: the registry, and the checks every caller
shares. One module per technique (models/techniques/<name>.py) owns everything about it (see
models/techniques/base.py); this registry lists them, and GET /api/techniques, `resolve`, the decoding
parameters (codegen/generate.py), the steps of a generation (models/generation_steps.py) and the eval
read them from here. No other file names a technique (tests/test_technique_names.py holds that).

The seam between techniques and backends:
- a backend declares its capabilities (`Backend.capabilities`, codegen/base.py), in the vocabulary of
  `CAPABILITIES`;
- a technique declares, as `modes`, the capabilities it can run on, best first; `resolve` picks the first
  mode the backend has, or raises `Unsupported` naming what is missing (a 422 at the API, never a silent
  fallback to plain decoding);
- a technique's per-request parameters are its `options` model, one field of `TechniqueOptions` each,
  validated at the API and shown with their defaults and ranges by GET /api/techniques.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from pydantic import ConfigDict, create_model, model_serializer

from models.common import Strict
from models.techniques import (
    hierarchical_generation,
    hybrid_grammar_neural,
    multi_head_attention,
    retrieval_augmentation,
    syntax_aware_beam_search,
    tree_transformers,
)
from models.techniques.base import (
    CAPABILITIES,
    Capability,
    Mode,
    Technique,
    TechniqueInfo,
    TechniqueParameter,
    Unsupported,
    parameters,
)

# The registry: one line per technique, in the order their steps run.
MODULES = (
    retrieval_augmentation,
    hierarchical_generation,
    syntax_aware_beam_search,
    hybrid_grammar_neural,
    tree_transformers,
    multi_head_attention,
)
REGISTRY: dict[str, Technique] = {m.TECHNIQUE.name: m.TECHNIQUE for m in MODULES}
TECHNIQUES: dict[str, TechniqueInfo] = {name: t.info() for name, t in REGISTRY.items()}

__all__ = [
    "CAPABILITIES",
    "Capability",
    "Mode",
    "REGISTRY",
    "TECHNIQUES",
    "Technique",
    "TechniqueInfo",
    "TechniqueOptions",
    "TechniqueParameter",
    "Unsupported",
    "active",
    "check",
    "check_n",
    "check_options",
    "mode_for",
    "parameters",
    "resolve",
    "supported_backends",
]


class _Options(Strict):
    """Per-request parameters of the techniques that have them (only for techniques also requested)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    @model_serializer(mode="wrap")
    def _set_only(self, handler):
        """Only the techniques whose parameters were given: {} when none were."""
        return {name: value for name, value in handler(self).items() if value is not None}


_FIELDS: dict[str, Any] = {name: (t.options | None, None) for name, t in REGISTRY.items() if t.options is not None}
if TYPE_CHECKING:  # a class to pyright; its fields are the registry's, made at import
    TechniqueOptions = _Options
else:
    TechniqueOptions = create_model("TechniqueOptions", __base__=_Options, __doc__=_Options.__doc__, **_FIELDS)


def check(requested: list[str]) -> list[str]:
    """The requested techniques in order, or ValueError naming the unknown or unimplemented ones."""
    unknown = [t for t in requested if t not in REGISTRY]
    if unknown:
        raise ValueError(f"unknown technique(s): {', '.join(unknown)}; see GET /api/techniques")
    missing = [t for t in requested if not REGISTRY[t].implemented]
    if missing:
        raise ValueError(f"not implemented yet: {', '.join(missing)}; see GET /api/techniques")
    return list(dict.fromkeys(requested))


def check_options(techniques: list[str], options: Any) -> None:
    """ValueError when `options` sets parameters of a technique that is not among `techniques`."""
    unused = [name for name in options.model_fields_set if name not in techniques]
    if unused:
        raise ValueError(f"options for {', '.join(unused)}, which is not among the requested techniques")


def active(techniques: list[str]) -> list[Technique]:
    """The requested techniques' objects, in the registry's order (the order their steps run)."""
    return [t for name, t in REGISTRY.items() if name in techniques]


def mode_for(technique: str, capabilities: frozenset[str]) -> Mode | None:
    """The first of the technique's modes the capabilities allow (None: it cannot run there)."""
    return next((m for m in REGISTRY[technique].modes if m.requires in capabilities), None)


def resolve(
    requested: list[str], *, model: str, capabilities: frozenset[str], language: str = "python", n: int = 1
) -> dict[str, Mode]:
    """How each requested technique runs on `model`: {technique: mode}, in request order. Unsupported
    (a ValueError) names what is missing: the capability, the language, or a setting that conflicts."""
    out: dict[str, Mode] = {}
    for name in check(requested):
        technique = REGISTRY[name]
        mode = mode_for(name, capabilities)
        if mode is None:
            needs = " or ".join(f"`{m.requires}` ({CAPABILITIES[m.requires]})" for m in technique.modes)
            has = ", ".join(sorted(capabilities)) or "none"
            raise Unsupported(f"{name} cannot run on {model}: it needs {needs}; {model} has: {has}")
        if technique.languages is not None and language not in technique.languages:
            raise Unsupported(f"{name} handles {', '.join(technique.languages)} only, and this spec is {language}")
        out[name] = mode
    check_n(list(out), n)
    return out


def check_n(techniques: list[str], n: int) -> None:
    """Unsupported when the techniques conflict with each other or with `n` candidates."""
    chosen = [REGISTRY[name] for name in techniques if name in REGISTRY]
    for technique in chosen:
        why = technique.conflicts([t for t in chosen if t is not technique], n)
        if why:
            raise Unsupported(why)


def supported_backends(technique: str, capabilities: dict[str, frozenset[str]]) -> list[str]:
    """The models (of {model: capabilities}) that can run the technique."""
    if not REGISTRY[technique].implemented:
        return []
    return [model for model, caps in capabilities.items() if mode_for(technique, caps) is not None]
