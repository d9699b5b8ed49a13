"""What each task queue's worker serves. One entry per queue; `specmill worker <queue>` runs it."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import os
import socket
from collections.abc import AsyncIterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import timedelta
from typing import TYPE_CHECKING, Callable
from uuid import UUID

import asyncpg
from temporalio import activity
from temporalio.client import Client
from temporalio.plugin import SimplePlugin
from temporalio.worker import Worker

from activities.generation import GenerationActivities
from activities.knowledge import KnowledgeActivities
from activities.pipeline import PipelineActivities
from activities.projects import ProjectActivities
from activities.training import TrainingActivities
from codegen.base import declaration
from infra.temporal import tenant_priority
from models import schema_safety
from models.activities import served_by
from models.common import GENERATION, INTEGRATION, KNOWLEDGE, MODEL_NAMES, ORCHESTRATOR, SPEC_REGISTRY, TRAINING
from models.settings import Settings
from sandbox import SandboxConfig, SandboxUnavailable, isolation
from store import model_workers
from workflows.knowledge import KnowledgeIndexWorkflow, KnowledgeReindexWorkflow
from workflows.project import ProjectWorkflow

if TYPE_CHECKING:
    from codegen.manager import ModelManager

log = logging.getLogger("specmill.worker")

_MODEL_REPORT_TIMEOUT_S = 10.0  # one report (or the final delete) gives up after this
_reporters_made = itertools.count(1)  # a second generation worker in one process (tests) gets its own id


def served(queue: str, acts: object) -> list[Callable]:
    """The activities of `acts` that the table (models/activities.py) says `queue` serves: every one of
    them, under the table's name, or a RuntimeError naming what is missing (the worker does not start)."""
    out, missing = [], []
    for entry in served_by(queue):
        method = getattr(acts, entry.name, None)
        defn = activity._Definition.from_callable(method) if callable(method) else None
        if defn is None or defn.name != entry.name:
            missing.append(entry.name)
        else:
            out.append(method)
    if missing:
        raise RuntimeError(f"queue {queue}: {type(acts).__name__} does not define {', '.join(missing)}")
    return out


@dataclass(frozen=True)
class QueueDef:
    name: str
    build: Callable[[Client, Settings, asyncpg.Pool], Worker]
    activities: type  # whose methods serve the queue's activities (`served`)


def _orchestrator(client: Client, settings: Settings, pool: asyncpg.Pool) -> Worker:
    acts = ProjectActivities(pool, settings)
    return Worker(
        client,
        task_queue=settings.queue(ORCHESTRATOR),
        workflows=[ProjectWorkflow],
        activities=served(ORCHESTRATOR, acts),
        max_concurrent_activities=settings.worker_slots(ORCHESTRATOR),
    )


def _spec_registry(client: Client, settings: Settings, pool: asyncpg.Pool) -> Worker:
    """initialization's templates and spec.complete's checks (validation in schema_safety's process pool)."""
    schema_safety.configure(settings)
    acts = PipelineActivities(pool)
    return Worker(
        client,
        task_queue=settings.queue(SPEC_REGISTRY),
        activities=served(SPEC_REGISTRY, acts),
        max_concurrent_activities=settings.worker_slots(SPEC_REGISTRY),
    )


def _integration(client: Client, settings: Settings, pool: asyncpg.Pool) -> Worker:
    """integration's checks and artifacts, debugging's sandboxed tests (each run is a bubblewrap sandbox)."""
    config = SandboxConfig.from_settings(settings)
    try:
        isolation(config)
    except SandboxUnavailable as err:  # serve anyway: debugging then fails each project with this reason
        log.error("%s; projects will fail in debugging until it is fixed", err)
    acts = PipelineActivities(pool, config)
    return Worker(
        client,
        task_queue=settings.queue(INTEGRATION),
        activities=served(INTEGRATION, acts),
        max_concurrent_activities=settings.worker_slots(INTEGRATION),
    )


