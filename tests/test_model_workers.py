"""Generation workers report their models; GET /api/models and POST /api/generate go by those reports.

The session's generation worker runs in this process (tests/conftest.py) with the tiny local model
loaded, so it reports local_llama as loaded. Rows of other, made-up workers are written directly.
"""

from __future__ import annotations

import os
import socket
import uuid

import pytest

from api import availability
from codegen.manager import ModelManager
from store import model_workers
from store.db import plain_tx
from tests.conftest import wait_for
from workers.queues import ModelReporter

THIS_PROCESS = f"{socket.gethostname()}:{os.getpid()}"  # the in-process workers' ids: this, or this-N
FN = {"name": "python-function"}
VALUES = {
    "function_name": "add",
    "description": "Add two integers.",
    "signature": "def add(a: int, b: int) -> int",
    "tests": ["assert add(1, 2) == 3"],
}


async def _rows(pool, worker_id: str) -> dict[str, dict]:
    async with plain_tx(pool) as conn:
        rows = await conn.fetch(
            "select model, state, reason, details, seen_at from model_workers where worker_id = $1", worker_id
        )
    return {r["model"]: dict(r) for r in rows}


async def _session_worker(pool) -> str | None:
    """The id of the session's generation worker (in this process, tiny model loaded), once it reported."""
    async with plain_tx(pool) as conn:
        return await conn.fetchval(
            """select worker_id from model_workers where (worker_id = $1 or worker_id like $1 || '-%')
               and model = 'local_llama' and state = 'loaded' order by worker_id limit 1""",
            THIS_PROCESS,
        )


async def _models(api, tenant) -> dict[str, dict]:
    resp = await api.get("/api/models", headers=tenant.headers)
    assert resp.status_code == 200, resp.text
    return {m["name"]: m for m in resp.json()["items"]}


async def _insert(pool, worker_id: str, model: str, state: str, reason: str | None = None):
    async with plain_tx(pool) as conn:
        await conn.execute(
            """insert into model_workers (worker_id, model, state, reason, details)
               values ($1, $2, $3, $4, '{"test": true}')""",
            worker_id,
            model,
            state,
            reason,
        )


async def _delete(pool, worker_id: str) -> None:
    async with plain_tx(pool) as conn:
        await conn.execute("delete from model_workers where worker_id = $1", worker_id)


@pytest.fixture
async def fake_worker(pool):
    """A made-up worker id whose rows are removed after the test (they would change other tests' models)."""
    worker_id = f"test-{uuid.uuid4().hex[:8]}:1"
    yield worker_id
    await _delete(pool, worker_id)


async def test_the_generation_worker_reports_its_models_and_models_says_loaded(api, pool, tenant):
    session_worker = await wait_for(lambda: _session_worker(pool), timeout=20)
    rows = await _rows(pool, session_worker)
    assert set(rows) == {"local_llama", "deepseek_8b", "openai_api", "anthropic_api"}
    assert rows["local_llama"]["state"] == "loaded" and rows["local_llama"]["reason"] is None
    assert isinstance(rows["local_llama"]["details"], dict)
    assert rows["deepseek_8b"]["state"] == "unavailable" and rows["deepseek_8b"]["reason"]
    local = (await _models(api, tenant))["local_llama"]
    assert local["state"] == "loaded" and local["reason"] is None
    assert local["backend"] == "transformers"
    mine = [w for w in local["workers"] if w["worker_id"] == session_worker]
    assert len(mine) == 1 and mine[0]["state"] == "loaded" and mine[0]["seen_at"]
    # which kernels the engine runs, and how they were chosen: an admin's (the stack names LOCAL_DTYPE=fp32)
    assert local["details"]["kernel_choice"] == {"chosen": "fp32", "by": "LOCAL_DTYPE"}
    assert "kernel_choice" not in availability.public(local)["details"]


