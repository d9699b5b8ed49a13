"""Sign-up and sign-in through Supabase Auth, invitations, and the X-Tenant-ID rule, through the real
gateway app (real PostgreSQL, real Temporal) and supabase_auth's real async client.

`FakeGoTrue` below is NOT Supabase: it is a small HTTP server these tests start on 127.0.0.1 that speaks
the wire protocol of Supabase Auth (GoTrue) for the endpoints the gateway uses, `/auth/v1/signup`,
`/auth/v1/token?grant_type=password|refresh_token`, `/auth/v1/user` and `/auth/v1/logout`, with the JSON
shapes GoTrue answers (a session: access_token, token_type, expires_in, expires_at, refresh_token, user;
a user: id, aud, role, email, app_metadata, user_metadata, identities, created_at, ...) and its errors:
`{"code": "<error code>", "message": ...}` with the X-Supabase-Api-Version header when the request asks
for API version 2024-01-01 (supabase_auth always does), GoTrue's older `{"code": <status>, "error_code",
"msg"}` otherwise. Its access tokens are HS256 JWTs signed with a secret the gateway is configured with
(SUPABASE_JWT_SECRET), issued by `<fake>/auth/v1` (SUPABASE_JWT_ISSUER). Refresh tokens rotate: each
works once. No request leaves the machine and no Supabase project is involved.
"""

from __future__ import annotations

import asyncio
import http.server
import json
import secrets
import socket
import threading
import time
import uuid
from dataclasses import dataclass, field
from datetime import datetime, timezone
from urllib.parse import parse_qs, urlparse

import pytest

from models.common import Role
from store.db import tenant_tx
from store.tenants import create_api_key
from store.users import supabase_memberships
from tests.test_auth import assert_401, bearer, sign_hs256, unverified_claims

SECRET = secrets.token_urlsafe(32)
ANON_KEY = "anon-" + secrets.token_urlsafe(16)
API_VERSION = "2024-01-01"


# --- the fake of Supabase Auth's endpoints -----------------------------------------------------------


def _stamp(t: float) -> str:
    return datetime.fromtimestamp(t, timezone.utc).isoformat().replace("+00:00", "Z")


@dataclass
class FakeUser:
    id: str
    email: str
    password: str
    created_at: float
    confirmed: bool
    app_metadata: dict = field(default_factory=lambda: {"provider": "email", "providers": ["email"]})

    def json(self) -> dict:
        created = _stamp(self.created_at)
        identity = {"email": self.email, "email_verified": self.confirmed, "phone_verified": False, "sub": self.id}
        return {
            "id": self.id,
            "aud": "authenticated",
            "role": "authenticated",
            "email": self.email,
            "email_confirmed_at": created if self.confirmed else None,
            "confirmed_at": created if self.confirmed else None,
            "confirmation_sent_at": None if self.confirmed else created,
            "phone": "",
            "last_sign_in_at": created if self.confirmed else None,
            "app_metadata": self.app_metadata,
            "user_metadata": identity,
            "identities": [
                {
                    "identity_id": str(uuid.uuid5(uuid.NAMESPACE_URL, self.id)),
                    "id": self.id,
                    "user_id": self.id,
                    "identity_data": identity,
                    "provider": "email",
                    "last_sign_in_at": created,
                    "created_at": created,
                    "updated_at": created,
                    "email": self.email,
                }
            ],
            "created_at": created,
            "updated_at": created,
            "is_anonymous": False,
        }


