"""The web console over HTTP (the browser paths are in tests/test_console_browser.py): the session cookie,
CSRF, RBAC through the API, the spec form's errors at their fields, and 404 pages for other tenants' ids."""

from __future__ import annotations

import re
import uuid
from dataclasses import dataclass, field

import httpx
import pytest

from api.console.session import COOKIE
from api.security import jwt as tokens
from tests.test_auth import jwks_server, supabase_settings  # noqa: F401 - fixtures

FN_VALUES = {"function_name": "add", "description": "Add two integers."}


@dataclass
class Browser:
    """A console user over the gateway's ASGI client: its own cookie, sent by hand (the shared client's jar
    is not used)."""

    api: httpx.AsyncClient
    cookie: str | None = None
    pages: list[str] = field(default_factory=list)

    def _headers(self) -> dict[str, str]:
        return {"Cookie": f"{COOKIE}={self.cookie}"} if self.cookie else {}

    async def get(self, url: str) -> httpx.Response:
        self.api.cookies.clear()  # only this user's cookie goes
        return await self.api.get(url, headers=self._headers())

    async def post(self, url: str, data: dict, csrf: bool = True) -> httpx.Response:
        if csrf:
            data = {"csrf": await self.csrf(), **data}
        self.api.cookies.clear()
        return await self.api.post(url, data=data, headers=self._headers())

    async def csrf(self) -> str:
        html = (await self.get("/console/projects")).text
        return re.search(r'name="csrf" value="([0-9a-f]+)"', html).group(1)

    async def sign_in(self, key: str, next_path: str = "/console/projects") -> httpx.Response:
        self.api.cookies.clear()
        resp = await self.api.post("/console/sign-in", data={"api_key": key, "next": next_path})
        self.api.cookies.clear()  # the shared client's jar keeps no session
        if resp.status_code == 303:
            self.cookie = resp.cookies[COOKIE]
        return resp


async def _signed_in(api, tenant) -> Browser:
    browser = Browser(api)
    assert (await browser.sign_in(tenant.api_key)).status_code == 303
    return browser


async def test_signing_in_sets_an_httponly_strict_cookie_holding_a_token_not_the_key(api, tenant):
    page = await api.get("/console/sign-in")
    assert page.status_code == 200 and 'name="api_key"' in page.text
    assert "script-src 'self'" in page.headers["content-security-policy"]
    bad = await api.post("/console/sign-in", data={"api_key": "smk_nope", "next": "/console/projects"})
    assert bad.status_code == 401 and "not valid" in bad.text and COOKIE not in bad.headers.get("set-cookie", "")
    resp = await api.post("/console/sign-in", data={"api_key": tenant.api_key, "next": "https://evil.example/x"})
    assert resp.status_code == 303 and resp.headers["location"] == "/console/projects"  # never another site
    cookie = resp.headers["set-cookie"]
    assert "HttpOnly" in cookie and "SameSite=strict" in cookie and "Path=/console" in cookie
    token = resp.cookies[COOKIE]
    api.cookies.clear()  # the shared client's jar keeps no session
    assert tenant.api_key not in cookie and token.count(".") == 2  # a JWT, never the key


async def test_no_session_or_an_expired_one_goes_to_sign_in_and_back(api, tenant, stack):
    browser = Browser(api)
    resp = await browser.get("/console/knowledge?q=x")
    assert resp.status_code == 303 and resp.headers["location"] == "/console/sign-in?next=/console/knowledge%3Fq%3Dx"
    s = stack.settings
    claims = {
        "sub": str(tenant.user_id),
        "tenant_id": str(tenant.tenant_id),
        "role": "owner",
        "key_id": str(tenant.key_id),
    }
    expired = -(s.jwt_clock_skew_seconds + 60)  # past its end, beyond the allowed clock skew
    browser.cookie = tokens.issue(
        claims, secret=s.jwt_secret, ttl=expired, audience=s.jwt_audience, issuer=s.jwt_issuer
    )
    resp = await browser.get("/console/projects")
    assert resp.status_code == 303 and resp.headers["location"].startswith("/console/sign-in?next=/console/projects")
    signed = await browser.sign_in(tenant.api_key, "/console/knowledge?q=x")
    assert signed.headers["location"] == "/console/knowledge?q=x"


