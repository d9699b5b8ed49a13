"""Authentication, token exchange, JWT attacks, Supabase tokens, revocation, rate limiting and RBAC,
all through the real gateway app (real Postgres, real Temporal), with no mocks.

Supabase-issued tokens are exercised against a *local stand-in* for Supabase's JWKS endpoint: a
tiny HTTP server on 127.0.0.1 started by these tests, serving the public half of an RSA key they
generate. No request leaves the machine and no real Supabase project is involved; what is tested
is that the gateway fetches a JWKS over HTTP and verifies RS256 tokens against it, as it would
against `https://<ref>.supabase.co/auth/v1/.well-known/jwks.json`.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import http.server
import json
import secrets
import threading
import time
import uuid
from dataclasses import dataclass

import httpx
import pytest
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from jose import jwe

from models.common import Role
from store.tenants import create_api_key, create_tenant, revoke_api_key
from store.users import create_user
from tests.conftest import wait_for

# --- helpers: hand-built tokens (so the tests do not trust the library under test) ------------


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _segment(obj: dict) -> str:
    return b64url(json.dumps(obj, separators=(",", ":")).encode())


def sign_hs256(claims: dict, secret: str | bytes, *, header: dict | None = None) -> str:
    head = {"alg": "HS256", "typ": "JWT", **(header or {})}
    signing_input = f"{_segment(head)}.{_segment(claims)}"
    key = secret.encode() if isinstance(secret, str) else secret
    return f"{signing_input}.{b64url(hmac.new(key, signing_input.encode(), hashlib.sha256).digest())}"


def sign_rs256(claims: dict, private_key: rsa.RSAPrivateKey, *, kid: str) -> str:
    signing_input = f"{_segment({'alg': 'RS256', 'typ': 'JWT', 'kid': kid})}.{_segment(claims)}"
    sig = private_key.sign(signing_input.encode(), padding.PKCS1v15(), hashes.SHA256())
    return f"{signing_input}.{b64url(sig)}"


def unverified_claims(token: str) -> dict:
    payload = token.split(".")[1]
    return json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def local_claims(settings, tenant, *, role: str = "owner", **over) -> dict:
    """Claims of a token specmill itself would issue from the tenant's owner key."""
    now = int(time.time())
    claims = {
        "sub": str(tenant.user_id),
        "tenant_id": str(tenant.tenant_id),
        "role": role,
        "key_id": str(tenant.key_id) if tenant.key_id else None,
        "aud": settings.jwt_audience,
        "iss": settings.jwt_issuer,
        "iat": now,
        "nbf": now,
        "exp": now + 300,
    }
    claims.update(over)
    return {k: v for k, v in claims.items() if v is not None}


def assert_401(resp: httpx.Response) -> None:
    assert resp.status_code == 401, resp.text
    body = resp.json()
    assert isinstance(body.get("detail"), str) and body["detail"], body
    assert "traceback" not in resp.text.lower()


async def exchange(api, api_key: str) -> str:
    resp = await api.post("/auth/token", headers={"X-API-Key": api_key})
    assert resp.status_code == 200, resp.text
    return resp.json()["access_token"]


async def owner_key_id(api, tenant) -> uuid.UUID:
    resp = await api.get("/api/keys", headers=tenant.headers)
    assert resp.status_code == 200, resp.text
    (owner,) = [k for k in resp.json()["items"] if k["role"] == "owner"]
    return uuid.UUID(owner["id"])


# --- API keys, token exchange, /auth/me ------------------------------------------------------------


async def test_api_key_authenticates_and_me_says_who(api, tenant):
    resp = await api.get("/auth/me", headers=tenant.headers)
    assert resp.status_code == 200, resp.text
    me = resp.json()
    assert me["tenant_id"] == str(tenant.tenant_id)
    assert me["user_id"] == str(tenant.user_id)
    assert me["role"] == "owner"
    assert me["auth"] == "api_key"
    assert me["key_id"] == str(await owner_key_id(api, tenant))
    assert (await api.get("/api/projects", headers=tenant.headers)).status_code == 200


@pytest.mark.parametrize(
    "headers",
    [
        {},
        {"X-API-Key": "sm_deadbeef_not-a-real-key"},
        {"X-API-Key": "no-prefix"},
        {"X-API-Key": "sm_" + "x" * 300},
        {"Authorization": "Basic dXNlcjpwYXNz"},
        {"Authorization": "Bearer"},
        {"Authorization": "Bearer   "},
    ],
    ids=["none", "unknown-key", "no-prefix", "huge-key", "basic-auth", "bearer-empty", "bearer-blank"],
)
async def test_missing_or_unknown_credentials_are_401(api, headers):
    assert_401(await api.get("/auth/me", headers=headers))
    assert_401(await api.get("/api/projects", headers=headers))


