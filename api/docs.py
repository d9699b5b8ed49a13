"""The API's documentation: /docs (Swagger UI) and /redoc (ReDoc) with their assets served from the
fastapi-offline wheel (no CDN, so they work with no network), and an /openapi.json that also documents
the routes the gateway forwards to services running in their own processes."""

from __future__ import annotations

from pathlib import Path

import fastapi_offline
from fastapi import APIRouter, FastAPI, Request
from fastapi.openapi.docs import get_redoc_html, get_swagger_ui_html
from fastapi.openapi.utils import get_openapi
from fastapi.responses import HTMLResponse
from fastapi.staticfiles import StaticFiles

ASSETS = Path(fastapi_offline.__file__).parent / "static"  # swagger-ui-bundle.js, swagger-ui.css, redoc, favicon
STATIC_URL = "/docs/static"  # under /docs: the docs' CSP and caching (api/middleware.py) apply to the assets too


def install(app: FastAPI, forwarded: list[APIRouter]) -> None:
    """Serve /docs and /redoc from local assets (create the app with docs_url=None, redoc_url=None), and
    document the `forwarded` routers' routes (mounted under /api by the services that serve them)."""
    app.mount(STATIC_URL, StaticFiles(directory=ASSETS), name="docs-assets")

    @app.get("/docs", include_in_schema=False)
    async def swagger_ui(request: Request) -> HTMLResponse:
        root = request.scope.get("root_path", "")
        return get_swagger_ui_html(
            openapi_url=f"{root}{app.openapi_url}",
            title=f"{app.title} - Swagger UI",
            swagger_js_url=f"{root}{STATIC_URL}/swagger-ui-bundle.js",
            swagger_css_url=f"{root}{STATIC_URL}/swagger-ui.css",
            swagger_favicon_url=f"{root}{STATIC_URL}/favicon.png",
        )

    @app.get("/redoc", include_in_schema=False)
    async def redoc(request: Request) -> HTMLResponse:
        root = request.scope.get("root_path", "")
        return get_redoc_html(
            openapi_url=f"{root}{app.openapi_url}",
            title=f"{app.title} - ReDoc",
            redoc_js_url=f"{root}{STATIC_URL}/redoc.standalone.js",
            redoc_favicon_url=f"{root}{STATIC_URL}/favicon.png",
            with_google_fonts=False,
        )

    _document(app, forwarded)


def _document(app: FastAPI, forwarded: list[APIRouter]) -> None:
    """The schema lists the app's routes in `app.state.documented_routes`' order where the app set one
    (api/app.py tries the services' routes first, and documents them after the gateway's own), and the
    `forwarded` routers' routes: the gateway answers those with one catch-all proxy route (not in the
    schema), so they are documented from the services' own routers, as if they were served here."""
    shown = APIRouter()
    for router in forwarded:
        shown.include_router(router, prefix="/api")

    def openapi() -> dict:
        if app.openapi_schema is None:
            routes = getattr(app.state, "documented_routes", None) or app.routes
            app.openapi_schema = get_openapi(
                title=app.title, version=app.version, description=app.description, routes=routes + shown.routes
            )
        return app.openapi_schema

    app.openapi = openapi
