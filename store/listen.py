"""One dedicated connection LISTENing on one channel, kept up: what a process uses to hear PostgreSQL's
NOTIFYs (store/events.py's event streams, api/security/keycache.py's revocations).

The connection is its own, never the pool's (store/db.py: pooled connections carry no LISTEN). When it
is lost the listener says so (`on_down`), reconnects (1 s, doubling to 30 s) and says so again (`on_up`)
once its LISTEN is back: notifications sent meanwhile are lost, and the owner decides what to re-read.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import cast

import asyncpg

log = logging.getLogger("specmill.listen")


class Listener:
    def __init__(
        self,
        dsn: str,
        channel: str,
        *,
        on_notify: Callable[[str], None],
        on_up: Callable[[], None] = lambda: None,
        on_down: Callable[[], None] = lambda: None,
    ) -> None:
        self._dsn, self.channel = dsn, channel
        self._on_notify, self._on_up, self._on_down = on_notify, on_up, on_down
        self._conn: asyncpg.Connection | None = None
        self._lost = asyncio.Event()
        self._ready = asyncio.Event()
        self._task: asyncio.Task | None = None

    @property
    def connected(self) -> bool:
        """The LISTEN is in place now (it was, at least, when the connection last answered)."""
        return self._conn is not None and not self._conn.is_closed()

    @property
    def server_pid(self) -> int | None:
        """The backend of the listening connection (tests end it with pg_terminate_backend)."""
        return self._conn.get_server_pid() if self.connected and self._conn is not None else None

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name=f"specmill-listen-{self.channel}")

    async def wait_ready(self, timeout: float) -> bool:
        """True once the first LISTEN is in place (tests; nobody needs to wait for it)."""
        try:
            await asyncio.wait_for(self._ready.wait(), timeout)
        except asyncio.TimeoutError:
            return False
        return True

    def _notified(self, _conn, _pid, _channel, payload: str) -> None:
        self._on_notify(payload)

    def _dropped(self, _conn) -> None:
        self._conn = None  # `connected` turns false at once, before the loop wakes
        self._on_down()
        self._lost.set()

    async def _run(self) -> None:
        delay = 1.0
        while True:
            conn: asyncpg.Connection | None = None
            try:
                conn = cast(asyncpg.Connection, await asyncpg.connect(self._dsn))  # asyncpg leaves it unannotated
                self._lost.clear()
                conn.add_termination_listener(self._dropped)
                await conn.add_listener(self.channel, self._notified)
                self._conn, delay = conn, 1.0
                self._ready.set()
                self._on_up()
                await self._lost.wait()
            except asyncio.CancelledError:
                self._conn = None
                if conn is not None and not conn.is_closed():
                    await conn.close(timeout=5)
                raise
            except (OSError, asyncio.TimeoutError, asyncpg.PostgresError, asyncpg.InterfaceError) as err:
                log.warning("listener on %s: %s; retrying in %.0f s", self.channel, err, delay)
                if conn is not None and not conn.is_closed():
                    conn.terminate()
            if self._conn is not None:  # lost without the termination callback (a failed LISTEN)
                self._conn = None
                self._on_down()
            await asyncio.sleep(delay)
            delay = min(delay * 2, 30.0)

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None