class FakeGoTrue:
    """State and behaviour of the fake (the HTTP handler below only parses and answers)."""

    def __init__(self) -> None:
        self.url = ""  # set once the server listens: http://127.0.0.1:<port>
        self.lock = threading.Lock()
        self.users: dict[str, FakeUser] = {}  # by lower-cased email
        self.refresh: dict[str, dict] = {}  # refresh token -> {user, session, used, revoked}
        self.requests: list[tuple[str, str]] = []  # (method, path without the query)
        self.confirm_email = False  # sign-ups answer a user without a session until the email is confirmed
        self.rate_limited = False
        self.ttl = 3600

    @property
    def issuer(self) -> str:
        return f"{self.url}/auth/v1"

    def add_user(self, email: str, password: str, *, confirmed: bool = True) -> FakeUser:
        with self.lock:
            user = FakeUser(str(uuid.uuid4()), email, password, time.time(), confirmed)
            self.users[email.lower()] = user
            return user

    def signups(self) -> int:
        return sum(1 for method, path in self.requests if path == "/auth/v1/signup")

    def _session(self, user: FakeUser, session_id: str | None = None) -> dict:
        now = int(time.time())
        session_id = session_id or str(uuid.uuid4())
        claims = {
            "iss": self.issuer,
            "sub": user.id,
            "aud": "authenticated",
            "exp": now + self.ttl,
            "iat": now,
            "email": user.email,
            "phone": "",
            "app_metadata": user.app_metadata,
            "user_metadata": user.json()["user_metadata"],
            "role": "authenticated",
            "aal": "aal1",
            "amr": [{"method": "password", "timestamp": now}],
            "session_id": session_id,
            "is_anonymous": False,
        }
        refresh_token = secrets.token_urlsafe(9)
        self.refresh[refresh_token] = {"user": user, "session": session_id, "used": False, "revoked": False}
        return {
            "access_token": sign_hs256(claims, SECRET, header={"kid": "fake-kid"}),
            "token_type": "bearer",
            "expires_in": self.ttl,
            "expires_at": now + self.ttl,
            "refresh_token": refresh_token,
            "user": user.json(),
            "weak_password": None,
        }

    def _claims(self, authorization: str | None) -> dict | None:
        """The claims of a bearer token this fake signed and that has not expired, else None."""
        token = (authorization or "").removeprefix("Bearer ").strip()
        if token.count(".") != 2 or sign_hs256(unverified_claims(token), SECRET, header={"kid": "fake-kid"}) != token:
            return None
        claims = unverified_claims(token)
        return claims if claims.get("exp", 0) > time.time() else None

    def handle(self, method: str, path: str, query: dict, headers, body: dict) -> tuple[int, dict | None, str | None]:
        """(status, JSON body, error code): the error code marks an error answer."""
        with self.lock:
            self.requests.append((method, path))
            if headers.get("apikey") != ANON_KEY:
                return 401, {"message": "Invalid API key"}, None  # the API gateway in front of GoTrue
            if self.rate_limited:
                return 429, {"message": "Request rate limit reached"}, "over_request_rate_limit"
            if (method, path) == ("POST", "/auth/v1/signup"):
                return self._signup(body)
            if (method, path) == ("POST", "/auth/v1/token"):
                grant = (query.get("grant_type") or [""])[0]
                if grant == "password":
                    return self._password(body)
                if grant == "refresh_token":
                    return self._refresh(body)
                return 400, {"message": "unsupported_grant_type"}, "validation_failed"
            if (method, path) == ("GET", "/auth/v1/user"):
                claims = self._claims(headers.get("authorization"))
                user = next((u for u in self.users.values() if claims and u.id == claims["sub"]), None)
                if user is None:
                    return 403, {"message": "invalid JWT: unable to parse or verify signature"}, "bad_jwt"
                return 200, user.json(), None
            if (method, path) == ("POST", "/auth/v1/logout"):
                return self._logout(query, headers)
            return 404, {"message": "Not Found"}, "not_found"

    def _signup(self, body: dict) -> tuple[int, dict | None, str | None]:
        email, password = str(body.get("email", "")), str(body.get("password", ""))
        if len(password) < 6:
            return (
                422,
                {"message": "Password should be at least 6 characters.", "weak_password": {"reasons": ["length"]}},
                ("weak_password"),
            )
        if email.lower() in self.users:
            return 422, {"message": "User already registered"}, "user_already_exists"
        user = FakeUser(str(uuid.uuid4()), email, password, time.time(), confirmed=not self.confirm_email)
        self.users[email.lower()] = user
        return 200, (user.json() if self.confirm_email else self._session(user)), None

    def _password(self, body: dict) -> tuple[int, dict | None, str | None]:
        user = self.users.get(str(body.get("email", "")).lower())
        if user is None or user.password != body.get("password"):
            return 400, {"message": "Invalid login credentials"}, "invalid_credentials"
        if not user.confirmed:
            return 400, {"message": "Email not confirmed"}, "email_not_confirmed"
        return 200, self._session(user), None

    def _refresh(self, body: dict) -> tuple[int, dict | None, str | None]:
        entry = self.refresh.get(str(body.get("refresh_token", "")))
        if entry is None or entry["revoked"]:
            return 400, {"message": "Invalid Refresh Token: Refresh Token Not Found"}, "refresh_token_not_found"
        if entry["used"]:
            return 400, {"message": "Invalid Refresh Token: Already Used"}, "refresh_token_already_used"
        entry["used"] = True
        return 200, self._session(entry["user"], entry["session"]), None

    def _logout(self, query: dict, headers) -> tuple[int, dict | None, str | None]:
        claims = self._claims(headers.get("authorization"))
        if claims is None:
            return 401, {"message": "invalid JWT: unable to parse or verify signature"}, "bad_jwt"
        scope = (query.get("scope") or ["global"])[0]
        for entry in self.refresh.values():
            if entry["user"].id != claims["sub"]:
                continue
            mine = entry["session"] == claims["session_id"]
            if scope == "global" or (scope == "local" and mine) or (scope == "others" and not mine):
                entry["revoked"] = True
        return 204, None, None


