"""The web console at /console: server-rendered pages over the gateway's own API (api/console/client.py),
a stylesheet and one small script from api/console/static, no build step and nothing from another site."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Form, Request
from fastapi.responses import PlainTextResponse, RedirectResponse
from fastapi.staticfiles import StaticFiles

from api.console import artifacts, projects, runs, specs, tenant
from api.console.session import (
    PATH,
    clear_cookie,
    redirect,
    safe_next,
    same_origin,
    set_cookie,
    sign_in,
    sign_in_supabase,
    supabase_configured,
)
from api.console.web import HERE, HIGHLIGHT_CSS, PageDep, check_write, plain
from api.security.auth import AuthError

router = APIRouter(prefix=PATH, include_in_schema=False)
for module in (projects, specs, runs, artifacts, tenant):
    router.include_router(module.router)


@router.get("")
async def home() -> RedirectResponse:
    return redirect(f"{PATH}/projects")


@router.get("/highlight.css")
async def highlight_css() -> PlainTextResponse:
    return PlainTextResponse(HIGHLIGHT_CSS, media_type="text/css")


@router.get("/sign-in")
async def sign_in_page(request: Request, next: str | None = None):
    return plain("sign_in.html", title="Sign in", next=safe_next(next), supabase=supabase_configured(request))


@router.post("/sign-in")
async def sign_in_form(
    request: Request,
    api_key: Annotated[str, Form(max_length=500)] = "",
    supabase_token: Annotated[str, Form(max_length=8000)] = "",
    next: Annotated[str, Form()] = "",
):
    supabase = supabase_configured(request)
    if not same_origin(request):
        return plain("error.html", status=403, title="Not allowed", detail="a sign-in from another site is refused")
    try:
        if supabase_token and supabase:
            await sign_in_supabase(request, supabase_token)
            token = supabase_token.strip()
        else:
            _, token = await sign_in(request, api_key)
    except AuthError:
        error = "That Supabase session is not valid here." if supabase_token else "That key is not valid."
        return plain("sign_in.html", status=401, title="Sign in", next=safe_next(next), error=error, supabase=supabase)
    response = redirect(safe_next(next))
    set_cookie(request, response, token)
    return response


@router.post("/sign-out")
async def sign_out(page: PageDep, csrf: Annotated[str | None, Form()] = None):
    check_write(page.request, page.session, csrf)
    response = redirect(f"{PATH}/sign-in")
    clear_cookie(response)
    return response


def install(app) -> None:
    from api.console import web

    app.include_router(router)
    app.mount(f"{PATH}/static", StaticFiles(directory=HERE / "static"), name="console-static")
    web.install(app)
