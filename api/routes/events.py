"""/api/events: the tenant's outbox after a cursor, and a live Server-Sent Events stream."""
from __future__ import annotations

import asyncio
import json
from datetime import timezone
from typing import Annotated, Any

from fastapi import APIRouter, Header, Query, Request
from fastapi.responses import StreamingResponse
from pydantic import BaseModel

from api.deps import Limit, PoolDep, PrincipalDep
from store import events
from store.db import tenant_tx

router = APIRouter(tags=["events"])

After = Annotated[int, Query(ge=0, le=2**62, description="Return events with seq greater than this")]
Types = Annotated[list[str] | None, Query(max_length=20, description="Only these event types")]


class EventOut(BaseModel):
    seq: int
    id: str
    type: str
    schema_name: str
    subject_id: str | None
    payload: dict[str, Any]
    created_at: str


class EventPage(BaseModel):
    items: list[EventOut]
    next_cursor: int


def _out(row: dict[str, Any]) -> EventOut:
    return EventOut(seq=row["seq"], id=str(row["id"]), type=row["type"], schema_name=row["schema"],
                    subject_id=str(row["subject_id"]) if row["subject_id"] else None, payload=row["payload"],
                    created_at=row["created_at"].replace(tzinfo=timezone.utc).isoformat())


@router.get("/events", response_model=EventPage)
async def list_events(pool: PoolDep, p: PrincipalDep, after: After = 0, limit: Limit = 50, type: Types = None):
    async with tenant_tx(pool, p.tenant_id) as conn:
        rows = await events.list_events(conn, tenant_id=p.tenant_id, after=after, limit=limit, types=type)
    items = [_out(r) for r in rows]
    return EventPage(items=items, next_cursor=items[-1].seq if items else after)


@router.get("/events/stream", response_class=StreamingResponse)
async def stream_events(request: Request, pool: PoolDep, p: PrincipalDep, after: After = 0, type: Types = None,
                        last_event_id: Annotated[str | None, Header(include_in_schema=False)] = None):
    """SSE: each event's `id` is its seq, so a reconnecting client resumes with Last-Event-ID."""
    cursor = int(last_event_id) if last_event_id and last_event_id.isdigit() else after

    async def gen():
        nonlocal cursor
        yield ": connected\n\n"
        idle = 0
        while not await request.is_disconnected():
            async with tenant_tx(pool, p.tenant_id) as conn:
                rows = await events.list_events(conn, tenant_id=p.tenant_id, after=cursor, limit=100, types=type)
            for row in rows:
                ev = _out(row)
                cursor = ev.seq
                yield f"id: {ev.seq}\nevent: {ev.type}\ndata: {json.dumps(ev.model_dump())}\n\n"
            if rows:
                idle = 0
                continue
            idle += 1
            if idle % 30 == 0:
                yield ": keep-alive\n\n"
            await asyncio.sleep(0.5)

    return StreamingResponse(gen(), media_type="text/event-stream",
                             headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})