def _handler(fake: FakeGoTrue) -> type[http.server.BaseHTTPRequestHandler]:
    class Handler(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def _answer(self) -> None:
            url = urlparse(self.path)
            length = int(self.headers.get("Content-Length") or 0)
            raw = self.rfile.read(length) if length else b""
            try:
                body = json.loads(raw) if raw else {}
            except ValueError:
                body = {}
            status, payload, code = fake.handle(self.command, url.path, parse_qs(url.query), self.headers, body)
            new_errors = (self.headers.get("X-Supabase-Api-Version") or "") >= API_VERSION
            if code is not None and payload is not None and "message" in payload:
                message = payload.pop("message")
                if new_errors:  # GoTrue's HTTPErrorResponse20240101
                    payload = {"code": code, "message": message, **payload}
                else:  # GoTrue's HTTPError
                    payload = {"code": status, "error_code": code, "msg": message, **payload}
            data = b"" if payload is None else json.dumps(payload).encode()
            self.send_response(status)
            if new_errors:
                self.send_header("X-Supabase-Api-Version", API_VERSION)
            if payload is not None:
                self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def do_GET(self):
            self._answer()

        def do_POST(self):
            self._answer()

        def log_message(self, *args):
            pass

    return Handler


@pytest.fixture(scope="module")
def gotrue():
    """The fake of Supabase Auth's endpoints (see the module's docstring): not Supabase."""
    fake = FakeGoTrue()
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _handler(fake))
    fake.url = f"http://127.0.0.1:{server.server_address[1]}"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield fake
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)


@pytest.fixture
def fake(gotrue):
    """The module's fake with its switches reset."""
    gotrue.confirm_email = gotrue.rate_limited = False
    return gotrue


def signin_settings(stack, fake: FakeGoTrue, **over):
    return stack.with_(
        **{
            "supabase_url": fake.url,
            "supabase_anon_key": ANON_KEY,
            "supabase_jwt_secret": SECRET,
            "supabase_jwt_issuer": fake.issuer,
            **over,
        }
    )


@pytest.fixture
async def sb(make_app, stack, fake):
    """The gateway, with Supabase sign-in through the fake."""
    async for client in make_app(signin_settings(stack, fake)):
        yield client


def new_email(tag: str = "user") -> str:
    return f"{tag}-{uuid.uuid4().hex[:8]}@example.com"


PASSWORD = "correct horse battery staple"


async def signup(client, email: str, password: str = PASSWORD, **extra):
    return await client.post("/auth/signup", json={"email": email, "password": password, **extra})


async def login(client, email: str, password: str = PASSWORD, **extra):
    return await client.post("/auth/login", json={"email": email, "password": password, **extra})