async def test_a_write_needs_the_sessions_csrf_token(api, tenant):
    browser = await _signed_in(api, tenant)
    refused = await browser.post("/console/projects", {"name": "no-csrf"}, csrf=False)
    assert refused.status_code == 403 and "CSRF" in refused.text
    stale = await browser.post("/console/projects", {"name": "stale", "csrf": "0" * 64}, csrf=False)
    assert stale.status_code == 403
    listed = (await api.get("/api/projects", headers=tenant.headers)).json()["items"]
    assert not {"no-csrf", "stale"} & {p["name"] for p in listed}
    made = await browser.post("/console/projects", {"name": "made in the console"})
    assert made.status_code == 303
    page = await browser.get(made.headers["location"])
    assert page.status_code == 200 and "made in the console" in page.text


async def _project_with_spec_form(api, tenant, browser: Browser) -> tuple[str, str]:
    made = await browser.post("/console/projects", {"name": f"form-{uuid.uuid4().hex[:6]}"})
    pid = made.headers["location"].rsplit("/", 1)[1]

    async def ready():  # the workflow moves the new project to spec_definition
        state = (await api.get(f"/api/projects/{pid}", headers=tenant.headers)).json()["state"]
        return state == "spec_definition"

    from tests.conftest import wait_for

    await wait_for(ready, timeout=20)
    choose = await browser.get(f"/console/projects/{pid}/specs/new")
    template = re.search(r'specs/new\?template=([0-9a-f-]+)">python-function@1\.1\.0', choose.text).group(1)
    return pid, template


async def test_the_spec_form_shows_the_apis_errors_at_their_fields_and_keeps_what_was_typed(api, tenant):
    browser = await _signed_in(api, tenant)
    pid, template = await _project_with_spec_form(api, tenant, browser)
    form = await browser.get(f"/console/projects/{pid}/specs/new?template={template}")
    assert 'id="f-function_name"' in form.text and 'id="f-tests"' in form.text and "One per line." in form.text
    typed = {
        "f.function_name": "add",
        "f.description": "Add two integers.",
        "f.tests": "assert add(1, 2) == 3\nprint(1)",
    }
    resp = await browser.post(f"/console/projects/{pid}/specs/new?template={template}", typed)
    assert resp.status_code == 422
    error = re.search(r'id="f-tests-error">(.*?)</div>', resp.text, re.S).group(1)
    assert "line 2: a test must be an `assert` statement" in error
    assert "assert add(1, 2) == 3\nprint(1)</textarea>" in resp.text  # nothing typed is lost
    assert (await api.get(f"/api/projects/{pid}/specs", headers=tenant.headers)).json()["items"] == []
    missing = await browser.post(f"/console/projects/{pid}/specs/new?template={template}", {"f.function_name": "add"})
    assert missing.status_code == 422 and 'id="f-description-error"' in missing.text
    typed["f.tests"] = "assert add(1, 2) == 3"
    saved = await browser.post(f"/console/projects/{pid}/specs/new?template={template}", typed)
    assert saved.status_code == 303
    [spec] = (await api.get(f"/api/projects/{pid}/specs", headers=tenant.headers)).json()["items"]
    assert spec["values"] == {**FN_VALUES, "tests": ["assert add(1, 2) == 3"]}
    edit = await browser.get(saved.headers["location"])
    assert "Saved." in edit.text and "assert add(1, 2) == 3</textarea>" in edit.text


async def test_a_viewer_sees_no_write_controls_and_a_forced_write_is_refused(api, tenant):
    created = await api.post("/api/keys", json={"name": "reader", "role": "viewer"}, headers=tenant.headers)
    viewer = Browser(api)
    assert (await viewer.sign_in(created.json()["api_key"])).status_code == 303
    listing = await viewer.get("/console/projects")
    assert listing.status_code == 200 and "Create the project" not in listing.text and "Keys" not in listing.text
    forced = await viewer.post("/console/projects", {"name": "forced"})
    assert forced.status_code == 403 and "<h1>Not allowed</h1>" in forced.text
    assert (await viewer.get("/console/keys")).status_code == 403


