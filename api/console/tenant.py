"""Console pages of the tenant: its knowledge (search, add, delete snippets), the models and techniques it
can use, and for admins its API keys and pipeline settings."""

from __future__ import annotations

import json
from typing import Annotated, Any

from fastapi import APIRouter, Form

from api.console.client import ApiError
from api.console.session import redirect
from api.console.web import Page, PageDep, check_write, uuid_or_404

router = APIRouter()
SNIPPETS_SHOWN = 50


async def _knowledge(page: Page, status: int = 200, **context: Any):
    snippets = await page.api.get("/api/snippets", limit=SNIPPETS_SHOWN)
    return page.render("knowledge.html", status=status, title="Knowledge", snippets=snippets["items"], **context)


@router.get("/knowledge")
async def knowledge(page: PageDep, q: str | None = None, mode: str = "hybrid"):
    hits, error = None, None
    if q:
        try:
            hits = await page.api.post("/api/similar", {"query": q, "mode": mode, "top_k": 10})
        except ApiError as err:
            if err.status != 422:
                raise
            error = err.detail
    return await _knowledge(page, 422 if error else 200, q=q or "", mode=mode, hits=hits, search_error=error)


@router.post("/knowledge/snippets")
async def add_snippet(
    page: PageDep,
    content: Annotated[str, Form()] = "",
    language: Annotated[str, Form()] = "python",
    description: Annotated[str, Form()] = "",
    csrf: Annotated[str | None, Form()] = None,
):
    check_write(page.request, page.session, csrf)
    form = {"content": content, "language": language, "description": description}
    try:
        await page.api.post("/api/snippets", {**form, "description": description or None})
    except ApiError as err:
        if err.status != 422:
            raise
        return await _knowledge(page, 422, q="", mode="hybrid", hits=None, form=form, form_error=err.detail)
    return page.finish(redirect("/console/knowledge?added=1"))


@router.post("/knowledge/snippets/{snippet_id}/delete")
async def delete_snippet(page: PageDep, snippet_id: str, csrf: Annotated[str | None, Form()] = None):
    check_write(page.request, page.session, csrf)
    await page.api.delete(f"/api/snippets/{uuid_or_404(snippet_id)}")
    return page.finish(redirect("/console/knowledge"))


@router.get("/models")
async def models(page: PageDep):
    listed = await page.api.get("/api/models")
    techniques = await page.api.get("/api/techniques")
    return page.render(
        "models.html", title="Models and techniques", models=listed["items"], techniques=techniques["items"]
    )


async def _keys(page: Page, status: int = 200, **context: Any):
    keys = await page.api.get("/api/keys", limit=100)
    return page.render("keys.html", status=status, title="API keys", keys=keys["items"], **context)


@router.get("/keys")
async def keys(page: PageDep):
    return await _keys(page)


@router.post("/keys")
async def create_key(
    page: PageDep,
    name: Annotated[str, Form()] = "",
    role: Annotated[str, Form()] = "viewer",
    csrf: Annotated[str | None, Form()] = None,
):
    check_write(page.request, page.session, csrf)
    try:
        created = await page.api.post("/api/keys", {"name": name, "role": role})
    except ApiError as err:
        if err.status not in (409, 422):
            raise
        return await _keys(page, err.status, form={"name": name, "role": role}, form_error=err.detail)
    return await _keys(page, 201, created=created)  # the key is shown once, on this answer only


@router.post("/keys/{key_id}/revoke")
async def revoke_key(page: PageDep, key_id: str, csrf: Annotated[str | None, Form()] = None):
    check_write(page.request, page.session, csrf)
    await page.api.delete(f"/api/keys/{uuid_or_404(key_id)}")
    return page.finish(redirect("/console/keys"))


USAGE_ROWS = 30  # the settings page shows the latest days of usage
SETTING_FIELDS = ("model", "max_new_tokens", "n", "debug_rounds", "generation_concurrency")


@router.get("/settings")
async def settings(page: PageDep, saved: int = 0):
    current = await page.api.get("/api/settings")
    used = await page.api.get("/api/usage", limit=USAGE_ROWS)
    return page.render(
        "settings.html",
        title="Settings",
        settings=current,
        techniques=await _technique_names(page),
        saved=bool(saved),
        usage=used["items"],
    )


async def _technique_names(page: Page) -> list[str]:
    return [t["name"] for t in (await page.api.get("/api/techniques"))["items"] if t.get("implemented")]


@router.post("/settings")
async def save_settings(page: PageDep):
    form = await page.request.form()
    text = {k: v for k, v in form.multi_items() if isinstance(v, str)}  # the last of each name
    check_write(page.request, page.session, text.get("csrf"))
    update: dict[str, Any] = {}
    for key in SETTING_FIELDS:
        value = text.get(key, "").strip()
        if value:
            update[key] = int(value) if value.isdigit() else value
    update["techniques"] = [t for t in form.getlist("techniques") if isinstance(t, str)]
    options = text.get("options")
    errors: dict[str, str] = {}
    if options and options.strip():
        try:
            update["options"] = json.loads(options)
        except ValueError as err:
            errors["options"] = f"not JSON: {err}"
    if not errors:
        try:
            await page.api.put("/api/settings", update)
        except ApiError as err:
            if err.status != 422:
                raise
            errors["form"] = err.detail
    if errors:
        shown = {**(await page.api.get("/api/settings")), **update, "options_text": options}
        return page.render(
            "settings.html",
            status=422,
            title="Settings",
            settings=shown,
            techniques=await _technique_names(page),
            errors=errors,
        )
    return page.finish(redirect("/console/settings?saved=1"))