@pytest.mark.parametrize("how", ["header", "body"])
async def test_token_exchange_gives_a_jwt_that_works_as_bearer(api, stack, tenant, how):
    kwargs = {"headers": tenant.headers} if how == "header" else {"json": {"api_key": tenant.api_key}}
    resp = await api.post("/auth/token", **kwargs)
    assert resp.status_code == 200, resp.text
    body = resp.json()
    assert body["token_type"] == "bearer"
    assert body["expires_in"] == stack.settings.jwt_ttl_seconds
    token = body["access_token"]
    claims = unverified_claims(token)
    assert claims["exp"] - claims["iat"] == stack.settings.jwt_ttl_seconds
    assert claims["aud"] == stack.settings.jwt_audience and claims["iss"] == stack.settings.jwt_issuer

    me = await api.get("/auth/me", headers=bearer(token))
    assert me.status_code == 200, me.text
    assert me.json()["tenant_id"] == str(tenant.tenant_id)
    assert me.json()["user_id"] == str(tenant.user_id)
    assert me.json()["role"] == "owner"
    assert me.json()["auth"] == "jwt"
    assert me.json()["key_id"] == str(await owner_key_id(api, tenant))
    assert (await api.get("/api/projects", headers=bearer(token))).status_code == 200


async def test_token_exchange_refuses_bad_keys(api, tenant):
    assert_401(await api.post("/auth/token"))
    assert_401(await api.post("/auth/token", json={}))
    assert_401(await api.post("/auth/token", json={"api_key": "sm_nope_nope"}))
    assert_401(await api.post("/auth/token", headers={"X-API-Key": tenant.api_key + "x"}))
    # A JWT is not an API key: it cannot be exchanged for another (longer-lived) JWT.
    token = await exchange(api, tenant.api_key)
    assert_401(await api.post("/auth/token", json={"api_key": token}))
    # Unknown fields are refused, not silently dropped.
    resp = await api.post("/auth/token", json={"api_key": tenant.api_key, "role": "owner"})
    assert resp.status_code == 422 and "detail" in resp.json()


async def test_jwt_keeps_the_role_of_its_key(api, pool, tenant):
    viewer = await create_api_key(pool, tenant_id=tenant.tenant_id, role=Role.viewer)
    token = await exchange(api, viewer.api_key)
    assert unverified_claims(token)["role"] == "viewer"
    assert (await api.get("/api/projects", headers=bearer(token))).status_code == 200
    resp = await api.post("/api/projects", json={"name": "nope"}, headers=bearer(token))
    assert resp.status_code == 403 and "detail" in resp.json()


# --- JWT attacks ------------------------------------------------------------------------------------


async def test_hand_built_token_is_accepted(api, stack, tenant):
    """The control for the attacks below: the harness mints tokens the gateway accepts, so each
    rejection is caused by the one thing an attack changes."""
    token = sign_hs256(local_claims(stack.settings, tenant), stack.settings.jwt_secret)
    resp = await api.get("/auth/me", headers=bearer(token))
    assert resp.status_code == 200, resp.text
    assert resp.json()["tenant_id"] == str(tenant.tenant_id)


def _jwe(settings, tenant) -> str:
    key = hashlib.sha256(settings.jwt_secret.encode()).digest()
    token = jwe.encrypt(json.dumps(local_claims(settings, tenant)), key, algorithm="dir", encryption="A256GCM")
    return token.decode() if isinstance(token, bytes) else token


def _alg_none(settings, tenant, alg: str = "none") -> str:
    return f"{_segment({'alg': alg, 'typ': 'JWT'})}.{_segment(local_claims(settings, tenant))}."


ATTACKS = {
    "expired": lambda s, t: sign_hs256(
        local_claims(s, t, iat=int(time.time()) - 3600, nbf=int(time.time()) - 3600, exp=int(time.time()) - 120),
        s.jwt_secret,
    ),
    "alg-none": lambda s, t: _alg_none(s, t),
    "alg-None": lambda s, t: _alg_none(s, t, "None"),
    "alg-none-signed": lambda s, t: sign_hs256(local_claims(s, t), s.jwt_secret, header={"alg": "none"}),
    "wrong-secret": lambda s, t: sign_hs256(local_claims(s, t), secrets.token_urlsafe(32)),
    "empty-secret": lambda s, t: sign_hs256(local_claims(s, t), ""),
    "wrong-audience": lambda s, t: sign_hs256(local_claims(s, t, aud="someone-else"), s.jwt_secret),
    "no-audience": lambda s, t: sign_hs256(local_claims(s, t, aud=None), s.jwt_secret),
    "wrong-issuer": lambda s, t: sign_hs256(local_claims(s, t, iss="evil"), s.jwt_secret),
    "no-issuer": lambda s, t: sign_hs256(local_claims(s, t, iss=None), s.jwt_secret),
    "no-exp": lambda s, t: sign_hs256(local_claims(s, t, exp=None), s.jwt_secret),
    "not-yet-valid": lambda s, t: sign_hs256(local_claims(s, t, nbf=int(time.time()) + 3600), s.jwt_secret),
    "no-sub": lambda s, t: sign_hs256(local_claims(s, t, sub=None), s.jwt_secret),
    "no-tenant": lambda s, t: sign_hs256(local_claims(s, t, tenant_id=None), s.jwt_secret),
    "bad-role": lambda s, t: sign_hs256(local_claims(s, t, role="superuser"), s.jwt_secret),
    "jwe-5-part": _jwe,
    "garbage": lambda s, t: "garbage",
    "three-dots-garbage": lambda s, t: "a.b.c",
    "empty-parts": lambda s, t: "..",
    "non-json-header": lambda s, t: f"{b64url(b'not json')}.{_segment(local_claims(s, t))}.{b64url(b'sig')}",
}


