"""GenerationWorkflow (task queue `generation`): one POST /api/generate, durably.

Retrieval runs on the knowledge worker (it owns the embedder and the vector store); candidates are
generated on the generation worker, which loads its model once; several candidates are tested against
the spec's visible tests on the integration worker (it owns the sandbox); the outcome and its
code.generated event are recorded in one transaction.
"""

from __future__ import annotations

from datetime import timedelta

from temporalio import workflow
from temporalio.common import RetryPolicy
from temporalio.exceptions import ActivityError, ApplicationError

from workflows.calls import SANDBOX_LEASE_TTL_S, execute, tenant_slot

with workflow.unsafe.imports_passed_through():
    from models.activities import (
        GENERATE_BODIES,
        GENERATE_CANDIDATES,
        PLAN_MODULE,
        RECORD_GENERATION,
        RETRIEVE_REFERENCES,
        TECHNIQUE_STEP,
        TEST_CANDIDATES,
    )
    from models.generation import (
        GENERATION_WORKFLOW,
        CandidatesInput,
        CandidatesResult,
        CandidateTests,
        GenerationInput,
        GenerationResult,
        LeaseInput,
        Plan,
        PlanInput,
        RecordGenerationInput,
        Reference,
        RetrieveInput,
        TechniqueStepInput,
        TestCandidatesInput,
    )
    from models.generation_steps import provenance, run_steps

GENERATE_RETRY = RetryPolicy(
    maximum_attempts=5,
    initial_interval=timedelta(seconds=2),
    non_retryable_error_types=["ModelUnavailable", "BadRequest"],
)
TECHNIQUE_RETRY = RetryPolicy(
    maximum_attempts=3,
    initial_interval=timedelta(seconds=2),
    non_retryable_error_types=["TechniqueUnavailable", "BadRequest"],
)
RECORD_RETRY = RetryPolicy(initial_interval=timedelta(seconds=1), maximum_interval=timedelta(seconds=30))
CANDIDATE_TESTS_PATCH = "candidate-tests"  # the visible tests step: new histories only
# The model calls get what they need (ModelTask: the spec as read once) instead of the whole job.
MODEL_TASK_PATCH = "model-task-inputs"
# Candidate tests hold one of the tenant's sandbox slots (before: they took any free integration slot).
SANDBOX_SLOT_PATCH = "candidate-tests-sandbox-slot"


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
                provenance=provenance(inp, {}),
            )
        await execute(
            RECORD_GENERATION,
            RecordGenerationInput(inp=inp, result=result, error=error),
            tenant_id=inp.tenant_id,
            start_to_close_timeout=timedelta(seconds=30),
            retry_policy=RECORD_RETRY,
            summary="record the outcome",
        )
        return result

    async def _generate(self, inp: GenerationInput) -> GenerationResult:
        if not (inp.project_id and inp.concurrency_limit and inp.lease_queue):
            return await self._steps(inp)
        lease = LeaseInput(tenant_id=inp.tenant_id, holder=workflow.info().workflow_id, limit=inp.concurrency_limit)
        async with tenant_slot(lease, inp.lease_queue, f"at most {lease.limit} generations at once"):
            return await self._steps(inp)

    async def _steps(self, inp: GenerationInput) -> GenerationResult:
        return await run_steps(inp, _ActivitySteps(inp))


class _ActivitySteps:
    """The steps of models.generation_steps, each an activity: retrieval on the knowledge worker, the
    model calls on the generation worker (this workflow's own queue)."""

    def __init__(self, inp: GenerationInput) -> None:
        self.inp = inp

    def takes(self, change: str) -> bool:
        return workflow.patched(change)

    def _model_input(self) -> dict:
        """The task of a model call; before the patch, the whole job (what histories recorded then hold)."""
        return {"task": self.inp.task()} if workflow.patched(MODEL_TASK_PATCH) else {"job": self.inp}

    async def retrieve(self, query: str, top_k: int) -> list[Reference]:
        return await execute(
            RETRIEVE_REFERENCES,
            RetrieveInput(tenant_id=self.inp.tenant_id, query=query, top_k=top_k),
            tenant_id=self.inp.tenant_id,
            task_queue=self.inp.knowledge_queue,
            start_to_close_timeout=timedelta(seconds=60),
            retry_policy=RetryPolicy(maximum_attempts=5),
            summary="retrieve snippets",
        )

    async def plan(self) -> Plan:
        """hierarchical_generation: a checked plan first (an invalid one after its retries fails the generation)."""
        return await execute(
            PLAN_MODULE,
            PlanInput(**self._model_input()),
            tenant_id=self.inp.tenant_id,
            start_to_close_timeout=timedelta(minutes=30),
            heartbeat_timeout=timedelta(seconds=30),
            retry_policy=GENERATE_RETRY,
            summary=f"{self.inp.model}: plan the module",
        )

    async def candidates(self, references: list[Reference], round_: int, plan: Plan | None) -> CandidatesResult:
        return await execute(
            GENERATE_BODIES if plan is not None else GENERATE_CANDIDATES,
            CandidatesInput(**self._model_input(), references=references, round=round_, plan=plan),
            tenant_id=self.inp.tenant_id,
            start_to_close_timeout=timedelta(minutes=30),
            heartbeat_timeout=timedelta(seconds=30),
            retry_policy=GENERATE_RETRY,
            summary=f"{self.inp.model}: {self.inp.n} candidate(s), round {round_}",
        )

    async def test(self, codes: list[str], tests: list[str]) -> list[CandidateTests]:
        """The candidates against the spec's visible tests, on the integration worker (it owns the sandbox)."""
        workflow.patched(CANDIDATE_TESTS_PATCH)  # no history before it reaches this step: a marker for later changes

        def run():
            return execute(
                TEST_CANDIDATES,
                TestCandidatesInput(tenant_id=self.inp.tenant_id, codes=codes, tests=tests),
                tenant_id=self.inp.tenant_id,
                task_queue=self.inp.integration_queue,
                start_to_close_timeout=timedelta(minutes=10),
                heartbeat_timeout=timedelta(seconds=60),
                retry_policy=RetryPolicy(maximum_attempts=3, non_retryable_error_types=["SandboxUnavailable"]),
                summary=f"{len(codes)} candidate(s) against {len(tests)} visible test(s)",
            )

        if self.inp.lease_queue is None or not workflow.patched(SANDBOX_SLOT_PATCH):
            return (await run()).results
        lease = LeaseInput(
            tenant_id=self.inp.tenant_id,
            holder=f"{workflow.info().workflow_id}/candidates",
            limit=None,
            kind="sandbox",
            ttl_s=SANDBOX_LEASE_TTL_S,
        )
        async with tenant_slot(lease, self.inp.lease_queue, f"test {len(codes)} candidate(s)"):
            return (await run()).results

    async def technique(self, name: str, step: str, payload: dict) -> dict:
        """A technique's own work, on the generation worker (this workflow's own queue)."""
        out = await execute(
            TECHNIQUE_STEP,
            TechniqueStepInput(tenant_id=self.inp.tenant_id, technique=name, step=step, payload=payload),
            tenant_id=self.inp.tenant_id,
            start_to_close_timeout=timedelta(minutes=5),
            heartbeat_timeout=timedelta(seconds=30),
            retry_policy=TECHNIQUE_RETRY,
            summary=f"{name}: {step}",
        )
        return out.payload
