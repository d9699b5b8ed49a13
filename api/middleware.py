"""Pure ASGI middleware: the request id, rate-limit headers (set by the authorize dependency) and security
headers on every response, and the request body limit."""

from __future__ import annotations

import logging
import re
import time
import uuid

from starlette.datastructures import Headers
from starlette.exceptions import HTTPException
from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from infra import metrics
from infra.logs import REQUEST_ID, TENANT_ID

REFUSED = {401: "unauthenticated", 403: "forbidden", 429: "rate_limited"}

access = logging.getLogger("specmill.access")


def route_template(scope: Scope) -> str | None:
    """The matched route's path template with its prefix (`/api/projects/{project_id}`); None: no route
    matched. FastAPI keeps it in the scope (`effective_route_context`), Starlette routes as `route`."""
    context = (scope.get("fastapi") or {}).get("effective_route_context")
    path = getattr(context, "path", None)
    if isinstance(path, str):
        return path
    route = scope.get("route")
    return getattr(route, "path", None) if route is not None else None


REQUEST_ID_SHAPE = re.compile(r"^[A-Za-z0-9._\-]{1,64}$")


class AccessMiddleware:
    """Every request gets an id: the caller's X-Request-ID when it is a plain token of at most 64
    characters, else a new one. Log lines carry it (infra/logs.py) and the answer returns it. Each
    request is then counted and timed by its route template (infra/metrics.py) and logged once."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        given = Headers(scope=scope).get("x-request-id", "")
        request_id = given if REQUEST_ID_SHAPE.match(given) else uuid.uuid4().hex
        token, tenant = REQUEST_ID.set(request_id), TENANT_ID.set(None)
        started, status = time.perf_counter(), 500

        async def send_with_id(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                headers = [(k, v) for k, v in message.get("headers", []) if k.lower() != b"x-request-id"]
                message = {**message, "headers": [*headers, (b"x-request-id", request_id.encode())]}
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        finally:
            seconds = time.perf_counter() - started
            route = route_template(scope) or "unmatched"  # never the raw path: its ids are unbounded
            metrics.HTTP_REQUESTS.labels(scope["method"], route, str(status)).inc()
            metrics.HTTP_DURATION.labels(scope["method"], route).observe(seconds)
            if status in REFUSED:
                metrics.REFUSALS.labels(REFUSED[status]).inc()
            access.info(
                "%s %s %s",
                scope["method"],
                scope["path"],
                status,
                extra={
                    "method": scope["method"],
                    "path": scope["path"],  # never the query string: it may hold what a caller should not send
                    "route": route,
                    "status": status,
                    "duration_ms": round(seconds * 1000, 1),
                },
            )
            REQUEST_ID.reset(token)
            TENANT_ID.reset(tenant)


class RateHeadersMiddleware:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def send_with_headers(message: Message) -> None:
            rate = scope.get("state", {}).get("rate_headers")
            if message["type"] == "http.response.start" and rate:
                present = {name.lower() for name, _ in message.get("headers", [])}
                extra = [(k.lower().encode(), v.encode()) for k, v in rate.items() if k.lower().encode() not in present]
                message = {**message, "headers": [*message.get("headers", []), *extra]}
            await send(message)

        await self.app(scope, receive, send_with_headers)


DOCS_PATHS = ("/docs", "/redoc")  # the pages, and their assets under /docs/static (api/docs.py)
# Swagger UI and ReDoc: their bundles come from this server (no CDN, no web fonts), the page starts them
# with an inline script, ReDoc runs a worker from a blob, and nothing may frame it.
DOCS_CSP = (
    "default-src 'none'; script-src 'self' 'unsafe-inline'; style-src 'self' 'unsafe-inline'; "
    "font-src 'self' data:; img-src 'self' data:; connect-src 'self'; worker-src blob:; "
    "frame-ancestors 'none'; base-uri 'none'"
)
API_CSP = "default-src 'none'; frame-ancestors 'none'; base-uri 'none'"
CONSOLE_PATH = "/console"
# The console: its script, stylesheets and event stream from this server only; forms post only here.
CONSOLE_CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; "
    "form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
)
SECURITY_HEADERS = {
    b"x-content-type-options": b"nosniff",
    b"referrer-policy": b"no-referrer",
    b"x-frame-options": b"DENY",
    b"cross-origin-resource-policy": b"same-origin",
}


class SecurityHeadersMiddleware:
    """nosniff, no referrer, no framing and a CSP on every response (a looser one for the docs page),
    and `Cache-Control: no-store` on everything but the docs: answers carry tenants' data. The
    `server` header is uvicorn's, switched off where uvicorn is configured (workers/cli.py)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path = scope.get("path", "")
        docs = path.startswith(DOCS_PATHS)
        console = path.startswith(CONSOLE_PATH)
        csp = DOCS_CSP if docs else CONSOLE_CSP if console else API_CSP
        extra = {**SECURITY_HEADERS, b"content-security-policy": csp.encode()}
        if console:  # with no-referrer a browser sends `Origin: null` on the console's own forms
            extra[b"referrer-policy"] = b"same-origin"
        if not docs:
            extra[b"cache-control"] = b"no-store"

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = [
                    (k, v) for k, v in message.get("headers", []) if k.lower() not in extra and k.lower() != b"server"
                ]
                message = {**message, "headers": [*headers, *extra.items()]}
            await send(message)

        await self.app(scope, receive, send_with_headers)


class BodyLimitMiddleware:
    """413 with a JSON `detail` for a body over `max_bytes`: by its Content-Length up front, or as it streams.

    Not FastAPI's `max_body_size`: Starlette's limiter replaces any response to a request whose
    Content-Length is too large with a plain-text 413, so no JSON `detail` could get through.
    Before answering, up to `drain_bytes` of the body are read and dropped: a client still sending
    would otherwise see its connection reset instead of the answer. Past that the connection closes.
    """

    def __init__(self, app: ASGIApp, max_bytes: int, drain_bytes: int = 8 * 1024 * 1024) -> None:
        self.app = app
        self.max_bytes = max_bytes
        self.drain_bytes = drain_bytes

    async def _drain(self, receive: Receive, already: int = 0) -> None:
        seen = already
        while seen <= self.drain_bytes:
            message = await receive()
            if message["type"] != "http.request":
                return
            seen += len(message.get("body", b""))
            if not message.get("more_body", False):
                return

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        detail = f"request body is larger than {self.max_bytes} bytes"
        declared = Headers(scope=scope).get("content-length", "")
        if declared.isdigit() and int(declared) > self.max_bytes:
            if int(declared) <= self.drain_bytes:
                await self._drain(receive)
            await JSONResponse({"detail": detail}, status_code=413, headers={"connection": "close"})(
                scope, receive, send
            )
            return
        seen = 0

        async def limited_receive() -> Message:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.max_bytes:  # reaches the app's HTTPException handler: JSON 413
                    if message.get("more_body", False):
                        await self._drain(receive, seen)
                    raise HTTPException(413, detail, headers={"connection": "close"})
            return message

        await self.app(scope, limited_receive, send)