@pytest.mark.parametrize("attack", list(ATTACKS))
async def test_jwt_attack_is_401_with_json_detail(api, stack, tenant, attack):
    token = ATTACKS[attack](stack.settings, tenant)
    assert_401(await api.get("/auth/me", headers=bearer(token)))
    resp = await api.get("/api/projects", headers=bearer(token))
    assert_401(resp)
    assert resp.headers.get("www-authenticate") == "Bearer"


async def test_internal_gateway_token_is_not_accepted_at_the_gateway(api, stack, tenant):
    """A token for backend services (audience specmill-internal) must not work as a user token."""
    token = sign_hs256(local_claims(stack.settings, tenant, aud="specmill-internal"), stack.settings.jwt_secret)
    assert_401(await api.get("/auth/me", headers=bearer(token)))


async def test_tampered_payload_is_401(api, pool, tenant, other_tenant):
    viewer = await create_api_key(pool, tenant_id=tenant.tenant_id, role=Role.viewer)
    token = await exchange(api, viewer.api_key)
    head, payload, sig = token.split(".")
    for change in ({"role": "owner"}, {"tenant_id": str(other_tenant.tenant_id)}, {"exp": int(time.time()) + 10**6}):
        forged = f"{head}.{_segment({**unverified_claims(token), **change})}.{sig}"
        assert_401(await api.get("/auth/me", headers=bearer(forged)))
    flipped = sig[:-2] + ("A" if sig[-2] != "A" else "B") + sig[-1]
    assert_401(await api.get("/auth/me", headers=bearer(f"{head}.{payload}.{flipped}")))
    assert (await api.get("/auth/me", headers=bearer(token))).status_code == 200  # the original still works


# --- Supabase tokens, via a local stand-in for Supabase's JWKS endpoint -----------------------------


@dataclass
class Jwks:
    url: str
    private_key: rsa.RSAPrivateKey
    kid: str
    public_pem: str
    hits: list


