"""How the console reads and writes: through the gateway's own API, in process (httpx over ASGI), with the
session's bearer token. Every page therefore gets exactly the API's answers, its validation, its RBAC
(a viewer's forced write is the API's 403) and its tenant isolation (another tenant's id is its 404);
each call counts against the tenant's rate limit like any other."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import httpx
from fastapi import Request

from api.console.session import Session


class ApiError(Exception):
    """An answer of the API that is not a success: its status and its JSON body."""

    def __init__(self, status: int, body: Any) -> None:
        super().__init__(f"{status}: {body}")
        self.status, self.body = status, body

    @property
    def detail(self) -> str:
        detail = self.body.get("detail") if isinstance(self.body, dict) else None
        if isinstance(detail, str):
            return detail
        if isinstance(detail, list):  # pydantic's list of errors
            return "; ".join(str(e.get("msg", e)) if isinstance(e, dict) else str(e) for e in detail)
        return f"the API answered {self.status}"


def _client(request: Request) -> httpx.AsyncClient:
    res = request.app.state.resources
    client = res.console_client
    if client is None:  # one per process: the transport calls this app directly
        client = res.console_client = httpx.AsyncClient(
            transport=httpx.ASGITransport(app=request.app), base_url="http://console.internal", timeout=60
        )
    return client


@dataclass
class Api:
    request: Request
    session: Session

    async def call(self, method: str, path: str, *, params: dict | None = None, json: Any = None) -> Any:
        headers = {"Authorization": f"Bearer {self.session.token}"}
        request_id = self.request.headers.get("x-request-id")
        if request_id:
            headers["X-Request-ID"] = request_id
        params = {k: v for k, v in (params or {}).items() if v is not None}
        resp = await _client(self.request).request(method, path, params=params, json=json, headers=headers)
        if resp.status_code >= 400:
            try:
                body = resp.json()
            except ValueError:
                body = {"detail": resp.text[:300]}
            raise ApiError(resp.status_code, body)
        if resp.status_code == 204 or not resp.content:
            return None
        if resp.headers.get("content-type", "").startswith("application/json"):
            return resp.json()
        return resp

    async def get(self, path: str, **params: Any) -> Any:
        return await self.call("GET", path, params=params)

    async def post(self, path: str, json: Any = None) -> Any:
        return await self.call("POST", path, json=json)

    async def put(self, path: str, json: Any = None) -> Any:
        return await self.call("PUT", path, json=json)

    async def delete(self, path: str) -> Any:
        return await self.call("DELETE", path)
