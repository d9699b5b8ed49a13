"""The transactional outbox: events are written on the connection of the change that caused them.

Each event has a number of its tenant's own (`tenant_seq`, the API's `seq`: a trigger assigns it from
event_counters) and its insert NOTIFYs channel `specmill_events` with the tenant id at commit
(migration 20261125000009). `EventListener` turns those notifications into wake-ups for a process's
open streams.
"""

from __future__ import annotations

import asyncio
from collections import defaultdict
from dataclasses import dataclass
from typing import Any
from uuid import UUID, uuid4

import asyncpg

from models.events import EventPayload
from store.db import returned
from store.listen import Listener

CHANNEL = "specmill_events"


async def emit(
    conn: asyncpg.Connection,
    *,
    tenant_id: UUID,
    type: str,
    payload: EventPayload,
    subject_id: UUID | None = None,
    dedup_key: str | None = None,
    run_id: UUID | None = None,
) -> bool:
    """Insert one event; with a dedup_key, a second insert of the same key is a no-op (False).

    The event's project (the `project_id` filter of /api/events) is the payload's `project_id`, when it
    has one; `run_id` is the project workflow run that emitted it (the `run_id` filter)."""
    status = await conn.execute(
        """insert into events (id, tenant_id, type, schema, subject_id, payload, dedup_key, project_id, run_id)
           values ($1, $2, $3, $4, $5, $6, $7, $8, $9)
           on conflict (dedup_key) do nothing""",
        uuid4(),
        tenant_id,
        type,
        payload.schema_name,
        subject_id,
        payload.model_dump(mode="json"),
        dedup_key,
        getattr(payload, "project_id", None),
        run_id,
    )
    return status.endswith("1")


@dataclass(frozen=True)
class EventFilter:
    """Which of a tenant's events a reader wants: these types, of this project, of this run (None: any)."""

    types: list[str] | None = None
    project_id: UUID | None = None
    run_id: UUID | None = None


async def list_events(
    conn: asyncpg.Connection, *, tenant_id: UUID, after: int, limit: int, where: EventFilter = EventFilter()
) -> list[dict[str, Any]]:
    """The tenant's events numbered above `after` (its own numbering) that match `where`, oldest first."""
    rows = await conn.fetch(
        """select tenant_seq as seq, id, type, schema, subject_id, project_id, run_id, payload, created_at
           from events
           where tenant_id = $1 and tenant_seq > $2 and ($3::text[] is null or type = any($3))
             and ($4::uuid is null or project_id = $4) and ($5::uuid is null or run_id = $5)
           order by tenant_seq limit $6""",
        tenant_id,
        after,
        where.types,
        where.project_id,
        where.run_id,
        limit,
    )
    return [dict(r) for r in rows]


async def last_seq(conn: asyncpg.Connection, *, tenant_id: UUID) -> int:
    """The tenant's newest committed event number (0: none yet): where a stream that starts at "now" begins.
    An event still being written is numbered above it (the tenant's counter row orders the commits)."""
    return returned(
        await conn.fetchval("select coalesce(max(tenant_seq), 0) from events where tenant_id = $1", tenant_id)
    )


class EventListener:
    """One dedicated connection per process LISTENing on `specmill_events` (store/listen.py); subscribers
    are woken per tenant. When the connection is lost it reconnects and wakes every subscriber, at the
    loss and again once it listens, since notifications sent meanwhile are lost: a woken stream re-reads
    the table."""

    def __init__(self, dsn: str) -> None:
        self._subs: dict[str, set[asyncio.Event]] = defaultdict(set)
        self._listener = Listener(dsn, CHANNEL, on_notify=self._notified, on_up=self._wake_all, on_down=self._wake_all)

    @property
    def connected(self) -> bool:
        return self._listener.connected

    def subscribe(self, tenant_id: UUID) -> asyncio.Event:
        self._listener.start()
        wake = asyncio.Event()
        self._subs[str(tenant_id)].add(wake)
        return wake

    def unsubscribe(self, tenant_id: UUID, wake: asyncio.Event) -> None:
        subs = self._subs.get(str(tenant_id))
        if subs is not None:
            subs.discard(wake)
            if not subs:
                del self._subs[str(tenant_id)]

    async def wait_ready(self, timeout: float) -> bool:
        """True once the first LISTEN is in place (tests; a stream does not need to wait)."""
        return await self._listener.wait_ready(timeout)

    def _notified(self, payload: str) -> None:
        for wake in self._subs.get(payload, ()):
            wake.set()

    def _wake_all(self) -> None:
        for subs in self._subs.values():
            for wake in subs:
                wake.set()

    async def close(self) -> None:
        await self._listener.close()
