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
    """The decoded path (an encoded "/" is a "/" in it), checked, then percent-encoded again.

    Control characters are refused outright (400). A "." or ".." segment, literal or encoded (%2e%2e,
    ..%2f), is refused as not found: httpx would resolve it before sending, and the request would reach
    a path of the service (its /openapi.json, its detailed /health/...) other than the one the gateway
    matched and authorised. An encoded "/" is forwarded as "/": the service routes on the decoded path
    too, so both sides see the same path, and DELETE /api/knowledge/{project_id}/{key} with a key holding
    "/" (sent as %2F) keeps working (api/routes/knowledge.py)."""
    if any(ord(c) < 0x20 or ord(c) == 0x7F for c in path):
        raise HTTPException(400, "the path contains control characters")
    if any(segment in (".", "..") for segment in path.split("/")):
        raise HTTPException(404, "Not Found")
    return quote(path, safe="/:@!$&'()*+,;=-._~")


@router.api_route("/api/{path:path}", methods=["GET", "POST", "PUT", "DELETE", "PATCH"], include_in_schema=False)
async def forward(path: str, request: Request, res: ResourcesDep, principal: PrincipalDep) -> Response:
    remote = res.remote
    target = _requoted(request.scope["path"])  # refused before any service is chosen
    service = owner_of(request.url.path, remote)
    if service is None:
        raise HTTPException(404, "Not Found")
    client = res.http
    headers = {k: v for k, v in request.headers.items() if k.lower() not in HOP_HEADERS}
    headers["authorization"] = f"Bearer {res.auth.issue_internal(principal)}"
    try:
        upstream = await client.request(
            request.method,
            remote[service].rstrip("/") + target,
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
