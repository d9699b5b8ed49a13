"""A kill -9 of the knowledge worker in the middle of a bulk index loses nothing: after a restart the index
catches up, with exactly one point per snippet. The worker is a real `specmill worker knowledge` process
with a Qdrant Edge shard of its own, on task queues of its own; PostgreSQL and Temporal are the session's."""

from __future__ import annotations

import signal
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

from knowledge.edge import EdgeVectorStore
from models.knowledge import ReindexInput, ReindexResult
from store.db import tenant_tx
from store.tenants import create_tenant
from tests.conftest import child_env, wait_for

pytestmark = pytest.mark.slow
SNIPPETS = 600


def _worker(stack, prefix: str, data_dir: Path) -> subprocess.Popen:
    env = child_env(stack, data_dir, task_queue_prefix=prefix)
    log = open(data_dir / "worker.log", "ab")  # noqa: SIM115 - the child writes it; closed with the test dir
    return subprocess.Popen(
        [sys.executable, "-m", "workers.cli", "worker", "knowledge"], env=env, cwd=data_dir, stdout=log, stderr=log
    )


async def test_a_killed_knowledge_worker_loses_nothing_of_a_bulk_index(stack, pool, temporal, tmp_path):
    created = await create_tenant(pool, name="crash")
    ids = [uuid.uuid4() for _ in range(SNIPPETS)]
    async with tenant_tx(pool, created.tenant_id) as conn:
        await conn.executemany(
            """insert into code_snippets (id, tenant_id, user_id, language, content, created_at)
               values ($1, $2, $3, 'python', $4, now() at time zone 'utc')""",
            [
                (i, created.tenant_id, created.user_id, f"def f_{n}(x):\n    return x + {n}\n")
                for n, i in enumerate(ids)
            ],
        )
    prefix = f"crash-{uuid.uuid4().hex[:8]}-"
    worker = _worker(stack, prefix, tmp_path)
    try:
        handle = await temporal.start_workflow(
            "KnowledgeReindexWorkflow",
            ReindexInput(tenant_id=created.tenant_id),
            id=f"crash-reindex-{uuid.uuid4()}",
            task_queue=f"{prefix}knowledge",
            result_type=ReindexResult,
        )

        async def midway():
            try:
                return await handle.query("progress", result_type=int) > 0
            except Exception:  # noqa: BLE001 - no worker has answered yet
                return False

        await wait_for(midway, timeout=180, interval=0.2)  # at least one page indexed, more to come
        worker.send_signal(signal.SIGKILL)
        worker.wait(timeout=30)
        worker = _worker(stack, prefix, tmp_path)  # the same data dir: its shard and what it had written
        result = await handle.result()
        assert result.indexed == SNIPPETS
    finally:
        worker.send_signal(signal.SIGINT)  # a clean stop: the shard is flushed and closed
        worker.wait(timeout=60)
    store = EdgeVectorStore.open(tmp_path / "qdrant-edge")
    try:
        name = await store.ensure_collection("minilm", 384)
        assert await store.count(name, created.tenant_id) == SNIPPETS
        assert await store.point_ids(name, created.tenant_id) == set(ids)
    finally:
        await store.close()
