"""retrieval_augmentation (RepoCoder): retrieve from the tenant's knowledge base, draft, re-query with the
draft, and generate again when that finds new snippets."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

from models.techniques.base import Mode, Run, Technique

RERANK_POOL = 3  # with a reranker, the draft's query asks for this many times top_k and keeps the best top_k


class RetrievalSettings(BaseModel):
    model_config = ConfigDict(frozen=True)

    top_k: int = Field(default=3, description="snippets per query")
    budget_tokens: int = Field(
        default=512,
        description="estimated prompt tokens the snippets may take (a quarter of their characters, plus 8 each)",
    )
    query_chars: int = Field(
        default=4000, description="characters of a query sent to the knowledge base (the rest is cut)"
    )
    requery: bool = Field(
        default=True,
        description="re-query with the first draft and, when that finds new snippets, generate a second round",
    )


SETTINGS = RetrievalSettings()


async def retrieve(run: Run, query: str, top_k: int = SETTINGS.top_k):
    """The knowledge base's best snippets for `query` (none for an empty query)."""
    if not query.strip():
        return []
    return await run.steps.retrieve(query[: SETTINGS.query_chars], top_k)


class RetrievalAugmentation(Technique):
    name = "retrieval_augmentation"
    description = (
        "Searches the tenant's knowledge base with the spec's description and signature, puts the "
        "best snippets in the prompt within a token budget, then re-queries once with the first "
        "draft (RepoCoder) and generates again. The snippets used are recorded in the provenance."
    )
    modes = (Mode(requires="chat", how="snippets in the prompt"),)
    steps = ("retrieve", "candidates", "retrieve with the draft", "candidates (second round)")
    fixed = SETTINGS
    retrieves = True

    async def prepare(self, run: Run) -> None:
        run.references = await retrieve(run, run.inp.retrieval_query)
        run.used.update({r.id: r for r in run.references})

    async def extend(self, run: Run, out):
        """RepoCoder's second round: re-query with the best draft; new snippets make a second round, whose
        candidates come first."""
        from models.generation import CandidatesResult
        from models.generation_steps import best

        if not SETTINGS.requery:
            return out
        draft = best(out.candidates)
        if draft is None or not draft.code.strip():
            return out
        if run.rerank is None:
            again = await retrieve(run, draft.code)
        else:  # a wider pool, reordered by the reranker
            again = await retrieve(run, draft.code, SETTINGS.top_k * RERANK_POOL)
            again = (await run.rerank(draft.code, again))[: SETTINGS.top_k] if again else again
        if not {r.id for r in again} - set(run.used):
            return out
        run.used.update({r.id: r for r in again})
        second = await run.steps.candidates(list(run.used.values()), 2, run.plan)
        return CandidatesResult(candidates=second.candidates + out.candidates, path=out.path, language=out.language)


TECHNIQUE = RetrievalAugmentation()