async def test_another_tenants_project_or_a_malformed_id_is_a_404_page(api, tenant, other_tenant):
    theirs = (await api.post("/api/projects", json={"name": "theirs"}, headers=other_tenant.headers)).json()
    browser = await _signed_in(api, tenant)
    for url in (
        f"/console/projects/{theirs['id']}",
        f"/console/projects/{theirs['id']}/runs/{uuid.uuid4()}",
        "/console/projects/not-a-uuid",
        f"/console/projects/{theirs['id']}/artifacts/{uuid.uuid4()}",
    ):
        resp = await browser.get(url)
        assert resp.status_code == 404, url
        assert resp.headers["content-type"].startswith("text/html") and "<h1>Not found</h1>" in resp.text
        assert "Traceback" not in resp.text


@pytest.mark.parametrize(
    "path", ["/console/static/console.css", "/console/static/console.js", "/console/highlight.css"]
)
async def test_the_assets_come_from_this_server(api, path):
    resp = await api.get(path)
    assert resp.status_code == 200 and resp.text


async def test_a_supabase_session_signs_in_where_supabase_is_configured(make_app, supabase_settings, pool, tenant):  # noqa: F811
    """Supabase's side is a signed token here (tests/test_auth.py's helpers): the wire format it issues."""
    from tests.test_auth import SUPABASE_SECRET, link, sign_hs256, supabase_claims

    claims = supabase_claims(tenant, role="viewer")
    await link(pool, tenant, claims, "viewer")
    token = sign_hs256(claims, SUPABASE_SECRET)
    async for client in make_app(supabase_settings):
        page = await client.get("/console/sign-in")
        assert 'name="supabase_token"' in page.text
        resp = await client.post("/console/sign-in", data={"supabase_token": token, "next": "/console/projects"})
        assert resp.status_code == 303 and resp.cookies[COOKIE] == token
        assert 0 < int(re.search(r"Max-Age=(\d+)", resp.headers["set-cookie"]).group(1)) <= 300  # its own end
        client.cookies.clear()
        listing = await client.get("/console/projects", headers={"Cookie": f"{COOKIE}={token}"})
        assert listing.status_code == 200 and ">viewer<" in listing.text and "Create the project" not in listing.text
        forged = sign_hs256(supabase_claims(tenant, role="viewer"), "not-the-secret")
        bad = await client.post("/console/sign-in", data={"supabase_token": forged, "next": "/console/projects"})
        assert bad.status_code == 401 and "not valid" in bad.text


async def test_without_supabase_configured_the_form_is_absent_and_a_token_is_not_taken(api):
    assert 'name="supabase_token"' not in (await api.get("/console/sign-in")).text
    resp = await api.post("/console/sign-in", data={"supabase_token": "x.y.z", "next": "/console/projects"})
    assert resp.status_code == 401 and COOKIE not in resp.headers.get("set-cookie", "")


async def test_an_admin_makes_and_revokes_keys_and_an_editor_deletes_a_snippet(api, tenant):
    browser = await _signed_in(api, tenant)
    made = await browser.post("/console/keys", {"name": "ci", "role": "editor"})
    assert made.status_code == 201
    key = re.search(r'<code id="new-key">([^<]+)</code>', made.text).group(1)  # shown once, on this answer
    listed = (await api.get("/api/keys", headers=tenant.headers)).json()["items"]
    [row] = [k for k in listed if k["name"] == "ci"]
    assert key.startswith(f"sm_{row['prefix']}_") and key not in (await browser.get("/console/keys")).text
    editor = Browser(api)
    assert (await editor.sign_in(key)).status_code == 303
    snippet = await api.post(
        "/api/snippets", json={"language": "python", "content": "def one():\n    return 1"}, headers=tenant.headers
    )
    page = await editor.get("/console/knowledge")
    assert f"/console/knowledge/snippets/{snippet.json()['id']}/delete" in page.text
    gone = await editor.post(f"/console/knowledge/snippets/{snippet.json()['id']}/delete", {})
    assert gone.status_code == 303
    assert (await api.get(f"/api/snippets/{snippet.json()['id']}", headers=tenant.headers)).status_code == 404
    revoked = await browser.post(f"/console/keys/{row['id']}/revoke", {})
    assert revoked.status_code == 303
    ended = await editor.get("/console/knowledge")  # a revoked key's session ends at its next page
    assert ended.status_code == 303 and ended.headers["location"].startswith("/console/sign-in")


