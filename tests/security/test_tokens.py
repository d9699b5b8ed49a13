"""Tokens that cannot be forged into more, and internal tokens on their own secret.

The attacker here holds what an escape from the old, unconfined test runner gave them: the JWT secret, an editor key of
tenant A and the ids of tenant B. Every token is hand-built (tests/test_auth.py's helpers), sent through
the real gateway (real PostgreSQL, real Temporal), and every refusal is a 401 with a JSON `detail`.
"""

from __future__ import annotations

import secrets
import time
import uuid

import pytest

from api.security.auth import Authenticator
from api.security.jwt import TokenError, check_times
from models.auth import Principal
from models.common import Role
from store.tenants import create_api_key, revoke_api_key
from store.users import create_user, link_supabase_subject
from tests.test_auth import assert_401, bearer, exchange, local_claims, sign_hs256, unverified_claims

OWNER_ONLY = ("/api/keys", {"role": "admin", "name": "escalated"})  # only an owner makes admin keys


def forge(stack, claims: dict) -> str:
    return sign_hs256(claims, stack.settings.jwt_secret)


async def editor_token(api, pool, tenant) -> tuple[str, dict]:
    editor = await create_api_key(pool, tenant_id=tenant.tenant_id, role=Role.editor)
    token = await exchange(api, editor.api_key)
    return token, unverified_claims(token)


# --- key_id, role and tenant come from the key's row ------------------------------------------------


async def test_hand_built_owner_token_with_key_id_is_the_control(api, stack, tenant):
    resp = await api.get("/auth/me", headers=bearer(forge(stack, local_claims(stack.settings, tenant))))
    assert resp.status_code == 200, resp.text
    assert resp.json()["key_id"] == str(tenant.key_id) and resp.json()["role"] == "owner"


async def test_jwt_without_key_id_is_refused_even_with_the_real_secret(api, stack, tenant):
    token = forge(stack, local_claims(stack.settings, tenant, key_id=None))
    for path in ("/auth/me", "/api/projects"):
        resp = await api.get(path, headers=bearer(token))
        assert_401(resp)
        assert "key_id" in resp.json()["detail"]
    assert_401(await api.post(OWNER_ONLY[0], json=OWNER_ONLY[1], headers=bearer(token)))


@pytest.mark.parametrize("key_id", ["", "not-a-uuid", 42])
async def test_jwt_with_a_malformed_key_id_is_refused(api, stack, tenant, key_id):
    assert_401(
        await api.get("/auth/me", headers=bearer(forge(stack, local_claims(stack.settings, tenant, key_id=key_id))))
    )


async def test_owner_role_claim_on_an_editor_key_is_refused(api, stack, pool, tenant):
    """Chosen rule (api/security/auth.py): a token whose claims differ from its key's row is refused (401),
    not served at the key's role; the control shows the editor token itself gets 403 there."""
    token, claims = await editor_token(api, pool, tenant)
    path, body = OWNER_ONLY
    denied = await api.post(path, json=body, headers=bearer(token))
    assert denied.status_code == 403, denied.text
    for role in ("owner", "admin", "viewer"):
        forged = forge(stack, claims | {"role": role})
        assert_401(await api.get("/auth/me", headers=bearer(forged)))
        assert_401(await api.post(path, json=body, headers=bearer(forged)))
    keys = await api.get("/api/keys", headers=tenant.headers)
    assert not [k for k in keys.json()["items"] if k["name"] == "escalated"]


async def test_sub_of_another_user_on_a_key_is_refused(api, stack, pool, tenant):
    token, claims = await editor_token(api, pool, tenant)
    assert_401(await api.get("/auth/me", headers=bearer(forge(stack, claims | {"sub": str(tenant.user_id)}))))


async def test_other_tenant_id_with_tenant_a_key_does_not_reach_tenant_b(api, stack, pool, tenant, other_tenant):
    project = await api.post("/api/projects", json={"name": "b-secret"}, headers=other_tenant.headers)
    assert project.status_code == 201, project.text
    token, claims = await editor_token(api, pool, tenant)
    for sub in (claims["sub"], str(other_tenant.user_id)):
        forged = forge(stack, claims | {"tenant_id": str(other_tenant.tenant_id), "sub": sub})
        assert_401(await api.get("/auth/me", headers=bearer(forged)))
        assert_401(await api.get(f"/api/projects/{project.json()['id']}", headers=bearer(forged)))
        assert_401(await api.get("/api/projects", headers=bearer(forged)))
    # B's own owner key id under B's tenant id, but A's editor sub: still not a match
    forged = forge(stack, claims | {"tenant_id": str(other_tenant.tenant_id), "key_id": str(other_tenant.key_id)})
    assert_401(await api.get(f"/api/projects/{project.json()['id']}", headers=bearer(forged)))


