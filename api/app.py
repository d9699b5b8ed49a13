"""The FastAPI app factory: the gateway (all services in one process by default), or one service."""

from __future__ import annotations

import asyncio
import logging
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING

import httpx
from fastapi import APIRouter, FastAPI, Request, Response
from fastapi.responses import JSONResponse
from temporalio.client import Client

from api import docs, errors, health, proxy
from api.console import router as console
from api.deps import PrincipalDep, Resources, ResourcesDep
from api.middleware import AccessMiddleware, BodyLimitMiddleware, RateHeadersMiddleware, SecurityHeadersMiddleware
from api.ratelimit import RateLimiter
from api.routes import auth, events, invitations, keys, signin
from api.security.auth import Authenticator
from api.security.gotrue import GoTrue
from api.security.keycache import KeyCache
from api.services import SERVICES, ServiceDef
from infra import metrics, tracing
from infra.temporal import connect_temporal
from models import schema_safety
from models.settings import Settings, get_settings
from store.db import create_pool

if TYPE_CHECKING:
    from knowledge.runtime import KnowledgeRuntime

log = logging.getLogger("specmill.api")


def create_app(settings: Settings | None = None, service: str | None = None) -> FastAPI:
    """`service=None`: the gateway. Otherwise one backend service, on its own, behind the gateway."""
    settings = settings or get_settings()
    if service is not None and service not in SERVICES:
        raise ValueError(f"unknown service {service!r}; one of {sorted(SERVICES)}")
    remote = {
        n: getattr(settings, s.url_setting)
        for n, s in SERVICES.items()
        if service is None and getattr(settings, s.url_setting)
    }
    local = [SERVICES[service]] if service else [s for n, s in SERVICES.items() if n not in remote]

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        pool = await create_pool(settings)
        temporal: Client | None = None
        try:
            temporal = await connect_temporal(settings, lazy=True)
        except Exception as err:  # noqa: BLE001 - a bad address/TLS setting; /health says Temporal is down
            log.warning("Temporal client not created (%s); /health will report it", err)
        keys = None
        if service is None and settings.api_key_cache_seconds > 0:
            keys = KeyCache(settings.app_dsn(), ttl_s=settings.api_key_cache_seconds)
            keys.start()  # serves nothing until its LISTEN for revocations is in place
        res = Resources(
            settings=settings,
            pool=pool,
            temporal=temporal,
            auth=Authenticator(settings, pool, internal_only=service is not None, keys=keys),
            limiter=RateLimiter(settings) if service is None else None,
            http=httpx.AsyncClient(timeout=60),
            remote=remote,
            gotrue=GoTrue(settings) if service is None and settings.supabase_sign_in else None,
        )
        try:
            if any(svc.knowledge for svc in local):
                from knowledge.runtime import get_runtime

                res.knowledge = get_runtime(settings)
                await asyncio.to_thread(res.knowledge.loaded)  # load the embedders before serving
            app.state.resources = res
            schema_safety.configure(settings)  # the validation pool's deadline and caps
            yield
        finally:
            await res.aclose()
            await pool.close()

    title = "specmill" if service is None else f"specmill {service}"
    app = FastAPI(
        title=title,
        version="0.1.0",
        lifespan=lifespan,
        description="Typed specifications in, working and tested code out. Durable on Temporal.",
        docs_url=None,  # docs.install serves them, from local assets
        redoc_url=None,
    )
    tracing.instrument_app(app)
    docs.install(app, forwarded=[r for name in remote for r in SERVICES[name].routers])
    errors.install(app)
    app.add_middleware(RateHeadersMiddleware)
    app.add_middleware(BodyLimitMiddleware, max_bytes=settings.max_body_bytes)
    app.add_middleware(SecurityHeadersMiddleware)  # every answer gets the headers, a 413 too
    app.add_middleware(AccessMiddleware)  # outermost: every line logged for a request carries its id

    # Every request tries the routes in order, so the services' come first (most requests are theirs); the
    # schema lists them in the order of the gateway's own first (api/docs.py: documented_routes).
    declared = len(app.router.routes)  # the docs' routes
    for svc in local:
        for r in svc.routers:
            app.include_router(r, prefix="/api")
        app.add_api_route(
            f"/health/{svc.name}",
            _service_health(svc),
            methods=["GET"],
            tags=["health"],
            summary=f"{svc.name} readiness",
            description=health.DESCRIPTION,
        )
    served = len(app.router.routes)
    if service is None:
        app.include_router(auth.router)
        app.include_router(signin.router)
        gateway_api = APIRouter(prefix="/api")
        gateway_api.include_router(keys.router)
        gateway_api.include_router(invitations.router)
        gateway_api.include_router(events.router)
        app.include_router(gateway_api)
    own = len(app.router.routes)
    for name, url in remote.items():
        app.add_api_route(
            f"/health/{name}",
            _forwarded_health(name, url),
            methods=["GET"],
            tags=["health"],
            summary=f"{name} readiness (the service's own answer)",
            description=health.DESCRIPTION,
        )
    if service is None:
        console.install(app)  # after the API's routes; not in the schema
    if remote:
        app.include_router(proxy.router)

    async def gateway_health(request: Request, res: ResourcesDep) -> JSONResponse:
        checks = {
            "database": await health.check_database(res.pool),
            "temporal": await health.check_temporal(res.temporal),
        }
        for svc in local:
            if svc.knowledge:
                checks.update(await health.check_knowledge(_knowledge(res)))
            for queue, wf in svc.queues:
                checks[f"workers:{queue}"] = await health.check_queue(
                    res.temporal, settings.temporal_namespace, settings.queue(queue), workflows=wf
                )
        for name, url in remote.items():
            checks[f"service:{name}"] = await _remote_health(res.http, url)
        return await health.answer(request, res, checks)

    if service is None:

        async def metrics_page(p: PrincipalDep) -> Response:
            """This process's Prometheus metrics (admins: who holds a key of this tenant learns nothing of
            the others from them: no label is an id; infra/metrics.py)."""
            return Response(metrics.exposition(), media_type="text/plain; version=0.0.4; charset=utf-8")

        # Prometheus' text format, not the API's JSON: documented in the README's operations, not the OpenAPI
        app.add_api_route("/metrics", metrics_page, methods=["GET"], include_in_schema=False)

    app.add_api_route(
        "/health", gateway_health, methods=["GET"], tags=["health"], summary="readiness", description=health.DESCRIPTION
    )
    routes = app.router.routes
    app.state.documented_routes = (
        routes[:declared] + routes[served:own] + routes[declared:served] + routes[own:]
    )  # the gateway's own routes, then the services'
    return app


