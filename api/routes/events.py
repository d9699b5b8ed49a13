"""/api/events: the tenant's outbox after a cursor, and a live Server-Sent Events stream.

Both filter on event types, on a project (`project_id`: its own events and those of its instances,
tasks, knowledge and generations; another tenant's project, or none, is a 404) and on one run of its
workflow (`run_id`, the Temporal run id: the run's project.state_changed and spec.complete events; a
run id that is not one of the project's simply matches nothing)."""

from __future__ import annotations

import asyncio
import json
import time
from contextlib import asynccontextmanager
from datetime import timezone
from typing import Annotated, Any
from uuid import UUID, uuid4

import anyio
from fastapi import APIRouter, Header, HTTPException, Query
from fastapi.responses import StreamingResponse
from pydantic import BaseModel

from api.deps import Limit, PoolDep, PrincipalDep, Resources, ResourcesDep
from infra import metrics
from models.auth import Principal
from store import events, leases, projects
from store.db import tenant_tx
from store.events import EventFilter, EventListener

router = APIRouter(tags=["events"])

After = Annotated[
    int, Query(ge=0, le=2**62, description="Return events with seq (the tenant's own numbering) greater than this")
]
Types = Annotated[list[str] | None, Query(max_length=20, description="Only these event types")]
ProjectId = Annotated[
    UUID | None, Query(description="Only the events of this project (and of its instances, tasks, generations)")
]
RunId = Annotated[
    UUID | None,
    Query(description="Only the events of this run of the project's workflow (its Temporal run id)"),
]


class EventOut(BaseModel):
    seq: int
    id: str
    type: str
    schema_name: str
    subject_id: str | None
    project_id: str | None = None
    run_id: str | None = None
    payload: dict[str, Any]
    created_at: str


class EventPage(BaseModel):
    items: list[EventOut]
    next_cursor: int


def _out(row: dict[str, Any]) -> EventOut:
    return EventOut(
        seq=row["seq"],
        id=str(row["id"]),
        type=row["type"],
        schema_name=row["schema"],
        subject_id=str(row["subject_id"]) if row["subject_id"] else None,
        project_id=str(row["project_id"]) if row["project_id"] else None,
        run_id=str(row["run_id"]) if row["run_id"] else None,
        payload=row["payload"],
        created_at=row["created_at"].replace(tzinfo=timezone.utc).isoformat(),
    )


async def _filter(pool, p: Principal, types: list[str] | None, project_id: UUID | None, run_id: UUID | None):
    """The filter of a request; a project that is not the tenant's is a 404 (NotFound)."""
    if project_id is not None:
        await projects.get_project(pool, tenant_id=p.tenant_id, project_id=project_id)
    return EventFilter(types=types, project_id=project_id, run_id=run_id)


@router.get("/events", response_model=EventPage, responses={404: {"description": "project_id is not a project"}})
async def list_events(
    pool: PoolDep,
    p: PrincipalDep,
    after: After = 0,
    limit: Limit = 50,
    type: Types = None,
    project_id: ProjectId = None,
    run_id: RunId = None,
):
    """The tenant's events after `after`, oldest first. `project_id`: the project's own events and those of
    its instances, tasks, knowledge and generations (404 when it is not the tenant's project). `run_id`:
    the events of one run of the project's workflow (its state changes and spec.complete); a run id that
    is not one of the project's matches nothing (an empty page, not an error)."""
    where = await _filter(pool, p, type, project_id, run_id)
    async with tenant_tx(pool, p.tenant_id) as conn:
        rows = await events.list_events(conn, tenant_id=p.tenant_id, after=after, limit=limit, where=where)
    items = [_out(r) for r in rows]
    return EventPage(items=items, next_cursor=items[-1].seq if items else after)


MAX_CURSOR = 2**62
LEASE_TTL_S = 90.0  # a stream renews its lease when it wakes and RENEW_S has passed since the last time
RENEW_S = 30.0


def _cursor(last_event_id: str | None, after: int | None) -> int | None:
    """Last-Event-ID (a reconnecting EventSource sends the last `id` it saw) wins over `after`, and is
    bounded like it: an integer 0..2**62, else 422. None: neither was given (the stream starts at now)."""
    if last_event_id is None:
        return after
    text = last_event_id.strip()
    if not (text.isascii() and text.isdigit() and len(text) <= 19 and int(text) <= MAX_CURSOR):
        raise HTTPException(422, f"Last-Event-ID must be an event seq, an integer from 0 to {MAX_CURSOR}")
    return int(text)


