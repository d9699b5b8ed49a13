"""ProjectWorkflow: one durable run per project (id `project-<uuid>`), owner of its state, doer of its work.

initialization   attach the tenant's default templates (spec-registry queue), then spec_definition;
spec_definition  users write instances; the `complete_specs` update (POST .../specs/complete, or PUT
                 state code_generation) checks them (spec-registry queue) and refuses with the problems;
code_generation  one child GenerationWorkflow per instance (generation queue), at most the tenant's
                 generation_concurrency at once, with the project's model and techniques;
integration      the files checked and stored as artifacts by content hash (integration queue);
debugging        each instance's tests in the sandbox (integration queue), one workflow_tasks row per
                 round; failing instances go back to code_generation with their failure, up to
                 debug_rounds times; then completed, or failed with the reasons.
An activity that fails with an error no retry can fix (non-retryable: a store's NotFound, Conflict or
Invalid, a validation error, no sandbox) moves the project to failed with the error's message as the reason.
DELETE cancels the run (cancelled). Every transition is mirrored into the projects row and the outbox
by an activity before it is visible; the SpecmillState search attribute follows. A terminal state carries
the run's outcome (models/outcome.py: each instance by name, with its failing test and values); a run
that ends failed then ends Failed in Temporal, the result in the failure's details. A later run
(POST .../runs: `regenerate` in the input) starts in code_generation for the instances its scope chose,
its first round told how each failed last time, with the settings it was claimed with. From its code
generation's start a run keeps its progress (models/progress.py: round, each instance's status, tokens,
time): every transition carries it, and record_run_progress records it as each generation finishes and
each round's tests end (the run's row and a run.progress event).
"""

from __future__ import annotations

import asyncio
from datetime import timedelta
from typing import TypeVar
from uuid import UUID

from temporalio import workflow
from temporalio.common import RetryPolicy
from temporalio.exceptions import (
    ActivityError,
    ApplicationError,
    ChildWorkflowError,
    FailureError,
    RetryState,
    is_cancelled_exception,
)

from workflows.calls import SANDBOX_LEASE_TTL_S, execute, fair, tenant_slot

with workflow.unsafe.imports_passed_through():
    from models.activities import (
        ATTACH_TEMPLATES,
        CHECK_SPECS,
        INTEGRATE_ARTIFACTS,
        PUBLISH_GENERATED,
        RECORD_PROJECT_STATE,
        RECORD_RUN_PROGRESS,
        RUN_SPEC_TESTS,
        ActivityType,
    )
    from models.common import TERMINAL_STATES, ProjectState
    from models.generation import GENERATION_WORKFLOW, GenerationResult, LeaseInput, SpecSnapshot, generation_job
    from models.orchestrator import (
        PROJECT_WORKFLOW,
        SANDBOX_UNAVAILABLE,
        STATE_KEY,
        ArtifactRef,
        CompleteSpecs,
        DebugRoundInput,
        DebugRoundResult,
        InstanceOutput,
        InstanceTestResult,
        IntegrateInput,
        ProjectRef,
        ProjectWorkflowInput,
        ProjectWorkflowResult,
        PublishInput,
        RecordProgressInput,
        RecordStateInput,
        Regenerate,
        SpecsCheckResult,
        StateChange,
        StateView,
    )
    from models.outcome import Outcome, instance_name, instance_outcome, summarize
    from models.progress import ProgressTracker

A = TypeVar("A")
R = TypeVar("R")
S = ProjectState
RECORD_RETRY = RetryPolicy(
    initial_interval=timedelta(seconds=1),
    maximum_interval=timedelta(seconds=30),
    non_retryable_error_types=["NotFound"],
)
PATCH_SANDBOX_UNAVAILABLE = "debugging-fails-without-sandbox"
# Any activity of the run failing with a non-retryable error ends the project `failed` with its message
# (before: it failed the workflow, or the store's Invalid and Conflict were retried for ever).
PATCH_PERMANENT_FAILURES = "pipeline-fails-on-permanent-errors"
WORK_RETRY = RetryPolicy(
    initial_interval=timedelta(seconds=1),
    maximum_interval=timedelta(seconds=30),
    non_retryable_error_types=["NotFound", "BadRequest"],
)
# What a user may ask for in each state; the pipeline moves through the others itself.
REQUESTABLE = {
    S.spec_definition: (S.code_generation, S.cancelled),
    S.initialization: (S.cancelled,),
    S.code_generation: (S.cancelled,),
    S.integration: (S.cancelled,),
    S.debugging: (S.cancelled,),
}