async def test_revoked_keys_token_is_refused(api, stack, pool, tenant):
    key = await create_api_key(pool, tenant_id=tenant.tenant_id, role=Role.viewer)
    token = await exchange(api, key.api_key)
    await revoke_api_key(pool, tenant_id=tenant.tenant_id, key_id=key.id)
    assert_401(await api.get("/auth/me", headers=bearer(token)))
    fresh = forge(stack, unverified_claims(token) | {"iat": int(time.time()), "exp": int(time.time()) + 60})
    assert_401(await api.get("/auth/me", headers=bearer(fresh)))


# --- lifetimes and clocks -----------------------------------------------------------------------------


def _at(stack, tenant, *, iat_in: int = 0, lifetime: int | None = None, **over) -> str:
    now = int(time.time())
    iat = now + iat_in
    exp = iat + (lifetime if lifetime is not None else 300)
    return forge(stack, local_claims(stack.settings, tenant, iat=iat, nbf=iat, exp=exp) | over)


async def test_lifetime_up_to_the_configured_ttl_is_accepted(api, stack, tenant):
    ttl = stack.settings.jwt_ttl_seconds
    resp = await api.get("/auth/me", headers=bearer(_at(stack, tenant, lifetime=ttl)))
    assert resp.status_code == 200, resp.text


@pytest.mark.parametrize("case", ["ttl-plus-one", "ten-years", "old-iat-live-exp"])
async def test_lifetime_over_the_configured_ttl_is_refused(api, stack, tenant, case):
    ttl, now = stack.settings.jwt_ttl_seconds, int(time.time())
    token = {
        "ttl-plus-one": lambda: _at(stack, tenant, lifetime=ttl + 1),
        "ten-years": lambda: _at(stack, tenant, lifetime=10 * 365 * 86400),
        "old-iat-live-exp": lambda: _at(stack, tenant, iat_in=-2 * ttl, lifetime=2 * ttl + 60),
    }[case]()
    assert unverified_claims(token)["exp"] > now  # not refused for being expired
    resp = await api.get("/auth/me", headers=bearer(token))
    assert_401(resp)
    assert "lifetime" in resp.json()["detail"]