def session_of(resp) -> dict:
    assert resp.status_code == 200, resp.text
    body = resp.json()
    assert body["token_type"] == "bearer" and body["expires_in"] > 0 and body["refresh_token"], body
    return body


async def invite(client, headers: dict, role: str, **extra) -> dict:
    resp = await client.post("/api/invitations", json={"role": role, **extra}, headers=headers)
    assert resp.status_code == 201, resp.text
    return resp.json()


async def key_headers(pool, tenant, role: Role) -> dict[str, str]:
    return {"X-API-Key": (await create_api_key(pool, tenant_id=tenant.tenant_id, role=role)).api_key}


# --- sign-up, sign-in, refresh, logout ---------------------------------------------------------------


async def test_signup_makes_a_tenant_whose_owner_the_token_is(sb, pool):
    email = new_email("founder")
    body = session_of(await signup(sb, email, tenant_name="Acme Labs"))
    [tenant] = body["tenants"]
    assert tenant["role"] == "owner"
    me = await sb.get("/auth/me", headers=bearer(body["access_token"]))
    assert me.status_code == 200, me.text
    assert me.json()["tenant_id"] == tenant["id"] and me.json()["role"] == "owner"
    assert me.json()["auth"] == "supabase" and me.json()["key_id"] is None
    assert (await sb.get("/api/projects", headers=bearer(body["access_token"]))).status_code == 200
    made = await sb.post("/api/projects", json={"name": "first"}, headers=bearer(body["access_token"]))
    assert made.status_code == 201, made.text
    async with tenant_tx(pool, uuid.UUID(tenant["id"])) as conn:
        assert await conn.fetchval("select name from tenants where id = $1", uuid.UUID(tenant["id"])) == "Acme Labs"
    # without tenant_name, the tenant is named after the email's local part
    other = session_of(await signup(sb, email2 := new_email("solo")))
    async with tenant_tx(pool, uuid.UUID(other["tenants"][0]["id"])) as conn:
        name = await conn.fetchval("select name from tenants where id = $1", uuid.UUID(other["tenants"][0]["id"]))
    assert name == email2.split("@")[0]


async def test_login_of_an_existing_user_finds_its_tenant(sb, fake):
    email = new_email()
    first = session_of(await signup(sb, email))
    again = session_of(await login(sb, email))
    assert again["tenants"] == first["tenants"]  # no second tenant
    me = await sb.get("/auth/me", headers=bearer(again["access_token"]))
    assert me.status_code == 200 and me.json()["tenant_id"] == first["tenants"][0]["id"]
    # a user made at Supabase elsewhere, signing in here for the first time, gets a tenant too
    outside = new_email("outside")
    fake.add_user(outside, PASSWORD)
    body = session_of(await login(sb, outside, tenant_name="Outside Co"))
    assert [t["role"] for t in body["tenants"]] == ["owner"]


async def test_two_first_sign_ins_at_once_make_one_tenant(sb, fake, pool):
    email = new_email("twice")
    user = fake.add_user(email, PASSWORD)
    a, b = await asyncio.gather(login(sb, email), login(sb, email))
    assert session_of(a)["tenants"] == session_of(b)["tenants"]
    assert len(await supabase_memberships(pool, user.id)) == 1


async def test_wrong_password_and_unknown_email_are_401(sb):
    email = new_email()
    session_of(await signup(sb, email))
    for resp in (await login(sb, email, "not the password"), await login(sb, new_email("nobody"))):
        assert_401(resp)
        assert resp.json()["detail"] == "wrong email or password"


async def test_failed_logins_count_against_the_client(make_app, stack, fake):
    """AUTH_RATE_LIMIT, as for API keys (api/security/guard.py): then 429, before Supabase is asked."""
    email = new_email()
    fake.add_user(email, PASSWORD)
    async for client in make_app(signin_settings(stack, fake, auth_rate_limit="2/minute")):
        session_of(await login(client, email))  # a success does not count
        for _ in range(2):
            assert_401(await login(client, email, "wrong"))
        asked = len(fake.requests)
        resp = await login(client, email, "wrong")
        assert resp.status_code == 429 and "detail" in resp.json() and int(resp.headers["Retry-After"]) >= 1
        assert (await login(client, email)).status_code == 429  # the address is blocked, the right password too
        assert len(fake.requests) == asked  # and Supabase was not asked


