"""Readiness checks: the database, Temporal, and live pollers on the task queues a service needs.

Anyone may ask whether the platform is up (a load balancer, a monitor); only an admin (any
tenant's admin or owner key or token) or the gateway's internal token sees which check failed and
the topology behind it (queues, pollers, the vector store's mode, the embedders).
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import asyncpg
import httpx
from fastapi import Request
from fastapi.responses import JSONResponse
from temporalio.api.enums.v1 import TaskQueueType
from temporalio.api.taskqueue.v1 import TaskQueue
from temporalio.api.workflowservice.v1 import DescribeTaskQueueRequest
from temporalio.client import Client

from api.security.auth import AuthError
from models.auth import Principal
from models.common import Role
from store.db import ping

POLLER_FRESH_SECONDS = 90  # a long poll lasts up to ~70 s; older pollers are gone
FORWARD_TIMEOUT_S = 15  # a service's own checks take up to 3 s each


async def check_database(pool: asyncpg.Pool) -> dict[str, Any]:
    try:
        await ping(pool, timeout=3)
        return {"ok": True}
    except (OSError, asyncpg.PostgresError, asyncio.TimeoutError) as err:
        return {"ok": False, "error": type(err).__name__}


async def check_temporal(client: Client | None) -> dict[str, Any]:
    if client is None:
        return {"ok": False, "error": "not connected"}
    try:
        ok = await asyncio.wait_for(client.service_client.check_health(), 3)
        return {"ok": bool(ok)}
    except Exception as err:  # noqa: BLE001 - any failure means "down"
        return {"ok": False, "error": type(err).__name__}


async def check_queue(client: Client | None, namespace: str, queue: str, *, workflows: bool) -> dict[str, Any]:
    """Whether workers poll `queue` (activity pollers, and workflow pollers when `workflows`)."""
    if client is None:
        return {"ok": False, "error": "Temporal not connected"}
    kinds = [TaskQueueType.TASK_QUEUE_TYPE_ACTIVITY] + ([TaskQueueType.TASK_QUEUE_TYPE_WORKFLOW] if workflows else [])
    counts = {}
    try:
        for kind in kinds:
            resp = await asyncio.wait_for(
                client.workflow_service.describe_task_queue(
                    DescribeTaskQueueRequest(
                        namespace=namespace, task_queue=TaskQueue(name=queue), task_queue_type=kind
                    )
                ),
                3,
            )
            now = time.time()
            fresh = [p for p in resp.pollers if now - p.last_access_time.ToSeconds() < POLLER_FRESH_SECONDS]
            counts["workflow" if kind == TaskQueueType.TASK_QUEUE_TYPE_WORKFLOW else "activity"] = len(fresh)
    except Exception as err:  # noqa: BLE001
        return {"ok": False, "error": type(err).__name__}
    return {"ok": all(counts.values()), "pollers": counts}


DESCRIPTION = (
    '200 `{"status": "ok"}` when everything this process needs is reachable, else 503. '
    "With an admin's X-API-Key or token (or the gateway's internal token) the answer also "
    "carries each check."
)


async def _checker(request: Request, res) -> Principal | None:
    """The caller, when it may see the checks (an admin, or the gateway's internal token); else None."""
    key, authorization = request.headers.get("x-api-key"), request.headers.get("authorization")
    if key is None and authorization is None:
        return None
    try:
        principal = await res.auth.authenticate(api_key=key, authorization=authorization)
    except AuthError:
        return None  # a bad credential gets the public answer, not a 401 a prober could use
    return principal if principal.auth == "internal" or principal.role.at_least(Role.admin) else None


async def may_see_checks(request: Request, res) -> bool:
    return await _checker(request, res) is not None


async def forward(request: Request, res, name: str, url: str) -> JSONResponse:
    """/health/<name> of a service in its own process, through the gateway: the service's own answer (its
    checks too when the caller may see them: they are asked for with an internal token naming the caller),
    or 503 naming `service:<name>` when it cannot be reached."""
    caller = await _checker(request, res)
    headers = {"authorization": f"Bearer {res.auth.issue_internal(caller)}"} if caller else {}
    try:
        resp = await res.http.get(f"{url.rstrip('/')}/health/{name}", headers=headers, timeout=FORWARD_TIMEOUT_S)
        return JSONResponse(resp.json(), status_code=resp.status_code)
    except (httpx.HTTPError, ValueError) as err:  # unreachable, or not JSON: not that service
        checks = {f"service:{name}": {"ok": False, "error": type(err).__name__}}
        return await answer(request, res, checks, service=name)


async def answer(
    request: Request, res, checks: dict[str, dict[str, Any]], *, service: str | None = None
) -> JSONResponse:
    code, body = verdict(checks)
    if not await may_see_checks(request, res):
        body = {"status": body["status"], **({"detail": "unavailable"} if code != 200 else {})}
    elif service is not None:
        body = {"service": service, **body}
    return JSONResponse(body, status_code=code)


def verdict(checks: dict[str, dict[str, Any]]) -> tuple[int, dict[str, Any]]:
    down = sorted(name for name, c in checks.items() if not c.get("ok"))
    body: dict[str, Any] = {"status": "ok" if not down else "unavailable", "checks": checks}
    if down:
        body["detail"] = "down: " + ", ".join(down)
    return (200 if not down else 503), body


async def check_knowledge(runtime) -> dict[str, dict[str, Any]]:
    """The vector store answers (and its shards opened), and the default embedder is loaded. Edge's shards
    say how far their index builds are."""
    s = runtime.settings
    mode = "server" if s.qdrant_url else s.vector_store
    try:
        await asyncio.wait_for(runtime.store.ping(), 3)
        store = {"ok": True, "mode": mode, "shards": runtime.store.state()}
    except Exception as err:  # noqa: BLE001 - the reason is the point of the check
        store = {"ok": False, "mode": mode, "error": f"{type(err).__name__}: {err}"[:500]}
    info = {e.name: e for e in runtime.info()}
    default = info.get(runtime.default)
    embedders = {
        "ok": bool(default and default.loaded),
        "default": runtime.default,
        "loaded": sorted(n for n, e in info.items() if e.loaded),
    }
    if default and default.error:
        embedders["error"] = default.error
    return {"vector_store": store, "embedders": embedders}
