"""The steps of one generation, in order, as a pure coroutine: the same code for the product and the eval.

`run_steps` decides what happens (retrieve, plan, generate, re-query with the draft, generate again,
choose); the caller decides how each step runs. GenerationWorkflow runs every step as an activity
(so this module must stay deterministic: no I/O, no clock, no randomness); `make eval` runs them in
process (codegen/evaluate.py). Both read the settings from the technique catalog (models.techniques).
"""

from __future__ import annotations

from typing import Protocol

from models.generation import (
    Candidate,
    CandidatesResult,
    GeneratedFile,
    GenerationInput,
    GenerationResult,
    Plan,
    Provenance,
    Reference,
)
from models.techniques import RETRIEVAL


class Steps(Protocol):
    """How each step of a generation runs."""

    async def retrieve(self, query: str, top_k: int) -> list[Reference]: ...

    async def plan(self) -> Plan: ...

    async def candidates(self, references: list[Reference], round_: int, plan: Plan | None) -> CandidatesResult: ...


def best(candidates: list[Candidate]) -> Candidate | None:
    """A candidate that parses always beats one that does not; then the earliest (greedy first)."""
    ranked = sorted(enumerate(candidates), key=lambda ic: (ic[1].parses is not True, ic[0]))
    return ranked[0][1] if ranked else None


def provenance(inp: GenerationInput, snippet_ids: list) -> Provenance:
    s = inp.spec
    return Provenance(
        template_id=s.template_id,
        template_name=s.template_name,
        template_version=s.template_version,
        values_hash=s.values_hash,
        instance_id=s.instance_id,
        retrieved_snippets=snippet_ids,
    )


async def _retrieve(steps: Steps, query: str) -> list[Reference]:
    if not query.strip():
        return []
    return await steps.retrieve(query[: RETRIEVAL.query_chars], RETRIEVAL.top_k)


async def run_steps(inp: GenerationInput, steps: Steps) -> GenerationResult:
    """retrieval_augmentation (RepoCoder): retrieve with the spec's query, generate, re-query with the
    first draft and, when that finds new snippets, generate a second round whose candidates come first.
    hierarchical_generation: a checked plan before the first round, used by both rounds."""
    ra = "retrieval_augmentation" in inp.techniques
    refs = await _retrieve(steps, inp.retrieval_query) if ra else []
    plan = await steps.plan() if "hierarchical_generation" in inp.techniques else None
    out = await steps.candidates(refs, 1, plan)
    used = {r.id: r for r in refs}
    if ra and RETRIEVAL.requery:
        draft = best(out.candidates)
        if draft is not None and draft.code.strip():
            again = await _retrieve(steps, draft.code)
            if {r.id for r in again} - set(used):
                used.update({r.id: r for r in again})
                second = await steps.candidates(list(used.values()), 2, plan)
                out = CandidatesResult(
                    candidates=second.candidates + out.candidates, path=out.path, language=out.language
                )
    chosen = best(out.candidates)
    files = [GeneratedFile(path=out.path, content=chosen.code)] if chosen else []
    note = None
    if chosen is not None and chosen.parses is False:
        note = "no candidate parses: the best attempt is returned as it is"
    return GenerationResult(
        id=inp.generation_id,
        status="completed",
        files=files,
        candidates=out.candidates,
        parses=chosen.parses if chosen else None,
        note=note,
        provenance=provenance(inp, list(used)),
        plan=plan,
    )