INTEGRATION_QUEUE_PATCH = "generation-integration-queue"
CANDIDATES_PATCH = "pipeline-candidates"
# A run that ends `failed` ends as Failed in Temporal too, with its outcome in the failure's details
# (before: it completed, and the Temporal UI showed a failed project as Completed).
FAILS_IN_TEMPORAL_PATCH = "project-failed-fails-the-run"
PROJECT_FAILED = "ProjectFailed"
# A round's tests hold one of the tenant's sandbox slots (before: they took any free integration slot).
SANDBOX_SLOT_PATCH = "spec-tests-sandbox-slot"
# A failed run's reason counts its rounds as its outcome does, the first one included (before: "after N
# debugging round(s)", one fewer than the outcome's "after N+1 round(s)").
ROUNDS_PATCH = "one-count-of-rounds"
# A run keeps its progress (models/progress.py) from its code generation's start: every transition carries
# it, and record_run_progress records it as each generation finishes and each round's tests end (before:
# transitions only, without progress).
PROGRESS_PATCH = "run-progress"


@workflow.defn(name=PROJECT_WORKFLOW)
class ProjectWorkflow:
    @workflow.init
    def __init__(self, inp: ProjectWorkflowInput) -> None:
        self._inp = inp
        # a later run shows code_generation from its first query on, never the last run's terminal state
        self._state = S.initialization if inp.regenerate is None else S.code_generation
        self._seq = 0
        self._lock = asyncio.Lock()
        self._specs: SpecsCheckResult | None = None  # set when the specs complete
        self._reasons: list[str] = []
        self._outcome: Outcome | None = None
        self._results: dict[UUID, tuple[InstanceTestResult, int]] = {}  # instance id -> its last result, its round
        self._round = 0
        self._progress: ProgressTracker | None = None  # runs from before PROGRESS_PATCH keep none

    @workflow.run
    async def run(self, inp: ProjectWorkflowInput) -> ProjectWorkflowResult:
        try:
            try:
                await self._work(inp)
            except ActivityError as err:
                failure = self._ending(err)
                if failure is None:
                    raise
                self._reasons = [failure.message]
                await self._end(S.failed, failure.message[:1000], why=failure.message)
            await workflow.wait_condition(workflow.all_handlers_finished)
        except BaseException as err:
            # DELETE /api/projects/{id}: record `cancelled`, then end as Canceled in Temporal. The
            # cancellation arrives as asyncio's, or as the cancelled activity's or child's error.
            if not is_cancelled_exception(err):
                raise
            if self._state not in TERMINAL_STATES:
                await self._end(S.cancelled, "project deleted", why="project deleted")
            raise
        result = ProjectWorkflowResult(
            project_id=inp.project_id, state=self._state, reasons=self._reasons, outcome=self._outcome
        )
        if self._state == S.failed and workflow.patched(FAILS_IN_TEMPORAL_PATCH):
            summary = self._outcome.summary if self._outcome else "; ".join(self._reasons)
            raise ApplicationError(
                f"project failed: {summary}"[:2000],
                result.model_dump(mode="json"),
                type=PROJECT_FAILED,
                non_retryable=True,
            )
        return result

    # --- what users see and ask -----------------------------------------------------------

    @workflow.query(name="state")
    def state(self) -> StateView:
        return StateView(state=self._state, allowed_next=list(REQUESTABLE.get(self._state, ())))

    @workflow.update(name="complete_specs")
    async def complete_specs(self, req: CompleteSpecs) -> StateView:
        async with self._lock:
            self._check(StateChange(state=S.code_generation))  # re-checked under the lock
            check = await self._activity(
                CHECK_SPECS,
                ProjectRef(tenant_id=self._inp.tenant_id, project_id=self._inp.project_id),
                self._inp.queues.spec_registry,
                "check the specs",
            )
            if check.problems:
                raise ApplicationError(
                    f"the specs are not complete: {len(check.problems)} problem(s)",
                    {"problems": [p.model_dump(mode="json") for p in check.problems]},
                    type="SpecsIncomplete",
                    non_retryable=True,
                )
            self._specs = check
            self._start_progress(check)
            await self._move(
                S.code_generation,
                f"spec.complete: {len(check.specs)} instance(s): " + ", ".join(instance_name(s) for s in check.specs),
                specs_completed={s.instance_id: s.values_hash for s in check.specs},
                settings=check.settings,
            )
        return self.state()

    @complete_specs.validator
    def validate_complete_specs(self, req: CompleteSpecs) -> None:
        self._check(StateChange(state=S.code_generation))

    def _check(self, change: StateChange) -> None:
        allowed = REQUESTABLE.get(self._state, ())
        if change.state not in allowed:
            why = (
                ""
                if self._state in TERMINAL_STATES or change.state == S.cancelled
                else ": the pipeline moves through code_generation, integration and debugging itself"
            )
            raise ApplicationError(
                f"cannot move from {self._state.value} to {change.state.value}{why}",
                {"state": self._state.value, "allowed_next": [s.value for s in allowed]},
                type="TransitionNotAllowed",
                non_retryable=True,
            )

    # --- the work -------------------------------------------------------------------------

    async def _work(self, inp: ProjectWorkflowInput) -> None:
        async with self._lock:
            if inp.regenerate is not None:
                await self._regenerate(inp.regenerate)
            else:
                await self._record(None, S.initialization, "workflow started")
                attached = await self._activity(
                    ATTACH_TEMPLATES,
                    ProjectRef(tenant_id=inp.tenant_id, project_id=inp.project_id),
                    inp.queues.spec_registry,
                    "attach the default templates",
                )
                await self._move(S.spec_definition, f"{len(attached.template_ids)} template(s) attached")
        await workflow.wait_condition(lambda: self._specs is not None or self._state in TERMINAL_STATES)
        if self._specs is not None and self._state not in TERMINAL_STATES:
            await self._pipeline(self._specs)

    @staticmethod
    def _ending(err: ActivityError) -> ApplicationError | None:
        """The error of an activity that ends the project `failed` with its message: one no retry can fix
        (a store's NotFound, Conflict or Invalid, a validation error, no sandbox). None: it propagates."""
        cause = err.cause
        if not isinstance(cause, ApplicationError) or err.activity_type == "record_project_state":
            return None  # a cancellation, or the failure could not be recorded either
        if (cause.non_retryable or err.retry_state == RetryState.NON_RETRYABLE_FAILURE) and workflow.patched(
            PATCH_PERMANENT_FAILURES
        ):
            return cause
        # runs from before PATCH_PERMANENT_FAILURES: only run_spec_tests' SandboxUnavailable ended them
        if (
            err.activity_type == "run_spec_tests"
            and cause.type == SANDBOX_UNAVAILABLE
            and workflow.patched(PATCH_SANDBOX_UNAVAILABLE)
        ):
            return cause
        return None

    async def _regenerate(self, req: Regenerate) -> None:
        """A later run: the instances its scope chose (changed, failing, or all), straight to code_generation."""
        check = await self._activity(
            CHECK_SPECS,
            # the settings it was claimed with (None in runs started before the gateway passed them)
            ProjectRef(
                tenant_id=self._inp.tenant_id,
                project_id=self._inp.project_id,
                only=req.instance_ids,
                settings=req.settings,
            ),
            self._inp.queues.spec_registry,
            f"check the specs of this run ({req.scope})",
        )
        if check.problems:  # changed again since the API looked
            self._reasons = [p.message for p in check.problems]
            why = "the specs are not complete: " + "; ".join(self._reasons)[:500]
            await self._end(S.failed, why, why=why)
            return
        self._specs = check
        self._start_progress(check)
        await self._record(
            req.from_state,
            S.code_generation,
            f"run ({req.scope}): {len(check.specs)} instance(s): " + ", ".join(instance_name(s) for s in check.specs),
            specs_completed={s.instance_id: s.values_hash for s in check.specs},
            settings=check.settings,
        )

    async def _pipeline(self, specs: SpecsCheckResult) -> None:
        cfg = specs.settings
        # a rerun of failing instances tells round 1 how they failed last time (an argument, not a command)
        todo, feedback = list(specs.specs), dict(self._inp.regenerate.feedback) if self._inp.regenerate else {}
        for round_ in range(1, cfg.debug_rounds + 2):  # the first generation, then a repair per debug round
            self._round = round_
            if round_ > 1:
                if self._progress is not None:
                    self._progress.round_started(round_, [s.instance_id for s in todo if s.instance_id])
                await self._move(
                    S.code_generation,
                    f"round {round_}: regenerate {len(todo)} failing instance(s): "
                    + ", ".join(instance_name(s) for s in todo),
                )
            outputs = await self._generate(todo, specs, round_, feedback)
            await self._move(
                S.integration,
                f"round {round_}: {sum(o.generation is not None for o in outputs)} of {len(outputs)} generated",
            )
            integrated = await self._activity(
                INTEGRATE_ARTIFACTS,
                IntegrateInput(
                    tenant_id=self._inp.tenant_id,
                    project_id=self._inp.project_id,
                    round=round_,
                    model=cfg.model,
                    techniques=cfg.techniques,
                    outputs=outputs,
                ),
                self._inp.queues.integration,
                f"round {round_}: check and store the artifacts",
            )
            await self._move(S.debugging, f"round {round_}: test {len(integrated.artifacts)} artifact(s)")
            tested = await self._tests(round_, integrated.artifacts, todo)
            self._results.update({r.instance_id: (r, round_) for r in tested.results})
            if self._progress is not None:
                self._progress.tested({r.instance_id: r.status for r in tested.results})
                await self._publish_progress(f"round {round_}: tested")
            passing = [r.artifact_id for r in tested.results if r.status == "passed" and r.artifact_id]
            if passing:
                await self._activity(
                    PUBLISH_GENERATED,
                    PublishInput(
                        tenant_id=self._inp.tenant_id,
                        user_id=self._inp.user_id,
                        project_id=self._inp.project_id,
                        artifact_ids=passing,
                    ),
                    self._inp.queues.knowledge,
                    f"round {round_}: {len(passing)} passing artifact(s) become snippets",
                )
            failing = tested.failing
            if not failing:
                await self._end(S.completed, f"all tests pass (round {round_})")
                return
            feedback = {r.instance_id: r.failure or r.status for r in failing}
            todo = [s for s in todo if s.instance_id in feedback]
        outcome = self._outcome_of(S.failed)
        self._reasons = [f"{i.name}: {i.message}" for i in outcome.failing()]
        after = (
            f"{self._round} round(s)" if workflow.patched(ROUNDS_PATCH) else f"{cfg.debug_rounds} debugging round(s)"
        )
        await self._end(S.failed, f"tests still fail after {after}: " + "; ".join(self._reasons)[:800])

    async def _tests(self, round_: int, artifacts: list[ArtifactRef], todo: list[SpecSnapshot]) -> DebugRoundResult:
        """The round's tests in the sandbox, holding one of the tenant's sandbox slots (runs from before
        SANDBOX_SLOT_PATCH: any free integration slot). No sandbox on the worker (SandboxUnavailable):
        nothing runs unconfined, and the project fails."""
        debug = DebugRoundInput(
            tenant_id=self._inp.tenant_id,
            project_id=self._inp.project_id,
            round=round_,
            task_id=workflow.uuid4(),
            artifacts=artifacts,
            specs=todo,
        )

        def run():
            return self._activity(
                RUN_SPEC_TESTS,
                debug,
                self._inp.queues.integration,
                f"round {round_}: run the tests",
                timeout=timedelta(minutes=30),
                heartbeat=timedelta(seconds=30),
            )

        if not workflow.patched(SANDBOX_SLOT_PATCH):
            return await run()
        holder = f"{workflow.info().workflow_id}/{workflow.info().run_id}/tests-{round_}"
        lease = LeaseInput(
            tenant_id=self._inp.tenant_id, holder=holder, limit=None, kind="sandbox", ttl_s=SANDBOX_LEASE_TTL_S
        )
        async with tenant_slot(lease, self._inp.queues.orchestrator, f"round {round_}: run the tests"):
            return await run()

    def _outcome_of(self, state: ProjectState, why: str | None = None) -> Outcome:
        """Each instance of this run by its last result (not run: none yet), and the run's summary."""
        specs = self._specs.specs if self._specs is not None else []
        instances = [
            instance_outcome(s, *self._results.get(s.instance_id, (None, None)))
            for s in specs
            if s.instance_id is not None
        ]
        return summarize(state, instances, self._round, why)

    async def _end(self, to: ProjectState, reason: str, *, why: str | None = None) -> None:
        """The terminal transition, recorded with the run's outcome."""
        self._outcome = self._outcome_of(to, why)
        await self._move(to, reason, outcome=self._outcome)

    def _candidates(self, cfg) -> dict:
        """How many candidates a generation makes, with the techniques' parameters, and where it tests
        them. Versioned: runs recorded before each patch started their generations with one
        candidate, default parameters, and (before the first) no integration queue."""
        fields: dict = {"n": 1}
        if workflow.patched(INTEGRATION_QUEUE_PATCH):
            fields["integration_queue"] = self._inp.queues.integration
        if workflow.patched(CANDIDATES_PATCH):
            fields.update(n=cfg.n, options=cfg.options)
        return fields

    async def _generate(
        self, todo: list[SpecSnapshot], specs: SpecsCheckResult, round_: int, feedback: dict
    ) -> list[InstanceOutput]:
        cfg, gate = specs.settings, asyncio.Semaphore(max(1, specs.settings.generation_concurrency))

        async def one(spec: SpecSnapshot) -> InstanceOutput:
            async with gate:
                fields = self._candidates(cfg)
                job = generation_job(
                    spec,
                    generation_id=workflow.uuid4(),
                    tenant_id=self._inp.tenant_id,
                    user_id=self._inp.user_id,
                    model=cfg.model,
                    techniques=cfg.techniques,
                    max_new_tokens=cfg.max_new_tokens,
                    n=fields.pop("n"),
                    options=fields.pop("options", None),
                    feedback=feedback.get(spec.instance_id),
                    knowledge_queue=self._inp.queues.knowledge,
                    project_id=self._inp.project_id,
                    concurrency_limit=cfg.generation_concurrency,
                    lease_queue=self._inp.queues.orchestrator,
                    **fields,
                )
                try:
                    result = await workflow.execute_child_workflow(
                        GENERATION_WORKFLOW,
                        job,
                        result_type=GenerationResult,
                        id=f"{workflow.info().workflow_id}-{spec.instance_id}-round-{round_}",
                        task_queue=self._inp.queues.generation,
                        **fair(self._inp.tenant_id),
                        static_summary=f"{instance_name(spec)} ({spec.template_name}), round {round_}",
                    )
                except ChildWorkflowError as err:
                    if is_cancelled_exception(err):
                        raise
                    await self._generated(spec, None)
                    return InstanceOutput(spec=spec, error=f"generation failed: {_innermost(err)}")
                await self._generated(spec, result)
                if result.status != "completed":
                    return InstanceOutput(spec=spec, generation=None, error=result.note or "generation failed")
                return InstanceOutput(spec=spec, generation=result)

        return list(await asyncio.gather(*(one(s) for s in todo)))

    def _start_progress(self, check: SpecsCheckResult) -> None:
        """The run's progress, from the moment its code generation starts (versioned: PROGRESS_PATCH)."""
        if workflow.patched(PROGRESS_PATCH):
            self._progress = ProgressTracker(
                [(s.instance_id, instance_name(s)) for s in check.specs if s.instance_id is not None],
                rounds=check.settings.debug_rounds + 1,
                started_at=workflow.now(),
            )

    async def _generated(self, spec: SpecSnapshot, result: GenerationResult | None) -> None:
        """A generation of the round finished (None: its child failed): its tokens and whether code was made."""
        if self._progress is None or spec.instance_id is None:
            return
        candidates = result.candidates if result is not None else []
        self._progress.generated(
            spec.instance_id,
            made=result is not None and result.status == "completed",
            tokens_in=sum(c.tokens_in for c in candidates),
            tokens_out=sum(c.tokens_out for c in candidates),
        )
        await self._publish_progress(f"{instance_name(spec)}: generated")

    async def _publish_progress(self, summary: str) -> None:
        assert self._progress is not None
        await execute(
            RECORD_RUN_PROGRESS,
            RecordProgressInput(
                tenant_id=self._inp.tenant_id,
                project_id=self._inp.project_id,
                run_id=workflow.info().run_id,
                progress=self._progress.snapshot(self._state, workflow.now(), full=False),  # what changed
            ),
            tenant_id=self._inp.tenant_id,
            start_to_close_timeout=timedelta(seconds=30),
            retry_policy=RECORD_RETRY,
            summary=f"progress: {summary}",
        )

    async def _activity(
        self,
        act: ActivityType[A, R],
        arg: A,
        queue: str,
        summary: str,
        *,
        timeout: timedelta = timedelta(minutes=1),
        heartbeat: timedelta | None = None,
    ) -> R:
        return await execute(
            act,
            arg,
            tenant_id=self._inp.tenant_id,
            task_queue=queue,
            start_to_close_timeout=timeout,
            heartbeat_timeout=heartbeat,
            retry_policy=WORK_RETRY,
            summary=summary,
        )

    async def _move(self, to: ProjectState, reason: str, **extra) -> None:
        await self._record(self._state, to, reason, **extra)
        self._state = to

    async def _record(
        self,
        frm: ProjectState | None,
        to: ProjectState,
        reason: str,
        specs_completed: dict | None = None,
        settings=None,
        outcome: Outcome | None = None,
    ) -> None:
        """Mirror a transition (and the run's settings or outcome) into the database; the SpecmillState
        search attribute follows. Its input's new fields change no command: no patch is needed."""
        self._seq += 1
        await execute(
            RECORD_PROJECT_STATE,
            RecordStateInput(
                tenant_id=self._inp.tenant_id,
                project_id=self._inp.project_id,
                from_state=frm,
                to_state=to,
                seq=self._seq,
                run_id=workflow.info().run_id,
                reason=reason[:1000],
                specs_completed=specs_completed,
                scope=self._inp.regenerate.scope if self._inp.regenerate else "initial",
                settings=settings,
                outcome=outcome,
                progress=self._progress.snapshot(to, workflow.now()) if self._progress is not None else None,
            ),
            tenant_id=self._inp.tenant_id,
            start_to_close_timeout=timedelta(seconds=30),
            retry_policy=RECORD_RETRY,
            summary=f"{frm.value if frm else 'new'} -> {to.value}",
        )
        workflow.upsert_search_attributes([STATE_KEY.value_set(to.value)])


def _innermost(err: BaseException) -> str:
    """The message at the end of a failure's chain of causes (the activity's own words, not 'Activity task failed')."""
    while isinstance(err, FailureError) and err.cause is not None:
        err = err.cause
    return err.message if isinstance(err, FailureError) else str(err)
