"""`specmill worker <queue>`: one process serving one task queue until SIGTERM/SIGINT.

With `--serve SERVICE --port N` the same process also serves that backend service's API: this is
how the knowledge worker and the knowledge API share one owner of Qdrant's local-mode store.
"""

from __future__ import annotations

import asyncio
import logging
import signal

from infra import metrics
from infra.temporal import connect_temporal_retry
from models.settings import Settings
from store.db import create_pool
from workers.queues import QUEUES

log = logging.getLogger("specmill.worker")


async def run_worker(settings: Settings, queue: str, *, serve: str | None = None, port: int | None = None) -> None:
    spec = QUEUES[queue]
    metrics.serve(settings.metrics_port, settings.metrics_host)
    pool = await create_pool(settings)
    client = await connect_temporal_retry(settings)
    worker = spec.build(client, settings, pool)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    server = _server(settings, serve, port) if serve else None
    log.info("worker for task queue %r started", settings.queue(queue))
    async with worker:
        serving = asyncio.create_task(server.serve()) if server else None
        await stop.wait()
        log.info("worker for %r shutting down", queue)
        if server is not None and serving is not None:
            server.should_exit = True
            await serving
    await pool.close()


def _server(settings: Settings, service: str, port: int | None):
    import uvicorn

    from api.app import create_app
    from api.services import SERVICES

    config = uvicorn.Config(
        create_app(settings, service=service),
        host=settings.host,
        port=port or SERVICES[service].port,
        log_level="info",
        log_config=None,  # as `specmill serve`: uvicorn's lines through the process's formatter (infra/logs.py)
        access_log=False,  # the app logs each request itself, with its ids (api/middleware.py)
        server_header=False,
        timeout_graceful_shutdown=10,
    )
    return uvicorn.Server(config)
