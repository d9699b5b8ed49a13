"""The gateway's forwarding of /api/* to services running as their own processes.

Authentication, RBAC and rate limiting happen here, at the gateway; the service receives a
short-lived internal token naming the caller, and accepts nothing else.
"""

from __future__ import annotations

from urllib.parse import quote

import httpx
from fastapi import APIRouter, HTTPException, Request, Response

from api.deps import PrincipalDep, ResourcesDep
from api.errors import ServiceUnavailable
from api.services import owner_of

HOP_HEADERS = {
    "host",
    "content-length",
    "connection",
    "keep-alive",
    "transfer-encoding",
    "authorization",
    "x-api-key",
    "te",
    "upgrade",
    "proxy-authorization",
}

router = APIRouter()


def _requoted(path: str) -> str:
    """The decoded path, percent-encoded again (a %00 or %2F stays one character of a segment);
    control characters are refused outright."""
    if any(ord(c) < 0x20 or ord(c) == 0x7F for c in path):
        raise HTTPException(400, "the path contains control characters")
    return quote(path, safe="/:@!$&'()*+,;=-._~")


@router.api_route("/api/{path:path}", methods=["GET", "POST", "PUT", "DELETE", "PATCH"], include_in_schema=False)
async def forward(path: str, request: Request, res: ResourcesDep, principal: PrincipalDep) -> Response:
    remote: dict[str, str] = res.extras["remote"]
    service = owner_of(request.url.path, remote)
    if service is None:
        raise HTTPException(404, "Not Found")
    client: httpx.AsyncClient = res.extras["http"]
    headers = {k: v for k, v in request.headers.items() if k.lower() not in HOP_HEADERS}
    headers["authorization"] = f"Bearer {res.auth.issue_internal(principal)}"
    try:
        upstream = await client.request(
            request.method,
            remote[service].rstrip("/") + _requoted(request.scope["path"]),
            params=request.query_params,
            content=await request.body(),
            headers=headers,
        )
    except httpx.InvalidURL as err:
        raise HTTPException(400, f"the path cannot be forwarded: {err}") from err
    except httpx.HTTPError as err:
        raise ServiceUnavailable(service) from err
    keep = {k: v for k, v in upstream.headers.items() if k.lower() not in HOP_HEADERS | {"content-encoding"}}
    return Response(upstream.content, status_code=upstream.status_code, headers=keep)
