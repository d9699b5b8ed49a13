"""HTTP hardening at the gateway: security headers, a 413 the client can read, paths the proxy
forwards re-quoted."""

from __future__ import annotations

import httpx
import pytest

SECURITY = {"x-content-type-options": "nosniff", "referrer-policy": "no-referrer", "x-frame-options": "DENY"}


async def test_every_answer_carries_the_security_headers(api, tenant):
    for resp in (
        await api.get("/api/templates", headers=tenant.headers),
        await api.get("/api/templates"),
        await api.get("/health"),
        await api.get("/api/projects/not-a-uuid", headers=tenant.headers),
    ):
        for name, value in SECURITY.items():
            assert resp.headers[name] == value, (resp.request.url, name)
        assert resp.headers["cache-control"] == "no-store"
        assert resp.headers["content-security-policy"].startswith("default-src 'none'")
        assert "server" not in resp.headers


async def test_the_docs_page_has_its_own_policy(api):
    for path in ("/docs", "/redoc", "/docs/static/swagger-ui-bundle.js"):
        resp = await api.get(path)
        assert resp.status_code == 200, path
        csp = resp.headers["content-security-policy"]
        assert "frame-ancestors 'none'" in csp and "script-src 'self' 'unsafe-inline';" in csp, path
        assert "http" not in csp, csp  # the assets are this server's: no CDN, no web fonts
        assert "cache-control" not in resp.headers


@pytest.mark.parametrize("streamed", [False, True])
async def test_an_oversized_body_gets_a_413_the_client_can_read(live_url, tenant, stack, streamed):
    size = stack.settings.max_body_bytes * 3
    body = b'{"name": "' + b"x" * size + b'"}'

    async def chunks():
        for i in range(0, len(body), 65536):
            yield body[i : i + 65536]

    async with httpx.AsyncClient(base_url=live_url, timeout=30) as client:  # a real socket: a reset would raise
        resp = await client.post(
            "/api/projects",
            content=chunks() if streamed else body,
            headers={**tenant.headers, "content-type": "application/json"},
        )
    assert resp.status_code == 413
    assert resp.json()["detail"] == f"request body is larger than {stack.settings.max_body_bytes} bytes"


async def test_the_next_request_after_a_413_is_served(live_url, tenant, stack):
    async with httpx.AsyncClient(base_url=live_url, timeout=30) as client:
        big = await client.post(
            "/api/projects",
            content=b"x" * (stack.settings.max_body_bytes + 1),
            headers={**tenant.headers, "content-type": "application/json"},
        )
        assert big.status_code == 413
        assert (await client.get("/api/templates", headers=tenant.headers)).status_code == 200
