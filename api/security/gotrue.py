"""Supabase Auth (its server is GoTrue) behind POST /auth/signup, /login, /refresh and /logout
(api/routes/signin.py), through supabase_auth's async client.

The process holds one httpx client for it (made in the lifespan, api/app.py), with a deadline for every
call. Each call builds a fresh AsyncGoTrueClient on that client, one that keeps no session: nothing is
persisted (persist_session=False), nothing refreshes on its own (auto_refresh_token=False: no timer,
no thread), so a user's session lives only as long as its request and never meets another's.

Whatever Supabase answers that is not what was asked becomes a SupabaseRefused: a 4xx whose `detail` a
user can act on (wrong password 401, an existing user 409, a weak password 422, its rate limit 429, ...),
or 503 when Supabase Auth cannot be reached, fails, or refuses this server's own key. Never a 500.
"""

from __future__ import annotations

from collections.abc import Awaitable
from typing import Literal, TypeVar

import httpx
from pydantic import ValidationError
from supabase_auth import AsyncGoTrueClient
from supabase_auth.errors import (
    AuthApiError,
    AuthError,
    AuthRetryableError,
    AuthSessionMissingError,
    AuthWeakPasswordError,
)
from supabase_auth.types import AuthResponse, Session

from models.settings import Settings

T = TypeVar("T")
TIMEOUT_S = 10.0  # one call to Supabase Auth, connecting included
RELOGIN = "sign in again (POST /auth/login)"

# Supabase Auth's error codes (supabase_auth/errors.py lists them) that a user can act on: status, detail
_CODES: dict[str, tuple[int, str]] = {
    "invalid_credentials": (401, "wrong email or password"),
    "email_not_confirmed": (
        403,
        "the email is not confirmed yet: follow the link Supabase sent, then POST /auth/login",
    ),
    "user_already_exists": (409, "a user with this email already exists: POST /auth/login"),
    "email_exists": (409, "a user with this email already exists: POST /auth/login"),
    "signup_disabled": (403, "sign-ups are disabled on this Supabase project"),
    "email_provider_disabled": (403, "email sign-in is disabled on this Supabase project"),
    "email_address_not_authorized": (403, "this Supabase project does not send email to that address"),
    "email_address_invalid": (422, "the email address is not valid"),
    "user_banned": (403, "this user is banned"),
    "captcha_failed": (403, "this Supabase project wants a CAPTCHA, which this API cannot pass"),
    "over_request_rate_limit": (429, "Supabase Auth's rate limit is exceeded: try again later"),
    "over_email_send_rate_limit": (429, "Supabase Auth sends no more email for now: try again later"),
    "refresh_token_not_found": (401, f"the refresh token is not valid: {RELOGIN}"),
    "refresh_token_already_used": (401, f"the refresh token was already used: {RELOGIN}"),
    "session_not_found": (401, f"the session has ended: {RELOGIN}"),
    "session_expired": (401, f"the session has expired: {RELOGIN}"),
    "bad_jwt": (401, "the access token is not valid"),
    "no_authorization": (401, "send the access token as Authorization: Bearer <token>"),
    "user_not_found": (401, f"the user no longer exists: {RELOGIN}"),
}
_PASSED_ON = {400, 401, 403, 409, 422, 429}  # an unknown code with one of these: Supabase's status and message


class SupabaseRefused(Exception):
    def __init__(self, status: int, detail: str, *, code: str | None = None) -> None:
        super().__init__(detail)
        self.status, self.detail, self.code = status, detail, code

    @property
    def headers(self) -> dict[str, str] | None:
        if self.status == 503:
            return {"Retry-After": "5"}
        if self.status == 429:
            return {"Retry-After": "60"}
        return None


def wrong_credentials(err: Exception) -> bool:
    """A failed password sign-in (what api/security/guard.py counts)."""
    return isinstance(err, SupabaseRefused) and err.code == "invalid_credentials"


