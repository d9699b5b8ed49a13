"""`specmill worker <queue>`: one process serving one task queue until SIGTERM/SIGINT."""
from __future__ import annotations

import asyncio
import logging
import signal

from models.settings import Settings
from store.db import create_pool
from store.temporal import connect_temporal_retry
from workers.queues import QUEUES

log = logging.getLogger("specmill.worker")


async def run_worker(settings: Settings, queue: str) -> None:
    spec = QUEUES[queue]
    pool = await create_pool(settings)
    client = await connect_temporal_retry(settings)
    worker = spec.build(client, settings, pool)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    log.info("worker for task queue %r started", settings.queue(queue))
    async with worker:
        await stop.wait()
        log.info("worker for %r shutting down", queue)
    await pool.close()
