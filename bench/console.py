"""The console's server time per page (`make bench-console`), with 1,000 projects and 10,000 events in a
tenant.

    .venv/bin/python bench/console.py [--projects 1000] [--requests 60]

One run: a private PostgreSQL in a temp dir (the wheel and functions the tests use), one tenant whose
1,000 projects are made by the store's own functions (the project row and its project.created event),
each moved through nine state changes of one run (store.projects.record_state, as the workflow records
them: 10,000 events in all). A Temporal dev server runs for the set-up (its search attributes); the pages
only read the database. The gateway app is served
in process through httpx's ASGI transport, so the time is the server's alone (no socket, no browser):
each page's own work and the API calls it makes in process.

Pages: the projects list (newest first, and filtered to the failed ones), a project (its state machine
with durations, specs, runs, files, settings), and one run (its rows). For each, `--requests` timed
requests after 5 untimed ones; p50 and p95 in ms, beside the same data's plain API read
(GET /api/projects?limit=50) measured in the same run as the baseline. The target: p50 under 50 ms.
Prints a table and writes .specmill/bench/console-<time>.json.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import secrets
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import httpx
from asgi_lifespan import LifespanManager

from api.app import create_app
from api.console.session import COOKIE
from infra import embedded
from infra.setup import prepare
from models.common import ProjectState
from models.orchestrator import ProjectCreate, RecordStateInput
from models.outcome import Outcome
from models.settings import Settings
from store import projects
from store.db import create_pool, tenant_tx
from store.tenants import create_tenant

TARGET_MS = 50.0
RUN_STATES = [
    (None, ProjectState.initialization),
    (ProjectState.initialization, ProjectState.spec_definition),
    (ProjectState.spec_definition, ProjectState.code_generation),
    (ProjectState.code_generation, ProjectState.integration),
    (ProjectState.integration, ProjectState.debugging),
    (ProjectState.debugging, ProjectState.code_generation),
    (ProjectState.code_generation, ProjectState.integration),
    (ProjectState.integration, ProjectState.debugging),
    (ProjectState.debugging, ProjectState.failed),
]


async def seed(settings: Settings, n: int) -> tuple[str, str, str]:
    """The tenant's key, and one project and run id to open."""
    pool = await create_pool(settings)
    try:
        created = await create_tenant(pool, name=f"bench-{uuid.uuid4().hex[:6]}")
        project_id = run_id = ""
        for i in range(n):
            body = ProjectCreate(name=f"project {i}", description=None)
            async with projects.creating_project(
                pool, tenant_id=created.tenant_id, user_id=created.user_id, body=body
            ) as project:
                pass
            run = str(uuid.uuid4())
            for seq, (before, after) in enumerate(RUN_STATES, start=1):
                outcome = Outcome(state=after, summary="0 of 1 passed") if after == ProjectState.failed else None
                await projects.record_state(
                    pool,
                    RecordStateInput(
                        tenant_id=created.tenant_id,
                        project_id=project.id,
                        from_state=before,
                        to_state=after,
                        seq=seq,
                        run_id=run,
                        reason="a test failed" if outcome else None,
                        outcome=outcome,
                    ),
                )
            project_id, run_id = str(project.id), run
        async with tenant_tx(pool, created.tenant_id) as conn:
            events = await conn.fetchval("select count(*) from events where tenant_id = $1", created.tenant_id)
            failed = await conn.fetchval("select count(*) from projects where state = 'failed'")
        if events < 10 * n or failed != n:
            raise SystemExit(f"the seed made {events} events and {failed} failed projects, not {10 * n} and {n}")
        print(f"seeded {n} projects and {events} events", flush=True)
        return created.api_key, project_id, run_id
    finally:
        await pool.close()


async def timed(client: httpx.AsyncClient, url: str, headers: dict, requests: int) -> dict:
    for _ in range(5):
        resp = await client.get(url, headers=headers)
        assert resp.status_code == 200, (url, resp.status_code, resp.text[:300])
    times = []
    for _ in range(requests):
        started = time.perf_counter()
        resp = await client.get(url, headers=headers)
        times.append((time.perf_counter() - started) * 1000)
        assert resp.status_code == 200
    times.sort()
    return {
        "p50_ms": round(statistics.median(times), 1),
        "p95_ms": round(times[int(0.95 * (len(times) - 1))], 1),
    }


async def measure(settings: Settings, key: str, project_id: str, run_id: str, requests: int) -> dict:
    app = create_app(settings)
    async with LifespanManager(app, startup_timeout=120) as manager:
        transport = httpx.ASGITransport(app=manager.app)
        async with httpx.AsyncClient(transport=transport, base_url="http://bench.local") as client:
            signed = await client.post("/console/sign-in", data={"api_key": key, "next": "/console/projects"})
            cookie = {"Cookie": f"{COOKIE}={signed.cookies[COOKIE]}"}
            pages = {
                "GET /api/projects?limit=50 (the baseline)": (
                    "/api/projects?limit=50&order=newest",
                    {"X-API-Key": key},
                ),
                "projects": ("/console/projects", cookie),
                "projects, failed": ("/console/projects?show=failed", cookie),
                "a project": (f"/console/projects/{project_id}", cookie),
                "a run": (f"/console/projects/{project_id}/runs/{run_id}", cookie),
            }
            return {name: await timed(client, url, headers, requests) for name, (url, headers) in pages.items()}


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--projects", type=int, default=1000)
    parser.add_argument("--requests", type=int, default=60)
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="specmill-bench-console-") as tmp:
        root = Path(tmp)
        port, temporal_port = embedded.free_port(), embedded.free_port()
        settings = Settings(
            _env_file=None,
            data_dir=root,
            embedded_postgres_port=port,
            embedded_pg_superuser_password=secrets.token_urlsafe(16),
            embedded_pg_app_password=secrets.token_urlsafe(16),
            jwt_secret=secrets.token_urlsafe(32),
            internal_token_secret=secrets.token_urlsafe(32),
            provider_keys_secret=secrets.token_urlsafe(32),
            rate_limit="100000/minute",
            temporal_address=f"127.0.0.1:{temporal_port}",
        )
        embedded.init_postgres(settings.pg_dir, settings.embedded_pg_superuser_password)
        pg = embedded.start_postgres(settings.pg_dir, port, root / "postgres.log")
        temporal = embedded.start_temporal(
            port=temporal_port, ui_port=None, db_file=None, log_file=root / "temporal.log"
        )
        try:
            asyncio.run(prepare(settings))
            key, project_id, run_id = asyncio.run(seed(settings, args.projects))
            figures = asyncio.run(measure(settings, key, project_id, run_id, args.requests))
        finally:
            embedded.stop_process(temporal)
            embedded.stop_process(pg)
    base = figures["GET /api/projects?limit=50 (the baseline)"]["p50_ms"]
    print(f"\n{args.projects} projects, {args.requests} requests per page after 5 untimed; server time in process")
    print("| page | p50 (ms) | p95 (ms) | p50 / the API read | under 50 ms at p50 |")
    print("|---|---|---|---|---|")
    for name, f in figures.items():
        met = "yes" if f["p50_ms"] < TARGET_MS else "no"
        print(f"| {name} | {f['p50_ms']} | {f['p95_ms']} | {f['p50_ms'] / base:.1f} | {met} |")
    out = ROOT / ".specmill" / "bench" / f"console-{time.strftime('%Y%m%d-%H%M%S')}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    result = {"projects": args.projects, "requests": args.requests, "pages": figures}
    out.write_text(json.dumps(result, indent=2))
    print(f"figures: {out}")
    return result


if __name__ == "__main__":
    main()