def _service_health(svc: ServiceDef):
    async def service_health(request: Request, res: ResourcesDep) -> JSONResponse:
        checks = {"database": await health.check_database(res.pool)}
        if svc.knowledge:
            checks.update(await health.check_knowledge(_knowledge(res)))
        if svc.queues:
            checks["temporal"] = await health.check_temporal(res.temporal)
        for queue, wf in svc.queues:
            checks[f"workers:{queue}"] = await health.check_queue(
                res.temporal, res.settings.temporal_namespace, res.settings.queue(queue), workflows=wf
            )
        return await health.answer(request, res, checks, service=svc.name)

    return service_health


def _knowledge(res: Resources) -> KnowledgeRuntime:
    assert res.knowledge is not None  # the lifespan made it: this process serves the knowledge service
    return res.knowledge


def _forwarded_health(name: str, url: str):
    async def forwarded_health(request: Request, res: ResourcesDep) -> JSONResponse:
        return await health.forward(request, res, name, url)

    return forwarded_health


async def _remote_health(client: httpx.AsyncClient, url: str) -> dict:
    try:
        resp = await client.get(url.rstrip("/") + "/health", timeout=3)
        return {"ok": resp.status_code == 200}
    except httpx.HTTPError as err:
        return {"ok": False, "error": type(err).__name__}
