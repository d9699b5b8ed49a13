"""Tenants' provider API keys: write-only API, encrypted at rest, admins only, one tenant's alone."""

from __future__ import annotations

import secrets
import stat
from collections.abc import AsyncIterator

import asyncpg
import httpx
import pytest
from asgi_lifespan import LifespanManager

from api.app import create_app
from api.routes import providers
from api.services import SERVICES
from infra.embedded import GENERATED_SECRETS, ensure_env_file
from models.common import Role
from models.providers import Provider
from models.settings import Settings
from store import provider_keys
from store.db import plain_tx, tenant_tx
from store.tenants import create_api_key

SECRET = "test-provider-keys-secret-" + secrets.token_urlsafe(8)
OPENAI_KEY = "sk-proj-" + secrets.token_urlsafe(30)


async def _client(settings: Settings) -> AsyncIterator[httpx.AsyncClient]:
    """The gateway as `make run` serves /api/providers (in process, with the service that owns it);
    the other services are pointed elsewhere, so that this app loads no embedder."""
    owner = next((name for name, svc in SERVICES.items() if providers.router in svc.routers), None)
    far = {svc.url_setting: "http://127.0.0.1:9" for name, svc in SERVICES.items() if name != owner}
    app = create_app(settings.model_copy(update=far))
    async with LifespanManager(app) as manager:
        transport = httpx.ASGITransport(app=manager.app)
        async with httpx.AsyncClient(transport=transport, base_url="http://specmill.test") as client:
            yield client


@pytest.fixture
async def client(stack) -> AsyncIterator[httpx.AsyncClient]:
    async for c in _client(stack.with_(provider_keys_secret=SECRET, openai_api_key="sk-platform")):
        yield c


def _by_provider(listing: list[dict]) -> dict[str, dict]:
    return {item["provider"]: item for item in listing}


async def test_write_only_and_encrypted_at_rest(client, pool, tenant):
    put = await client.put("/api/providers/openai/key", json={"api_key": OPENAI_KEY}, headers=tenant.headers)
    assert put.status_code == 200, put.text
    body = put.json()
    assert set(body) == {"provider", "key_hint", "created_at", "updated_at"}
    assert body["provider"] == "openai" and body["key_hint"] == OPENAI_KEY[-4:]
    assert OPENAI_KEY not in put.text

    listing = await client.get("/api/providers", headers=tenant.headers)
    assert listing.status_code == 200
    assert OPENAI_KEY not in listing.text
    assert listing.json()["next_cursor"] is None
    items = _by_provider(listing.json()["items"])
    assert set(items) == {"openai", "anthropic", "vllm"}
    assert items["openai"]["tenant_key"]["key_hint"] == OPENAI_KEY[-4:]
    assert items["openai"]["platform_key"] is True and items["openai"]["models"] == ["openai_api"]
    assert items["anthropic"]["tenant_key"] is None and items["anthropic"]["platform_key"] is False
    assert items["vllm"]["models"] == ["deepseek_8b"]

    async with tenant_tx(pool, tenant.tenant_id) as conn:
        row = await conn.fetchrow("select * from tenant_provider_keys where tenant_id = $1", tenant.tenant_id)
    assert row["ciphertext"] != OPENAI_KEY and OPENAI_KEY not in row["ciphertext"]
    assert OPENAI_KEY[8:20] not in row["ciphertext"]
    assert (
        await provider_keys.get_plaintext(pool, tenant_id=tenant.tenant_id, provider="openai", secret=SECRET)
        == OPENAI_KEY
    )
    assert (
        await provider_keys.get_plaintext(pool, tenant_id=tenant.tenant_id, provider=Provider.anthropic, secret=SECRET)
        is None
    )
    with pytest.raises(provider_keys.ProviderKeyUnreadable, match="PROVIDER_KEYS_SECRET"):
        await provider_keys.get_plaintext(pool, tenant_id=tenant.tenant_id, provider="openai", secret="another")


