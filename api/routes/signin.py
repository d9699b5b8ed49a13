"""/auth/signup, /auth/login, /auth/refresh, /auth/logout: sign-up and sign-in through Supabase Auth
(api/security/gotrue.py), when SUPABASE_URL and SUPABASE_ANON_KEY are set; else each answers 404 with a
`detail` saying so.

Supabase checks the email and password and issues the tokens; specmill verifies the access token it got
back as the gateway verifies every Supabase token (SUPABASE_JWT_ISSUER with SUPABASE_JWT_SECRET or
SUPABASE_JWKS_URL), and then decides the tenants:
- with an `invitation`: the user joins its tenant with its role (store/invitations.py: used once; an
  unknown, used, revoked or expired one is a 4xx checked before Supabase is asked, and nothing is made);
- without one, a user linked to no tenant (a first sign-in) gets a new tenant, named `tenant_name` or
  after the email's local part, of which it is the owner. A token whose `app_metadata.tenant_id` was set
  by Supabase's service role is an operator's user: it gets no tenant of its own.
The answer lists every tenant of the user with its role there; the access token then works on every
route, with `X-Tenant-ID` when the user is in several tenants (api/security/auth.py).
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Header, HTTPException, Request, Response
from fastapi.responses import JSONResponse
from supabase_auth.types import Session

from api.deps import Resources, ResourcesDep
from api.security import guard
from api.security.auth import AuthError, bearer_token
from api.security.clients import client_address
from api.security.gotrue import GoTrue, SupabaseRefused, wrong_credentials
from models.auth import LogoutRequest, RefreshRequest, SignInRequest, SignInResponse, TenantRole
from store import invitations
from store.users import create_tenant_for_subject, supabase_memberships

router = APIRouter(prefix="/auth", tags=["auth"])

NOT_CONFIGURED = (
    "Supabase sign-in is not configured on this server (SUPABASE_URL and SUPABASE_ANON_KEY are unset): "
    "authenticate with an API key (X-API-Key, or POST /auth/token)"
)
CONFIRM = "confirm the email (Supabase sent a link), then POST /auth/login"
_ERRORS: dict[int | str, dict[str, Any]] = {
    404: {"description": "Supabase sign-in is not configured here (SUPABASE_URL, SUPABASE_ANON_KEY)"},
    503: {"description": "Supabase Auth cannot be reached, or answered with an error of its own"},
}


def _gotrue(res: ResourcesDep) -> GoTrue:
    gotrue = res.gotrue
    if gotrue is None:
        raise HTTPException(404, NOT_CONFIGURED)
    return gotrue


GoTrueDep = Annotated[GoTrue, Depends(_gotrue)]


def _refused(err: SupabaseRefused) -> HTTPException:
    return HTTPException(err.status, err.detail, headers=err.headers)


async def _claims(res: Resources, access_token: str) -> dict[str, Any]:
    """The claims of the access token Supabase returned, verified as every request's will be."""
    try:
        return await res.auth.verify_supabase(access_token)
    except AuthError as err:
        raise HTTPException(
            503,
            f"Supabase Auth's token does not verify here ({err}): check SUPABASE_JWT_ISSUER and "
            "SUPABASE_JWT_SECRET or SUPABASE_JWKS_URL",
        ) from err


async def _usable(res: Resources, body: SignInRequest) -> None:
    """The request's invitation, if any, can be used by its email: checked before Supabase is asked (and
    again, atomically, when it is used)."""
    if body.invitation is not None:
        invitations.check_email(await invitations.lookup(res.pool, body.invitation), body.email)


async def _answer(res: Resources, session: Session, sub: str) -> SignInResponse:
    memberships = await supabase_memberships(res.pool, sub)
    return SignInResponse(
        access_token=session.access_token,
        refresh_token=session.refresh_token,
        expires_in=session.expires_in,
        tenants=[TenantRole(id=m.tenant_id, role=m.role) for m in memberships],
    )