def _listener(res: Resources) -> EventListener:
    listener = res.event_listener
    if listener is None:
        listener = res.event_listener = EventListener(res.settings.app_dsn())
    return listener


@asynccontextmanager
async def _lifespan(app):
    """The app's own lifespan (api/app.py) is outside this one: close this app's listener before the pool."""
    yield
    res: Resources | None = getattr(app.state, "resources", None)
    if res is not None and res.event_listener is not None:
        listener, res.event_listener = res.event_listener, None
        await listener.close()


router.lifespan_context = _lifespan  # merged into the app's by include_router


@router.get(
    "/events/stream",
    response_class=StreamingResponse,
    responses={
        404: {"description": "project_id is not a project"},
        429: {"description": "The tenant has MAX_EVENT_STREAMS_PER_TENANT streams open"},
    },
)
async def stream_events(
    res: ResourcesDep,
    p: PrincipalDep,
    after: Annotated[
        int | None,
        Query(ge=0, le=2**62, description="Start after this seq (0: the whole history); none: only new events"),
    ] = None,
    type: Types = None,
    project_id: ProjectId = None,
    run_id: RunId = None,
    last_event_id: Annotated[str | None, Header(include_in_schema=False)] = None,
):
    """SSE: each event's `id` is its seq (the tenant's own numbering), so a reconnecting client resumes
    with Last-Event-ID. With neither `after` nor Last-Event-ID the stream starts at "now": only events
    newer than the connection come (`after=0` replays the history first). The stream wakes on the
    events' NOTIFY; it re-reads every EVENT_STREAM_POLL_SECONDS as well (with a keep-alive comment),
    in case a notification was lost."""
    start = _cursor(last_event_id, after)
    pool, settings, holder = res.pool, res.settings, f"stream/{uuid4()}"
    where = await _filter(pool, p, type, project_id, run_id)
    if start is None:
        async with tenant_tx(pool, p.tenant_id) as conn:
            start = await events.last_seq(conn, tenant_id=p.tenant_id)
    cursor = start
    limit, ttl = settings.max_event_streams_per_tenant, max(LEASE_TTL_S, 3 * settings.event_stream_poll_seconds)
    if not await leases.acquire(
        pool, tenant_id=p.tenant_id, holder=holder, limit=limit, ttl_s=ttl, kind="event_stream"
    ):
        raise HTTPException(
            429,
            f"the tenant already has {limit} event streams open (MAX_EVENT_STREAMS_PER_TENANT)",
            headers={"Retry-After": "30"},
        )
    listener = _listener(res)
    wake = listener.subscribe(p.tenant_id)

    async def gen():
        nonlocal cursor
        renewed = time.monotonic()
        metrics.EVENT_STREAMS.inc()
        try:
            yield ": connected\n\n"
            while True:
                wake.clear()  # before reading: a NOTIFY that lands during the read wakes the next wait
                async with tenant_tx(pool, p.tenant_id) as conn:
                    rows = await events.list_events(conn, tenant_id=p.tenant_id, after=cursor, limit=100, where=where)
                for row in rows:
                    ev = _out(row)
                    cursor = ev.seq
                    yield f"id: {ev.seq}\nevent: {ev.type}\ndata: {json.dumps(ev.model_dump())}\n\n"
                if len(rows) == 100:
                    continue
                if time.monotonic() - renewed >= RENEW_S:
                    renewed = time.monotonic()
                    await leases.renew(pool, tenant_id=p.tenant_id, holder=holder, ttl_s=ttl, kind="event_stream")
                try:
                    await asyncio.wait_for(wake.wait(), settings.event_stream_poll_seconds)
                except asyncio.TimeoutError:
                    yield ": keep-alive\n\n"
        finally:
            metrics.EVENT_STREAMS.dec()
            listener.unsubscribe(p.tenant_id, wake)
            with anyio.CancelScope(shield=True):  # a disconnect cancels the stream: free its slot anyway
                await leases.release(pool, tenant_id=p.tenant_id, holder=holder, kind="event_stream")

    return StreamingResponse(
        gen(), media_type="text/event-stream", headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
    )