@pytest.fixture(scope="module")
def jwks_server():
    """A local HTTP server standing in for Supabase's `/.well-known/jwks.json`; nothing remote is used."""
    private_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    numbers = private_key.public_key().public_numbers()
    kid = f"test-{uuid.uuid4().hex[:8]}"
    jwk = {
        "kty": "RSA",
        "kid": kid,
        "alg": "RS256",
        "use": "sig",
        "n": b64url(numbers.n.to_bytes((numbers.n.bit_length() + 7) // 8, "big")),
        "e": b64url(numbers.e.to_bytes((numbers.e.bit_length() + 7) // 8, "big")),
    }
    body = json.dumps({"keys": [jwk]}).encode()
    hits: list[str] = []

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            hits.append(self.path)
            if self.path != "/auth/v1/.well-known/jwks.json":
                self.send_error(404)
                return
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    pem = (
        private_key.public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        .decode()
    )
    try:
        yield Jwks(
            f"http://127.0.0.1:{server.server_address[1]}/auth/v1/.well-known/jwks.json", private_key, kid, pem, hits
        )
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)


SUPABASE_ISSUER = "https://test-ref.supabase.co/auth/v1"  # the issuer is configurable: any string works
SUPABASE_SECRET = secrets.token_urlsafe(32)


def supabase_claims(tenant=None, *, role: str = "editor", app_metadata: dict | None = None, **over) -> dict:
    now = int(time.time())
    meta = (
        app_metadata
        if app_metadata is not None
        else {"provider": "email", "tenant_id": str(tenant.tenant_id), "role": role}
    )
    claims = {
        "sub": str(uuid.uuid4()),
        "aud": "authenticated",
        "iss": SUPABASE_ISSUER,
        "role": "authenticated",
        "email": "someone@example.com",
        "iat": now,
        "exp": now + 300,
        "app_metadata": meta,
        "user_metadata": {},
    }
    claims.update(over)
    return {k: v for k, v in claims.items() if v is not None}


async def link(pool, tenant, claims: dict, role: str = "editor"):
    """Our user for the token's Supabase subject: tenant and role come from this row, not the token."""
    return await create_user(pool, tenant_id=tenant.tenant_id, role=Role(role), supabase_sub=claims["sub"])


@pytest.fixture
def supabase_settings(stack, jwks_server):
    return stack.with_(
        supabase_jwt_secret=SUPABASE_SECRET, supabase_jwks_url=jwks_server.url, supabase_jwt_issuer=SUPABASE_ISSUER
    )


async def test_supabase_hs256_token_is_accepted(make_app, supabase_settings, pool, tenant):
    claims = supabase_claims(tenant, role="editor")
    user = await link(pool, tenant, claims, "editor")
    async for client in make_app(supabase_settings):
        resp = await client.get("/auth/me", headers=bearer(sign_hs256(claims, SUPABASE_SECRET)))
        assert resp.status_code == 200, resp.text
        me = resp.json()
        assert me == {
            "tenant_id": str(tenant.tenant_id),
            "user_id": str(user.id),
            "role": "editor",
            "auth": "supabase",
            "key_id": None,
        }
        token = sign_hs256(claims, SUPABASE_SECRET)
        assert (await client.get("/api/projects", headers=bearer(token))).status_code == 200
        resp = await client.post(
            "/api/templates", headers=bearer(token), json={"name": "x", "version": "1", "schema": {"type": "object"}}
        )
        assert resp.status_code == 403, resp.text  # an editor from Supabase is still just an editor


async def test_supabase_rs256_token_via_jwks_is_accepted(make_app, supabase_settings, jwks_server, pool, tenant):
    claims = supabase_claims(tenant, role="admin")
    user = await link(pool, tenant, claims, "admin")
    before = len(jwks_server.hits)
    async for client in make_app(supabase_settings):
        token = sign_rs256(claims, jwks_server.private_key, kid=jwks_server.kid)
        resp = await client.get("/auth/me", headers=bearer(token))
        assert resp.status_code == 200, resp.text
        assert resp.json()["tenant_id"] == str(tenant.tenant_id)
        assert resp.json()["user_id"] == str(user.id)
        assert resp.json()["role"] == "admin" and resp.json()["auth"] == "supabase"
        for _ in range(3):
            assert (await client.get("/api/templates", headers=bearer(token))).status_code == 200
    assert len(jwks_server.hits) - before == 1, jwks_server.hits  # fetched once, then cached


async def test_supabase_issuer_is_configurable(make_app, stack, jwks_server, pool, tenant):
    issuer = f"http://127.0.0.1:54321/auth/v1/{uuid.uuid4().hex[:6]}"
    settings = stack.with_(supabase_jwks_url=jwks_server.url, supabase_jwt_issuer=issuer)
    claims = supabase_claims(tenant)
    await link(pool, tenant, claims)
    async for client in make_app(settings):
        good = sign_rs256(claims | {"iss": issuer}, jwks_server.private_key, kid=jwks_server.kid)
        assert (await client.get("/auth/me", headers=bearer(good))).status_code == 200
        default = sign_rs256(claims, jwks_server.private_key, kid=jwks_server.kid)
        assert_401(await client.get("/auth/me", headers=bearer(default)))


async def test_supabase_not_configured_refuses_supabase_tokens(api, jwks_server, tenant):
    token = sign_rs256(supabase_claims(tenant), jwks_server.private_key, kid=jwks_server.kid)
    assert_401(await api.get("/auth/me", headers=bearer(token)))
    assert_401(await api.get("/auth/me", headers=bearer(sign_hs256(supabase_claims(tenant), SUPABASE_SECRET))))


def _other_rsa_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


# Tokens without app_metadata.tenant_id (a self-service user's: tests/test_supabase_signin.py): the tenant
# is the one the subject is linked to in our database, never one the token names elsewhere (`o`, the
# other tenant, in user_metadata or at the top level), and the role is our row's, never the token's.
NO_TENANT_CLAIM = {
    "no-app-metadata": lambda t, o, j: sign_hs256(
        {k: v for k, v in supabase_claims(t).items() if k != "app_metadata"}, SUPABASE_SECRET
    ),
    "null-app-metadata": lambda t, o, j: sign_hs256(supabase_claims(t) | {"app_metadata": None}, SUPABASE_SECRET),
    "app-metadata-without-tenant": lambda t, o, j: sign_hs256(
        supabase_claims(t, app_metadata={"provider": "email", "role": "owner"}), SUPABASE_SECRET
    ),
    "tenant-only-in-user-metadata": lambda t, o, j: sign_hs256(
        supabase_claims(
            t, app_metadata={"provider": "email"}, user_metadata={"tenant_id": str(o.tenant_id), "role": "owner"}
        ),
        SUPABASE_SECRET,
    ),
    "tenant-only-top-level": lambda t, o, j: sign_hs256(
        supabase_claims(t, app_metadata={"provider": "email"}, tenant_id=str(o.tenant_id)), SUPABASE_SECRET
    ),
    "rs256-without-tenant": lambda t, o, j: sign_rs256(
        supabase_claims(t, app_metadata={"provider": "email", "role": "owner"}), j.private_key, kid=j.kid
    ),
}


@pytest.mark.parametrize("case", list(NO_TENANT_CLAIM))
async def test_supabase_token_without_a_tenant_claim_is_its_subjects_tenant(
    make_app, supabase_settings, jwks_server, pool, tenant, other_tenant, case
):
    token = NO_TENANT_CLAIM[case](tenant, other_tenant, jwks_server)
    async for client in make_app(supabase_settings):
        assert_401(await client.get("/auth/me", headers=bearer(token)))  # a subject linked nowhere
        user = await link(pool, tenant, unverified_claims(token), "viewer")
        resp = await client.get("/auth/me", headers=bearer(token))
        assert resp.status_code == 200, resp.text
        assert resp.json() == {
            "tenant_id": str(tenant.tenant_id),
            "user_id": str(user.id),
            "role": "viewer",
            "auth": "supabase",
            "key_id": None,
        }
        assert_401(await client.get("/auth/me", headers={**bearer(token), "X-Tenant-ID": str(other_tenant.tenant_id)}))


SUPABASE_REJECTS = {
    "app-metadata-tenant-not-a-uuid": lambda t, j: sign_hs256(
        supabase_claims(t, app_metadata={"provider": "email", "tenant_id": "not-a-uuid"}), SUPABASE_SECRET
    ),
    "hs256-wrong-secret": lambda t, j: sign_hs256(supabase_claims(t), secrets.token_urlsafe(32)),
    "hs256-wrong-audience": lambda t, j: sign_hs256(supabase_claims(t, aud="anon"), SUPABASE_SECRET),
    "hs256-expired": lambda t, j: sign_hs256(supabase_claims(t, exp=int(time.time()) - 120), SUPABASE_SECRET),
    "rs256-wrong-audience": lambda t, j: sign_rs256(supabase_claims(t, aud="specmill"), j.private_key, kid=j.kid),
    "rs256-no-exp": lambda t, j: sign_rs256(supabase_claims(t, exp=None), j.private_key, kid=j.kid),
    "rs256-expired": lambda t, j: sign_rs256(supabase_claims(t, exp=int(time.time()) - 120), j.private_key, kid=j.kid),
    "rs256-other-key-same-kid": lambda t, j: sign_rs256(supabase_claims(t), _other_rsa_key(), kid=j.kid),
    "rs256-unknown-kid": lambda t, j: sign_rs256(supabase_claims(t), j.private_key, kid="unknown"),
    "hs256-with-public-key-as-secret": lambda t, j: sign_hs256(supabase_claims(t), j.public_pem, header={"kid": j.kid}),
}


@pytest.mark.parametrize("case", list(SUPABASE_REJECTS))
async def test_bad_supabase_token_is_401(make_app, supabase_settings, jwks_server, pool, tenant, case):
    token = SUPABASE_REJECTS[case](tenant, jwks_server)
    await link(pool, tenant, unverified_claims(token))  # a linked subject: the rejection is the case's own
    async for client in make_app(supabase_settings):
        assert_401(await client.get("/auth/me", headers=bearer(token)))
        assert_401(await client.get("/api/projects", headers=bearer(token)))


@pytest.mark.parametrize("issuer", ["supabase", "specmill"])
async def test_hs256_signed_with_the_jwks_public_key_is_401(make_app, stack, jwks_server, pool, tenant, issuer):
    """Algorithm confusion: with only a JWKS configured (no Supabase HS256 secret), an HS256 token whose
    HMAC secret is the PEM of the public key must not verify, whichever issuer it claims."""
    settings = stack.with_(supabase_jwks_url=jwks_server.url, supabase_jwt_issuer=SUPABASE_ISSUER)
    claims = supabase_claims(tenant, role="owner") if issuer == "supabase" else local_claims(stack.settings, tenant)
    if issuer == "supabase":
        await link(pool, tenant, claims, "owner")
    async for client in make_app(settings):
        control = sign_rs256(claims, jwks_server.private_key, kid=jwks_server.kid)
        if issuer == "supabase":  # the same claims, properly signed, are accepted
            assert (await client.get("/auth/me", headers=bearer(control))).status_code == 200
        for secret in (jwks_server.public_pem, jwks_server.public_pem.encode().strip()):
            token = sign_hs256(claims, secret, header={"kid": jwks_server.kid})
            assert_401(await client.get("/auth/me", headers=bearer(token)))
            assert_401(await client.get("/api/templates", headers=bearer(token)))


async def test_jwks_is_fetched_on_first_use_whatever_the_monotonic_clock_says(jwks_server):
    """A fresh verifier has never fetched: its first look must fetch, even when the process's monotonic
    clock is still below the cache TTL (a fresh container) -- a huge TTL stands in for that here."""
    from api.security.jwt import JwksVerifier

    verifier = JwksVerifier(
        jwks_server.url, audience="authenticated", issuer=SUPABASE_ISSUER, max_lifetime=86400, skew=30, ttl=1e12
    )
    before = len(jwks_server.hits)
    await verifier._refresh()
    assert len(jwks_server.hits) == before + 1
    token = sign_rs256(
        supabase_claims(app_metadata={"tenant_id": str(uuid.uuid4()), "role": "viewer"}),
        jwks_server.private_key,
        kid=jwks_server.kid,
    )
    assert (await verifier.verify(token))["aud"] == "authenticated"
    assert len(jwks_server.hits) == before + 1  # cached


# --- revocation -------------------------------------------------------------------------------------


async def test_revoking_via_api_kills_the_key_and_its_jwt_at_once(api, tenant):
    resp = await api.post("/api/keys", json={"role": "editor", "name": "ci"}, headers=tenant.headers)
    assert resp.status_code == 201, resp.text
    created = resp.json()
    headers = {"X-API-Key": created["api_key"]}
    token = await exchange(api, created["api_key"])
    assert (await api.get("/api/projects", headers=headers)).status_code == 200
    assert (await api.get("/api/projects", headers=bearer(token))).status_code == 200

    resp = await api.delete(f"/api/keys/{created['id']}", headers=tenant.headers)
    assert resp.status_code == 200, resp.text
    assert resp.json()["revoked_at"] is not None

    assert_401(await api.get("/api/projects", headers=headers))
    assert_401(await api.get("/auth/me", headers=headers))
    assert_401(await api.get("/api/projects", headers=bearer(token)))
    assert_401(await api.post("/auth/token", headers=headers))
    # the owner key that revoked it is untouched
    assert (await api.get("/api/projects", headers=tenant.headers)).status_code == 200
    listed = {k["id"]: k for k in (await api.get("/api/keys", headers=tenant.headers)).json()["items"]}
    assert listed[created["id"]]["revoked_at"] is not None
    assert "api_key" not in listed[created["id"]] and "key_hash" not in listed[created["id"]]


async def test_revoking_via_store_kills_the_key_within_a_second_and_its_jwt_at_once(api, pool, tenant):
    """Another process's revocation (the CLI's) reaches the gateway's cache of API-key lookups by NOTIFY,
    within a second (api/security/keycache.py); a token's key is read on every request."""
    created = await create_api_key(pool, tenant_id=tenant.tenant_id, role=Role.viewer)
    token = await exchange(api, created.api_key)
    assert (await api.get("/auth/me", headers=bearer(token))).status_code == 200
    await revoke_api_key(pool, tenant_id=tenant.tenant_id, key_id=created.id)
    assert_401(await api.get("/auth/me", headers=bearer(token)))
    await wait_for(lambda: _refused(api, {"X-API-Key": created.api_key}), timeout=1)
    assert_401(await api.get("/auth/me", headers={"X-API-Key": created.api_key}))


async def test_revoking_the_owner_key_kills_tokens_minted_from_it(api, pool, new_tenant):
    tenant = await new_tenant("rev")
    token = await exchange(api, tenant.api_key)
    key_id = await owner_key_id(api, tenant)
    await revoke_api_key(pool, tenant_id=tenant.tenant_id, key_id=key_id)
    assert_401(await api.get("/api/projects", headers=bearer(token)))
    await wait_for(lambda: _refused(api, tenant.headers), timeout=1)  # the key itself: within a second
    assert_401(await api.get("/api/projects", headers=tenant.headers))


async def _refused(client, headers: dict[str, str]) -> bool:
    return (await client.get("/api/projects", headers=headers)).status_code == 401


async def test_forged_key_id_in_a_valid_token_is_401(api, stack, tenant):
    """A token naming an API key that does not exist (or belongs to no one) is not live."""
    token = sign_hs256(local_claims(stack.settings, tenant, key_id=str(uuid.uuid4())), stack.settings.jwt_secret)
    assert_401(await api.get("/auth/me", headers=bearer(token)))
    assert_401(await api.get("/api/projects", headers=bearer(token)))


async def test_other_tenants_key_cannot_be_revoked(api, pool, tenant, other_tenant):
    victim = await create_api_key(pool, tenant_id=other_tenant.tenant_id, role=Role.editor)
    resp = await api.delete(f"/api/keys/{victim.id}", headers=tenant.headers)
    assert resp.status_code == 404 and "detail" in resp.json()
    assert (await api.get("/auth/me", headers={"X-API-Key": victim.api_key})).status_code == 200


# --- rate limiting ----------------------------------------------------------------------------------


def _rate_headers(resp: httpx.Response) -> tuple[int, int, int]:
    return (
        int(resp.headers["X-RateLimit-Limit"]),
        int(resp.headers["X-RateLimit-Remaining"]),
        int(resp.headers["X-RateLimit-Reset"]),
    )


async def test_successful_responses_carry_rate_limit_headers(api, stack, tenant):
    resp = await api.get("/api/projects", headers=tenant.headers)
    assert resp.status_code == 200
    limit, remaining, reset = _rate_headers(resp)
    assert limit == 10000 and 0 <= remaining < limit
    assert time.time() - 5 <= reset <= time.time() + 120


async def test_fourth_request_in_a_minute_is_429(make_app, stack, pool, tenant, other_tenant):
    async for client in make_app(stack.with_(rate_limit="3/minute")):
        for expected_remaining in (2, 1, 0):
            resp = await client.get("/api/projects", headers=tenant.headers)
            assert resp.status_code == 200, resp.text
            limit, remaining, reset = _rate_headers(resp)
            assert (limit, remaining) == (3, expected_remaining)
            assert time.time() - 5 <= reset <= time.time() + 65

        resp = await client.get("/api/projects", headers=tenant.headers)
        assert resp.status_code == 429, resp.text
        assert "detail" in resp.json()
        retry_after = int(resp.headers["Retry-After"])
        assert 1 <= retry_after <= 60
        limit, remaining, reset = _rate_headers(resp)
        assert (limit, remaining) == (3, 0)
        assert reset >= time.time() - 1
        # Still limited on other routes: the budget is the key's, not the route's.
        assert (await client.get("/api/templates", headers=tenant.headers)).status_code == 429

        # Another tenant is not limited.
        resp = await client.get("/api/projects", headers=other_tenant.headers)
        assert resp.status_code == 200
        assert _rate_headers(resp)[:2] == (3, 2)

        # Another key of the same tenant has its own budget.
        second = await create_api_key(pool, tenant_id=tenant.tenant_id, role=Role.viewer)
        assert (await client.get("/api/projects", headers={"X-API-Key": second.api_key})).status_code == 200

        # A JWT minted from the limited key shares that key's budget.
        token = await exchange(client, tenant.api_key)
        assert (await client.get("/api/projects", headers=bearer(token))).status_code == 429


async def test_token_endpoint_limits_failures_per_client_not_successes(make_app, stack, tenant):
    """POST /auth/token is a brute-force target: failed lookups have a budget per client address
    (AUTH_RATE_LIMIT); successful exchanges do not spend it, so a working key is never locked out.
    (tests/security/test_limits.py has the rest: key prefixes, proxies, Redis.)"""
    async for client in make_app(stack.with_(auth_rate_limit="2/minute")):
        assert (await client.post("/auth/token", headers=tenant.headers)).status_code == 200
        wrong = "sm_00000000_" + "x" * 43
        for _ in range(2):
            assert_401(await client.post("/auth/token", json={"api_key": wrong}))
        resp = await client.post("/auth/token", json={"api_key": wrong})
        assert resp.status_code == 429, resp.text
        assert "detail" in resp.json() and 1 <= int(resp.headers["Retry-After"]) <= 60
        # the key that works keeps working, for tokens and for the API
        assert (await client.post("/auth/token", headers=tenant.headers)).status_code == 200
        assert (await client.get("/api/projects", headers=tenant.headers)).status_code == 200


# --- RBAC -------------------------------------------------------------------------------------------


@dataclass
class World:
    keys: dict[str, str]  # role -> API key
    key_ids: dict[str, uuid.UUID]
    template: str
    project: str
    tenant_id: uuid.UUID


@pytest.fixture(scope="module")
async def world(api, pool) -> World:
    created = await create_tenant(pool, name=f"rbac-{uuid.uuid4().hex[:6]}")
    keys = {"owner": created.api_key}
    key_ids: dict[str, uuid.UUID] = {}
    for role in (Role.viewer, Role.editor, Role.admin):
        k = await create_api_key(pool, tenant_id=created.tenant_id, role=role)
        keys[role.value], key_ids[role.value] = k.api_key, k.id
    owner = {"X-API-Key": created.api_key}
    resp = await api.post(
        "/api/templates",
        headers=owner,
        json={
            "name": "rbac",
            "version": "1.0.0",
            "schema": {"type": "object", "properties": {"x": {"type": "integer"}}},
        },
    )
    assert resp.status_code == 201, resp.text
    template = resp.json()["id"]
    resp = await api.post("/api/projects", headers=owner, json={"name": "rbac"})
    assert resp.status_code == 201, resp.text
    return World(keys, key_ids, template, resp.json()["id"], created.tenant_id)


def _body(method: str, path: str, w: World) -> dict | None:
    tag = uuid.uuid4().hex[:8]
    if method == "POST":
        return {
            "/api/projects": {"name": f"p-{tag}"},
            "/api/templates": {"name": f"t-{tag}", "version": "1.0.0", "schema": {"type": "object"}},
            "/api/instances": {"template_id": w.template, "project_id": w.project, "values": {"x": 1}},
            "/api/tasks": {"project_id": w.project, "service": "spec_registry", "task_type": "rbac.check"},
        }[path]
    if method == "PUT":
        return {"description": f"d-{tag}"}
    return None


RBAC = [
    # viewer reads everything, writes nothing
    ("viewer", "GET", "/api/templates", 200),
    ("viewer", "GET", "/api/templates/{template}", 200),
    ("viewer", "GET", "/api/instances", 200),
    ("viewer", "GET", "/api/projects", 200),
    ("viewer", "GET", "/api/projects/{project}", 200),
    ("viewer", "GET", "/api/tasks", 200),
    ("viewer", "POST", "/api/projects", 403),
    ("viewer", "PUT", "/api/projects/{project}", 403),
    ("viewer", "POST", "/api/instances", 403),
    ("viewer", "POST", "/api/tasks", 403),
    ("viewer", "POST", "/api/templates", 403),
    # editor writes projects, instances and tasks, not templates
    ("editor", "GET", "/api/templates", 200),
    ("editor", "POST", "/api/projects", 201),
    ("editor", "PUT", "/api/projects/{project}", 200),
    ("editor", "POST", "/api/instances", 201),
    ("editor", "POST", "/api/tasks", 201),
    ("editor", "POST", "/api/templates", 403),
    ("editor", "PUT", "/api/templates/{template}", 403),
    ("editor", "DELETE", "/api/templates/{template}", 403),
    # admin manages templates (and writes the rest)
    ("admin", "POST", "/api/templates", 201),
    ("admin", "PUT", "/api/templates/{template}", 200),
    ("admin", "POST", "/api/projects", 201),
    ("admin", "POST", "/api/tasks", 201),
    # listing API keys is an admin's business
    ("viewer", "GET", "/api/keys", 403),
    ("editor", "GET", "/api/keys", 403),
    ("admin", "GET", "/api/keys", 200),
    # owner does everything
    ("owner", "POST", "/api/templates", 201),
    ("owner", "POST", "/api/projects", 201),
    ("owner", "GET", "/api/tasks", 200),
]


@pytest.mark.parametrize(
    ("role", "method", "path", "expected"), RBAC, ids=[f"{r}-{m}-{p.removeprefix('/api/')}-{e}" for r, m, p, e in RBAC]
)
async def test_rbac_matrix(api, world, role, method, path, expected):
    url = path.format(template=world.template, project=world.project)
    body = _body(method, path, world)
    resp = await api.request(
        method, url, headers={"X-API-Key": world.keys[role]}, **({"json": body} if body is not None else {})
    )
    assert resp.status_code == expected, resp.text
    assert resp.headers["content-type"].startswith("application/json")
    if expected == 403:
        assert role in resp.json()["detail"]
    if method == "POST" and expected == 403 and path == "/api/templates":  # nothing was created
        listed = await api.get(
            "/api/templates", params={"name": body["name"]}, headers={"X-API-Key": world.keys["owner"]}
        )
        assert listed.json()["items"] == []


KEY_RULES = [
    ("viewer", "viewer", 403),
    ("editor", "viewer", 403),
    ("editor", "editor", 403),
    ("admin", "viewer", 201),
    ("admin", "editor", 201),
    ("admin", "admin", 403),
    ("admin", "owner", 403),
    ("owner", "viewer", 201),
    ("owner", "admin", 201),
    ("owner", "owner", 201),
]


@pytest.mark.parametrize(
    ("caller", "new_role", "expected"), KEY_RULES, ids=[f"{c}-makes-{n}-{e}" for c, n, e in KEY_RULES]
)
async def test_who_may_create_which_key(api, world, caller, new_role, expected):
    resp = await api.post("/api/keys", json={"role": new_role}, headers={"X-API-Key": world.keys[caller]})
    assert resp.status_code == expected, resp.text
    if expected != 201:
        assert "detail" in resp.json()
        return
    created = resp.json()
    assert created["role"] == new_role and created["tenant_id"] == str(world.tenant_id)
    me = await api.get("/auth/me", headers={"X-API-Key": created["api_key"]})
    assert me.status_code == 200 and me.json()["role"] == new_role
    assert me.json()["tenant_id"] == str(world.tenant_id)


REVOKE_RULES = [
    ("editor", "viewer", 403),
    ("admin", "owner", 403),
    ("admin", "admin", 403),
    ("admin", "editor", 200),
    ("owner", "admin", 200),
]


@pytest.mark.parametrize(
    ("caller", "target", "expected"), REVOKE_RULES, ids=[f"{c}-revokes-{t}-{e}" for c, t, e in REVOKE_RULES]
)
async def test_who_may_revoke_which_key(api, pool, world, caller, target, expected):
    victim = await create_api_key(pool, tenant_id=world.tenant_id, role=Role(target))
    resp = await api.delete(f"/api/keys/{victim.id}", headers={"X-API-Key": world.keys[caller]})
    assert resp.status_code == expected, resp.text
    still = await api.get("/auth/me", headers={"X-API-Key": victim.api_key})
    assert still.status_code == (200 if expected == 403 else 401)
