"""multi_head_attention: provenance. For each line of the kept candidate, which labelled parts of the
prompt the model relied on: each spec field, each visible test, each retrieved snippet by id, the
previous round's failure; under hierarchical_generation, the plan and the planned item. Multi-head
attention runs inside every transformer; what this technique adds is making it visible, and measuring how
faithful that is.

Two methods, both on specmill's engine (a model with `logits`: local_llama):
- `exact`: leave-one-out. One pass over the prompt and the code, then one per span with that span
  removed (the keys and values before it reused); a line's reliance on a span is how much the line's
  log-probability drops without it (codegen/provenance/exact.py). The ground truth, at 1 + spans passes.
- `estimate`: one teacher-forced pass; the attention of each code token over the prompt per layer and
  head, summed with one non-negative weight per layer and head fitted to leave-one-out effects on MBPP
  train (after AT2; `bench/provenance.py fit`). It is offered only for a model whose fitted weights ship
  here (attention_heads/<model>.json) and passed the acceptance measured by `bench/provenance.py eval`.
The scores are shares per line, labelled "model reliance (estimate, attention-based)" or "(exact,
leave-one-out)"; they are never called the source of the code. The step runs on the generation worker
(codegen/provenance/step.py) for the candidate that is kept; under hierarchical_generation each planned
item's code is explained against the prompt its body was written from, and the lines put back together.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Literal

from pydantic import ConfigDict, Field, field_validator

from models.common import Strict
from models.techniques.base import Mode, Run, Technique, TechniqueInfo
from models.techniques.hierarchical_generation import TECHNIQUE as HIERARCHICAL

HEADS_DIR = Path(__file__).resolve().parent / "attention_heads"


def heads_file(model: str) -> Path:
    """Where a model's fitted head weights ship (the local model's name, e.g. smollm2-135m-instruct)."""
    return HEADS_DIR / f"{Path(model).name}.json"


def read_heads(model: str) -> dict | None:
    """A model's head-weights file as written by bench/provenance.py (None: none ships for it)."""
    path = heads_file(model)
    return json.loads(path.read_text(encoding="utf-8")) if path.exists() else None


def _measured() -> dict[str, dict]:
    """Per model, the estimate's measured faithfulness as bench/provenance.py eval recorded it in the shipped
    head-weights file (read once: the files ship with the code)."""
    out = {}
    for path in sorted(HEADS_DIR.glob("*.json")):
        try:
            acceptance = json.loads(path.read_text(encoding="utf-8")).get("acceptance")
        except (OSError, ValueError):
            continue
        if acceptance:
            out[path.stem] = acceptance
    return out


MEASURED = _measured()
ESTIMATE_MODELS = [model for model, figures in MEASURED.items() if figures.get("accepted")]


MAX_EXACT_SPANS = 24  # exact provenance: passes per explained candidate, at most 1 + this


def labelled_parts(view) -> int:
    """The labelled spans a spec's prompt holds (codegen/prompts.py: spec_blocks), snippets and failure aside."""
    single = [view.description, view.imports, view.signatures, view.context, view.setup and view.tests]
    return sum(bool(x) for x in single) + len(view.items) + len(view.requirements) + len(view.tests)


class AttentionSettings(Strict):
    model_config = ConfigDict(extra="forbid", frozen=True)

    provenance: Literal["exact", "estimate"] = Field(
        default="exact",
        description="exact: leave-one-out, one extra pass per labelled span; estimate: attention weighted by "
        "fitted head weights, one pass (offered only where its measured faithfulness passed)",
    )

    @field_validator("provenance")
    @classmethod
    def _offered(cls, value: str) -> str:
        if value == "estimate" and not ESTIMATE_MODELS:
            raise ValueError(
                "the estimate is not offered: no model's fitted head weights passed the faithfulness "
                "acceptance (docs/generator.md); use provenance: exact"
            )
        return value


class MultiHeadAttention(Technique):
    name = "multi_head_attention"
    description = (
        "Provenance: for each line of the kept code, which labelled parts of the prompt (spec fields, each "
        "visible test, each retrieved snippet, the previous failure, under hierarchical_generation the plan "
        "and the planned item) the model relied on, as shares. exact: "
        "how much each line's log-probability drops when a part is removed (leave-one-out, one pass per "
        "part); estimate: the model's attention per layer and head, weighted by weights fitted to "
        "leave-one-out effects on MBPP train. Labelled 'model reliance', never 'the source'."
    )
    modes = (Mode(requires="logits", how="teacher-forced passes in specmill's engine after the code is kept"),)
    steps = ("provenance of the kept candidate, per line and span",)
    options = AttentionSettings
    activities = {"explain": "codegen.provenance.step:explain"}

    def info(self) -> TechniqueInfo:
        info = super().info()
        info.measured = {"estimate": MEASURED} if MEASURED else None
        return info

    def refuses(self, settings: AttentionSettings, view, others, options) -> str | None:
        if settings.provenance != "exact":
            return None
        if HIERARCHICAL in others:  # each body's prompt: the spec (named), the plan and the item asked for
            spans = labelled_parts(view) + bool(view.name) + 2
        else:  # a repair round adds the failure
            spans = labelled_parts(view) + 1
        for technique in others:
            if technique.retrieves:
                spans += technique.settings(options).top_k
        if spans > MAX_EXACT_SPANS:
            return (
                f"exact provenance removes each labelled part of the prompt in turn (one forward pass each): this "
                f"prompt can hold {spans} parts, over the limit of {MAX_EXACT_SPANS}; fewer tests or snippets, or "
                "provenance: estimate where it is offered"
            )
        return None

    async def choose(self, run: Run, out):
        """Runs after the other techniques' choices (it is last in the registry): explains the kept one."""
        from models.generation import CandidatesResult, Reliance
        from models.generation_steps import RANK_BY_LOG_PROBABILITY, best

        kept = best(out.candidates, run.steps.takes(RANK_BY_LOG_PROBABILITY))
        if kept is None or not kept.code.strip():
            return out
        references = run.references if kept.round == 1 else list(run.used.values())
        answer = await run.steps.technique(
            self.name,
            "explain",
            {
                "model": run.inp.model,
                "view": run.inp.spec_view().model_dump(mode="json"),
                "feedback": run.inp.feedback,
                "references": [{"id": str(r.id), "content": r.content} for r in references],
                "code": kept.code,
                "method": run.settings(self).provenance,
                "plan": run.plan.model_dump(mode="json") if run.plan else None,
            },
        )
        index = out.candidates.index(kept)
        run.notes[self.name] = {"candidate": index + 1, "method": answer["method"]}
        candidates = list(out.candidates)
        candidates[index] = kept.model_copy(update={"reliance": Reliance.model_validate(answer)})
        return CandidatesResult(candidates=candidates, path=out.path, language=out.language)


TECHNIQUE = MultiHeadAttention()
