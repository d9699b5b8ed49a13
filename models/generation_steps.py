"""The steps of one generation, in order, as a pure coroutine: the same code for the product and the eval.

`run_steps` decides what happens (retrieve, plan, generate, re-query with the draft, generate again,
test the candidates against the spec's visible tests, choose by `rank`); the caller decides how each
step runs. GenerationWorkflow runs every step as an activity
(so this module must stay deterministic: no I/O, no clock, no randomness); `make eval` runs them in
process (codegen/evaluate.py). Both read the settings from the technique catalog (models.techniques).
"""

from __future__ import annotations

from typing import Protocol

from models.generation import (
    Candidate,
    CandidatesResult,
    CandidateTests,
    GeneratedFile,
    GenerationInput,
    GenerationResult,
    Plan,
    Provenance,
    Reference,
    visible_tests_of,
)
from models.techniques import active
from models.techniques.base import Run


class Steps(Protocol):
    """How each step of a generation runs."""

    async def retrieve(self, query: str, top_k: int) -> list[Reference]: ...

    async def plan(self) -> Plan: ...

    async def candidates(self, references: list[Reference], round_: int, plan: Plan | None) -> CandidatesResult: ...

    async def test(self, codes: list[str], tests: list[str]) -> list[CandidateTests]:
        """Each code against the tests, in the sandbox."""
        ...

    async def technique(self, name: str, step: str, payload: dict) -> dict:
        """A technique's own work on the generation worker (`Technique.activities`)."""
        ...

    def takes(self, change: str) -> bool:
        """Whether this run takes a versioned change of these steps (the workflow: `workflow.patched`, so
        that a run recorded before it replays as it ran; elsewhere: always)."""
        ...


# Ties after the visible tests go to the higher mean log-probability, then the earlier candidate (before:
# the earlier candidate): docs/generator.md measures both on the same pools.
RANK_BY_LOG_PROBABILITY = "rank-by-log-probability"


MAX_TESTED = 8  # candidates run against the visible tests, at most (the best-ranked first)


def rank(candidates: list[Candidate], by_log_probability: bool = False) -> list[Candidate]:
    """The one selection rule, for every generation (POST /api/generate, a project's pipeline, the eval).
    When a technique scored every candidate (`selection_score`, tree_transformers), the higher score, then
    the earlier candidate. Otherwise: 1. the code parses; 2. it passes more of the visible tests (when they
    ran); 3. the later round (retrieval's second round saw more); 4. the higher beam score
    (syntax_aware_beam_search), else, `by_log_probability`, the higher mean log-probability (where the
    model reports it); 5. the earlier candidate (greedy first)."""
    scores = [c.selection_score for c in candidates]
    if candidates and all(s is not None for s in scores):
        order = sorted(range(len(candidates)), key=lambda i: (-(scores[i] or 0.0), i))
        return [candidates[i] for i in order]

    def key(ic: tuple[int, Candidate]):
        i, c = ic
        passed = c.tests.passed if c.tests is not None else -1
        score = c.score if c.score is not None else 0.0
        if c.score is None and by_log_probability and c.mean_logprob is not None:
            score = c.mean_logprob
        return (c.parses is not True, -passed, -c.round, -score, i)

    return [c for _, c in sorted(enumerate(candidates), key=key)]


def best(candidates: list[Candidate], by_log_probability: bool = False) -> Candidate | None:
    ranked = rank(candidates, by_log_probability)
    return ranked[0] if ranked else None


def visible_tests(inp: GenerationInput) -> list[str]:
    """What candidates are ranked by: the job's visible tests (models/generation.py: generation_job sets
    them), else, for a job recorded before it did, the spec's `tests` after its setup lines."""
    if inp.visible_tests is not None:
        return inp.visible_tests
    return visible_tests_of(inp.spec_view())


def wants_tests(inp: GenerationInput) -> bool:
    """Rank by tests? As a technique says (beam search may be asked not to), else with several candidates."""
    for technique in active(inp.techniques):
        opinion = technique.ranks_by_tests(technique.settings(inp.options))
        if opinion is not None:
            return opinion
    return inp.n > 1


async def _tested(inp: GenerationInput, steps: Steps, out: CandidatesResult) -> CandidatesResult:
    """The candidates, the best MAX_TESTED of them with their visible tests' results."""
    tests = visible_tests(inp)
    if len(out.candidates) < 2 or not tests or not wants_tests(inp):
        return out
    order = rank(out.candidates)[:MAX_TESTED]
    results = await steps.test([c.code for c in order], tests)
    tested = {id(c): r for c, r in zip(order, results, strict=True)}
    return CandidatesResult(
        candidates=[c.model_copy(update={"tests": tested.get(id(c))}) for c in out.candidates],
        path=out.path,
        language=out.language,
    )


def provenance(inp: GenerationInput, used: dict, techniques: dict | None = None) -> Provenance:
    """`used`: every reference a round saw, by id."""
    s = inp.spec
    return Provenance(
        techniques=techniques or {},
        snippet_scores={str(i): r.score for i, r in used.items() if r.score is not None},
        template_id=s.template_id,
        template_name=s.template_name,
        template_version=s.template_version,
        values_hash=s.values_hash,
        instance_id=s.instance_id,
        retrieved_snippets=list(used),
    )


async def run_steps(inp: GenerationInput, steps: Steps) -> GenerationResult:
    """One generation: each requested technique prepares (retrieval_augmentation retrieves,
    hierarchical_generation plans), the first round of candidates is made, each technique extends it
    (retrieval_augmentation's second round), the visible tests run, each technique may score the
    candidates (tree_transformers), and `best` keeps one."""
    run = Run(inp=inp, steps=steps)
    techniques = active(inp.techniques)
    for technique in techniques:
        await technique.prepare(run)
    out = await steps.candidates(run.references, 1, run.plan)
    for technique in techniques:
        out = await technique.extend(run, out)
    out = await _tested(inp, steps, out)
    for technique in techniques:
        out = await technique.choose(run, out)
    chosen = best(out.candidates, steps.takes(RANK_BY_LOG_PROBABILITY))
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
        provenance=provenance(inp, run.used, run.notes),
        plan=run.plan,
    )