async def test_supabase_errors_are_clear_4xx(sb, fake):
    email = new_email()
    session_of(await signup(sb, email))
    exists = await signup(sb, email)
    assert exists.status_code == 409 and "already exists" in exists.json()["detail"], exists.text
    weak = await signup(sb, new_email(), "abc")
    assert weak.status_code == 422 and "too weak" in weak.json()["detail"], weak.text
    bad = await sb.post("/auth/signup", json={"email": "not-an-email", "password": PASSWORD})
    assert bad.status_code == 422 and "detail" in bad.json()
    fake.rate_limited = True
    limited = await login(sb, email)
    assert limited.status_code == 429 and "rate limit" in limited.json()["detail"], limited.text
    assert "Retry-After" in limited.headers


async def test_signup_with_email_confirmation_answers_202_then_login_works(sb, fake):
    fake.confirm_email = True
    email = new_email("confirm")
    resp = await signup(sb, email)
    assert resp.status_code == 202, resp.text
    assert resp.json() == {"detail": "confirm the email (Supabase sent a link), then POST /auth/login"}
    early = await login(sb, email)
    assert early.status_code == 403 and "not confirmed" in early.json()["detail"], early.text
    fake.users[email.lower()].confirmed = True  # the user followed the link
    assert [t["role"] for t in session_of(await login(sb, email))["tenants"]] == ["owner"]


async def test_refresh_gives_a_working_token_and_a_refresh_token_works_once(sb):
    first = session_of(await signup(sb, new_email()))
    resp = await sb.post("/auth/refresh", json={"refresh_token": first["refresh_token"]})
    renewed = session_of(resp)
    assert renewed["tenants"] == first["tenants"]
    assert renewed["refresh_token"] != first["refresh_token"]
    me = await sb.get("/auth/me", headers=bearer(renewed["access_token"]))
    assert me.status_code == 200 and me.json()["tenant_id"] == first["tenants"][0]["id"]
    again = await sb.post("/auth/refresh", json={"refresh_token": first["refresh_token"]})
    assert_401(again)
    assert "already used" in again.json()["detail"]
    assert_401(await sb.post("/auth/refresh", json={"refresh_token": "never-issued"}))


async def test_logout_ends_the_session(sb):
    email = new_email()
    session_of(await signup(sb, email))
    one, two = session_of(await login(sb, email)), session_of(await login(sb, email))
    resp = await sb.post("/auth/logout", headers=bearer(one["access_token"]))
    assert resp.status_code == 204, resp.text
    assert_401(await sb.post("/auth/refresh", json={"refresh_token": one["refresh_token"]}))
    session_of(await sb.post("/auth/refresh", json={"refresh_token": two["refresh_token"]}))  # scope local
    assert_401(await sb.post("/auth/logout"))
    assert_401(await sb.post("/auth/logout", headers=bearer("not.a.token")))
    # global: every session of the user
    three = session_of(await login(sb, email))
    four = session_of(await login(sb, email))
    resp = await sb.post("/auth/logout", json={"scope": "global"}, headers=bearer(three["access_token"]))
    assert resp.status_code == 204, resp.text
    assert_401(await sb.post("/auth/refresh", json={"refresh_token": four["refresh_token"]}))


# --- invitations -------------------------------------------------------------------------------------


