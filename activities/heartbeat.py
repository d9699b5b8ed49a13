"""Heartbeats while a long call runs on a thread: a worker that dies is noticed within the
activity's heartbeat timeout (seconds), not its start-to-close timeout (minutes)."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable
from typing import TypeVar

from temporalio import activity

T = TypeVar("T")
EVERY_S = 5.0  # heartbeat timeouts of the activities that use this are 30 s


class Progress:
    """Where a call on a thread has got to: the thread sets it, the heartbeats report it. Once the
    activity is cancelled, the thread's next report raises, so it stops before its next model call."""

    def __init__(self) -> None:
        self.details: tuple = ()
        self.cancelled = False

    def __call__(self, *details) -> None:
        if self.cancelled:
            raise asyncio.CancelledError("the activity was cancelled")
        self.details = details


async def heartbeating(awaitable: Awaitable[T], progress: Progress | None = None, every: float = EVERY_S) -> T:
    """Await `awaitable`, heartbeating (with `progress`'s details) every `every` seconds until it is done."""
    task = asyncio.ensure_future(awaitable)
    try:
        while True:
            done, _ = await asyncio.wait({task}, timeout=every)
            if done:
                return task.result()
            activity.heartbeat(*(progress.details if progress else ()))
    except asyncio.CancelledError:
        if progress is not None:
            progress.cancelled = True
        task.cancel()
        raise