async def test_iat_or_nbf_within_the_skew_is_accepted(api, stack, tenant):
    skew = stack.settings.jwt_clock_skew_seconds
    assert skew == 30  # the default
    assert (await api.get("/auth/me", headers=bearer(_at(stack, tenant, iat_in=skew // 3)))).status_code == 200


@pytest.mark.parametrize("claim", ["iat", "nbf", "both"])
async def test_iat_or_nbf_in_the_future_is_refused(api, stack, tenant, claim):
    now, ahead = int(time.time()), stack.settings.jwt_clock_skew_seconds + 60
    claims = local_claims(stack.settings, tenant, iat=now, nbf=now, exp=now + 300)
    if claim in ("iat", "both"):
        claims["iat"] = now + ahead
    if claim in ("nbf", "both"):
        claims["nbf"] = now + ahead
    assert_401(await api.get("/auth/me", headers=bearer(forge(stack, claims))))
    assert_401(await api.get("/api/projects", headers=bearer(forge(stack, claims))))


@pytest.mark.parametrize("missing", ["exp", "iat"])
async def test_token_without_exp_or_iat_is_refused(api, stack, tenant, missing):
    claims = {k: v for k, v in local_claims(stack.settings, tenant).items() if k != missing}
    assert_401(await api.get("/auth/me", headers=bearer(forge(stack, claims))))


@pytest.mark.parametrize(
    "claims",
    [
        {"exp": "9999999999", "iat": 1},
        {"exp": 10, "iat": True},
        {"exp": 10, "iat": None},
        {"exp": 10.0, "iat": 1, "nbf": "0"},
    ],
)
def test_time_claims_must_be_numbers(claims):
    with pytest.raises(TokenError):
        check_times(claims, max_lifetime=10**12, skew=30, now=5)


# --- Supabase subjects map to our users ------------------------------------------------------------

SUPABASE_ISSUER = "https://tokens-test.supabase.co/auth/v1"
SUPABASE_SECRET = secrets.token_urlsafe(32)


def supabase(tenant_id, *, sub: str, role: str = "owner", lifetime: int = 300, iat_in: int = 0) -> str:
    iat = int(time.time()) + iat_in
    claims = {
        "sub": sub,
        "aud": "authenticated",
        "iss": SUPABASE_ISSUER,
        "role": "authenticated",
        "iat": iat,
        "exp": iat + lifetime,
        "app_metadata": {"tenant_id": str(tenant_id), "role": role},
    }
    return sign_hs256(claims, SUPABASE_SECRET)


@pytest.fixture
async def sb(make_app, stack):
    async for client in make_app(stack.with_(supabase_jwt_secret=SUPABASE_SECRET, supabase_jwt_issuer=SUPABASE_ISSUER)):
        yield client


async def test_supabase_subject_with_no_user_is_refused(sb, tenant):
    resp = await sb.get("/auth/me", headers=bearer(supabase(tenant.tenant_id, sub=str(uuid.uuid4()))))
    assert_401(resp)
    assert "linked" in resp.json()["detail"]


async def test_supabase_role_and_tenant_come_from_our_row(sb, pool, tenant):
    sub = str(uuid.uuid4())
    user = await create_user(pool, tenant_id=tenant.tenant_id, role=Role.viewer, supabase_sub=sub)
    token = supabase(tenant.tenant_id, sub=sub, role="owner")  # app_metadata claims owner
    me = await sb.get("/auth/me", headers=bearer(token))
    assert me.status_code == 200, me.text
    assert me.json() == {
        "tenant_id": str(tenant.tenant_id),
        "user_id": str(user.id),
        "role": "viewer",
        "auth": "supabase",
        "key_id": None,
    }
    denied = await sb.post("/api/projects", json={"name": "nope"}, headers=bearer(token))
    assert denied.status_code == 403, denied.text

    await link_supabase_subject(pool, tenant_id=tenant.tenant_id, user_id=user.id, supabase_sub=None)
    assert_401(await sb.get("/auth/me", headers=bearer(token)))  # unlinking locks them out at once


async def test_supabase_subject_of_tenant_a_naming_tenant_b_is_refused(sb, pool, tenant, other_tenant):
    sub = str(uuid.uuid4())
    await create_user(pool, tenant_id=tenant.tenant_id, role=Role.owner, supabase_sub=sub)
    assert (await sb.get("/auth/me", headers=bearer(supabase(tenant.tenant_id, sub=sub)))).status_code == 200
    assert_401(await sb.get("/api/projects", headers=bearer(supabase(other_tenant.tenant_id, sub=sub))))


async def test_supabase_lifetime_and_future_iat_are_bounded(sb, stack, pool, tenant):
    sub = str(uuid.uuid4())
    await create_user(pool, tenant_id=tenant.tenant_id, role=Role.editor, supabase_sub=sub)
    bound = stack.settings.supabase_max_token_lifetime_seconds
    assert bound == 86400  # the default
    ok = await sb.get("/auth/me", headers=bearer(supabase(tenant.tenant_id, sub=sub, lifetime=bound)))
    assert ok.status_code == 200, ok.text
    assert_401(await sb.get("/auth/me", headers=bearer(supabase(tenant.tenant_id, sub=sub, lifetime=bound + 1))))
    assert_401(await sb.get("/auth/me", headers=bearer(supabase(tenant.tenant_id, sub=sub, iat_in=3600))))


# --- internal tokens: their own secret, their own audience -------------------------------------------


@pytest.fixture
async def registry(make_app):
    """The spec registry as a service of its own: it accepts gateway tokens only."""
    async for client in make_app(service="spec-registry"):
        yield client


def internal_token(stack, pool, tenant) -> str:
    principal = Principal(
        tenant_id=tenant.tenant_id, user_id=tenant.user_id, role=Role.owner, auth="api_key", key_id=tenant.key_id
    )
    return Authenticator(stack.settings, pool).issue_internal(principal)


async def test_internal_token_works_at_a_service(registry, stack, pool, tenant):
    resp = await registry.get("/api/templates", headers=bearer(internal_token(stack, pool, tenant)))
    assert resp.status_code == 200, resp.text


async def test_user_jwt_is_refused_where_an_internal_token_is_expected(api, registry, stack, tenant):
    user_token = await exchange(api, tenant.api_key)
    assert_401(await registry.get("/api/templates", headers=bearer(user_token)))
    # the user secret with the internal audience is no internal token either
    claims = local_claims(stack.settings, tenant, aud="specmill-internal")
    assert_401(await registry.get("/api/templates", headers=bearer(forge(stack, claims))))
    assert_401(await registry.get("/api/templates", headers=tenant.headers))


async def test_internal_token_is_refused_where_a_user_jwt_is_expected(api, stack, pool, tenant):
    token = internal_token(stack, pool, tenant)
    assert_401(await api.get("/auth/me", headers=bearer(token)))
    assert_401(await api.get("/api/templates", headers=bearer(token)))
    # the internal secret with the user audience is no user token either
    claims = local_claims(stack.settings, tenant)
    assert_401(await api.get("/auth/me", headers=bearer(sign_hs256(claims, stack.settings.internal_token_secret))))


@pytest.mark.parametrize("change", ["unset", "same-as-jwt"])
def test_startup_refuses_a_missing_or_shared_internal_secret(stack, change):
    secret = None if change == "unset" else stack.settings.jwt_secret
    settings = stack.with_(internal_token_secret=secret)
    for internal_only in (False, True):
        with pytest.raises(RuntimeError, match="INTERNAL_TOKEN_SECRET"):
            Authenticator(settings, pool=None, internal_only=internal_only)