async def _enter(res: Resources, session: Session, body: SignInRequest) -> SignInResponse:
    """After Supabase said yes: join the invitation's tenant, or make a first sign-in's tenant."""
    claims = await _claims(res, session.access_token)
    sub, user = claims["sub"], session.user
    if user.id != sub:
        raise HTTPException(503, "Supabase Auth answered a session whose token is another user's")
    confirmed = user.email if user.email_confirmed_at is not None else None
    name = user.email or body.email
    if body.invitation is not None:
        await invitations.accept(res.pool, token=body.invitation, supabase_sub=sub, email=confirmed, user_name=name)
    else:
        meta = claims.get("app_metadata")
        provisioned = isinstance(meta, dict) and meta.get("tenant_id") is not None
        if not provisioned and not await supabase_memberships(res.pool, sub):
            tenant_name = body.tenant_name or body.email.split("@", 1)[0][:200]
            await create_tenant_for_subject(res.pool, supabase_sub=sub, tenant_name=tenant_name, user_name=name)
    return await _answer(res, session, sub)


@router.post(
    "/signup",
    response_model=SignInResponse,
    responses={202: {"description": f"No session yet: {CONFIRM}"}, **_ERRORS},
)
async def signup(body: SignInRequest, res: ResourcesDep, gotrue: GoTrueDep):
    """A new Supabase user. When Supabase answers with a session (email confirmation off), this is its
    first sign-in (see /auth/login); otherwise 202: confirm the email, then POST /auth/login (with the same
    `invitation` or `tenant_name`). An existing email is a 409, a weak password a 422."""
    await _usable(res, body)  # a bad invitation makes no Supabase user either
    try:
        answer = await gotrue.sign_up(body.email, body.password.get_secret_value())
    except SupabaseRefused as err:
        raise _refused(err) from err
    if answer.session is None:
        return JSONResponse({"detail": CONFIRM}, status_code=202)
    return await _enter(res, answer.session, body)


@router.post("/login", response_model=SignInResponse, responses=_ERRORS)
async def login(body: SignInRequest, request: Request, res: ResourcesDep, gotrue: GoTrueDep):
    """Email and password, checked by Supabase Auth: Supabase's access and refresh tokens, and the user's
    tenants with its role in each. A first sign-in makes a tenant (or, with `invitation`, joins one); a
    user already in tenants joins the invitation's tenant too. A wrong password is a 401, and counts
    against the client's failed authentications (AUTH_RATE_LIMIT: 429 once spent)."""
    await _usable(res, body)
    email, password = body.email, body.password.get_secret_value()
    try:
        session = await guard.sign_in(
            res.limiter,
            address=client_address(request, res.settings),
            tag=email,
            attempt=lambda: gotrue.sign_in(email, password),
            failed=wrong_credentials,
        )
    except SupabaseRefused as err:
        raise _refused(err) from err
    return await _enter(res, session, body)


@router.post("/refresh", response_model=SignInResponse, responses=_ERRORS)
async def refresh(body: RefreshRequest, request: Request, res: ResourcesDep, gotrue: GoTrueDep):
    """A new access token (and refresh token: Supabase's are used once) for a refresh token. A refresh
    token that is not valid is a 401, and counts against the client's failed authentications."""
    try:
        session = await guard.sign_in(
            res.limiter,
            address=client_address(request, res.settings),
            tag=None,
            attempt=lambda: gotrue.refresh(body.refresh_token),
            failed=lambda err: isinstance(err, SupabaseRefused) and err.status == 401,
        )
    except SupabaseRefused as err:
        raise _refused(err) from err
    claims = await _claims(res, session.access_token)
    return await _answer(res, session, claims["sub"])


@router.post("/logout", status_code=204, response_class=Response, responses=_ERRORS)
async def logout(
    res: ResourcesDep,
    gotrue: GoTrueDep,
    body: LogoutRequest | None = None,
    authorization: Annotated[str | None, Header(include_in_schema=False)] = None,
):
    """Ends the Supabase session of the access token sent as `Authorization: Bearer` (`scope`: this one,
    every one, or every other one). Its refresh token stops working at once; the access token, a signed
    JWT, works until it expires (`expires_in`)."""
    token = bearer_token(authorization)
    await res.auth.verify_supabase(token)
    try:
        await gotrue.sign_out(token, (body or LogoutRequest()).scope)
    except SupabaseRefused as err:
        raise _refused(err) from err
    return Response(status_code=204)
