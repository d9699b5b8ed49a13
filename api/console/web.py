"""What every console page shares: the templates, the signed-in caller with its API client, and the pages
for errors (sign in again, 403, 404) instead of JSON."""

from __future__ import annotations

import difflib
import hmac
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Annotated, Any, TypeVar
from uuid import UUID

from fastapi import Depends, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from jinja2 import Environment, FileSystemLoader, select_autoescape
from markupsafe import escape
from pygments import highlight
from pygments.formatters import HtmlFormatter
from pygments.lexers import get_lexer_by_name
from pygments.util import ClassNotFound

from api.console.client import Api, ApiError
from api.console.session import (
    Session,
    SignInRequired,
    clear_cookie,
    same_origin,
    session,
    set_cookie,
    sign_in_url,
)
from models.common import Role

HERE = Path(__file__).resolve().parent
R = TypeVar("R", bound=Response)
ROLES = [Role.viewer, Role.editor, Role.admin, Role.owner]
HIGHLIGHT_CSS = HtmlFormatter(cssclass="highlight").get_style_defs(".highlight") + "\n"


def code_html(code: str, language: str = "python", *, anchors: str = "L") -> str:
    """Code highlighted on the server (no script): numbered lines, each with an anchor (#L12)."""
    try:
        lexer = get_lexer_by_name(language)
    except ClassNotFound:
        lexer = get_lexer_by_name("text")
    formatter = HtmlFormatter(cssclass="highlight", linenos="table", anchorlinenos=True, lineanchors=anchors)
    return highlight(code, lexer, formatter)


def unified_diff(before: str, after: str, a: str, b: str) -> list[dict[str, str]]:
    """A unified diff as rows a template colours: kind is add, del, hunk, meta or same."""
    rows = []
    for line in difflib.unified_diff(before.splitlines(), after.splitlines(), a, b, lineterm=""):
        if line.startswith(("---", "+++")):
            kind = "meta"
        elif line.startswith("@@"):
            kind = "hunk"
        elif line.startswith("+"):
            kind = "add"
        elif line.startswith("-"):
            kind = "del"
        else:
            kind = "same"
        rows.append({"kind": kind, "text": line})
    return rows


def _duration(seconds: float | None) -> str:
    if seconds is None:
        return "–"
    if seconds < 1:
        return f"{seconds * 1000:.0f} ms"
    if seconds < 120:
        return f"{seconds:.1f} s"
    if seconds < 7200:
        return f"{seconds / 60:.1f} min"
    return f"{seconds / 3600:.1f} h"


def _when(value: str | datetime | None) -> str:
    """A <time> the browser shows in its own zone (console.js); the attribute keeps RFC 3339."""
    if value is None:
        return "–"
    text = escape(value.isoformat() if isinstance(value, datetime) else str(value))
    return f'<time datetime="{text}">{text}</time>'


ENV = Environment(
    loader=FileSystemLoader(HERE / "templates"), autoescape=select_autoescape(["html"]), enable_async=False
)
ENV.filters["duration"] = _duration
ENV.filters["when"] = _when


@dataclass
class Page:
    """A console request: the caller, their API client, and what the templates need of both."""

    request: Request
    session: Session
    api: Api

    @property
    def role(self) -> Role:
        return self.session.principal.role

    def can(self, role: Role) -> bool:
        return ROLES.index(self.role) >= ROLES.index(role)

    def render(self, name: str, /, status: int = 200, **context: Any) -> HTMLResponse:
        html = ENV.get_template(name).render(
            page=self,
            csrf=self.session.form_csrf,  # of the token the browser holds after this answer
            can_edit=self.can(Role.editor),
            can_admin=self.can(Role.admin),
            path=self.request.url.path,
            **context,
        )
        response = HTMLResponse(html, status_code=status)
        return self.finish(response)

    def finish(self, response: R) -> R:
        if self.session.renewed:
            set_cookie(self.request, response, self.session.renewed)
        return response


def check_write(request: Request, s: Session, form_csrf: str | None) -> None:
    """A console write needs its session's CSRF token and, where the browser names it, this origin."""
    if not same_origin(request):
        raise ApiError(403, {"detail": "a write from another site is refused"})
    if not form_csrf or not hmac.compare_digest(form_csrf, s.csrf):
        raise ApiError(403, {"detail": "the form's CSRF token is missing or stale: reload the page and try again"})


def uuid_or_404(text: str) -> UUID:
    """A path's id: anything but a UUID is the same 404 page as another tenant's id."""
    try:
        return UUID(text)
    except ValueError:
        raise ApiError(404, {"detail": "no such page"}) from None


async def page(request: Request, s: Annotated[Session, Depends(session)]) -> Page:
    return Page(request, s, Api(request, s))


PageDep = Annotated[Page, Depends(page)]


def plain(name: str, /, status: int = 200, **context: Any) -> HTMLResponse:
    """A page outside a session (sign-in, errors before one exists)."""
    return HTMLResponse(ENV.get_template(name).render(page=None, **context), status_code=status)


def install(app) -> None:
    """The console's answers to what its pages raise: sign in again, or an error page (never JSON)."""

    async def signed_out(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, SignInRequired)
        response = RedirectResponse(sign_in_url(exc.next_path), status_code=303)
        clear_cookie(response)
        return response

    async def api_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, ApiError)
        if exc.status == 401:
            return await signed_out(request, SignInRequired(request.url.path))
        titles = {403: "Not allowed", 404: "Not found", 429: "Too many requests"}
        title = titles.get(exc.status, "Something went wrong")
        status = exc.status if exc.status in titles or exc.status < 500 else 502
        return plain("error.html", status=status, title=title, detail=exc.detail)

    app.add_exception_handler(SignInRequired, signed_out)
    app.add_exception_handler(ApiError, api_error)
