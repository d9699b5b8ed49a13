"""Orchestrator activities that touch the database: one class, one pool, injected at startup."""
from __future__ import annotations

import asyncpg
from temporalio import activity
from temporalio.exceptions import ApplicationError

from models.orchestrator import RecordStateInput, RecordStateResult
from store import projects
from store.errors import NotFound


class ProjectActivities:
    def __init__(self, pool: asyncpg.Pool) -> None:
        self._pool = pool

    @activity.defn(name="record_project_state")
    async def record_project_state(self, inp: RecordStateInput) -> RecordStateResult:
        try:
            applied = await projects.record_state(self._pool, inp)
        except NotFound as err:
            # The row is committed just after the workflow starts: a few retries cover that race;
            # a project that never appears is a permanent failure.
            if activity.info().attempt < 5:
                raise ApplicationError(err.message, type="ProjectNotYetVisible") from err
            raise ApplicationError(err.message, type="NotFound", non_retryable=True) from err
        return RecordStateResult(applied=applied)