def _knowledge(client: Client, settings: Settings, pool: asyncpg.Pool) -> Worker:
    from knowledge.runtime import get_runtime

    runtime = get_runtime(settings)  # shared with the knowledge API when both run in this process
    runtime.loaded()  # load the embedders before taking work
    acts = KnowledgeActivities(pool, runtime)
    return Worker(
        client,
        task_queue=settings.queue(KNOWLEDGE),
        workflows=[KnowledgeIndexWorkflow, KnowledgeReindexWorkflow],
        activities=served(KNOWLEDGE, acts),
        max_concurrent_activities=settings.worker_slots(KNOWLEDGE),
        plugins=[
            SimplePlugin("specmill.knowledge_upgrade", run_context=lambda: _rebuilt_if_needed(client, settings, pool))
        ],
    )


async def start_reindex(client: Client, settings: Settings, tenant_id: UUID):
    """KnowledgeReindexWorkflow for a tenant (one at a time per tenant: a second start finds the first)."""
    from temporalio.common import WorkflowIDConflictPolicy

    from models.knowledge import REINDEX_WORKFLOW, ReindexInput, ReindexResult

    return await client.start_workflow(
        REINDEX_WORKFLOW,
        ReindexInput(tenant_id=tenant_id),
        id=f"knowledge-reindex-{tenant_id}",
        task_queue=settings.queue(KNOWLEDGE),
        result_type=ReindexResult,
        id_conflict_policy=WorkflowIDConflictPolicy.USE_EXISTING,
        static_summary=f"re-index tenant {tenant_id}",
        priority=tenant_priority(tenant_id),
    )


@contextlib.asynccontextmanager
async def _rebuilt_if_needed(client: Client, settings: Settings, pool: asyncpg.Pool) -> AsyncIterator[None]:
    """On the knowledge worker's start: after the upgrade from local mode to Qdrant Edge, every tenant's
    vectors are rebuilt from PostgreSQL (durable reindex workflows, run by this worker), once."""
    from knowledge.runtime import mark_rebuilt, pending_rebuild
    from store.tenants import tenants_with_knowledge

    why = pending_rebuild(settings)
    if why:
        tenants = await tenants_with_knowledge(pool)
        log.warning(
            "upgrade: %s; rebuilding the vectors of %d tenant(s) from PostgreSQL into Qdrant Edge at %s "
            "(workflows knowledge-reindex-<tenant>); the old files are no longer read: delete them once done",
            why,
            len(tenants),
            settings.edge_dir,
        )
        for tenant in tenants:
            await start_reindex(client, settings, tenant)
        mark_rebuilt(settings, len(tenants))
    yield


