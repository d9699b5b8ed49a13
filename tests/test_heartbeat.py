"""activities/heartbeat.py: a cancelled activity's thread stops at its next progress report."""

from __future__ import annotations

import asyncio
import threading

import pytest

from activities.heartbeat import Progress, heartbeating


async def test_a_cancelled_activity_stops_its_thread_before_the_next_model_call():
    progress, started, stopped = Progress(), threading.Event(), threading.Event()
    calls: list[int] = []
    release = threading.Event()

    def generate() -> None:  # codegen.generate's shape: a model call, then a progress report, n times
        try:
            for i in range(100):
                if i == 1:
                    started.set()
                    release.wait(10)  # the activity is cancelled during this "model call"
                calls.append(i)
                progress(i + 1)
        finally:
            stopped.set()

    task = asyncio.create_task(heartbeating(asyncio.to_thread(generate), progress))
    assert await asyncio.to_thread(started.wait, 10)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert progress.cancelled
    release.set()
    assert await asyncio.to_thread(stopped.wait, 10)
    assert calls == [0, 1]  # the call under way finished; no further one started
