"""Prepare a database and a Temporal namespace for specmill: idempotent, run at every start.

The embedded stack (make run), the test fixtures, the benchmark and `specmill setup` (for your own
PostgreSQL/Supabase and Temporal, or the compose file) all go through `prepare`.
"""

from __future__ import annotations

import asyncio

import asyncpg
from temporalio.service import RPCError

from infra.temporal import connect_temporal_retry, ensure_search_attributes
from models.settings import Settings
from store.migrate import apply_migrations, create_database, set_app_password
from store.templates import install_builtins


async def prepare(settings: Settings, *, temporal_wait: float = 60) -> list[str]:
    """Create the embedded database if needed, apply migrations, let `specmill_app` log in when a
    password is known, register the search attributes. Returns the migrations applied."""
    if settings.uses_embedded_postgres:
        await _create_embedded_database(settings)
    applied = await apply_migrations(settings.admin_dsn())
    conn = await asyncpg.connect(settings.admin_dsn())
    try:
        await install_builtins(conn)
    finally:
        await conn.close()
    password = settings.app_role_password or (
        settings.embedded_pg_app_password if settings.uses_embedded_postgres else None
    )
    if password:
        await set_app_password(settings.admin_dsn(), password)
    await _register_search_attributes(settings, temporal_wait)
    return applied


async def _register_search_attributes(settings: Settings, wait_seconds: float) -> None:
    """Retried until `wait_seconds`: a Temporal that just started may not serve its namespace yet."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + wait_seconds
    while True:
        try:
            client = await connect_temporal_retry(settings, max(0.0, deadline - loop.time()))
            await ensure_search_attributes(client, settings.temporal_namespace)
            return
        except (RuntimeError, RPCError):
            if loop.time() > deadline:
                raise
            await asyncio.sleep(1)


async def _create_embedded_database(settings: Settings) -> None:
    maintenance = settings.admin_dsn().rsplit("/", 1)[0] + "/postgres"
    for attempt in range(50):
        try:
            conn = await asyncpg.connect(maintenance)
            break
        except (OSError, asyncpg.CannotConnectNowError):
            if attempt == 49:
                raise
            await asyncio.sleep(0.2)
    try:
        await create_database(conn, "specmill")
    finally:
        await conn.close()
