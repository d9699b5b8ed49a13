"""`make demo`'s script against the gateway on a real socket (the model: the scripted OpenAI protocol fake)."""

from __future__ import annotations

import asyncio
from urllib.parse import urlparse

import httpx
import pytest

from store.tenants import create_tenant
from workers.demo import SPECS, DemoError, run_demo


async def test_the_demo_runs_a_project_from_specs_to_tested_code(stack, live_url, pool, coder, capsys):
    coder.script("add", first="def add(a, b):\n    return a - b\n", repair="def add(a, b):\n    return a + b\n")
    coder.script("is_even", first="def is_even(n):\n    return n % 2 == 0\n")
    assert {s["function_name"] for s in SPECS} == {"add", "is_even"}
    created = await create_tenant(pool, name="demo-test")
    settings = stack.settings.model_copy(update={"port": urlparse(live_url).port})
    state = await asyncio.to_thread(
        run_demo, settings, created.model_dump(mode="json"), model="openai_api", rounds=2, timeout_s=60
    )
    out = capsys.readouterr().out
    assert state == "completed"
    for line in (
        "spec.complete: 2 instance(s): add, is_even",
        "code generated for add (openai_api",
        "debug_round_1: failed",
        "debug_round_2: completed",
        "add.py  round 2  tests: passed",
        "return a + b",
        "is_even.py  round 1  tests: passed",
        "Temporal UI: http://127.0.0.1:",
        "outcome: all 2 instance(s) pass their tests (round 2)",
        # the run's progress line, each time it moved: after each round's tests
        "round 1/3  1 passed, 1 failed, 0 generated, 0 waiting of 2",
        "round 2/3  2 passed, 0 failed, 0 generated, 0 waiting of 2",
    ):
        assert line in out, out


async def test_a_demo_whose_run_fails_says_why_by_name(stack, live_url, pool, coder, capsys):
    """`specmill demo` exits 1 unless the state is completed; the outcome names the failing function."""
    coder.script("add", first="def add(a, b):\n    return a - b\n")
    coder.script("is_even", first="def is_even(n):\n    return n % 2 == 0\n")
    created = await create_tenant(pool, name="demo-fails")
    settings = stack.settings.model_copy(update={"port": urlparse(live_url).port})
    try:
        state = await asyncio.to_thread(
            run_demo, settings, created.model_dump(mode="json"), model="openai_api", rounds=0, timeout_s=60
        )
    finally:
        coder.script("add", first="def add(a, b):\n    return a - b\n", repair="def add(a, b):\n    return a + b\n")
    out = capsys.readouterr().out
    assert state == "failed"
    assert (
        "outcome: 1 of 2 instance(s) still fail after 1 round(s): add: assert add(2, 3) == 5 failed: expected 5, got -1"
        in out
    ), out
    assert "passed   is_even: its tests pass" in out, out


async def test_a_demo_with_a_model_that_cannot_serve_stops_before_making_anything(stack, live_url, pool):
    """No Anthropic key here: the demo says so, with what to do, and leaves no project behind."""
    created = await create_tenant(pool, name="demo-no-key")
    settings = stack.settings.model_copy(update={"port": urlparse(live_url).port})
    with pytest.raises(DemoError, match="anthropic_api cannot serve now: no Anthropic key: set ANTHROPIC_API_KEY"):
        await asyncio.to_thread(
            run_demo, settings, created.model_dump(mode="json"), model="anthropic_api", rounds=0, timeout_s=60
        )
    async with httpx.AsyncClient(base_url=live_url, headers={"X-API-Key": created.api_key}) as api:
        assert (await api.get("/api/projects")).json()["items"] == []
