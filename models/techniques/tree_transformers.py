"""tree_transformers: a syntax-tree encoder (codegen/tree/) that scores candidates and retrieved snippets.

It writes nothing: it reads the candidates any model made (so it runs on every backend, API models
included) and
1. chooses among them: the encoder's score of each candidate's syntax tree, combined with its mean
   log-probability, the share of the visible tests it passed and whether it parses, by weights fitted on
   MBPP-train pools only (they ship inside the checkpoint); the candidate with the best combined score is
   kept, and is where a repair round starts when none passes the visible tests;
2. with retrieval_augmentation, reranks the snippets the draft's query found by their trees' similarity
   to the draft's tree.
Both record their scores: the candidates' on each candidate, the snippets' in the provenance.

The encoder runs on the generation worker (`activities`: codegen/tree/select.py), from the tenant's own
checkpoint when it has one, else the built-in one; until `specmill models train-tree` has made the
built-in one on a machine, a request that needs it fails saying so.
"""

from __future__ import annotations

from collections.abc import Collection
from typing import Literal

from pydantic import ConfigDict, Field

from models.common import Strict
from models.techniques.base import Mode, Run, Technique


class TreeSettings(Strict):
    model_config = ConfigDict(extra="forbid", frozen=True)

    selector: Literal["combined", "tree"] = Field(
        default="combined",
        description="combined: the tree score with the mean log-probability, the visible tests and the parse "
        "state, by weights fitted on MBPP-train pools; tree: the tree score alone",
    )
    snippets: bool = Field(
        default=True, description="with retrieval_augmentation: rerank the draft's snippets by structural similarity"
    )


class TreeTransformers(Technique):
    name = "tree_transformers"
    description = (
        "A syntax-tree encoder that scores candidates and snippets: a small transformer (2 layers, width 128) "
        "over the candidate's Python syntax tree in pre-order, with tree positional encodings (the "
        "root-to-node path, Shiv & Quirk 2019), trained contrastively on functions against their mutants "
        "and then to rank the default model's own samples on MBPP train by their test results. It keeps "
        "the candidate with the best combined score (tree score, mean log-probability, visible tests "
        "passed, parses) and, with retrieval_augmentation, reorders the snippets the draft's query found "
        "by their trees' similarity to the draft. It reads candidates, not logits: every model can use it. "
        "It does not write code itself."
    )
    modes = (Mode(requires="chat", how="the candidates scored on the generation worker after they are made"),)
    steps = ("score the candidates' trees", "choose by the combined score", "rerank the draft's snippets")
    languages = ("python",)
    options = TreeSettings
    activities = {"score": "codegen.tree.select:score", "rerank": "codegen.tree.select:rerank"}
    needs = "codegen.tree.checkpoints:missing"

    def conflicts(self, others: Collection[Technique], n: int) -> str | None:
        if n >= 2 or any(t.makes_candidates or t.retrieves for t in others):
            return None
        return (
            f"{self.name} chooses among candidates and reranks retrieved snippets: ask for n of 2 or more, "
            "or a technique that makes several candidates or retrieves snippets"
        )

    async def prepare(self, run: Run) -> None:
        settings = run.settings(self)
        if not settings.snippets:
            return

        async def rerank(draft: str, references: list) -> list:
            answer = await run.steps.technique(
                self.name, "rerank", {"draft": draft, "snippets": [r.content for r in references]}
            )
            order = answer["order"]
            run.notes.setdefault(self.name, {})["snippets"] = [
                {"id": str(references[i].id), "similarity": answer["similarity"][i], "dense_rank": i + 1} for i in order
            ]
            return [references[i] for i in order]

        run.rerank = rerank

    async def choose(self, run: Run, out):
        from models.generation import CandidatesResult

        if len(out.candidates) < 2:
            return out
        settings = run.settings(self)
        answer = await run.steps.technique(
            self.name,
            "score",
            {
                "selector": settings.selector,
                "candidates": [
                    {
                        "code": c.code,
                        "mean_logprob": c.mean_logprob,
                        "visible_share": (c.tests.passed / c.tests.total) if c.tests and c.tests.total else None,
                        "parses": c.parses,
                    }
                    for c in out.candidates
                ],
            },
        )
        notes = run.notes.setdefault(self.name, {})
        notes["checkpoint"] = answer["checkpoint"]
        if answer.get("note"):  # the tenant's checkpoint could not be read: the built-in one scored
            notes["note"] = answer["note"]
        scored = [
            c.model_copy(update={"tree_score": tree, "selection_score": chosen})
            for c, tree, chosen in zip(out.candidates, answer["tree"], answer["selection"], strict=True)
        ]
        return CandidatesResult(candidates=scored, path=out.path, language=out.language)


TECHNIQUE = TreeTransformers()
