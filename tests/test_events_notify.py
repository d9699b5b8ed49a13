"""Events: cursors numbered per tenant, a bounded Last-Event-ID, streams that wake on
PostgreSQL NOTIFY instead of polling, and a cap on a tenant's open streams."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import httpx
import pytest

from api.app import create_app
from infra import embedded
from store.migrate import MIGRATIONS_DIR, apply_migrations
from tests.conftest import database_before, wait_for
from tests.test_registry import make_template

CURSORS_MIGRATION = "20261125000009_event_cursors_streams"


@asynccontextmanager
async def live(settings) -> AsyncIterator[tuple[str, object]]:
    """A gateway on a real socket (SSE needs one) with these settings; yields its URL and app."""
    import uvicorn

    app = create_app(settings)
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=embedded.free_port(), log_level="warning"))
    task = asyncio.create_task(server.serve())

    async def started():
        return server.started

    await wait_for(started, timeout=20, interval=0.05)
    try:
        yield f"http://127.0.0.1:{server.config.port}", app
    finally:
        server.should_exit = True
        await task


async def _events(api, t) -> list[dict]:
    resp = await api.get("/api/events", headers=t.headers)
    assert resp.status_code == 200, resp.text
    return resp.json()["items"]


async def test_seq_is_numbered_per_tenant(api, new_tenant):
    a, b = await new_tenant("a"), await new_tenant("b")
    await make_template(api, b, name="first")
    for i in range(3):
        await make_template(api, a, name=f"t{i}")
    await make_template(api, b, name="second")
    assert [e["seq"] for e in await _events(api, a)] == [1, 2, 3]
    assert [e["seq"] for e in await _events(api, b)] == [1, 2]  # a's activity cannot be read off b's numbers
    page = await api.get("/api/events", params={"after": 1}, headers=b.headers)
    assert [e["seq"] for e in page.json()["items"]] == [2] and page.json()["next_cursor"] == 2


@pytest.mark.parametrize("value", ["9" * 30, str(2**62 + 1), "-1", "abc", "1.5", "１２".encode()])
async def test_last_event_id_is_bounded_like_after(api, tenant, value):
    resp = await api.get("/api/events/stream", headers={**tenant.headers, "Last-Event-ID": value})
    assert resp.status_code == 422, resp.text
    assert "Last-Event-ID" in resp.json()["detail"]


async def _read_events(lines, count: int) -> list[dict]:
    got: list[dict] = []
    async for line in lines:
        if line.startswith("data: "):
            got.append(json.loads(line[6:]))
            if len(got) == count:
                return got
    raise AssertionError("stream ended")


async def test_stream_wakes_on_notify_and_resumes_from_last_event_id(stack, new_tenant):
    """The re-read interval is 10 minutes here, so an event that arrives in seconds came by NOTIFY.
    The events are made only once the stream's first read is done (its backlog, one event, has
    arrived): that read cannot have picked them up."""
    t = await new_tenant()
    async with live(stack.with_(event_stream_poll_seconds=600)) as (url, app):
        async with httpx.AsyncClient(base_url=url, timeout=30) as client:
            backlog = await make_template(client, t, name="zero")
            async with client.stream("GET", "/api/events/stream", params={"after": 0}, headers=t.headers) as resp:
                assert resp.status_code == 200
                lines = resp.aiter_lines()
                assert await anext(lines) == ": connected"
                replayed = await asyncio.wait_for(_read_events(lines, 1), 10)
                assert [e["subject_id"] for e in replayed] == [backlog["id"]]
                listener = app.state.resources.event_listener
                assert await listener.wait_ready(10)
                first = await make_template(client, t, name="one")
                second = await make_template(client, t, name="two")
                got = await asyncio.wait_for(_read_events(lines, 2), 10)
            assert [e["subject_id"] for e in got] == [first["id"], second["id"]]
            # a reconnecting EventSource sends the last id it saw: the stream goes on after it
            async with client.stream(
                "GET", "/api/events/stream", headers={**t.headers, "Last-Event-ID": str(got[0]["seq"])}
            ) as resp:
                again = await asyncio.wait_for(_read_events(resp.aiter_lines(), 1), 10)
            assert again[0]["seq"] == got[1]["seq"]


async def test_open_streams_are_capped_per_tenant(stack, new_tenant):
    t, other = await new_tenant(), await new_tenant()
    async with live(stack.with_(max_event_streams_per_tenant=2)) as (url, _app):
        async with httpx.AsyncClient(base_url=url, timeout=30) as client:
            open_lines = []  # an abandoned line iterator would close its connection

            async def opened(headers) -> httpx.Response:
                resp = await client.send(
                    client.build_request("GET", "/api/events/stream", headers=headers), stream=True
                )
                if resp.status_code == 200:
                    lines = resp.aiter_lines()
                    open_lines.append(lines)
                    assert await anext(lines) == ": connected"
                return resp

            streams = [await opened(t.headers) for _ in range(2)]
            assert [s.status_code for s in streams] == [200, 200]
            third = await opened(t.headers)
            await third.aread()
            assert third.status_code == 429 and "MAX_EVENT_STREAMS_PER_TENANT" in third.json()["detail"]
            theirs = await opened(other.headers)
            assert theirs.status_code == 200
            await theirs.aclose()
            await streams[0].aclose()  # a client that goes away frees its slot

            async def slot_again():
                resp = await opened(t.headers)
                if resp.status_code == 200:
                    streams[0] = resp
                    return True
                await resp.aread()
                return False

            assert await wait_for(slot_again, timeout=15)
            for s in streams:
                await s.aclose()


async def test_migration_keeps_existing_cursors_and_numbers_on_per_tenant(stack, tmp_path):
    """On a database with events from before per-tenant numbering: every row keeps its number, and
    each tenant goes on from its own highest."""
    async with database_before(stack, tmp_path, CURSORS_MIGRATION) as (dsn, conn):
        a, b = uuid.uuid4(), uuid.uuid4()
        await conn.executemany("insert into tenants (id, name) values ($1, $2)", [(a, "a"), (b, "b")])
        for tenant in (a, b, a, a, b):
            await conn.execute(
                "insert into events (id, tenant_id, type, schema, payload) values ($1, $2, 't', 's', '{}'::jsonb)",
                uuid.uuid4(),
                tenant,
            )
        old = await conn.fetch("select seq, tenant_id from events order by seq")
        assert CURSORS_MIGRATION in await apply_migrations(dsn, MIGRATIONS_DIR)
        kept = await conn.fetch("select seq, tenant_seq, tenant_id from events order by seq")
        assert [(r["seq"], r["tenant_id"]) for r in kept] == [(r["seq"], r["tenant_id"]) for r in old]
        assert all(r["tenant_seq"] == r["seq"] for r in kept)
        for tenant in (a, b):
            await conn.execute(
                "insert into events (id, tenant_id, type, schema, payload) values ($1, $2, 't', 's', '{}'::jsonb)",
                uuid.uuid4(),
                tenant,
            )
        last = {
            r["tenant_id"]: r["n"]
            for r in await conn.fetch("select tenant_id, max(tenant_seq) as n from events group by tenant_id")
        }
        top = {t: max(r["seq"] for r in old if r["tenant_id"] == t) for t in (a, b)}
        assert last == {a: top[a] + 1, b: top[b] + 1}