class ModelReporter:
    """Tells the gateway what this generation worker's models are (store/model_workers.py): right after
    start and every `interval` seconds one row per model; on a clean stop it deletes its rows.
    Its id is hostname:pid (hostname:pid-N for the Nth reporter made in one process).

    A report that fails (the database away) is logged and tried again at the next tick; it never
    stops the worker. The statuses are read on a thread of the reporter's own: on the process's shared
    pool they would queue behind the blocking work the worker is doing, and a busy worker would go
    stale and look gone.
    """

    def __init__(
        self,
        pool: asyncpg.Pool,
        manager: ModelManager,
        *,
        worker_id: str | None = None,
        interval: float = model_workers.REPORT_INTERVAL_S,
    ) -> None:
        self.pool = pool
        self.manager = manager
        if worker_id is None:
            n = next(_reporters_made)
            worker_id = f"{socket.gethostname()}:{os.getpid()}" + (f"-{n}" if n > 1 else "")
        self.worker_id = worker_id
        self.interval = interval
        self._task: asyncio.Task | None = None
        self._thread = ThreadPoolExecutor(1, thread_name_prefix="model-reports")

    def reports(self) -> list[model_workers.ModelReport]:
        """Each model's status and what its backend declares (codegen/base.py): all the gateway knows of it."""
        out = []
        for name in MODEL_NAMES:
            backend = self.manager.backend(name)
            s = backend.status()
            out.append(model_workers.ModelReport(s.name, s.state, s.reason, s.details, declaration(backend, s)))
        return out

    async def report_once(self) -> bool:
        """One report of every model; False (logged) if it could not be stored."""
        try:
            # a status may touch the disk
            reports = await asyncio.get_running_loop().run_in_executor(self._thread, self.reports)
            await asyncio.wait_for(
                model_workers.report(self.pool, worker_id=self.worker_id, reports=reports), _MODEL_REPORT_TIMEOUT_S
            )
            return True
        except Exception as err:  # noqa: BLE001 - try again at the next tick
            log.warning("could not report model states as %s: %s: %s", self.worker_id, type(err).__name__, err)
            return False

    async def _loop(self, *, reported: bool) -> None:
        while True:
            if not reported:
                await self.report_once()
            reported = False
            await asyncio.sleep(self.interval)

    def start(self, *, reported: bool = False) -> None:
        """Report every interval, from now (`reported`: one report was just made, the next is due later)."""
        if self._task is None or self._task.done():
            self._task = asyncio.create_task(self._loop(reported=reported), name=f"model-reports {self.worker_id}")

    async def stop(self) -> None:
        """Stop reporting and delete this worker's rows (logged, not raised, if the database is away)."""
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        try:
            await asyncio.wait_for(model_workers.forget(self.pool, worker_id=self.worker_id), _MODEL_REPORT_TIMEOUT_S)
        except Exception as err:  # noqa: BLE001 - the rows go stale and stop counting by themselves
            log.warning("could not delete the model reports of %s: %s: %s", self.worker_id, type(err).__name__, err)

    @contextlib.asynccontextmanager
    async def running(self) -> AsyncIterator[None]:
        """Around Worker.run: the first report is made before the worker polls, so the gateway knows the
        models of every worker that may take a generation."""
        self.start(reported=await self.report_once())
        try:
            yield
        finally:
            await self.stop()


def _generation(client: Client, settings: Settings, pool: asyncpg.Pool) -> Worker:
    """The GPU-pinned worker of the design card: it loads its local model once, at start, and reports
    its models' states while it runs (a Temporal worker plugin ties the reporter to Worker.run, so
    `specmill worker generation` and an in-process worker both report)."""
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
        task_queue=settings.queue(GENERATION),
        workflows=[GenerationWorkflow],
        activities=served(GENERATION, acts),
        max_concurrent_activities=settings.worker_slots(GENERATION),
        plugins=[SimplePlugin("specmill.model_reports", run_context=ModelReporter(pool, manager).running)],
    )


def _training(client: Client, settings: Settings, pool: asyncpg.Pool) -> Worker:
    """tree_transformers' training runs (workflows/training.py): CPU-bound, one at a time by default."""
    from infra.training import REPORT_S
    from workflows.training import TrainTreeWorkflow

    acts = TrainingActivities(pool, settings)
    return Worker(
        client,
        task_queue=settings.queue(TRAINING),
        workflows=[TrainTreeWorkflow],
        activities=served(TRAINING, acts),
        max_concurrent_activities=settings.worker_slots(TRAINING),
        # each heartbeat's (phase, step, loss) reaches the server, where `specmill models train-tree` reads it
        max_heartbeat_throttle_interval=timedelta(seconds=REPORT_S),
    )


QUEUES: dict[str, QueueDef] = {
    q.name: q
    for q in [
        QueueDef(ORCHESTRATOR, _orchestrator, ProjectActivities),
        QueueDef(SPEC_REGISTRY, _spec_registry, PipelineActivities),
        QueueDef(KNOWLEDGE, _knowledge, KnowledgeActivities),
        QueueDef(GENERATION, _generation, GenerationActivities),
        QueueDef(INTEGRATION, _integration, PipelineActivities),
        QueueDef(TRAINING, _training, TrainingActivities),
    ]
}