async def test_an_invitation_joins_a_second_user_with_its_role(sb, pool, tenant):
    admin = await key_headers(pool, tenant, Role.admin)
    invitation = await invite(sb, admin, "editor")
    assert invitation["role"] == "editor" and invitation["token"].startswith("smi_")
    assert invitation["tenant_id"] == str(tenant.tenant_id) and invitation["used_at"] is None
    assert datetime.fromisoformat(invitation["expires_at"]).tzinfo is not None

    body = session_of(await signup(sb, new_email("joiner"), invitation=invitation["token"]))
    assert body["tenants"] == [{"id": str(tenant.tenant_id), "role": "editor"}]  # no tenant of its own
    token = bearer(body["access_token"])
    me = (await sb.get("/auth/me", headers=token)).json()
    assert me["tenant_id"] == str(tenant.tenant_id) and me["role"] == "editor"
    assert (await sb.post("/api/projects", json={"name": "joined"}, headers=token)).status_code == 201
    assert (await sb.get("/api/invitations", headers=token)).status_code == 403  # an editor's is not to see

    listed = (await sb.get("/api/invitations", headers=admin)).json()
    assert listed["next_cursor"] is None
    [row] = [i for i in listed["items"] if i["id"] == invitation["id"]]
    assert row["used_at"] is not None and row["used_by"] == me["user_id"]
    assert "token" not in row and "token_hash" not in row


async def test_concurrent_uses_of_one_invitation_make_one_user(sb, pool, tenant):
    invitation = await invite(sb, tenant.headers, "viewer")
    a, b = await asyncio.gather(
        signup(sb, new_email("race"), invitation=invitation["token"]),
        signup(sb, new_email("race"), invitation=invitation["token"]),
    )
    assert sorted([a.status_code, b.status_code]) == [200, 410], (a.text, b.text)
    loser = a if a.status_code == 410 else b
    assert "detail" in loser.json()


async def _expire(pool, tenant, invitation_id: str) -> None:
    async with tenant_tx(pool, tenant.tenant_id) as conn:
        await conn.execute(
            "update invitations set expires_at = (now() at time zone 'utc') - interval '1 second' where id = $1",
            uuid.UUID(invitation_id),
        )


@pytest.mark.parametrize("case", ["expired", "used", "revoked", "unknown", "malformed"])
async def test_an_unusable_invitation_is_refused_and_changes_nothing(sb, fake, pool, tenant, case):
    invitation = await invite(sb, tenant.headers, "editor")
    token = invitation["token"]
    if case == "expired":
        await _expire(pool, tenant, invitation["id"])
    elif case == "used":
        session_of(await signup(sb, new_email("first"), invitation=token))
    elif case == "revoked":
        resp = await sb.delete(f"/api/invitations/{invitation['id']}", headers=tenant.headers)
        assert resp.status_code == 200 and resp.json()["revoked_at"] is not None
    elif case == "unknown":
        token = f"smi_{secrets.token_hex(4)}_{secrets.token_urlsafe(32)}"
    else:
        token = "not-an-invitation"
    expected = 404 if case in ("unknown", "malformed") else 410

    # a new user: refused before Supabase is asked, so no Supabase user is made either
    signups = fake.signups()
    resp = await signup(sb, new_email("late"), invitation=token)
    assert resp.status_code == expected, resp.text
    assert case in resp.json()["detail"] or "not found" in resp.json()["detail"]
    assert fake.signups() == signups

    # an existing user logging in with it: refused, and stays where it was
    email = new_email("member")
    user = fake.add_user(email, PASSWORD)
    resp = await login(sb, email, invitation=token)
    assert resp.status_code == expected, resp.text
    assert await supabase_memberships(pool, user.id) == []


async def test_an_invitation_for_an_email_takes_only_that_email(sb, fake, pool, tenant):
    email = new_email("named")
    invitation = await invite(sb, tenant.headers, "viewer", email=email.upper())
    signups = fake.signups()
    resp = await signup(sb, new_email("someone-else"), invitation=invitation["token"])
    assert resp.status_code == 403 and "another email" in resp.json()["detail"], resp.text
    assert fake.signups() == signups  # refused before Supabase was asked
    other = new_email("other")
    fake.add_user(other, PASSWORD)
    resp = await login(sb, other, invitation=invitation["token"])
    assert resp.status_code == 403 and "another email" in resp.json()["detail"], resp.text
    body = session_of(await signup(sb, email, invitation=invitation["token"]))
    assert body["tenants"] == [{"id": str(tenant.tenant_id), "role": "viewer"}]


