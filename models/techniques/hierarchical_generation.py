"""hierarchical_generation: plan the module (its functions and classes), then one body per planned item."""

from __future__ import annotations

from collections.abc import Collection

from pydantic import BaseModel, ConfigDict, Field

from models.techniques.base import Mode, Run, Technique


class HierarchicalSettings(BaseModel):
    model_config = ConfigDict(frozen=True)

    plan_attempts: int = Field(
        default=3, description="answers asked for until the plan is valid, each told the last error"
    )
    plan_min_tokens: int = Field(default=384, description="the plan's token budget: max_new_tokens, at least this")
    max_items: int = Field(default=12, description="functions and classes a plan may have")


SETTINGS = HierarchicalSettings()


class HierarchicalGeneration(Technique):
    name = "hierarchical_generation"
    description = (
        "Plans the module first: a JSON list of the functions and classes with signatures and "
        "one-line docstrings, checked (JSON, identifiers, each signature parses as a stub) and asked "
        "again with the validation error when invalid. Then generates each body with the plan as "
        "context (one model call per item, retrieved snippets included when retrieval_augmentation is "
        "also asked for) and assembles the module: imports once at the top, items in plan order. The "
        "plan is returned in the result; no valid plan after the retries fails the generation, saying why. "
        "max_new_tokens applies to each planned item's body; n candidates each have all their bodies. "
        "On local_llama the plan's decoding is constrained to its JSON Schema (xgrammar); other backends "
        "are checked and asked again."
    )
    modes = (Mode(requires="chat", how="the plan checked and asked again when invalid"),)
    steps = ("plan", "one body per planned item")
    fixed = SETTINGS

    def conflicts(self, others: Collection[Technique], n: int) -> str | None:
        decoding = [t.name for t in others if t.targets_syntax]
        if decoding:
            return (
                f"{' and '.join(decoding)} cannot be combined with {self.name}: its bodies are decoded "
                "one planned item at a time, without the module's grammar"
            )
        return None

    async def prepare(self, run: Run) -> None:
        run.plan = await run.steps.plan()


TECHNIQUE = HierarchicalGeneration()
