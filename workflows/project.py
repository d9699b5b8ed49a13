"""ProjectWorkflow: one durable run per project (id `project-<uuid>`), owner of its state.

The state machine lives in models.common.TRANSITIONS. Every transition is mirrored into the
projects row and the outbox by an activity before it is visible; search attributes follow.
"""
from __future__ import annotations

import asyncio
from datetime import timedelta

from temporalio import workflow
from temporalio.common import RetryPolicy
from temporalio.exceptions import ApplicationError

with workflow.unsafe.imports_passed_through():
    from models.common import TERMINAL_STATES, TRANSITIONS, ProjectState
    from models.orchestrator import (
        PROJECT_WORKFLOW,
        STATE_KEY,
        ProjectWorkflowInput,
        ProjectWorkflowResult,
        RecordStateInput,
        RecordStateResult,
        StateChange,
        StateView,
    )

RECORD_RETRY = RetryPolicy(initial_interval=timedelta(seconds=1), maximum_interval=timedelta(seconds=30),
                           non_retryable_error_types=["NotFound"])


@workflow.defn(name=PROJECT_WORKFLOW)
class ProjectWorkflow:
    @workflow.init
    def __init__(self, inp: ProjectWorkflowInput) -> None:
        self._inp = inp
        self._state = ProjectState.initialization
        self._seq = 0
        self._lock = asyncio.Lock()

    @workflow.run
    async def run(self, inp: ProjectWorkflowInput) -> ProjectWorkflowResult:
        try:
            async with self._lock:
                # initialization: the row was written with the project; the workflow confirms it.
                await self._record(None, ProjectState.initialization, "workflow started")
                await self._move(ProjectState.spec_definition, "initialization complete")
            await workflow.wait_condition(lambda: self._state in TERMINAL_STATES)
            await workflow.wait_condition(workflow.all_handlers_finished)
        except asyncio.CancelledError:
            # DELETE /api/projects/{id}: record `cancelled`, then end as Canceled in Temporal.
            if self._state not in TERMINAL_STATES:
                await self._move(ProjectState.cancelled, "project deleted")
            raise
        return ProjectWorkflowResult(project_id=inp.project_id, state=self._state)

    @workflow.query(name="state")
    def state(self) -> StateView:
        return StateView(state=self._state, allowed_next=list(TRANSITIONS[self._state]))

    @workflow.update(name="set_state")
    async def set_state(self, change: StateChange) -> StateView:
        async with self._lock:
            # Re-checked under the lock: another update may have moved the state since validation.
            self._check(change)
            await self._move(change.state, "requested through the API")
        return self.state()

    @set_state.validator
    def validate_set_state(self, change: StateChange) -> None:
        self._check(change)

    def _check(self, change: StateChange) -> None:
        allowed = TRANSITIONS[self._state]
        if change.state not in allowed:
            raise ApplicationError(
                f"cannot move from {self._state.value} to {change.state.value}",
                {"state": self._state.value, "allowed_next": [s.value for s in allowed]},
                type="TransitionNotAllowed",
                non_retryable=True,
            )

    async def _move(self, to: ProjectState, reason: str) -> None:
        await self._record(self._state, to, reason)
        self._state = to

    async def _record(self, frm: ProjectState | None, to: ProjectState, reason: str) -> None:
        self._seq += 1
        await workflow.execute_activity(
            "record_project_state",
            RecordStateInput(tenant_id=self._inp.tenant_id, project_id=self._inp.project_id,
                             from_state=frm, to_state=to, seq=self._seq, reason=reason),
            start_to_close_timeout=timedelta(seconds=30),
            retry_policy=RECORD_RETRY,
            result_type=RecordStateResult,
            summary=f"{frm.value if frm else 'new'} -> {to.value}",
        )
        workflow.upsert_search_attributes([STATE_KEY.value_set(to.value)])
