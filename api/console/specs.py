"""The spec form: a form rendered from the template's JSON Schema (types, enums, required fields, arrays of
strings one per line), posted to the API's instances; the API's 422 errors are shown at their fields,
from their JSON paths, and what was typed stays in the form."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from typing import Any

from fastapi import APIRouter, Request

from api.console.client import ApiError
from api.console.session import redirect
from api.console.web import Page, PageDep, check_write, uuid_or_404

router = APIRouter()

LONG_ROLES = {"description", "context"}
REQUIRED = re.compile(r"^'([^']+)' is a required property")
INDEX = re.compile(r"^\[(\d+)\]")


@dataclass
class FormField:
    key: str
    label: str
    kind: str  # text, textarea, number, checkbox, select, lines, json
    required: bool
    help: str | None
    value: str = ""
    checked: bool = False
    options: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)


def _kind(prop: dict[str, Any]) -> str:
    kind = prop.get("type")
    role = (prop.get("x-specmill") or {}).get("role")
    if "enum" in prop and all(isinstance(v, str) for v in prop["enum"]):
        return "select"
    if kind == "string":
        return "textarea" if role in LONG_ROLES or prop.get("maxLength", 0) > 200 else "text"
    if kind in ("integer", "number"):
        return "number"
    if kind == "boolean":
        return "checkbox"
    if kind == "array" and (prop.get("items") or {}).get("type") == "string":
        return "lines"
    return "json"


def _shown(kind: str, value: Any) -> str:
    if value is None:
        return ""
    if kind == "lines":
        return "\n".join(str(v) for v in value) if isinstance(value, list) else str(value)
    if kind == "json":
        return value if isinstance(value, str) else json.dumps(value, indent=2)
    return str(value)


def form_fields(schema: dict[str, Any], values: dict[str, Any]) -> list[FormField]:
    """One field per property of the template's schema, holding `values` as the form shows them."""
    required = set(schema.get("required") or [])
    out = []
    for key, prop in (schema.get("properties") or {}).items():
        if not isinstance(prop, dict):
            continue
        kind = _kind(prop)
        hint = prop.get("description")
        if kind == "lines":
            hint = f"{hint + ' ' if hint else ''}One per line."
        out.append(
            FormField(
                key=key,
                label=prop.get("title") or key.replace("_", " ").capitalize(),
                kind=kind,
                required=key in required,
                help=hint,
                value=_shown(kind, values.get(key)),
                checked=values.get(key) is True,
                options=[str(v) for v in prop.get("enum", [])],
            )
        )
    return out


def read_form(fields: list[FormField], form: dict[str, Any], base: dict[str, Any]) -> dict[str, Any]:
    """The values the form holds (on top of `base`, so keys the form does not show are kept). A number that
    does not parse, or JSON that does not, is sent as typed: the API's 422 names it at its field."""
    values = dict(base)
    for f in fields:
        raw = form.get(f"f.{f.key}")
        text = raw if isinstance(raw, str) else ""
        f.value, f.checked = text, raw is not None
        if f.kind == "checkbox":
            values[f.key] = raw is not None
            continue
        if not text.strip():
            values.pop(f.key, None)
            continue
        if f.kind == "lines":
            values[f.key] = [line.rstrip() for line in text.splitlines() if line.strip()]
        elif f.kind == "number":
            values[f.key] = _number(text)
        elif f.kind == "json":
            try:
                values[f.key] = json.loads(text)
            except ValueError:
                values[f.key] = text
        else:
            values[f.key] = text
    return values


def _number(text: str) -> int | float | str:
    for convert in (int, float):
        try:
            return convert(text.strip())
        except ValueError:
            continue
    return text


def place_errors(fields: list[FormField], body: Any) -> list[str]:
    """Put each of the API's errors at its field (by its JSON path, `$.tests[2]`, or a required property's
    name); what belongs to no field is returned for the top of the form."""
    by_key = {f.key: f for f in fields}
    loose: list[str] = []
    errors = body.get("errors") if isinstance(body, dict) else None
    if not errors:
        detail = body.get("detail") if isinstance(body, dict) else None
        return [detail if isinstance(detail, str) else "the API refused these values"]
    for error in errors:
        path, message = str(error.get("path", "$")), str(error.get("message", ""))
        key, rest = None, ""
        if path.startswith("$."):
            key = re.split(r"[.\[]", path[2:], maxsplit=1)[0]
            rest = path[2 + len(key) :]
        elif (found := REQUIRED.match(message)) is not None:
            key = found.group(1)
        target = by_key.get(key) if key else None
        if target is None:
            loose.append(f"{path}: {message}")
            continue
        index = INDEX.match(rest)
        if index is not None and target.kind == "lines":
            message = f"line {int(index.group(1)) + 1}: {message}"
        target.errors.append(message)
    return loose


