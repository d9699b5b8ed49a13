"""Orchestrator activities that touch the database: one class, one pool, injected at startup."""

from __future__ import annotations

import asyncpg
from temporalio import activity
from temporalio.exceptions import ApplicationError

from activities.errors import permanent_failures
from infra import metrics
from models.activities import (
    ACQUIRE_GENERATION_SLOT,
    RECORD_PROJECT_STATE,
    RECORD_RUN_PROGRESS,
    RELEASE_GENERATION_SLOT,
)
from models.generation import LeaseInput
from models.orchestrator import RecordProgressInput, RecordStateInput, RecordStateResult
from models.settings import Settings
from store import leases, projects
from store.errors import NotFound


class ProjectActivities:
    def __init__(self, pool: asyncpg.Pool, settings: Settings) -> None:
        self._pool = pool
        self._settings = settings

    @activity.defn(name=RECORD_PROJECT_STATE.name)
    @permanent_failures
    async def record_project_state(self, inp: RecordStateInput) -> RecordStateResult:
        try:
            seconds = await projects.record_state(self._pool, inp)
        except NotFound as err:
            # The row is committed just after the workflow starts: a few retries cover that race;
            # a project that never appears is a permanent failure.
            if activity.info().attempt < 5:
                raise ApplicationError(err.message, type="ProjectNotYetVisible") from err
            raise ApplicationError(err.message, type="NotFound", non_retryable=True) from err
        if seconds is not None:  # the first time only: a retry is not a second transition
            before = inp.from_state.value if inp.from_state else "none"
            metrics.TRANSITIONS.labels(before, inp.to_state.value).inc()
            if inp.from_state is not None:
                metrics.STATE_SECONDS.labels(before).observe(seconds)
            if inp.outcome is not None:
                metrics.DEBUG_ROUNDS.labels(inp.to_state.value).observe(max(0, inp.outcome.rounds - 1))
        return RecordStateResult(applied=seconds is not None)

    @activity.defn(name=RECORD_RUN_PROGRESS.name)
    @permanent_failures
    async def record_run_progress(self, inp: RecordProgressInput) -> bool:
        """The run's progress within a state (its row and a run.progress event); False when this record
        was stored already (a retry)."""
        return await projects.record_progress(self._pool, inp)

    @activity.defn(name=ACQUIRE_GENERATION_SLOT.name)
    @permanent_failures
    async def acquire_generation_slot(self, inp: LeaseInput) -> bool:
        """One of the tenant's generation (or sandbox: `kind`) slots for this holder, if one is free (a
        retry renews it). Never more than the tenant's share of the platform's slots, whatever `limit` asks."""
        share = self._settings.tenant_slots(inp.kind)
        return await leases.acquire(
            self._pool,
            tenant_id=inp.tenant_id,
            holder=inp.holder,
            limit=share if inp.limit is None else min(inp.limit, share),
            ttl_s=inp.ttl_s,
            kind=inp.kind,
        )

    @activity.defn(name=RELEASE_GENERATION_SLOT.name)
    @permanent_failures
    async def release_generation_slot(self, inp: LeaseInput) -> None:
        await leases.release(self._pool, tenant_id=inp.tenant_id, holder=inp.holder, kind=inp.kind)