async def test_stale_reports_are_ignored(api, pool, tenant, fake_worker):
    before = (await _models(api, tenant))["deepseek_8b"]
    assert before["state"] == "unavailable"
    await _insert(pool, fake_worker, "deepseek_8b", "loaded")
    live = await _models(api, tenant)
    assert live["deepseek_8b"]["state"] == "loaded"
    async with plain_tx(pool) as conn:  # the worker went silent: its last report is older than 3 intervals
        await conn.execute(
            "update model_workers set seen_at = now() - make_interval(secs => $2) where worker_id = $1",
            fake_worker,
            model_workers.LIVE_WITHIN_S + 5,
        )
    after = await _models(api, tenant)
    assert after["deepseek_8b"]["state"] == "unavailable" and after["deepseek_8b"]["reason"] == before["reason"]
    assert all(w["worker_id"] != fake_worker for m in after.values() for w in m["workers"])


async def test_a_live_loaded_report_beats_the_gateways_unavailable(api, pool, tenant, fake_worker):
    # deepseek_8b is unavailable to the gateway (no vLLM, no GPU, no VLLM_BASE_URL) and to the session's
    # worker; a live worker that has it loaded makes it loaded.
    await _insert(pool, fake_worker, "deepseek_8b", "loaded")
    entry = (await _models(api, tenant))["deepseek_8b"]
    assert entry["state"] == "loaded" and entry["reason"] is None and entry["details"] == {"test": True}
    assert {w["worker_id"]: w["state"] for w in entry["workers"]}[fake_worker] == "loaded"
    # ... and POST /api/generate no longer refuses it with 422 (it fails later, on the worker: not here)
    resp = await api.post(
        "/api/generate",
        json={"template": FN, "values": {"function_name": "1bad"}, "model": "deepseek_8b"},
        headers=tenant.headers,
    )
    assert resp.status_code == 422, resp.text  # it got past the model check to the values check


async def test_live_workers_that_all_say_unavailable_give_their_reasons(api, pool, tenant, fake_worker):
    # deepseek_8b: the session's worker reports it unavailable; a second worker does too, with its own reason
    session_worker = await wait_for(lambda: _session_worker(pool), timeout=20)
    session_reason = (await _rows(pool, session_worker))["deepseek_8b"]["reason"]
    await _insert(pool, fake_worker, "deepseek_8b", "unavailable", "no GPU on worker 2")
    entry = (await _models(api, tenant))["deepseek_8b"]
    assert entry["state"] == "unavailable"
    assert "no GPU on worker 2" in entry["reason"] and session_reason in entry["reason"]
    assert {w["worker_id"] for w in entry["workers"]} >= {session_worker, fake_worker}
    resp = await api.post(
        "/api/generate", json={"template": FN, "values": VALUES, "model": "deepseek_8b"}, headers=tenant.headers
    )
    assert resp.status_code == 422 and "no GPU on worker 2" in resp.json()["detail"]
    assert resp.json()["model"] == "deepseek_8b" and "no GPU on worker 2" in resp.json()["reason"]


async def test_clean_shutdown_deletes_the_workers_rows(pool, stack, fake_worker):
    reporter = ModelReporter(pool, ModelManager(stack.settings), worker_id=fake_worker, interval=0.2)
    reporter.start()
    rows = await wait_for(lambda: _rows(pool, fake_worker))
    first = rows["local_llama"]["seen_at"]
    assert rows["local_llama"]["state"] == "available"  # this manager never loaded it
    await wait_for(lambda: _refreshed(pool, fake_worker, first))  # it reports again every interval
    await reporter.stop()
    assert await _rows(pool, fake_worker) == {}


async def _refreshed(pool, worker_id, since):
    rows = await _rows(pool, worker_id)
    return rows and rows["local_llama"]["seen_at"] > since


async def test_a_failing_report_is_logged_and_does_not_stop_the_reporter(stack, caplog):
    from store.db import create_pool

    broken = await create_pool(stack.settings)
    await broken.close()  # every report now fails, as with the database away
    reporter = ModelReporter(broken, ModelManager(stack.settings), worker_id="test-broken:1", interval=0.05)
    assert await reporter.report_once() is False
    reporter.start()
    await wait_for(lambda: _count(caplog, "could not report model states as test-broken:1", 3))
    assert not reporter._task.done()
    await reporter.stop()  # the delete fails too: logged, not raised
    assert "could not delete the model reports of test-broken:1" in caplog.text


async def _count(caplog, needle: str, n: int) -> bool:
    return caplog.text.count(needle) >= n