ROLE_RULES = [
    ("admin", "owner", 403),
    ("admin", "admin", 201),
    ("admin", "viewer", 201),
    ("owner", "owner", 201),
    ("editor", "viewer", 403),
    ("viewer", "viewer", 403),
]


@pytest.mark.parametrize(("caller", "role", "expected"), ROLE_RULES, ids=[f"{c}-invites-{r}" for c, r, _ in ROLE_RULES])
async def test_who_may_invite_whom(sb, pool, tenant, caller, role, expected):
    headers = tenant.headers if caller == "owner" else await key_headers(pool, tenant, Role(caller))
    resp = await sb.post("/api/invitations", json={"role": role}, headers=headers)
    assert resp.status_code == expected, resp.text
    listed = (await sb.get("/api/invitations", headers=tenant.headers)).json()["items"]
    if expected == 403:
        assert caller in resp.json()["detail"]
        assert listed == []  # nothing was made
    else:
        assert [i["role"] for i in listed] == [role] and "token" not in listed[0]


async def test_viewer_cannot_list_or_revoke_and_admin_cannot_revoke_an_owner_invitation(sb, pool, tenant):
    viewer, admin = await key_headers(pool, tenant, Role.viewer), await key_headers(pool, tenant, Role.admin)
    owners = await invite(sb, tenant.headers, "owner")
    assert (await sb.get("/api/invitations", headers=viewer)).status_code == 403
    assert (await sb.delete(f"/api/invitations/{owners['id']}", headers=viewer)).status_code == 403
    resp = await sb.delete(f"/api/invitations/{owners['id']}", headers=admin)
    assert resp.status_code == 403, resp.text
    assert (await sb.delete(f"/api/invitations/{owners['id']}", headers=tenant.headers)).status_code == 200


async def test_invitation_bounds_and_paging(sb, tenant):
    for bad in (
        {"role": "editor", "expires_in_seconds": 10},
        {"role": "editor", "expires_in_seconds": 10**8},
        {"role": "superuser"},
        {"role": "editor", "email": "nope"},
        {"role": "editor", "x": 1},
    ):
        resp = await sb.post("/api/invitations", json=bad, headers=tenant.headers)
        assert resp.status_code == 422 and "detail" in resp.json(), (bad, resp.text)
    made = [(await invite(sb, tenant.headers, "viewer"))["id"] for _ in range(3)]
    seen, cursor = [], None
    while True:
        page = (
            await sb.get(
                "/api/invitations",
                params={"limit": 2, **({"cursor": cursor} if cursor else {})},
                headers=tenant.headers,
            )
        ).json()
        seen += [i["id"] for i in page["items"]]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert seen == made


async def test_another_tenants_invitation_is_404(sb, tenant, other_tenant):
    invitation = await invite(sb, other_tenant.headers, "editor")
    resp = await sb.delete(f"/api/invitations/{invitation['id']}", headers=tenant.headers)
    assert resp.status_code == 404 and "detail" in resp.json()
    assert (await sb.delete(f"/api/invitations/{uuid.uuid4()}", headers=tenant.headers)).status_code == 404
    listed = (await sb.get("/api/invitations", headers=tenant.headers)).json()["items"]
    assert invitation["id"] not in [i["id"] for i in listed]
    [row] = [
        i
        for i in (await sb.get("/api/invitations", headers=other_tenant.headers)).json()["items"]
        if i["id"] == invitation["id"]
    ]
    assert row["revoked_at"] is None  # untouched


# --- a user in several tenants: X-Tenant-ID ----------------------------------------------------------