async def test_replace_and_delete(client, pool, tenant):
    first = (
        await client.put("/api/providers/anthropic/key", json={"api_key": "ak-first-1111"}, headers=tenant.headers)
    ).json()
    second = await client.put(
        "/api/providers/anthropic/key", json={"api_key": "ak-second-2222"}, headers=tenant.headers
    )
    assert second.status_code == 200
    assert second.json()["key_hint"] == "2222" and second.json()["created_at"] == first["created_at"]
    assert second.json()["updated_at"] >= first["updated_at"]
    assert (
        await provider_keys.get_plaintext(pool, tenant_id=tenant.tenant_id, provider="anthropic", secret=SECRET)
        == "ak-second-2222"
    )

    gone = await client.delete("/api/providers/anthropic/key", headers=tenant.headers)
    assert gone.status_code == 204
    assert (
        await provider_keys.get_plaintext(pool, tenant_id=tenant.tenant_id, provider="anthropic", secret=SECRET) is None
    )
    again = await client.delete("/api/providers/anthropic/key", headers=tenant.headers)
    assert again.status_code == 404 and "anthropic" in again.json()["detail"]


async def test_admins_only(client, pool, tenant):
    for role, allowed in ((Role.viewer, False), (Role.editor, False), (Role.admin, True)):
        key = await create_api_key(pool, tenant_id=tenant.tenant_id, role=role)
        headers = {"X-API-Key": key.api_key}
        put = await client.put("/api/providers/vllm/key", json={"api_key": f"vllm-{role.value}-key"}, headers=headers)
        listing = await client.get("/api/providers", headers=headers)
        delete = await client.delete("/api/providers/vllm/key", headers=headers)
        if allowed:
            assert (put.status_code, listing.status_code, delete.status_code) == (200, 200, 204)
        else:
            assert (put.status_code, listing.status_code, delete.status_code) == (403, 403, 403)
            assert "admin" in put.json()["detail"]
    assert (await client.get("/api/providers")).status_code == 401


async def test_other_tenant_sees_nothing(client, pool, tenant, other_tenant):
    assert (
        await client.put("/api/providers/openai/key", json={"api_key": OPENAI_KEY}, headers=tenant.headers)
    ).status_code == 200

    items = _by_provider((await client.get("/api/providers", headers=other_tenant.headers)).json()["items"])
    assert all(item["tenant_key"] is None for item in items.values())
    assert (await client.delete("/api/providers/openai/key", headers=other_tenant.headers)).status_code == 404
    assert (
        await provider_keys.get_plaintext(pool, tenant_id=other_tenant.tenant_id, provider="openai", secret=SECRET)
        is None
    )

    # Row Level Security, beneath the repository's own where clauses.
    async with tenant_tx(pool, other_tenant.tenant_id) as conn:
        assert await conn.fetchval("select count(*) from tenant_provider_keys") == 0
        with pytest.raises(asyncpg.InsufficientPrivilegeError):
            await conn.execute(
                "insert into tenant_provider_keys (tenant_id, provider, ciphertext, key_hint) "
                "values ($1, 'anthropic', 'x', 'x')",
                tenant.tenant_id,
            )
    async with tenant_tx(pool, other_tenant.tenant_id) as conn:
        await conn.execute("update tenant_provider_keys set ciphertext = 'stolen'")
        await conn.execute("delete from tenant_provider_keys")
    async with plain_tx(pool) as conn:
        assert await conn.fetchval("select count(*) from tenant_provider_keys") == 0
    assert (
        await provider_keys.get_plaintext(pool, tenant_id=tenant.tenant_id, provider="openai", secret=SECRET)
        == OPENAI_KEY
    )  # untouched


