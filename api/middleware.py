"""Pure ASGI middleware: rate-limit headers (set by the authorize dependency) on every response."""
from __future__ import annotations

from starlette.types import ASGIApp, Message, Receive, Scope, Send


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
