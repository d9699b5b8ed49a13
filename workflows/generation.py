"""GenerationWorkflow (task queue `generation`): one POST /api/generate, durably.

Retrieval runs on the knowledge worker (it owns the embedder and the vector store); candidates are
generated on the generation worker, which loads its model once; the outcome and its code.generated
event are recorded in one transaction.
"""

from __future__ import annotations

from datetime import timedelta

from temporalio import workflow
from temporalio.common import RetryPolicy
from temporalio.exceptions import ActivityError, ApplicationError

with workflow.unsafe.imports_passed_through():
    from models.generation import (
        GENERATION_WORKFLOW,
        Candidate,
        CandidatesInput,
        CandidatesResult,
        GeneratedFile,
        GenerationInput,
        GenerationResult,
        LeaseInput,
        Plan,
        PlanInput,
        Provenance,
        RecordGenerationInput,
        Reference,
        RetrieveInput,
    )

GENERATE_RETRY = RetryPolicy(
    maximum_attempts=5,
    initial_interval=timedelta(seconds=2),
    non_retryable_error_types=["ModelUnavailable", "BadRequest"],
)
RECORD_RETRY = RetryPolicy(initial_interval=timedelta(seconds=1), maximum_interval=timedelta(seconds=30))


def best(candidates: list[Candidate]) -> Candidate | None:
    """A candidate that parses always beats one that does not; then the earliest (greedy first)."""
    ranked = sorted(enumerate(candidates), key=lambda ic: (ic[1].parses is not True, ic[0]))
    return ranked[0][1] if ranked else None


@workflow.defn(name=GENERATION_WORKFLOW)
class GenerationWorkflow:
    @workflow.run
    async def run(self, inp: GenerationInput) -> GenerationResult:
        try:
            result = await self._generate(inp)
            error = None
        except ActivityError as err:
            cause = err.cause
            error = cause.message if isinstance(cause, ApplicationError) else str(err)
            result = GenerationResult(
                id=inp.generation_id,
                status="failed",
                files=[],
                candidates=[],
                parses=None,
                note=error,
                provenance=_provenance(inp, []),
            )
        await workflow.execute_activity(
            "record_generation",
            RecordGenerationInput(inp=inp, result=result, error=error),
            start_to_close_timeout=timedelta(seconds=30),
            retry_policy=RECORD_RETRY,
            summary="record the outcome",
        )
        return result

    async def _generate(self, inp: GenerationInput) -> GenerationResult:
        if not (inp.project_id and inp.concurrency_limit and inp.lease_queue):
            return await self._steps(inp)
        lease = LeaseInput(tenant_id=inp.tenant_id, holder=workflow.info().workflow_id, limit=inp.concurrency_limit)
        await self._acquire(inp, lease)
        try:
            return await self._steps(inp)
        finally:
            await workflow.execute_activity(
                "release_generation_slot",
                lease,
                task_queue=inp.lease_queue,
                start_to_close_timeout=timedelta(seconds=30),
                retry_policy=RECORD_RETRY,
                summary="release the tenant's generation slot",
            )

    async def _acquire(self, inp: GenerationInput, lease: LeaseInput) -> None:
        """Wait (a durable timer, no worker held) until the tenant has a generation slot free."""
        wait = 1.0
        while not await workflow.execute_activity(
            "acquire_generation_slot",
            lease,
            task_queue=inp.lease_queue,
            result_type=bool,
            start_to_close_timeout=timedelta(seconds=30),
            retry_policy=RECORD_RETRY,
            summary=f"a generation slot of the tenant (at most {lease.limit} at once)",
        ):
            await workflow.sleep(wait)
            wait = min(wait * 2, 10.0)

    async def _steps(self, inp: GenerationInput) -> GenerationResult:
        ra = "retrieval_augmentation" in inp.techniques
        refs: list[Reference] = []
        if ra:
            refs = await self._retrieve(inp, inp.retrieval_query)
        plan = await self._plan(inp) if "hierarchical_generation" in inp.techniques else None
        out = await self._candidates(inp, refs, round_=1, plan=plan)
        used = {r.id: r for r in refs}
        if ra:  # RepoCoder: re-query with the first draft, then generate again
            draft = best(out.candidates)
            if draft is not None and draft.code.strip():
                again = await self._retrieve(inp, draft.code)
                if {r.id for r in again} - set(used):
                    used.update({r.id: r for r in again})
                    second = await self._candidates(inp, list(used.values()), round_=2, plan=plan)
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
            provenance=_provenance(inp, list(used)),
            plan=plan,
        )

    async def _plan(self, inp: GenerationInput) -> Plan:
        """hierarchical_generation: a checked plan first (an invalid one after its retries fails the generation)."""
        return await workflow.execute_activity(
            "plan_module",
            PlanInput(job=inp),
            result_type=Plan,
            start_to_close_timeout=timedelta(minutes=30),
            heartbeat_timeout=timedelta(seconds=30),
            retry_policy=GENERATE_RETRY,
            summary=f"{inp.model}: plan the module",
        )

    async def _retrieve(self, inp: GenerationInput, query: str) -> list[Reference]:
        if not query.strip():
            return []
        return await workflow.execute_activity(
            "retrieve_references",
            RetrieveInput(tenant_id=inp.tenant_id, query=query[:4000], top_k=3),
            task_queue=inp.knowledge_queue,
            result_type=list[Reference],
            start_to_close_timeout=timedelta(seconds=60),
            retry_policy=RetryPolicy(maximum_attempts=5),
            summary="retrieve snippets",
        )

    async def _candidates(
        self, inp: GenerationInput, refs: list[Reference], round_: int, plan: Plan | None = None
    ) -> CandidatesResult:
        return await workflow.execute_activity(
            "generate_bodies" if plan is not None else "generate_candidates",
            CandidatesInput(job=inp, references=refs, round=round_, plan=plan),
            result_type=CandidatesResult,
            start_to_close_timeout=timedelta(minutes=30),
            heartbeat_timeout=timedelta(seconds=30),
            retry_policy=GENERATE_RETRY,
            summary=f"{inp.model}: {inp.n} candidate(s), round {round_}",
        )


def _provenance(inp: GenerationInput, snippet_ids: list) -> Provenance:
    s = inp.spec
    return Provenance(
        template_id=s.template_id,
        template_name=s.template_name,
        template_version=s.template_version,
        values_hash=s.values_hash,
        instance_id=s.instance_id,
        retrieved_snippets=snippet_ids,
    )