async def test_a_user_in_two_tenants_chooses_with_x_tenant_id(sb, fake, pool, tenant, other_tenant):
    email = new_email("both")
    own = session_of(await signup(sb, email))["tenants"][0]["id"]
    invitation = await invite(sb, await key_headers(pool, tenant, Role.admin), "viewer")
    body = session_of(await login(sb, email, invitation=invitation["token"]))  # already linked: joins too
    assert sorted((t["id"], t["role"]) for t in body["tenants"]) == sorted(
        [(own, "owner"), (str(tenant.tenant_id), "viewer")]
    )
    token = bearer(body["access_token"])

    resp = await sb.get("/auth/me", headers=token)
    assert_401(resp)
    assert "X-Tenant-ID" in resp.json()["detail"] and own in resp.json()["detail"]
    assert str(tenant.tenant_id) in resp.json()["detail"]
    assert_401(await sb.get("/api/projects", headers=token))

    me = (await sb.get("/auth/me", headers={**token, "X-Tenant-ID": str(tenant.tenant_id)})).json()
    assert me["tenant_id"] == str(tenant.tenant_id) and me["role"] == "viewer"
    assert (
        await sb.post("/api/projects", json={"name": "no"}, headers={**token, "X-Tenant-ID": str(tenant.tenant_id)})
    ).status_code == 403
    me = (await sb.get("/auth/me", headers={**token, "X-Tenant-ID": own})).json()
    assert me["tenant_id"] == own and me["role"] == "owner"

    for chosen in (str(other_tenant.tenant_id), str(uuid.uuid4()), "not-a-uuid"):
        assert_401(await sb.get("/auth/me", headers={**token, "X-Tenant-ID": chosen}))

    # the role is the database's, whatever the token says
    fake.users[email.lower()].app_metadata["role"] = "owner"
    again = session_of(await login(sb, email))
    me = await sb.get("/auth/me", headers={**bearer(again["access_token"]), "X-Tenant-ID": str(tenant.tenant_id)})
    assert me.json()["role"] == "viewer"
    assert unverified_claims(again["access_token"])["app_metadata"]["role"] == "owner"


async def test_x_tenant_id_must_name_an_api_keys_own_tenant(sb, tenant, other_tenant):
    assert (
        await sb.get("/auth/me", headers={**tenant.headers, "X-Tenant-ID": str(tenant.tenant_id)})
    ).status_code == 200
    assert_401(await sb.get("/api/projects", headers={**tenant.headers, "X-Tenant-ID": str(other_tenant.tenant_id)}))


async def test_a_signed_up_user_alone_needs_no_x_tenant_id_and_joining_is_not_twice(sb, pool, tenant):
    invitation = await invite(sb, tenant.headers, "editor")
    email = new_email("once")
    session_of(await signup(sb, email, invitation=invitation["token"]))
    second = await invite(sb, tenant.headers, "admin")
    resp = await login(sb, email, invitation=second["token"])
    assert resp.status_code == 409 and "already" in resp.json()["detail"], resp.text
    listed = {i["id"]: i for i in (await sb.get("/api/invitations", headers=tenant.headers)).json()["items"]}
    assert listed[second["id"]]["used_at"] is None  # not spent on a user who was in already


# --- Supabase down, or not configured ----------------------------------------------------------------


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


async def test_supabase_down_is_503(make_app, stack, fake):
    settings = signin_settings(stack, fake, supabase_url=f"http://127.0.0.1:{_closed_port()}")
    async for client in make_app(settings):
        for resp in (
            await login(client, new_email()),
            await signup(client, new_email()),
            await client.post("/auth/refresh", json={"refresh_token": "x"}),
        ):
            assert resp.status_code == 503, resp.text
            assert "cannot be reached" in resp.json()["detail"]


async def test_a_wrong_anon_key_is_503_not_the_users_fault(make_app, stack, fake):
    async for client in make_app(signin_settings(stack, fake, supabase_anon_key="wrong")):
        resp = await login(client, new_email())
        assert resp.status_code == 503 and "SUPABASE_ANON_KEY" in resp.json()["detail"], resp.text


async def test_unconfigured_sign_in_answers_404_with_a_detail(make_app, stack, fake):
    async for client in make_app(stack.settings):
        for path, body in (
            ("/auth/signup", {"email": new_email(), "password": PASSWORD}),
            ("/auth/login", {"email": new_email(), "password": PASSWORD}),
            ("/auth/refresh", {"refresh_token": "x"}),
            ("/auth/logout", None),
        ):
            resp = await client.post(path, json=body)
            assert resp.status_code == 404, (path, resp.text)
            assert "not configured" in resp.json()["detail"]
