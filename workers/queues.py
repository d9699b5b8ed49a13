"""What each task queue's worker serves. One entry per queue; `specmill worker <queue>` runs it."""
from __future__ import annotations

import logging
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Callable

import asyncpg
from temporalio.client import Client
from temporalio.worker import Worker

from activities.knowledge import KnowledgeActivities
from activities.projects import ProjectActivities
from models.settings import Settings
from workflows.knowledge import KnowledgeIndexWorkflow, KnowledgeReindexWorkflow
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


def _knowledge(client: Client, settings: Settings, pool: asyncpg.Pool) -> Worker:
    from knowledge.runtime import get_runtime

    runtime = get_runtime(settings)  # shared with the knowledge API when both run in this process
    runtime.loaded()  # load the embedders before taking work
    acts = KnowledgeActivities(pool, runtime)
    return Worker(
        client,
        task_queue=settings.queue("knowledge"),
        workflows=[KnowledgeIndexWorkflow, KnowledgeReindexWorkflow],
        activities=[acts.index_items, acts.list_tenant_items, acts.prune_tenant_points, acts.retrieve_references],
        max_concurrent_activities=4,
    )


def _generation(client: Client, settings: Settings, pool: asyncpg.Pool) -> Worker:
    """The GPU-pinned worker of the design card: it loads its local model once, at start."""
    from activities.generation import GenerationActivities
    from codegen.manager import ModelManager
    from workflows.generation import GenerationWorkflow

    manager = ModelManager(settings)
    local = manager.backend("local_llama")
    if local.status().state != "unavailable":
        try:
            local.load()
        except Exception as err:  # noqa: BLE001 - a broken model file: report it, keep serving other models
            logging.getLogger("specmill.worker").error("local_llama failed to load: %s", err)
    acts = GenerationActivities(pool, manager, settings)
    return Worker(
        client,
        task_queue=settings.queue("generation"),
        workflows=[GenerationWorkflow],
        activities=[acts.generate_candidates, acts.plan_module, acts.generate_bodies, acts.record_generation],
        max_concurrent_activities=2,
    )


QUEUES: dict[str, QueueDef] = {
    "orchestrator": QueueDef("orchestrator", _orchestrator),
    "knowledge": QueueDef("knowledge", _knowledge),
    "generation": QueueDef("generation", _generation),
}
