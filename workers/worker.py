"""`specmill worker <queue>`: one process serving one task queue until SIGTERM/SIGINT."""
from __future__ import annotations

import asyncio
import logging
import signal

from models.settings import Settings
from store.db import create_pool
from store.temporal import connect_temporal
from workers.queues import QUEUES

log = logging.getLogger("specmill.worker")


async def run_worker(settings: Settings, queue: str) -> None:
    spec = QUEUES[queue]
    pool = await create_pool(settings)
    client = await _connect_with_retry(settings)
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


async def _connect_with_retry(settings: Settings, attempts: int = 60):
    for i in range(attempts):
        try:
            return await connect_temporal(settings)
        except Exception:  # noqa: BLE001 - Temporal may still be starting
            if i == attempts - 1:
                raise
            await asyncio.sleep(1)