def _refused(err: AuthError) -> SupabaseRefused:
    if isinstance(err, AuthRetryableError):  # no answer, a timeout, a 502/503/504
        return SupabaseRefused(503, f"Supabase Auth cannot be reached: {err.message or 'no answer'}")
    if isinstance(err, AuthWeakPasswordError):
        reasons = ", ".join(str(r) for r in err.reasons) if isinstance(err.reasons, list) else ""
        return SupabaseRefused(
            422, f"the password is too weak{f' ({reasons})' if reasons else ''}: {err.message}", code="weak_password"
        )
    status = getattr(err, "status", 0)
    if err.code is not None and err.code in _CODES:
        code_status, detail = _CODES[err.code]
        return SupabaseRefused(code_status, detail, code=err.code)
    if isinstance(err, AuthApiError) and status in _PASSED_ON and not (status == 401 and err.code is None):
        return SupabaseRefused(status, f"Supabase Auth refused: {err.message}", code=err.code)
    if isinstance(err, AuthApiError) and status in (401, 403):
        return SupabaseRefused(503, "Supabase Auth refuses this server's key: check SUPABASE_ANON_KEY")
    if isinstance(err, AuthApiError) and status == 404:
        return SupabaseRefused(503, "Supabase Auth is not where SUPABASE_URL says (it answered 404)")
    return SupabaseRefused(503, f"Supabase Auth failed ({status or type(err).__name__}): {err.message}")


async def _call(awaitable: Awaitable[T]) -> T:
    try:
        return await awaitable
    except AuthError as err:
        raise _refused(err) from err
    except ValidationError as err:  # an answer that is not the shape Supabase Auth gives
        raise SupabaseRefused(503, "Supabase Auth's answer could not be read") from err


class GoTrue:
    """Supabase Auth for one process: made in the lifespan when SUPABASE_URL and SUPABASE_ANON_KEY are set."""

    def __init__(self, settings: Settings) -> None:
        assert settings.supabase_url and settings.supabase_anon_key  # settings.supabase_sign_in
        if not settings.supabase_jwt_issuer or not (settings.supabase_jwt_secret or settings.supabase_jwks_url):
            raise RuntimeError(
                "SUPABASE_URL and SUPABASE_ANON_KEY are set, but the tokens Supabase Auth issues could not be "
                "verified: set SUPABASE_JWT_ISSUER (<SUPABASE_URL>/auth/v1) and SUPABASE_JWT_SECRET or "
                "SUPABASE_JWKS_URL"
            )
        self.url = settings.supabase_url.rstrip("/") + "/auth/v1"
        self.key = settings.supabase_anon_key
        self.http = httpx.AsyncClient(timeout=TIMEOUT_S, follow_redirects=False)

    async def aclose(self) -> None:
        await self.http.aclose()

    def _client(self) -> AsyncGoTrueClient:
        return AsyncGoTrueClient(
            url=self.url,
            headers={"apikey": self.key, "Authorization": f"Bearer {self.key}"},
            http_client=self.http,
            persist_session=False,
            auto_refresh_token=False,
        )

    async def sign_up(self, email: str, password: str) -> AuthResponse:
        """A session, or (email confirmation on) a user without one."""
        return await _call(self._client().sign_up({"email": email, "password": password}))

    async def sign_in(self, email: str, password: str) -> Session:
        answer = await _call(self._client().sign_in_with_password({"email": email, "password": password}))
        if answer.session is None:
            raise SupabaseRefused(503, "Supabase Auth answered the sign-in without a session")
        return answer.session

    async def refresh(self, refresh_token: str) -> Session:
        try:
            answer = await _call(self._client().refresh_session(refresh_token))
        except SupabaseRefused as err:
            if isinstance(err.__cause__, AuthSessionMissingError):
                raise SupabaseRefused(503, "Supabase Auth answered the refresh without a session") from err
            raise
        if answer.session is None:
            raise SupabaseRefused(503, "Supabase Auth answered the refresh without a session")
        return answer.session

    async def sign_out(self, access_token: str, scope: Literal["local", "global", "others"]) -> None:
        """Ends the token's session (local), or the user's every session (global) or every other one
        (others). A session that has already ended counts as signed out, as supabase_auth counts it."""
        try:
            await _call(self._client().admin.sign_out(access_token, scope))
        except SupabaseRefused as err:
            cause = err.__cause__
            if isinstance(cause, AuthApiError) and cause.status in (401, 403, 404) and err.status != 503:
                return
            raise