async def test_ciphertext_is_sealed_to_its_tenant_and_provider(pool, tenant, other_tenant):
    await provider_keys.set_key(
        pool, tenant_id=tenant.tenant_id, provider=Provider.openai, api_key=OPENAI_KEY, secret=SECRET
    )
    async with tenant_tx(pool, tenant.tenant_id) as conn:
        ciphertext = await conn.fetchval(
            "select ciphertext from tenant_provider_keys where tenant_id = $1", tenant.tenant_id
        )
        # a row copied to another provider of the same tenant does not decrypt
        await conn.execute(
            "insert into tenant_provider_keys (tenant_id, provider, ciphertext, key_hint) values ($1, 'vllm', $2, 'x')",
            tenant.tenant_id,
            ciphertext,
        )
    with pytest.raises(provider_keys.ProviderKeyUnreadable):
        await provider_keys.get_plaintext(pool, tenant_id=tenant.tenant_id, provider="vllm", secret=SECRET)
    with pytest.raises(provider_keys.ProviderKeyUnreadable):
        provider_keys.decrypt(SECRET, tenant_id=other_tenant.tenant_id, provider=Provider.openai, ciphertext=ciphertext)


@pytest.mark.parametrize(
    "path,body",
    [
        ("/api/providers/mistral/key", {"api_key": "a-valid-looking-key"}),  # unknown provider
        ("/api/providers/openai/key", {"api_key": ""}),
        ("/api/providers/openai/key", {"api_key": "q7z-k"}),
        ("/api/providers/openai/key", {"api_key": "has a space in it"}),
        ("/api/providers/openai/key", {"api_key": "line\nbreak-key"}),
        ("/api/providers/openai/key", {"api_key": "k" * 513}),
        ("/api/providers/openai/key", {"api_key": 12345678}),
        ("/api/providers/openai/key", {"key": "sk-misnamed-field"}),
        ("/api/providers/openai/key", {"api_key": "sk-valid-key-1", "extra": 1}),
        ("/api/providers/openai/key", None),
    ],
)
async def test_bad_input(client, tenant, path, body):
    resp = await client.put(path, json=body, headers=tenant.headers)
    assert resp.status_code == 422, resp.text
    assert "detail" in resp.json()
    if isinstance(body, dict) and isinstance(body.get("api_key"), str) and len(body["api_key"]) > 4:
        assert body["api_key"] not in resp.text  # a refused key is not echoed back either


async def test_unknown_provider_delete_and_no_secret(stack, client, tenant):
    assert (await client.delete("/api/providers/mistral/key", headers=tenant.headers)).status_code == 422
    async for no_secret in _client(stack.with_(provider_keys_secret=None)):
        resp = await no_secret.put("/api/providers/openai/key", json={"api_key": OPENAI_KEY}, headers=tenant.headers)
        assert resp.status_code == 503 and "PROVIDER_KEYS_SECRET" in resp.json()["detail"]
        assert (await no_secret.get("/api/providers", headers=tenant.headers)).status_code == 200


def test_env_file_gains_missing_secrets(tmp_path):
    env = tmp_path / "env"
    old = (
        "# generated by specmill on first start; keep it private\n"
        "JWT_SECRET=old-jwt\nEMBEDDED_PG_SUPERUSER_PASSWORD=old-su\nEMBEDDED_PG_APP_PASSWORD=old-app\n"
        "OPENAI_API_KEY=sk-mine"
    )  # an operator's own line, without a final newline
    env.write_text(old)
    env.chmod(0o600)
    assert ensure_env_file(tmp_path) == env
    text = env.read_text()
    assert text.startswith(old + "\n")
    added = [line for line in text[len(old) :].splitlines() if line and not line.startswith("#")]
    assert [line.split("=", 1)[0] for line in added] == ["INTERNAL_TOKEN_SECRET", "PROVIDER_KEYS_SECRET"]
    assert all(len(line.split("=", 1)[1]) >= 32 for line in added)
    assert stat.S_IMODE(env.stat().st_mode) == 0o600
    ensure_env_file(tmp_path)
    assert env.read_text() == text  # nothing more to add

    fresh = tmp_path / "fresh"
    written = ensure_env_file(fresh).read_text()
    assert all(f"\n{name}=" in written for name in GENERATED_SECRETS)
    assert stat.S_IMODE((fresh / "env").stat().st_mode) == 0o600