async def test_the_models_page_says_each_models_availability_and_lists_the_six_techniques(api, tenant):
    browser = await _signed_in(api, tenant)
    page = await browser.get("/console/models")
    models = (await api.get("/api/models", headers=tenant.headers)).json()["items"]
    techniques = (await api.get("/api/techniques", headers=tenant.headers)).json()["items"]
    assert page.status_code == 200 and len(techniques) == 6
    for model in models:
        assert f"<td>{model['name']}</td>" in page.text
    for technique in techniques:
        assert f"<h3>{technique['name']} " in page.text


async def test_a_session_past_half_its_life_is_renewed_and_its_forms_carry_the_new_csrf(api, tenant, stack):
    import time

    from jose import jwt

    s, now = stack.settings, int(time.time())
    claims = {
        "sub": str(tenant.user_id),
        "tenant_id": str(tenant.tenant_id),
        "role": "owner",
        "key_id": str(tenant.key_id),
    }
    old = jwt.encode(  # issued 10 minutes ago, 5 minutes left: past the middle of its 15
        {**claims, "aud": s.jwt_audience, "iss": s.jwt_issuer, "iat": now - 600, "nbf": now - 600, "exp": now + 300},
        s.jwt_secret,
        algorithm="HS256",
    )
    browser = Browser(api, cookie=old)
    page = await browser.get("/console/projects")
    assert page.status_code == 200 and COOKIE in page.headers.get("set-cookie", "")
    fresh = page.cookies[COOKIE]
    assert fresh != old
    form_csrf = re.search(r'name="csrf" value="([0-9a-f]+)"', page.text).group(1)
    browser.cookie = fresh  # what the browser holds after that page
    made = await browser.post("/console/projects", {"name": "after renewal", "csrf": form_csrf}, csrf=False)
    assert made.status_code == 303, made.text


def test_a_time_is_escaped_before_it_is_marked_safe():
    from api.console.web import ENV

    shown = ENV.filters["when"]('2026-12-06T10:00:00+00:00"><script>alert(1)</script>')
    assert "<script>" not in shown and "&lt;script&gt;" in shown


async def test_a_spec_is_edited_and_deleted_from_its_form(api, tenant):
    browser = await _signed_in(api, tenant)
    pid, template = await _project_with_spec_form(api, tenant, browser)
    made = await browser.post(
        f"/console/projects/{pid}/specs/new?template={template}",
        {"f.function_name": "sub", "f.description": "Subtract.", "f.tests": "assert sub(3, 1) == 2"},
    )
    assert made.status_code == 303
    spec_url = made.headers["location"].split("?")[0]
    edited = await browser.post(
        spec_url, {"f.function_name": "sub", "f.description": "Subtract b from a.", "f.tests": ""}
    )
    assert edited.status_code == 303
    [spec] = (await api.get(f"/api/projects/{pid}/specs", headers=tenant.headers)).json()["items"]
    assert spec["values"] == {"function_name": "sub", "description": "Subtract b from a."}  # an emptied field goes
    gone = await browser.post(f"{spec_url}/delete", {})
    assert gone.status_code == 303 and gone.headers["location"] == f"/console/projects/{pid}"
    assert (await api.get(f"/api/projects/{pid}/specs", headers=tenant.headers)).json()["items"] == []
    assert (await browser.get(spec_url)).status_code == 404
