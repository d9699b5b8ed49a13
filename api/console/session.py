"""The console's session: an HttpOnly, SameSite=Strict cookie holding a short-lived specmill JWT (minted
from the API key at sign-in, never the key itself) or, where Supabase is configured, the access token of
a Supabase session; and the CSRF token every write carries.

- Signing in exchanges the key exactly as POST /auth/token does (the same brute-force guard); the key is
  not kept anywhere.
- Each page checks the token as the API does (signature, expiry, and its key against the database:
  a revoked key ends the session at the next page). A token past half its life is replaced by a fresh
  one on the way out (a sliding session: it ends after JWT_TTL_SECONDS without a page).
- The CSRF token is an HMAC of the session token under the JWT secret (a double submit that needs no
  server state): forms carry it in a hidden field, and a write without the right one is refused with 403.
  Writes are also refused when the browser says they come from another origin.
"""

from __future__ import annotations

import hashlib
import hmac
import time
from dataclasses import dataclass
from urllib.parse import quote, urlsplit

from fastapi import Request
from fastapi.responses import RedirectResponse, Response

from api.deps import Resources
from api.security import guard
from api.security import jwt as tokens
from api.security.auth import AuthError
from api.security.clients import client_address
from models.auth import Principal

COOKIE = "specmill_console"
PATH = "/console"


@dataclass
class Session:
    principal: Principal
    token: str
    csrf: str  # the presented token's: what this request's form must carry
    renewed: str | None = None  # a fresh token to set on the response
    renewed_csrf: str | None = None  # the fresh token's: what the forms rendered now must carry

    @property
    def form_csrf(self) -> str:
        return self.renewed_csrf or self.csrf


class SignInRequired(Exception):
    """No session, or one that ended: the page sends the browser to sign in, and back here after."""

    def __init__(self, next_path: str) -> None:
        self.next_path = next_path


def csrf_token(res: Resources, token: str) -> str:
    secret = res.settings.jwt_secret or ""
    return hmac.new(secret.encode(), b"console-csrf:" + token.encode(), hashlib.sha256).hexdigest()


def safe_next(path: str | None) -> str:
    """Only a console path of this site is a place to come back to (never another host)."""
    if not path or not path.startswith(PATH) or path.startswith("//") or "\\" in path:
        return f"{PATH}/projects"
    parts = urlsplit(path)
    return path if not parts.scheme and not parts.netloc else f"{PATH}/projects"


def sign_in_url(next_path: str) -> str:
    return f"{PATH}/sign-in?next={quote(safe_next(next_path), safe='/')}"


def wanted(request: Request) -> str:
    query = request.url.query
    return request.url.path + (f"?{query}" if query else "")


async def session(request: Request) -> Session:
    """The signed-in caller, checked as the API checks a bearer token; SignInRequired otherwise."""
    res: Resources = request.app.state.resources
    token = request.cookies.get(COOKIE)
    if not token:
        raise SignInRequired(wanted(request))
    try:
        principal = await res.auth.from_jwt(token)
    except AuthError:
        raise SignInRequired(wanted(request)) from None
    out = Session(principal, token, csrf_token(res, token))
    if principal.key_id is not None and tokens.half_spent(token, time.time()):
        out.renewed = res.auth.issue_token(principal)
        out.renewed_csrf = csrf_token(res, out.renewed)
    return out


async def sign_in(request: Request, key: str) -> tuple[Principal, str]:
    """The principal of an API key and a session token for it (the key's failures count against the
    address like POST /auth/token's)."""
    res: Resources = request.app.state.resources
    principal = await guard.from_api_key(res.auth, res.limiter, address=client_address(request, res.settings), key=key)
    return principal, res.auth.issue_token(principal)


def supabase_configured(request: Request) -> bool:
    return bool(request.app.state.resources.settings.supabase_jwt_issuer)


async def sign_in_supabase(request: Request, token: str) -> Principal:
    """A Supabase session's access token, checked as the API checks it (its signature, and its user linked
    to a tenant in our database); the cookie then holds that token until it expires (it cannot be renewed
    here: Supabase's refresh token stays with the browser's Supabase client)."""
    res: Resources = request.app.state.resources
    principal = await res.auth.from_jwt(token.strip())
    if principal.auth != "supabase":
        raise AuthError("that is not a Supabase session's access token")
    return principal


def set_cookie(request: Request, response: Response, token: str) -> None:
    response.set_cookie(
        COOKIE,
        token,
        max_age=tokens.seconds_left(token, time.time()),  # the token's own end
        path=PATH,
        httponly=True,
        samesite="strict",
        secure=request.url.scheme == "https",
    )


def clear_cookie(response: Response) -> None:
    response.delete_cookie(COOKIE, path=PATH, httponly=True, samesite="strict")


def same_origin(request: Request) -> bool:
    """Whether a write comes from this site, where the browser says (an Origin header); none: not a browser's
    cross-site form, as browsers send it on those."""
    origin = request.headers.get("origin")
    return origin is None or origin == f"{request.url.scheme}://{request.url.netloc}"


def redirect(url: str) -> RedirectResponse:
    return RedirectResponse(url, status_code=303)