async def _template(page: Page, template_id: str) -> dict[str, Any]:
    return await page.api.get(f"/api/templates/{uuid_or_404(template_id)}")


def _render(page: Page, project, template, fields, *, instance=None, errors=(), status=200):
    return page.render(
        "spec_form.html",
        status=status,
        title=f"Spec of {project['name']}",
        project=project,
        template=template,
        fields=fields,
        instance=instance,
        errors=list(errors),
    )


@router.get("/projects/{project_id}/specs/new")
async def new_spec(page: PageDep, project_id: str, template: str | None = None):
    pid = str(uuid_or_404(project_id))
    project = await page.api.get(f"/api/projects/{pid}")
    attached = (await page.api.get(f"/api/projects/{pid}/templates", limit=100))["items"]
    if template is None:
        return page.render("spec_choose.html", title="Add a spec", project=project, templates=attached)
    chosen = await _template(page, template)
    return _render(page, project, chosen, form_fields(chosen["schema"], {}))


async def _form(request: Request) -> dict[str, str]:
    """The form's text fields (a file sent instead is ignored)."""
    return {k: v for k, v in (await request.form()).multi_items() if isinstance(v, str)}


@router.post("/projects/{project_id}/specs/new")
async def create_spec(page: PageDep, project_id: str, template: str):
    pid = str(uuid_or_404(project_id))
    form = await _form(page.request)
    check_write(page.request, page.session, form.get("csrf"))
    project = await page.api.get(f"/api/projects/{pid}")
    chosen = await _template(page, template)
    fields = form_fields(chosen["schema"], {})
    values = read_form(fields, form, {})
    try:
        created = await page.api.post(
            "/api/instances", {"template_id": chosen["id"], "project_id": pid, "values": values}
        )
    except ApiError as err:
        if err.status != 422:
            raise
        loose = place_errors(fields, err.body)
        return _render(page, project, chosen, fields, errors=loose, status=422)
    return page.finish(redirect(f"/console/projects/{pid}/specs/{created['id']}?saved=1"))


async def _instance(page: Page, pid: str, iid: str) -> dict[str, Any]:
    """The spec, if it is this project's (any other id, like another tenant's, is the same 404)."""
    instance = await page.api.get(f"/api/instances/{iid}")
    if instance["project_id"] != pid:
        raise ApiError(404, {"detail": "no such spec in this project"})
    return instance


async def _editing(page: Page, project_id: str, instance_id: str):
    """What a spec's form is made of: the project, the spec, its template and the form's fields."""
    pid, iid = str(uuid_or_404(project_id)), str(uuid_or_404(instance_id))
    project = await page.api.get(f"/api/projects/{pid}")
    instance = await _instance(page, pid, iid)
    chosen = await page.api.get(f"/api/templates/{instance['template_id']}")
    return project, instance, chosen, form_fields(chosen["schema"], instance["values"])


@router.get("/projects/{project_id}/specs/{instance_id}")
async def spec(page: PageDep, project_id: str, instance_id: str, saved: int = 0):
    project, instance, chosen, fields = await _editing(page, project_id, instance_id)
    return _render(page, project, chosen, fields, instance={**instance, "saved": bool(saved)})


@router.post("/projects/{project_id}/specs/{instance_id}")
async def update_spec(page: PageDep, project_id: str, instance_id: str):
    form = await _form(page.request)
    check_write(page.request, page.session, form.get("csrf"))
    project, instance, chosen, fields = await _editing(page, project_id, instance_id)
    values = read_form(fields, form, instance["values"])
    try:
        await page.api.put(f"/api/instances/{instance['id']}", {"values": values})
    except ApiError as err:
        if err.status != 422:
            raise
        loose = place_errors(fields, err.body)
        return _render(page, project, chosen, fields, instance=instance, errors=loose, status=422)
    return page.finish(redirect(f"/console/projects/{project['id']}/specs/{instance['id']}?saved=1"))


@router.post("/projects/{project_id}/specs/{instance_id}/delete")
async def delete_spec(page: PageDep, project_id: str, instance_id: str):
    pid, iid = str(uuid_or_404(project_id)), str(uuid_or_404(instance_id))
    form = await _form(page.request)
    check_write(page.request, page.session, form.get("csrf"))
    await _instance(page, pid, iid)
    await page.api.delete(f"/api/instances/{iid}")
    return page.finish(redirect(f"/console/projects/{pid}"))


@router.post("/projects/{project_id}/complete")
async def complete(page: PageDep, project_id: str):
    pid = str(uuid_or_404(project_id))
    form = await _form(page.request)
    check_write(page.request, page.session, form.get("csrf"))
    await page.api.post(f"/api/projects/{pid}/specs/complete")
    project = await page.api.get(f"/api/projects/{pid}")
    target = (
        f"/console/projects/{pid}/runs/{project['run_id']}" if project.get("run_id") else f"/console/projects/{pid}"
    )
    return page.finish(redirect(target))
