"""What each task queue's worker serves. One entry per queue; `specmill worker <queue>` runs it."""
from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Callable

import asyncpg
from temporalio.client import Client
from temporalio.worker import Worker

from activities.projects import ProjectActivities
from models.settings import Settings
from workflows.project import ProjectWorkflow


@dataclass(frozen=True)
class QueueDef:
    name: str
    build: Callable[[Client, Settings, asyncpg.Pool], Worker]


def _orchestrator(client: Client, settings: Settings, pool: asyncpg.Pool) -> Worker:
    acts = ProjectActivities(pool)
    return Worker(
        client,
        task_queue=settings.queue("orchestrator"),
        workflows=[ProjectWorkflow],
        activities=[acts.record_project_state],
        activity_executor=ThreadPoolExecutor(4),
    )


QUEUES: dict[str, QueueDef] = {
    "orchestrator": QueueDef("orchestrator", _orchestrator),
}
